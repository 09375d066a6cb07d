//! `[log]`: how the command writes its log.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

/// The log's format on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// One line per event for people, coloured only on a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The name the flag and the file use.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A log format other than `pretty` or `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format `{0}`: use pretty or json")]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LogConfig {
    /// `format`: `pretty` or `json`; `None` when the file does not say.
    pub format: Option<LogFormat>,
}

impl LogConfig {
    /// The `[log]` table of the file at `path`, read alone and leniently: the
    /// log must be set up before the whole file is loaded, so that loading it
    /// can log. `None` when the file cannot be read or parsed, or its `[log]`
    /// is not valid: [`Config::load`](super::Config::load) then reports the
    /// problem with its line.
    pub fn peek(path: &Path) -> Option<LogConfig> {
        // Only `[log]` is looked at; every other key is left to the full load.
        #[derive(Deserialize)]
        struct Peek {
            #[serde(default)]
            log: LogConfig,
        }
        let text = std::fs::read_to_string(path).ok()?;
        toml::from_str::<Peek>(&text).ok().map(|peek| peek.log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for format in [LogFormat::Pretty, LogFormat::Json] {
            assert_eq!(format.as_str().parse::<LogFormat>(), Ok(format));
        }
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn peek_reads_only_the_log_table() {
        let dir = std::env::temp_dir().join(format!("wt-log-peek-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        // A key the full load would refuse does not hide `[log]`.
        std::fs::write(&path, "[log]\nformat = \"json\"\n[server]\nunknown = 1\n").unwrap();
        assert_eq!(
            LogConfig::peek(&path).and_then(|l| l.format),
            Some(LogFormat::Json)
        );
        std::fs::write(&path, "[log]\nformat = \"xml\"\n").unwrap();
        assert_eq!(LogConfig::peek(&path), None);
        std::fs::write(&path, "[server]\nport = 1\n").unwrap();
        assert_eq!(LogConfig::peek(&path), Some(LogConfig::default()));
        assert_eq!(LogConfig::peek(&dir.join("missing.toml")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
