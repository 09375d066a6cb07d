//! The serde mirrors of the file: every key read with its span, so that an
//! error can name the key and its line.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) verify: RawVerify,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) log: LogConfig,
    #[serde(default)]
    pub(super) admin: AdminConfig,
    #[serde(default)]
    pub(super) trigger: Vec<RawTrigger>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) dir: Option<Spanned<PathBuf>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) lease: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) bind: Option<Spanned<String>>,
    pub(super) port: Option<u16>,
    pub(super) path: Option<String>,
    pub(super) max_body: Option<Spanned<String>>,
    pub(super) predicate_timeout: Option<Spanned<String>>,
    pub(super) subdomain: Option<Spanned<toml::Value>>,
    // The limits are read as any value, so that a value of the wrong type is
    // an error that names its key.
    pub(super) header_timeout: Option<Spanned<toml::Value>>,
    pub(super) body_timeout: Option<Spanned<toml::Value>>,
    pub(super) max_header_bytes: Option<Spanned<toml::Value>>,
    pub(super) max_connections: Option<Spanned<toml::Value>>,
    pub(super) request_deadline: Option<Spanned<toml::Value>>,
    pub(super) keep_alive: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    #[serde(default)]
    pub(super) secrets: Vec<Spanned<String>>,
    pub(super) tolerance: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_unsigned: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrigger {
    pub(super) name: Spanned<String>,
    pub(super) on: Spanned<Vec<String>>,
    pub(super) when: Option<Spanned<String>>,
    pub(super) once_per: Option<OncePer>,
    pub(super) lease: Option<Spanned<String>>,
    pub(super) stop_on: Option<Spanned<Vec<String>>>,
    pub(super) stop_when: Option<Spanned<String>>,
    pub(super) stop_after: Option<Spanned<String>>,
    pub(super) claim: Option<Spanned<String>>,
    pub(super) run: Option<Spanned<RawRun>>,
    pub(super) forward: Option<Spanned<RawForward>>,
    pub(super) stdout: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRun {
    pub(super) command: Vec<String>,
    pub(super) restart: Option<RestartPolicy>,
    pub(super) max_restarts: Option<u32>,
    pub(super) stdin: Option<StdinMode>,
    pub(super) timeout: Option<String>,
    pub(super) stop_grace: Option<String>,
    pub(super) max_running: Option<usize>,
    // Read as any value, so that an unknown one is an error that names its key.
    pub(super) when_full: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
// Read (and refused, naming the feature) even in a build without `forward`.
#[cfg_attr(not(feature = "forward"), allow(dead_code))]
pub(super) struct RawForward {
    pub(super) url: String,
    pub(super) timeout: Option<String>,
    pub(super) max_attempts: Option<u32>,
    pub(super) max_age: Option<String>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    // One secret, or a list during a rotation; read as any value, so that
    // one of another type is an error that names its key.
    pub(super) signing_secret: Option<Spanned<toml::Value>>,
}
