//! `[store]`: where the state lives — a data directory (SQLite) or a shared
//! PostgreSQL database.

use super::*;

/// `[store]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// `dir`: the data directory of the durable store.
    pub dir: Option<PathBuf>,
    /// `url`: a PostgreSQL database shared by several servers
    /// (`postgres://user@host:port/db`), with `${NAME}` expanded; it may hold a
    /// password, so its `Debug` never shows it.
    pub url: Option<Secret>,
    /// `lease`: how long a delivery (with a shared store) stays with the
    /// server that took it without a renewal, before another may take it;
    /// [`DEFAULT_SHARED_LEASE`](crate::store::DEFAULT_SHARED_LEASE) when unset.
    pub lease: Option<Duration>,
}

pub(super) fn store_config(
    raw: RawStore,
    lines: &Lines<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigProblem>,
) -> StoreConfig {
    let mut fail = |span: std::ops::Range<usize>, message: String| {
        errors.push(ConfigProblem {
            line: Some(lines.of(span.start)),
            trigger: None,
            message,
        });
    };
    if let (Some(dir), Some(_)) = (&raw.dir, &raw.url) {
        fail(
            dir.span(),
            "store.dir and store.url: the store is either a data directory or a database, not both"
                .to_owned(),
        );
    }
    let url = raw.url.and_then(|url| {
        let expanded = expand(url.get_ref(), env)
            .map_err(|e| fail(url.span(), format!("store.url: {e}")))
            .ok()?;
        if expanded.trim().is_empty() {
            fail(url.span(), "store.url: empty".to_owned());
            return None;
        }
        Some(Secret(expanded))
    });
    let lease = raw.lease.and_then(|v| match parse_duration(v.get_ref()) {
        Ok(lease) if lease >= Duration::from_secs(2) => Some(lease),
        Ok(_) => {
            fail(
                v.span(),
                "store.lease: at least 2s (it is renewed every second)".to_owned(),
            );
            None
        }
        Err(e) => {
            fail(v.span(), format!("store.lease: {e}"));
            None
        }
    });
    StoreConfig {
        dir: raw.dir.map(Spanned::into_inner),
        url,
        lease,
    }
}
