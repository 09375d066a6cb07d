//! The parser's tests: every sample and documented shape, each refusal naming
//! its field, and property tests (no panic on any bytes, no optional field can
//! fail a payload); long because each case is a payload written out.

use super::*;
use crate::sample;
use serde_json::{Value, json};

#[test]
fn every_fixture_parses_to_its_type() {
    for (type_name, body) in sample::SAMPLES {
        let parsed = parse_with(body.as_bytes(), &ParseOptions::new())
            .unwrap_or_else(|e| panic!("{type_name}: {e}"));
        assert_eq!(parsed.event.type_name(), *type_name);
        assert_eq!(
            parsed.event.event_type().is_some(),
            EventType::from_name(type_name).is_some()
        );
        assert_eq!(parsed.notes, [], "{type_name}");
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
    assert_eq!(joined.api_version.as_deref(), Some("1.0"));
    assert_eq!(
        joined.created_at.as_deref(),
        Some("2026-11-02T09:00:03.120Z")
    );
    assert_eq!(d.subdomain, "acme");
    assert_eq!(d.room_name, "/standup-3f9a2c");
    assert_eq!(d.meeting_id.as_deref(), Some("98213"));
    assert_eq!(d.role_name, Some(RoleName::Host));
    assert_eq!(d.display_name.as_deref(), Some("Ada Lovelace"));
    assert!(d.participant_id.is_some());
    assert_eq!(d.num_clients, Some(1));
    assert_eq!(
        d.num_clients_by_role_name,
        Some([(RoleName::Host, 1)].into())
    );
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
    let data: Value = serde_json::from_str(other.data.as_ref().unwrap().get()).unwrap();
    assert_eq!(data["recordingId"], "rec_81c2");
}

#[test]
fn other_types_have_a_room_when_their_data_names_one() {
    let options = ParseOptions::new()
        .with_default_subdomain("fallback")
        .unwrap();
    let room_of = |body: &str| {
        let event = parse_with(body.as_bytes(), &options).unwrap().event;
        event.in_room().map(|r| {
            (
                r.subdomain().to_owned(),
                r.room_name().to_owned(),
                r.room_session_id().map(str::to_owned),
            )
        })
    };
    assert_eq!(
        room_of(
            r#"{"id":"k","type":"room.client.knocked","data":{"roomName":"/r","subdomain":"acme","roomSessionId":"s1"}}"#
        ),
        Some(("acme".into(), "/r".into(), Some("s1".into())))
    );
    // Ids sent as numbers are read as their decimal text, as for the
    // evaluated types; a fraction is no id.
    let parsed = parse_with(
        br#"{"id":"k","type":"room.client.knocked","data":{"roomName":"/r","subdomain":"acme","roomSessionId":12345678901234567890,"meetingId":1.5}}"#,
        &options,
    )
    .unwrap();
    let room = parsed.event.in_room().unwrap();
    assert_eq!(room.room_session_id(), Some("12345678901234567890"));
    assert_eq!(room.meeting_id(), None);
    assert_eq!(parsed.notes.len(), 2, "{:?}", parsed.notes);
    // The default subdomain stands in, as for the evaluated types.
    assert_eq!(
        room_of(r#"{"id":"k","type":"transcription.started","data":{"roomName":"/r"}}"#),
        Some(("fallback".into(), "/r".into(), None))
    );
    // No room, or a room name of another type: no room, and never an error.
    for body in [
        r#"{"id":"k","type":"recording.finished","data":{"recordingId":"x"}}"#,
        r#"{"id":"k","type":"recording.finished","data":{"roomName":7}}"#,
        r#"{"id":"k","type":"recording.finished","data":{"roomName":""}}"#,
        r#"{"id":"k","type":"recording.finished","data":[1]}"#,
        r#"{"id":"k","type":"recording.finished","data":{"roomName":"/a","roomName":"/b"}}"#,
        r#"{"id":"k","type":"recording.finished"}"#,
    ] {
        assert_eq!(room_of(body), None, "{body}");
    }
    let without_default =
        parse(br#"{"id":"k","type":"room.client.knocked","data":{"roomName":"/r"}}"#).unwrap();
    assert!(without_default.in_room().is_none());
}

/// One room, one spelling: the subdomain in lower case, whatever the type;
/// and a room of a type not evaluated that makes no room URL is no room,
/// noted, never an error (an evaluated type's is refused by the room URL).
#[test]
fn rooms_have_one_spelling() {
    let options = ParseOptions::new()
        .with_default_subdomain("FallBack")
        .unwrap();
    assert_eq!(options.default_subdomain(), Some("fallback"));
    let room_of = |body: &str| {
        let parsed = parse_with(body.as_bytes(), &options).unwrap();
        let room = parsed
            .event
            .in_room()
            .map(|r| (r.subdomain().to_owned(), r.room_name().to_owned()));
        (room, parsed.notes)
    };
    for t in [
        "room.client.joined",
        "room.session.started",
        "room.client.knocked",
    ] {
        let body = format!(
            r#"{{"id":"k","type":"{t}","data":{{"roomName":"/Room","subdomain":"ACME"}}}}"#
        );
        assert_eq!(
            room_of(&body).0,
            Some(("acme".into(), "/Room".into())),
            "{t}"
        );
        let body = format!(r#"{{"id":"k","type":"{t}","data":{{"roomName":"/Room"}}}}"#);
        assert_eq!(
            room_of(&body).0,
            Some(("fallback".into(), "/Room".into())),
            "{t}"
        );
    }
    for (data, field) in [
        (
            r#"{"roomName":"/x/../room","subdomain":"acme"}"#,
            "data.roomName",
        ),
        (
            r#"{"roomName":"/a%2Fb","subdomain":"acme"}"#,
            "data.roomName",
        ),
        (
            r#"{"roomName":"/r","subdomain":"evil.com"}"#,
            "data.subdomain",
        ),
    ] {
        let body = format!(r#"{{"id":"k","type":"room.client.knocked","data":{data}}}"#);
        let (room, notes) = room_of(&body);
        assert_eq!(room, None, "{data}");
        assert_eq!(
            notes,
            [FieldNote {
                field: field.into(),
                found: JsonType::String,
                treatment: Treatment::NoRoom
            }],
            "{data}"
        );
    }
}

#[test]
fn unknown_type_and_fields_are_tolerated() {
    let event = parse(br#"{"id":"x","type":"room.future","data":[1,2],"apiVersion":2}"#).unwrap();
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
    assert_eq!(
        joined.data.role_name,
        Some(RoleName::Other("moderator".into()))
    );
}

/// The documented shapes, each with what the typed webhook must say.
#[test]
fn every_documented_shape_parses() {
    let options = ParseOptions::new()
        .with_default_subdomain("fallback")
        .unwrap();
    for shape in sample::SHAPES {
        let parsed = parse_with(shape.body.as_bytes(), &options)
            .unwrap_or_else(|e| panic!("{}: {e}", shape.name));
        let raw: Value = serde_json::from_str(shape.body).unwrap();
        assert_eq!(parsed.event.id(), raw["id"].as_str().unwrap());
        assert_eq!(parsed.event.type_name(), shape.event_type, "{}", shape.name);
        if let Some(room) = parsed.event.in_room() {
            let expected = raw["data"]["subdomain"].as_str().unwrap_or("fallback");
            assert_eq!(room.subdomain(), expected, "{}", shape.name);
            assert_eq!(
                Some(room.room_name()),
                raw["data"]["roomName"].as_str(),
                "{}",
                shape.name
            );
        }
    }
    let by_name = |name: &str| {
        let shape = sample::SHAPES.iter().find(|s| s.name == name).unwrap();
        parse_with(shape.body.as_bytes(), &options).unwrap()
    };
    let parsed = by_name("joined-null-name-numeric-meeting");
    let WebhookEvent::RoomClientJoined(joined) = &parsed.event else {
        panic!("wrong variant")
    };
    assert_eq!(joined.data.display_name, None);
    assert_eq!(joined.data.meeting_id.as_deref(), Some("55104"));
    assert_eq!(
        parsed.notes,
        [FieldNote {
            field: "data.meetingId".into(),
            found: JsonType::Number,
            treatment: Treatment::AsText
        }]
    );
    let parsed = by_name("joined-2025-no-participant-id");
    let WebhookEvent::RoomClientJoined(joined) = &parsed.event else {
        panic!("wrong variant")
    };
    assert_eq!(joined.data.participant_id, None);
    assert_eq!(parsed.notes, []);
    let parsed = by_name("joined-no-role-counts");
    let WebhookEvent::RoomClientJoined(joined) = &parsed.event else {
        panic!("wrong variant")
    };
    assert_eq!(joined.data.num_clients_by_role_name, None);
    assert_eq!(joined.data.num_clients, Some(1));
    let parsed = by_name("joined-2021-no-subdomain");
    let WebhookEvent::RoomClientJoined(joined) = &parsed.event else {
        panic!("wrong variant")
    };
    assert_eq!(joined.data.role_name, Some(RoleName::Visitor));
}

#[test]
fn a_payload_subdomain_wins_over_the_default() {
    let options = ParseOptions::new()
        .with_default_subdomain("fallback")
        .unwrap();
    let body = sample::sample("room.session.started").unwrap();
    let event = parse_with(body.as_bytes(), &options).unwrap().event;
    assert_eq!(event.in_room().unwrap().subdomain(), "acme");
    // `null` is no subdomain.
    let mut v: Value = serde_json::from_str(body).unwrap();
    v["data"]["subdomain"] = Value::Null;
    let event = parse_with(v.to_string().as_bytes(), &options)
        .unwrap()
        .event;
    assert_eq!(event.in_room().unwrap().subdomain(), "fallback");
    assert_eq!(
        parse(v.to_string().as_bytes()).unwrap_err(),
        ParseError::NoSubdomain
    );
}

#[test]
fn a_default_subdomain_must_be_a_dns_label() {
    for bad in ["", "a.b", "evil.com/x", "-a", "xn--a", "a b"] {
        assert!(
            ParseOptions::new().with_default_subdomain(bad).is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        ParseOptions::new()
            .with_default_subdomain("acme-2")
            .unwrap()
            .default_subdomain(),
        Some("acme-2")
    );
}

/// What a lenient read gives for one field of the joined sample set to
/// `value`: the typed data, and the notes.
fn joined_with(field: &str, value: Value) -> (ClientData, Vec<FieldNote>) {
    let mut v: Value = serde_json::from_str(sample::sample("room.client.joined").unwrap()).unwrap();
    v["data"][field] = value;
    let parsed = parse_with(v.to_string().as_bytes(), &ParseOptions::new())
        .unwrap_or_else(|e| panic!("{field}: {e}"));
    let WebhookEvent::RoomClientJoined(joined) = parsed.event else {
        panic!("wrong variant");
    };
    (joined.data, parsed.notes)
}

#[test]
fn ids_that_are_numbers_are_read_as_their_text() {
    let (d, notes) = joined_with("meetingId", json!(134));
    assert_eq!(d.meeting_id.as_deref(), Some("134"));
    assert_eq!(notes[0].treatment, Treatment::AsText);
    // Every digit as sent, beyond what a u64 holds.
    let body = sample::sample("room.client.joined").unwrap().replace(
        "\"meetingId\": \"98213\"",
        "\"meetingId\": 123456789012345678901234567890",
    );
    let event = parse(body.as_bytes()).unwrap();
    assert_eq!(
        event.in_room().unwrap().meeting_id(),
        Some("123456789012345678901234567890")
    );
    let (d, _) = joined_with("roomSessionId", json!(-7));
    assert_eq!(d.room_session_id.as_deref(), Some("-7"));
    let (d, notes) = joined_with("externalId", json!(1.5));
    assert_eq!(d.external_id, None);
    assert_eq!(notes[0].treatment, Treatment::Ignored);
    // The event id too.
    let body =
        br#"{"id":42,"type":"room.session.started","data":{"roomName":"/r","subdomain":"a"}}"#;
    assert_eq!(parse(body).unwrap().id(), "42");
}

#[test]
fn fields_of_another_type_are_none_and_noted() {
    let cases = [
        ("displayName", json!(7), JsonType::Number),
        ("roleName", json!(5), JsonType::Number),
        ("numClients", json!("3"), JsonType::String),
        ("numClients", json!(-1), JsonType::Number),
        ("numClients", json!(2.5), JsonType::Number),
        ("numClientsByRoleName", json!([1]), JsonType::Array),
        ("isDialIn", json!("no"), JsonType::String),
        ("metadata", json!({"a": 1}), JsonType::Object),
        ("meetingId", json!(true), JsonType::Bool),
    ];
    for (field, value, found) in cases {
        let (d, notes) = joined_with(field, value.clone());
        let typed = serde_json::to_value(&d).unwrap();
        assert_eq!(typed.get(field), None, "{field} = {value}");
        assert_eq!(
            notes,
            [FieldNote {
                field: format!("data.{field}"),
                found,
                treatment: Treatment::Ignored
            }],
            "{field} = {value}"
        );
    }
    // One count that is not a count leaves the whole map out.
    let (d, notes) = joined_with("numClientsByRoleName", json!({"host": 1, "member": "x"}));
    assert_eq!(d.num_clients_by_role_name, None);
    assert_eq!(notes[0].field, "data.numClientsByRoleName.member");
    // `null` is absent, without a note.
    let (d, notes) = joined_with("displayName", Value::Null);
    assert_eq!((d.display_name, notes), (None, vec![]));
}

#[test]
fn envelope_fields_but_id_and_type_are_optional() {
    let mut v: Value =
        serde_json::from_str(sample::sample("assistant.requested").unwrap()).unwrap();
    let object = v.as_object_mut().unwrap();
    object.remove("apiVersion");
    object.insert("createdAt".into(), json!("last tuesday"));
    let parsed = parse_with(v.to_string().as_bytes(), &ParseOptions::new()).unwrap();
    assert_eq!(parsed.event.created_at(), Some("last tuesday"));
    assert_eq!(parsed.event.created_at_millis(), None);
    assert_eq!(parsed.notes[0].treatment, Treatment::Unreadable);
    v["createdAt"] = json!(17);
    let parsed = parse_with(v.to_string().as_bytes(), &ParseOptions::new()).unwrap();
    assert_eq!(parsed.event.created_at(), None);
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
    assert_eq!(field_of(r#"{"id":true,"type":"x"}"#).as_deref(), Some("id"));
    assert_eq!(field_of(r#"{"id":1.5,"type":"x"}"#).as_deref(), Some("id"));
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
    let v: Value = serde_json::from_str(ok).unwrap();
    let with = |path: &[&str], value: Option<Value>| {
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
    let cases = [
        (with(&["data", "roomName"], None), "data.roomName"),
        (with(&["data", "roomName"], Some(json!(5))), "data.roomName"),
        (with(&["data", "subdomain"], None), "data.subdomain"),
        (
            with(&["data", "subdomain"], Some(json!(5))),
            "data.subdomain",
        ),
        (with(&["data"], None), "data"),
        (with(&["data"], Some(Value::Null)), "data"),
        (with(&["data"], Some(json!("s"))), "data"),
        (with(&["data"], Some(json!([1]))), "data"),
    ];
    for (body, field) in cases {
        assert_eq!(field_of(&body).as_deref(), Some(field), "{body}");
    }
    let repeated = ok.replace(
        "\"roomName\": \"/standup-3f9a2c\",",
        "\"roomName\": \"/a\", \"roomName\": \"/b\",",
    );
    assert_eq!(field_of(&repeated).as_deref(), Some("data.roomName"));
    assert_eq!(
        parse(with(&["data", "subdomain"], None).as_bytes()).unwrap_err(),
        ParseError::NoSubdomain
    );
}

/// Invalid UTF-8 anywhere is refused, in the fields serde skips unseen too
/// (an unknown field, an ignored type's `data`): the body reaches consumers as
/// sent, and JSON text is UTF-8.
#[test]
fn a_body_that_is_not_utf8_is_refused_wherever_the_bytes_are() {
    let ok = sample::sample("room.client.joined").unwrap();
    let at = ok.find("\"data\"").unwrap();
    for bad in [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"] {
        let mut body = ok.as_bytes()[..at].to_vec();
        body.extend_from_slice(b"\"extra\":\"");
        body.extend_from_slice(bad);
        body.extend_from_slice(b"\",");
        body.extend_from_slice(&ok.as_bytes()[at..]);
        let err = parse(&body).unwrap_err();
        assert_eq!(err, ParseError::NotUtf8 { at: at + 9 }, "{bad:?}");
        assert_eq!(err.field(), None);
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
    let other = b"{\"id\":\"k\",\"type\":\"recording.finished\",\"data\":{\"name\":\"\xff\"}}";
    assert!(matches!(parse(other), Err(ParseError::NotUtf8 { .. })));
    // Escaped, the same characters are JSON and welcome.
    let escaped = ok.replace("\"data\"", "\"extra\":\"\\u00ff\\ud83d\\ude00\",\"data\"");
    assert!(parse(escaped.as_bytes()).is_ok());
}

/// Nesting is bounded in the whole body, not only in what the parser reads.
#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    let ok = sample::sample("room.client.joined").unwrap();
    let at = ok.find("\"data\"").unwrap();
    let nested = |levels: usize| {
        // The top-level object is one level.
        let inner = levels - 1;
        format!(
            "{}\"extra\":{}{},{}",
            &ok[..at],
            "[".repeat(inner),
            "]".repeat(inner),
            &ok[at..]
        )
    };
    assert!(parse(nested(MAX_DEPTH).as_bytes()).is_ok());
    let err = parse(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err();
    assert_eq!(err, ParseError::TooDeep { limit: MAX_DEPTH });
    assert!(err.to_string().contains("64"), "{err}");
    assert!(parse(nested(10_000).as_bytes()).is_err());
    // Brackets inside strings, escaped quotes included, are text.
    let text = format!("\"\\\"{}\"", "[{".repeat(100));
    let in_a_string = ok.replace("\"data\"", &format!("\"extra\":{text},\"data\""));
    assert!(parse(in_a_string.as_bytes()).is_ok());
    // An ignored type's `data` counts as well.
    let deep = format!(
        r#"{{"id":"k","type":"recording.finished","data":{}{}}}"#,
        "{\"a\":".repeat(MAX_DEPTH),
        "}".repeat(MAX_DEPTH)
    );
    assert_eq!(
        parse(deep.as_bytes()).unwrap_err(),
        ParseError::TooDeep { limit: MAX_DEPTH }
    );
}

/// A documented field of `data` given twice is refused naming that field
/// (`data.subdomain`), not `data`, in every payload of an evaluated type and
/// wherever the repeat stands; a repeated field the parser does not read is
/// no reason to refuse.
#[test]
fn a_repeated_field_of_data_is_named() {
    const DOCUMENTED: [&str; 12] = [
        "meetingId",
        "roomName",
        "roomSessionId",
        "subdomain",
        "displayName",
        "participantId",
        "metadata",
        "externalId",
        "roleName",
        "numClients",
        "numClientsByRoleName",
        "isDialIn",
    ];
    let options = ParseOptions::new()
        .with_default_subdomain("fallback")
        .unwrap();
    for payload in evaluated_payloads() {
        // `{"data":{…},…}`, with `…` of `data` as given.
        let with_data = |inner: &str| {
            let mut envelope = payload.clone();
            envelope.as_object_mut().unwrap().remove("data");
            format!("{{\"data\":{{{inner}}},{}", &envelope.to_string()[1..])
        };
        let data = payload["data"].to_string();
        let data = &data[1..data.len() - 1];
        for field in DOCUMENTED {
            let repeat = format!("\"{field}\":null");
            for inner in [format!("{repeat},{data}"), format!("{data},{repeat}")] {
                let body = with_data(&inner);
                let Err(err) = parse_with(body.as_bytes(), &options) else {
                    // Only when `data` did not have it: then it is no repeat.
                    assert!(payload["data"].get(field).is_none(), "{body}");
                    continue;
                };
                assert_eq!(
                    err.field(),
                    Some(format!("data.{field}").as_str()),
                    "{body}"
                );
                assert!(err.to_string().contains("duplicate"), "{err}");
            }
        }
        let unknown = with_data(&format!("\"x\":1,\"x\":2,{data}"));
        assert!(
            parse_with(unknown.as_bytes(), &options).is_ok(),
            "{unknown}"
        );
    }
}

/// Every sample and documented shape of an evaluated type, as JSON.
fn evaluated_payloads() -> Vec<Value> {
    sample::evaluated()
        .map(|body| serde_json::from_str(body).unwrap())
        .collect()
}

/// The fields a payload may go without (with a default subdomain, that one
/// too): `data`'s all but `roomName`, and the envelope's but `id`, `type`
/// and `data`.
fn optional_fields(payload: &Value) -> Vec<(bool, String)> {
    let mut fields: Vec<(bool, String)> = payload["data"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "roomName")
        .map(|k| (true, k.clone()))
        .collect();
    fields.extend(
        payload
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !["id", "type", "data"].contains(&k.as_str()))
            .map(|k| (false, k.clone())),
    );
    fields
}

/// Removes `field` from `payload` (`None`) or sets it to `value`.
fn changed(payload: &Value, in_data: bool, field: &str, value: Option<Value>) -> Value {
    let mut v = payload.clone();
    let object = if in_data {
        v["data"].as_object_mut().unwrap()
    } else {
        v.as_object_mut().unwrap()
    };
    match value {
        Some(value) => object.insert(field.to_owned(), value),
        None => object.remove(field),
    };
    v
}

/// Removing any optional field of any documented payload, or setting it to
/// `null` or to a value of each other JSON type, never makes it unreadable.
#[test]
fn no_optional_field_can_fail_a_payload() {
    let options = ParseOptions::new()
        .with_default_subdomain("fallback")
        .unwrap();
    let values = [
        None,
        Some(Value::Null),
        Some(json!(true)),
        Some(json!(12)),
        Some(json!(-3.5)),
        Some(json!("text")),
        Some(json!([1, "a"])),
        Some(json!({"k": [null]})),
    ];
    for payload in evaluated_payloads() {
        for (in_data, field) in optional_fields(&payload) {
            for value in &values {
                // The subdomain may be absent (the default fills in), not
                // of another type: that would send the assistant elsewhere.
                let other_type = value.as_ref().is_some_and(|v| !v.is_null());
                if field == "subdomain" && other_type {
                    continue;
                }
                let body = changed(&payload, in_data, &field, value.clone()).to_string();
                let result = parse_with(body.as_bytes(), &options);
                assert!(
                    result.is_ok(),
                    "{field} = {value:?}: {:?}\n{body}",
                    result.err()
                );
            }
        }
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// JSON values of any shape, to feed the parser structures it does not expect.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            prop::sample::select(vec![
                "room.client.joined",
                "assistant.requested",
                "host",
                "/r"
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
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
                .prop_map(|m| Value::Object(m.into_iter().collect())),
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

        /// Bytes that are not UTF-8 anywhere in a payload are refused, never
        /// read around; and a refusal says where.
        #[test]
        fn invalid_utf8_is_refused_anywhere(index in 0usize..16, pick in any::<prop::sample::Index>(), bad in prop::sample::select(vec![0x80u8, 0xbf, 0xc0, 0xc1, 0xf5, 0xff])) {
            let payloads = evaluated_payloads();
            let body = payloads[index % payloads.len()].to_string().into_bytes();
            let at = pick.index(body.len());
            let mut broken = body.clone();
            broken.insert(at, bad);
            let err = parse(&broken).unwrap_err();
            // Inserted inside a multi-byte character, the stray byte may complete it
            // and the next one be the first that is not UTF-8.
            prop_assert!(matches!(err, ParseError::NotUtf8 { at: found } if found <= at + 3), "{}", err);
        }

        /// A body is refused for its depth exactly when it nests deeper than
        /// [`MAX_DEPTH`], however the levels are spelled; shallower, it parses.
        #[test]
        fn depth_is_refused_beyond_the_limit_only(
            opens in prop::collection::vec(prop::bool::ANY, 1..(MAX_DEPTH + 8)),
            key in "[a-z\\[\\]{}\"]{0,4}",
        ) {
            let ok = sample::sample("room.client.joined").unwrap();
            let at = ok.find("\"data\"").unwrap();
            let mut value = String::new();
            for &array in &opens {
                value.push_str(if array { "[" } else { "{\"k\":" });
            }
            value.push_str(&serde_json::to_string(&key).unwrap());
            for &array in opens.iter().rev() {
                value.push(if array { ']' } else { '}' });
            }
            let body = format!("{}\"extra\":{value},{}", &ok[..at], &ok[at..]);
            let result = parse(body.as_bytes());
            if opens.len() + 1 > MAX_DEPTH {
                prop_assert_eq!(result.unwrap_err(), ParseError::TooDeep { limit: MAX_DEPTH });
            } else {
                prop_assert!(result.is_ok(), "{:?}", result.err());
            }
        }

        /// Any documented payload, with any number of its optional fields
        /// removed or replaced by any JSON value, still parses; the typed
        /// webhook keeps its id and room.
        #[test]
        fn optional_fields_never_fail(
            index in 0usize..16,
            changes in prop::collection::vec((any::<prop::sample::Index>(), prop::option::of(json())), 1..6),
        ) {
            let payloads = evaluated_payloads();
            let payload = &payloads[index % payloads.len()];
            let fields = optional_fields(payload);
            let mut v = payload.clone();
            for (pick, value) in changes {
                let (in_data, field) = pick.get(&fields);
                let value = match value {
                    Some(value) if field == "subdomain" && !value.is_null() => continue,
                    other => other,
                };
                v = changed(&v, *in_data, field, value);
            }
            let options = ParseOptions::new().with_default_subdomain("fallback").unwrap();
            let parsed = parse_with(v.to_string().as_bytes(), &options);
            prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed.err(), v);
            let event = parsed.unwrap().event;
            prop_assert_eq!(event.id(), payload["id"].as_str().unwrap());
            let room = event.in_room().unwrap();
            prop_assert_eq!(Some(room.room_name()), payload["data"]["roomName"].as_str());
        }

        /// Any field under `data` replaced by anything: parses, or fails
        /// with an error that names a required field under `data`.
        #[test]
        fn a_broken_data_field_is_named(index in 0usize..5, key in "[a-zA-Z]{1,16}", value in json()) {
            let (_, body) = sample::SAMPLES[index];
            let mut v: Value = serde_json::from_str(body).unwrap();
            v["data"][key.as_str()] = value;
            if let Err(err) = parse(v.to_string().as_bytes()) {
                let field = err.field().unwrap_or_default().to_owned();
                prop_assert!(
                    field == "data.roomName" || field == "data.subdomain",
                    "{err}"
                );
            }
        }
    }
}
