//! Parsing a webhook body into a [`WebhookEvent`], with errors that name the field.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::event::{
    AssistantRequested, EventType, OtherWebhook, RoomClientJoined, RoomClientLeft,
    RoomSessionEnded, RoomSessionStarted, WebhookEvent,
};

/// Why a body is not a readable webhook.
///
/// Every variant that concerns one field names it with its JSON path
/// (`id`, `data.numClients`, …), so an answer can tell the sender what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON at all.
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON, but not an object.
    #[error("body is not a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("`{field}` is missing")]
    Missing {
        /// JSON path of the field, e.g. `data.roomName`.
        field: String,
    },
    /// A field is present but unusable (wrong type, out of range, empty …).
    #[error("`{field}` is invalid: {reason}")]
    Invalid {
        /// JSON path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ParseError {
    /// The JSON path of the offending field, when one field is to blame.
    pub fn field(&self) -> Option<&str> {
        match self {
            ParseError::Missing { field } | ParseError::Invalid { field, .. } => Some(field),
            ParseError::NotJson(_) | ParseError::NotAnObject => None,
        }
    }
}

/// The envelope with every field left raw, so one pass finds the fields and the
/// typed pass touches only `data`.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "apiVersion")]
    api_version: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "createdAt")]
    created_at: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Parses a webhook body as Whereby sends it.
///
/// Unknown fields are tolerated everywhere; an unknown `type` becomes
/// [`WebhookEvent::Other`] with its `data` kept raw. For the evaluated types every
/// documented field is checked, and the error names the first one that is wrong.
///
/// ```
/// use whereby_webhook::{parse, WebhookEvent};
///
/// let body = br#"{"id":"e1","apiVersion":"1.0","createdAt":"2026-11-02T09:00:41Z",
///   "type":"room.session.started",
///   "data":{"roomName":"/standup","roomSessionId":null,"subdomain":"acme"}}"#;
/// let WebhookEvent::RoomSessionStarted(started) = parse(body)? else { unreachable!() };
/// assert_eq!(started.data.subdomain, "acme");
///
/// let err = parse(br#"{"id":"e2","type":"room.session.started","apiVersion":"1.0",
///   "createdAt":"2026-11-02T09:00:41Z","data":{"roomName":"/standup"}}"#).unwrap_err();
/// assert_eq!(err.field(), Some("data.subdomain"));
/// # Ok::<(), whereby_webhook::ParseError>(())
/// ```
pub fn parse(body: &[u8]) -> Result<WebhookEvent, ParseError> {
    // serde would read a JSON array positionally into the envelope; only an object
    // is a webhook.
    let starts_as_object = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !starts_as_object {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ParseError::NotAnObject,
                Err(e) => ParseError::NotJson(strip_position(&e.to_string())),
            },
        );
    }
    let envelope: RawEnvelope<'_> = serde_json::from_slice(body).map_err(|e| top_level(body, e))?;

    let id: String = required(envelope.id, "id")?;
    if id.is_empty() {
        return Err(invalid("id", "must not be empty"));
    }
    let type_raw = envelope.event_type.ok_or_else(|| missing("type"))?;
    // Borrow the type name when it has no escapes (always, in practice).
    let type_name: Cow<'_, str> = match serde_json::from_str::<&str>(type_raw.get()) {
        Ok(name) => Cow::Borrowed(name),
        Err(_) => Cow::Owned(
            serde_json::from_str(type_raw.get())
                .map_err(|_| invalid("type", "must be a string"))?,
        ),
    };

    let Some(event_type) = EventType::from_name(&type_name) else {
        return Ok(WebhookEvent::Other(OtherWebhook {
            id,
            event_type: type_name.into_owned(),
            api_version: lenient_string(envelope.api_version),
            created_at: lenient_string(envelope.created_at),
            data: envelope.data.map(RawValue::to_owned),
        }));
    };

    let api_version: String = required(envelope.api_version, "apiVersion")?;
    let created_at: String = required(envelope.created_at, "createdAt")?;
    // Room state orders events by createdAt, so an evaluated event must have one
    // that can be ordered.
    if crate::time::parse_rfc3339_millis(&created_at).is_none() {
        return Err(invalid(
            "createdAt",
            "must be an RFC 3339 time such as 2026-11-02T09:00:03.120Z",
        ));
    }
    let data = envelope.data.ok_or_else(|| missing("data"))?;

    Ok(match event_type {
        EventType::RoomClientJoined => WebhookEvent::RoomClientJoined(RoomClientJoined {
            id,
            api_version,
            created_at,
            data: typed_data(data)?,
        }),
        EventType::RoomClientLeft => WebhookEvent::RoomClientLeft(RoomClientLeft {
            id,
            api_version,
            created_at,
            data: typed_data(data)?,
        }),
        EventType::RoomSessionStarted => WebhookEvent::RoomSessionStarted(RoomSessionStarted {
            id,
            api_version,
            created_at,
            data: typed_data(data)?,
        }),
        EventType::RoomSessionEnded => WebhookEvent::RoomSessionEnded(RoomSessionEnded {
            id,
            api_version,
            created_at,
            data: typed_data(data)?,
        }),
        EventType::AssistantRequested => WebhookEvent::AssistantRequested(AssistantRequested {
            id,
            api_version,
            created_at,
            data: typed_data(data)?,
        }),
    })
}

fn missing(field: &str) -> ParseError {
    ParseError::Missing {
        field: field.to_owned(),
    }
}

fn invalid(field: &str, reason: &str) -> ParseError {
    ParseError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Explains why an object was refused; only runs on the error path.
fn top_level(body: &[u8], err: serde_json::Error) -> ParseError {
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        // A well-formed object that the envelope still refused: a repeated key.
        ParseError::Invalid {
            field: duplicated_field(&err).unwrap_or_else(|| "body".to_owned()),
            reason: strip_position(&err.to_string()),
        }
    } else {
        ParseError::NotJson(strip_position(&err.to_string()))
    }
}

fn duplicated_field(err: &serde_json::Error) -> Option<String> {
    let msg = err.to_string();
    let rest = msg.strip_prefix("duplicate field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// A required string field of the envelope.
fn required(raw: Option<&RawValue>, field: &str) -> Result<String, ParseError> {
    let raw = raw.ok_or_else(|| missing(field))?;
    serde_json::from_str(raw.get()).map_err(|_| invalid(field, "must be a string"))
}

/// An optional string of an ignored type: anything but a string counts as absent,
/// because a type we do not evaluate must never be refused for its shape.
fn lenient_string(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
}

/// Deserialises `data`, naming the field on failure (`data.numClients`, …).
fn typed_data<T: DeserializeOwned>(data: &RawValue) -> Result<T, ParseError> {
    if let Ok(value) = serde_json::from_str(data.get()) {
        return Ok(value);
    }
    // Only the failing case pays for path tracking.
    let mut de = serde_json::Deserializer::from_str(data.get());
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => Ok(value),
        Err(err) => {
            let path = err.path().to_string();
            let message = strip_position(&err.inner().to_string());
            let base = if path == "." {
                "data".to_owned()
            } else {
                format!("data.{path}")
            };
            if let Some(name) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'))
            {
                Err(ParseError::Missing {
                    field: format!("{base}.{name}"),
                })
            } else if message.starts_with("invalid type") && path == "." {
                Err(invalid("data", "must be an object"))
            } else {
                Err(ParseError::Invalid {
                    field: base,
                    reason: message,
                })
            }
        }
    }
}

/// serde_json appends " at line L column C"; positions inside `data` would be
/// misleading to a sender who sees the whole body, so they are dropped.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoleName;
    use crate::sample;

    #[test]
    fn every_fixture_parses_to_its_type() {
        for (type_name, body) in sample::SAMPLES {
            let event = parse(body.as_bytes()).unwrap_or_else(|e| panic!("{type_name}: {e}"));
            assert_eq!(event.type_name(), *type_name);
            assert_eq!(
                event.event_type().is_some(),
                EventType::from_name(type_name).is_some()
            );
        }
    }

    #[test]
    fn joined_fixture_has_every_field() {
        let WebhookEvent::RoomClientJoined(joined) =
            parse(sample::sample("room.client.joined").unwrap().as_bytes()).unwrap()
        else {
            panic!("wrong variant");
        };
        let d = &joined.data;
        assert_eq!(joined.api_version, "1.0");
        assert_eq!(joined.created_at, "2026-11-02T09:00:03.120Z");
        assert_eq!(d.subdomain, "acme");
        assert_eq!(d.room_name, "/standup-3f9a2c");
        assert_eq!(d.meeting_id.as_deref(), Some("98213"));
        assert_eq!(d.role_name, RoleName::Host);
        assert_eq!(d.num_clients, 1);
        assert_eq!(d.num_clients_by_role_name.get(&RoleName::Host), Some(&1));
        assert_eq!(d.external_id.as_deref(), Some("user-42"));
        assert_eq!(d.metadata, None);
        assert_eq!(d.is_dial_in, Some(false));
    }

    #[test]
    fn other_types_keep_raw_data() {
        let WebhookEvent::Other(other) =
            parse(sample::sample("recording.finished").unwrap().as_bytes()).unwrap()
        else {
            panic!("wrong variant");
        };
        let data: serde_json::Value =
            serde_json::from_str(other.data.as_ref().unwrap().get()).unwrap();
        assert_eq!(data["recordingId"], "rec_81c2");
    }

    #[test]
    fn unknown_type_and_fields_are_tolerated() {
        let event =
            parse(br#"{"id":"x","type":"room.future","data":[1,2],"apiVersion":2}"#).unwrap();
        assert_eq!(event.type_name(), "room.future");
        assert_eq!(event.created_at(), None);
        let event = parse(
            br#"{"id":"x","apiVersion":"1.0","createdAt":"2026-11-02T09:00:00Z","type":"room.session.ended",
            "extra":{"a":1},"data":{"roomName":"/r","roomSessionId":null,"subdomain":"a","new":true}}"#,
        )
        .unwrap();
        assert_eq!(event.in_room().unwrap().room_session_id(), None);
    }

    #[test]
    fn unknown_role_name_is_readable() {
        let body = sample::sample("room.client.joined")
            .unwrap()
            .replace("\"roleName\": \"host\"", "\"roleName\": \"moderator\"");
        let WebhookEvent::RoomClientJoined(joined) = parse(body.as_bytes()).unwrap() else {
            panic!("wrong variant");
        };
        assert_eq!(joined.data.role_name, RoleName::Other("moderator".into()));
    }

    fn field_of(body: &str) -> Option<String> {
        parse(body.as_bytes())
            .unwrap_err()
            .field()
            .map(str::to_owned)
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            parse(b"nope").unwrap_err(),
            ParseError::NotJson("expected ident".into())
        );
        assert_eq!(parse(b"[1]").unwrap_err(), ParseError::NotAnObject);
        assert_eq!(parse(b" \"s\" ").unwrap_err(), ParseError::NotAnObject);
        assert!(matches!(
            parse(b"{\"id\":").unwrap_err(),
            ParseError::NotJson(_)
        ));
        assert_eq!(field_of(r#"{"type":"x"}"#).as_deref(), Some("id"));
        assert_eq!(field_of(r#"{"id":7,"type":"x"}"#).as_deref(), Some("id"));
        assert_eq!(field_of(r#"{"id":"","type":"x"}"#).as_deref(), Some("id"));
        assert_eq!(field_of(r#"{"id":"a"}"#).as_deref(), Some("type"));
        assert_eq!(
            field_of(r#"{"id":"a","type":null}"#).as_deref(),
            Some("type")
        );
        assert_eq!(
            field_of(r#"{"id":"a","id":"b","type":"x"}"#).as_deref(),
            Some("id")
        );

        let ok = sample::sample("room.client.joined").unwrap();
        let v: serde_json::Value = serde_json::from_str(ok).unwrap();
        let with = |path: &[&str], value: Option<serde_json::Value>| {
            let mut v = v.clone();
            let mut at = &mut v;
            for key in &path[..path.len() - 1] {
                at = &mut at[*key];
            }
            let obj = at.as_object_mut().unwrap();
            match value {
                Some(value) => obj.insert(path[path.len() - 1].into(), value),
                None => obj.remove(path[path.len() - 1]),
            };
            v.to_string()
        };
        use serde_json::json;
        let cases = [
            (with(&["data", "roomName"], None), "data.roomName"),
            (with(&["data", "subdomain"], None), "data.subdomain"),
            (
                with(&["data", "numClients"], Some(json!("3"))),
                "data.numClients",
            ),
            (
                with(&["data", "numClients"], Some(json!(-1))),
                "data.numClients",
            ),
            (with(&["data", "roleName"], Some(json!(5))), "data.roleName"),
            (
                with(
                    &["data", "numClientsByRoleName"],
                    Some(json!({"host": "x"})),
                ),
                "data.numClientsByRoleName.host",
            ),
            (with(&["data"], None), "data"),
            (with(&["data"], Some(json!("s"))), "data"),
            (with(&["apiVersion"], None), "apiVersion"),
            (with(&["createdAt"], Some(json!(1))), "createdAt"),
            (
                with(&["createdAt"], Some(json!("last tuesday"))),
                "createdAt",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(&body).as_deref(), Some(field), "{body}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON values of any shape, to feed the parser structures it does not expect.
        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                "\\PC{0,12}".prop_map(serde_json::Value::from),
                prop::sample::select(vec![
                    "room.client.joined",
                    "assistant.requested",
                    "host",
                    "/r"
                ])
                .prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(
                        prop::sample::select(vec![
                            "id",
                            "type",
                            "data",
                            "apiVersion",
                            "createdAt",
                            "roomName",
                            "subdomain",
                            "roleName",
                            "numClients",
                            "numClientsByRoleName",
                            "x",
                        ])
                        .prop_map(str::to_owned),
                        inner,
                        0..6,
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = parse(&body);
            }

            #[test]
            fn never_panics_on_json(value in json()) {
                let _ = parse(value.to_string().as_bytes());
            }

            /// Any fixture with one data field replaced still parses or fails with
            /// an error that names a field under `data`.
            #[test]
            fn a_broken_data_field_is_named(index in 0usize..5, key in "[a-zA-Z]{1,16}", value in json()) {
                let (_, body) = sample::SAMPLES[index];
                let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
                v["data"][key.as_str()] = value;
                if let Err(err) = parse(v.to_string().as_bytes()) {
                    let field = err.field().unwrap_or_default().to_owned();
                    prop_assert!(field.starts_with("data."), "{err}");
                }
            }
        }
    }
}
