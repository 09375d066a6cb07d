//! `{placeholder}` substitution in command arguments.
//!
//! A template is compiled when the config loads, so an unknown placeholder is a
//! config error, not a surprise at run time. A substituted value always stays
//! inside its argument: nothing is ever split on spaces or interpreted by a shell.

use std::fmt;

use serde_json::Value;

use crate::actions::ActionEvent;

/// A value a template can insert.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placeholder {
    RoomUrl,
    Id,
    Type,
    Trigger,
    /// `{data.FIELD}` or `{data.FIELD.SUB}`: a path under `data`.
    Data(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Value(Placeholder),
}

/// A compiled argument template such as `--room={roomUrl}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `{name}` is not a known placeholder.
    #[error(
        "unknown placeholder `{{{0}}}` (known: {{roomUrl}}, {{id}}, {{type}}, {{trigger}}, \
         {{data.FIELD}}; write {{{{ and }}}} for literal braces)"
    )]
    Unknown(String),
    /// A `{` without its `}`, or a lone `}`.
    #[error("unbalanced brace in `{0}` (write {{{{ and }}}} for literal braces)")]
    Unbalanced(String),
}

impl Template {
    /// Compiles `source`. `{{` and `}}` stand for literal braces.
    ///
    /// # Errors
    /// A [`TemplateError`] for an unknown placeholder or an unbalanced brace.
    ///
    /// ```
    /// use whereby_trigger::actions::template::Template;
    /// assert!(Template::compile("--room={roomUrl}").is_ok());
    /// assert!(Template::compile("{data.roomName}").is_ok());
    /// assert!(Template::compile("{nope}").is_err());
    /// ```
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(TemplateError::Unbalanced(source.to_owned()));
                            }
                            Some(c) => name.push(c),
                        }
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Value(placeholder(&name)?));
                }
                '}' => return Err(TemplateError::Unbalanced(source.to_owned())),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// Whether the template inserts `{roomUrl}`, which a webhook without a
    /// room does not have.
    pub fn uses_room_url(&self) -> bool {
        self.parts.contains(&Part::Value(Placeholder::RoomUrl))
    }

    /// The argument for `event`. `{roomUrl}` of a webhook without a room renders
    /// empty (a `run` command refuses to start then: see
    /// [`RunSpecError::NoRoomUrl`](crate::actions::run::RunSpecError::NoRoomUrl)). A missing or `null` data field renders empty; a
    /// number or boolean as JSON; an object or list as compact JSON.
    pub fn render(&self, event: &ActionEvent, data: Option<&Value>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Value(Placeholder::RoomUrl) => {
                    out.push_str(event.room_url.as_deref().unwrap_or_default());
                }
                Part::Value(Placeholder::Id) => out.push_str(event.webhook.id()),
                Part::Value(Placeholder::Type) => out.push_str(event.webhook.type_name()),
                Part::Value(Placeholder::Trigger) => out.push_str(&event.trigger),
                Part::Value(Placeholder::Data(path)) => {
                    let value = data
                        .and_then(|data| path.iter().try_fold(data, |at, key| at.get(key)))
                        .unwrap_or(&Value::Null);
                    match value {
                        Value::Null => {}
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        out
    }
}

fn placeholder(name: &str) -> Result<Placeholder, TemplateError> {
    Ok(match name {
        "roomUrl" => Placeholder::RoomUrl,
        "id" => Placeholder::Id,
        "type" => Placeholder::Type,
        "trigger" => Placeholder::Trigger,
        _ => {
            let path = name
                .strip_prefix("data.")
                .map(|rest| rest.split('.').map(str::to_owned).collect::<Vec<_>>())
                .filter(|path| {
                    path.iter().all(|key| {
                        !key.is_empty()
                            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
                })
                .ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
            Placeholder::Data(path)
        }
    })
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(text) => write!(f, "{}", text.replace('{', "{{").replace('}', "}}"))?,
                Part::Value(Placeholder::RoomUrl) => f.write_str("{roomUrl}")?,
                Part::Value(Placeholder::Id) => f.write_str("{id}")?,
                Part::Value(Placeholder::Type) => f.write_str("{type}")?,
                Part::Value(Placeholder::Trigger) => f.write_str("{trigger}")?,
                Part::Value(Placeholder::Data(path)) => write!(f, "{{data.{}}}", path.join("."))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::ActionKind;
    use bytes::Bytes;

    fn event(display_name: &str) -> (ActionEvent, Value) {
        let mut v: Value =
            serde_json::from_str(whereby_webhook::sample::sample("room.client.joined").unwrap())
                .unwrap();
        v["data"]["displayName"] = Value::String(display_name.to_owned());
        let raw = Bytes::from(v.to_string());
        let webhook = whereby_webhook::parse(&raw).unwrap();
        let event = ActionEvent::new(ActionKind::Start, "note-taker", webhook, raw);
        (event, v["data"].clone())
    }

    fn render(template: &str, display_name: &str) -> String {
        let (event, data) = event(display_name);
        Template::compile(template)
            .unwrap()
            .render(&event, Some(&data))
    }

    #[test]
    fn substitutes_every_placeholder() {
        assert_eq!(
            render("--room={roomUrl}", "x"),
            "--room=https://acme.whereby.com/standup-3f9a2c"
        );
        assert_eq!(
            render("{trigger}/{type}", "x"),
            "note-taker/room.client.joined"
        );
        assert!(render("{id}", "x").len() == 64);
        assert_eq!(
            render("{data.subdomain}{data.roomName}", "x"),
            "acme/standup-3f9a2c"
        );
        assert_eq!(render("{data.numClients}", "x"), "1");
        assert_eq!(render("{data.numClientsByRoleName.host}", "x"), "1");
        assert_eq!(render("{data.numClientsByRoleName}", "x"), r#"{"host":1}"#);
        assert_eq!(render("[{data.metadata}][{data.nope}]", "x"), "[][]");
        assert_eq!(render("{{literal}}", "x"), "{literal}");
    }

    #[test]
    fn values_with_spaces_and_quotes_stay_one_argument() {
        let tricky = r#"Ada "the countess" O'Lovelace; rm -rf / $(id)"#;
        assert_eq!(render("{data.displayName}", tricky), tricky);
        assert_eq!(
            render("name={data.displayName}!", tricky),
            format!("name={tricky}!")
        );
    }

    #[test]
    fn compile_errors() {
        for bad in [
            "{roomurl}",
            "{data.}",
            "{data}",
            "{data.a-b}",
            "{",
            "}",
            "a{b",
            "{a{b}}",
        ] {
            assert!(Template::compile(bad).is_err(), "{bad:?}");
        }
        let err = Template::compile("--x={room}").unwrap_err().to_string();
        assert!(err.contains("{room}"), "{err}");
    }

    #[test]
    fn display_round_trips() {
        for source in ["--room={roomUrl}", "{{x}}{data.a.b}", "plain"] {
            let t = Template::compile(source).unwrap();
            assert_eq!(t.to_string(), source);
            assert_eq!(Template::compile(&t.to_string()).unwrap(), t);
        }
    }
}
