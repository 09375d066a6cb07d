//! `whereby-trigger check`: load and validate a config without serving.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use whereby_trigger::actions::stdout::LineSink;
use whereby_trigger::actions::template::Template;
use whereby_trigger::config::Config;
use whereby_trigger::registry::Registry;
use whereby_webhook::{AnyEventType, EventType, OTHER_TYPES};

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
    // on the documented sample of one of its types would count as false
    // there; a `stop_when` is checked after an event of any evaluated type.
    let mut problems = 0;
    let evaluated: Vec<AnyEventType> = EventType::ALL.into_iter().map(Into::into).collect();
    for trigger in &config.triggers {
        let conditions = [
            (
                "when",
                trigger.when.as_ref(),
                trigger.when_line,
                &trigger.on[..],
            ),
            (
                "stop_when",
                trigger.stop_when.as_ref(),
                trigger.stop_when_line,
                &evaluated[..],
            ),
        ];
        for (key, when, line, types) in conditions {
            let Some(when) = when else { continue };
            for problem in whereby_trigger::rules::cel::lint_samples(when, key, types) {
                eprintln!(
                    "{}:{line}: trigger `{}`: {problem}",
                    args.config.display(),
                    trigger.name
                );
                problems += 1;
            }
        }
        // A type Whereby does not document may be a typo: it is accepted (a
        // new type may come), and said.
        for event_type in trigger.on.iter().chain(&trigger.stop_on) {
            if !event_type.is_documented() {
                eprintln!(
                    "{}:{}: trigger `{}`: warning: `{event_type}` is not a type Whereby documents (known: {}); check its spelling",
                    args.config.display(),
                    trigger.line,
                    trigger.name,
                    EventType::ALL
                        .iter()
                        .map(|t| t.as_str())
                        .chain(OTHER_TYPES)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        // Not every type is sure to carry a room; a `run` command
        // that needs `{roomUrl}` does not start for a webhook without one,
        // which would otherwise surface only at run time, in the log.
        let needs_room = trigger
            .run
            .as_ref()
            .is_some_and(|run| run.command.iter().any(Template::uses_room_url));
        if needs_room {
            for event_type in trigger.on.iter().filter(|t| !t.carries_room()) {
                eprintln!(
                    "{}:{}: trigger `{}`: warning: a `{event_type}` webhook may carry no room; `run` uses {{roomUrl}}, so it does not start for one that has none",
                    args.config.display(),
                    trigger.line,
                    trigger.name,
                );
            }
        }
    }
    if problems > 0 {
        return ExitCode::from(1);
    }
    print!("{}: OK\n{}", args.config.display(), config.summary());
    ExitCode::SUCCESS
}
