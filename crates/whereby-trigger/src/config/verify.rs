//! `[verify]`: signing secrets, tolerance, `allow_unsigned`.

use super::*;

/// `[verify]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyConfig {
    /// `secrets`, with `${NAME}` expanded.
    pub secrets: Vec<Secret>,
    /// `tolerance`
    pub tolerance: Option<Duration>,
    /// `allow_unsigned`
    pub allow_unsigned: bool,
}

pub(super) fn verify_config(
    raw: RawVerify,
    lines: &Lines<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigProblem>,
) -> VerifyConfig {
    let mut secrets = Vec::new();
    for secret in raw.secrets {
        match expand(secret.get_ref(), env) {
            Ok(value) => match whereby_webhook::SigningSecret::try_new(&value) {
                Ok(_) => secrets.push(Secret(value)),
                Err(e) => errors.push(ConfigProblem {
                    line: Some(lines.of(secret.span().start)),
                    trigger: None,
                    message: if secret.get_ref().contains("${") {
                        format!("verify.secrets: {e} once its variables are expanded")
                    } else {
                        format!("verify.secrets: {e}")
                    },
                }),
            },
            Err(message) => errors.push(ConfigProblem {
                line: Some(lines.of(secret.span().start)),
                trigger: None,
                message: format!("verify.secrets: {message}"),
            }),
        }
    }
    let tolerance = raw.tolerance.and_then(|v| {
        let checked = parse_duration(v.get_ref())
            .map_err(|e| e.to_string())
            .and_then(|d| crate::verify::check_tolerance(d).map_err(|e| e.to_string()));
        match checked {
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(ConfigProblem {
                    line: Some(lines.of(v.span().start)),
                    trigger: None,
                    message: format!("verify.tolerance: {e}"),
                });
                None
            }
        }
    });
    VerifyConfig {
        secrets,
        tolerance,
        allow_unsigned: raw.allow_unsigned,
    }
}
