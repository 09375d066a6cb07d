//! `whereby-trigger replay`: recorded webhooks through the rules, no actions.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use whereby_trigger::config::Config;
use whereby_trigger::parse::Parser;
use whereby_trigger::registry::Registry;
use whereby_trigger::replay::replay;
use whereby_trigger::webhook::{BaseDomain, ParseOptions};

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The config whose [[trigger]] rules to apply.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,

    /// Webhooks, one JSON document per line (as `serve --record` writes them);
    /// `-` reads standard input. Blank lines and lines starting with # are skipped.
    #[arg(value_name = "WEBHOOKS")]
    file: PathBuf,

    /// Domain room URLs are built on.
    #[arg(long, default_value = "whereby.com")]
    base_domain: String,

    /// Subdomain for webhooks that carry none, as `serve --subdomain`.
    /// Default: the config's [server] subdomain.
    #[arg(long, value_name = "SUBDOMAIN")]
    subdomain: Option<String>,
}

pub(crate) fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let base_domain = BaseDomain::new(&args.base_domain)?;
    let mut options = ParseOptions::new();
    if let Some(subdomain) = args.subdomain.as_ref().or(config.server.subdomain.as_ref()) {
        options = options
            .with_default_subdomain(subdomain)
            .with_context(|| format!("--subdomain {subdomain}"))?;
    }
    let parser = Parser::new(base_domain, options);
    let rules = Registry::dry_rules(&config);
    let stdout = std::io::stdout().lock();
    if args.file.as_os_str() == "-" {
        replay(rules, &parser, std::io::stdin().lock(), stdout)?;
    } else {
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        replay(rules, &parser, BufReader::new(file), stdout)?;
    }
    Ok(ExitCode::SUCCESS)
}
