//! `whereby-trigger check`: load and validate a config without serving.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use whereby_trigger::actions::stdout::LineSink;
use whereby_trigger::config::Config;
use whereby_trigger::registry::Registry;

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The config file to check.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// Prints a summary and exits 0, or prints every error (file, line, trigger)
/// and exits 1. Secrets are never printed.
pub(crate) fn run(args: CheckArgs) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    // Building the actions checks what only they can (a URL the HTTP client
    // refuses), without starting anything.
    if let Err(err) = Registry::new(LineSink::new(std::io::sink())).rules(&config) {
        eprintln!("{}: {err}", args.config.display());
        return ExitCode::from(1);
    }
    // A `when` that fails, or compares a field with a value of another type,
    // on the documented sample of one of its types would count as false there.
    let mut problems = 0;
    for trigger in &config.triggers {
        let Some(when) = &trigger.when else { continue };
        for problem in whereby_trigger::rules::cel::lint_samples(when, &trigger.on) {
            eprintln!(
                "{}:{}: trigger `{}`: {problem}",
                args.config.display(),
                trigger.line,
                trigger.name
            );
            problems += 1;
        }
    }
    if problems > 0 {
        return ExitCode::from(1);
    }
    print!("{}: OK\n{}", args.config.display(), config.summary());
    ExitCode::SUCCESS
}
