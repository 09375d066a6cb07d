//! Small helpers every layer may use; nothing here depends on another module
//! of the crate, so any module can import it without closing a cycle.

/// A boxed error, as predicates and callbacks may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The text of a panic payload, when it is one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Copies JSON onto one line that every line splitter reads as one line.
///
/// A raw CR or LF in valid JSON can only be whitespace between tokens (inside
/// strings they must be escaped), so it is dropped. U+2028, U+2029 and U+0085
/// are line breaks to some splitters (Python's `str.splitlines`, JavaScript
/// before ES2019) but may stand raw in JSON strings, where nothing else can
/// put them: they are written as `\u2028`, `\u2029`, `\u0085`, the same
/// text. `json` must be valid JSON in UTF-8, as every parsed body is.
///
/// On the path of every event a consumer gets: `memchr` finds the few bytes
/// that start what must change (none, in a compact ASCII body, which is then
/// one copy), and the runs between them are copied whole.
pub(crate) fn push_single_line(out: &mut Vec<u8>, json: &[u8]) {
    push_escaped(out, json, Breaks::Drop);
}

/// Copies `text` with U+2028, U+2029 and U+0085 written as `\u2028`,
/// `\u2029`, `\u0085`, as [`push_single_line`] does, but its CRs and LFs
/// kept: for text that is already lines (a log line, its newline included).
pub(crate) fn push_escaping_separators(out: &mut Vec<u8>, text: &[u8]) {
    push_escaped(out, text, Breaks::Keep);
}

/// What [`push_escaped`] does with a raw CR or LF.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Breaks {
    Drop,
    Keep,
}

fn push_escaped(out: &mut Vec<u8>, json: &[u8], breaks: Breaks) {
    out.reserve(json.len());
    let mut copied = 0;
    let mut from = 0;
    // Four bytes to look for and `memchr` takes three at most: U+0085's lead
    // is looked for apart, again only once the scan has passed it.
    let mut next_c2 = memchr::memchr(0xC2, json);
    loop {
        let rest = json.get(from..).unwrap_or_default();
        let other = memchr::memchr3(b'\n', b'\r', 0xE2, rest).map(|at| from + at);
        if next_c2.is_some_and(|at| at < from) {
            next_c2 = memchr::memchr(0xC2, rest).map(|at| from + at);
        }
        let at = match (other, next_c2) {
            (Some(a), Some(b)) => a.min(b),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => break,
        };
        // In UTF-8, U+0085 is C2 85 and U+2028/U+2029 are E2 80 A8/A9; a lead
        // byte is never part of another character.
        let (len, replacement): (usize, &[u8]) =
            match (json[at], json.get(at + 1), json.get(at + 2)) {
                (b'\n' | b'\r', _, _) if breaks == Breaks::Drop => (1, b""),
                (0xC2, Some(0x85), _) => (2, b"\\u0085"),
                (0xE2, Some(0x80), Some(0xA8)) => (3, b"\\u2028"),
                (0xE2, Some(0x80), Some(0xA9)) => (3, b"\\u2029"),
                _ => {
                    from = at + 1;
                    continue;
                }
            };
        out.extend_from_slice(&json[copied..at]);
        out.extend_from_slice(replacement);
        from = at + len;
        copied = from;
    }
    out.extend_from_slice(&json[copied..]);
}

/// Serialises `value` as compact JSON onto `out`, with U+2028, U+2029 and
/// U+0085 escaped as [`push_single_line`] does: for the parts of a JSON line
/// that are not the raw body (a trigger's name, a role from the payload).
pub(crate) fn write_json_line<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut serializer = serde_json::Serializer::with_formatter(out, LineSafe);
    // Serialising into a Vec fails only for a map with keys that are not
    // strings, which none of the callers' types has.
    let _ = value.serialize(&mut serializer);
}

/// serde_json's compact format, with the line separators escaped.
struct LineSafe;

impl serde_json::ser::Formatter for LineSafe {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(['\u{2028}', '\u{2029}', '\u{85}']) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let separator = rest[at..].chars().next().unwrap_or_default();
            write!(writer, "\\u{:04x}", u32::from(separator))?;
            rest = &rest[at + separator.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

/// Milliseconds since the Unix epoch: what the store records times in, so that
/// a restart (a new `Instant` origin) can still tell what has expired.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

/// How long until `at_ms` (ms since the epoch), seen at `now_ms`; `None` once
/// it has come.
pub(crate) fn until_ms(at_ms: i64, now_ms: i64) -> Option<std::time::Duration> {
    u64::try_from(at_ms.saturating_sub(now_ms))
        .ok()
        .filter(|&ms| ms > 0)
        .map(std::time::Duration::from_millis)
}

/// `duration` in whole milliseconds, as the store keeps times and spans;
/// saturates (a lease of centuries is "forever").
pub(crate) fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The candidate nearest to `word` by edit distance, if near enough to be a
/// typo of it (at most a third of its length), for "did you mean" hints
/// (re-exported as [`config::closest`](crate::config::closest) for the command).
///
/// ```
/// use whereby_trigger::config::closest;
/// assert_eq!(closest("numClient", ["numClients", "roleName"]), Some("numClients"));
/// assert_eq!(closest("zzz", ["numClients"]), None);
/// ```
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let most = word.chars().count().div_ceil(3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= most)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_ms_is_none_once_the_time_has_come() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(until_ms(1_000, 400), Some(ms(600)));
        assert_eq!(until_ms(1_000, 1_000), None);
        assert_eq!(until_ms(400, 1_000), None);
        assert_eq!(
            until_ms(i64::MAX, i64::MIN),
            Some(ms(u64::try_from(i64::MAX).unwrap()))
        );
    }

    #[test]
    fn panic_messages() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42_u8), "a panic without a message");
    }

    #[test]
    fn single_line_drops_only_line_breaks() {
        let mut out = Vec::new();
        push_single_line(&mut out, b"{\r\n \"a\": \"x\\ny\"\n}");
        assert_eq!(out, b"{ \"a\": \"x\\ny\"}");
    }

    /// Every character a line splitter may cut at, whatever its JSON
    /// neighbours: the line stays one line and the same JSON.
    #[test]
    fn lines_keep_their_breaks_and_escape_every_separator() {
        let line = "{\"id\":\"a\u{2028}b\u{2029}c\u{85}d\u{2014}\u{a0}\"}\r\n";
        let mut escaped = Vec::new();
        push_escaping_separators(&mut escaped, line.as_bytes());
        let text = std::str::from_utf8(&escaped).expect("still UTF-8");
        assert_eq!(
            text,
            "{\"id\":\"a\\u2028b\\u2029c\\u0085d\u{2014}\u{a0}\"}\r\n"
        );
        let value: serde_json::Value = serde_json::from_str(text).expect("still JSON");
        assert_eq!(value["id"], "a\u{2028}b\u{2029}c\u{85}d\u{2014}\u{a0}");
        let plain = "webhook answered id=\"a\" caf\u{e9}\n";
        let mut copied = Vec::new();
        push_escaping_separators(&mut copied, plain.as_bytes());
        assert_eq!(copied, plain.as_bytes());
    }

    #[test]
    fn single_line_escapes_every_line_separator() {
        let value = serde_json::json!({
            "a": "x\u{2028}y\u{2029}z\u{85}",
            "\u{2028}key": ["\u{85}\u{85}", "é€\u{2027}\u{202a}\u{84}"],
        });
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        let mut line = Vec::new();
        push_single_line(&mut line, &pretty);
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(
            !text.contains(['\u{2028}', '\u{2029}', '\u{85}', '\r', '\n']),
            "{text}"
        );
        assert!(
            text.contains("\\u2028key") && text.contains("\\u0085\\u0085"),
            "{text}"
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&line).unwrap(),
            value
        );

        let mut written = Vec::new();
        write_json_line(&mut written, &value);
        let text = std::str::from_utf8(&written).unwrap();
        assert!(!text.contains(['\u{2028}', '\u{2029}', '\u{85}']), "{text}");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&written).unwrap(),
            value
        );
    }

    #[test]
    fn single_line_at_the_edges() {
        let line = |json: &[u8]| {
            let mut out = Vec::new();
            push_single_line(&mut out, json);
            out
        };
        assert_eq!(line(b""), b"");
        assert_eq!(line(b"\n"), b"");
        assert_eq!(line("\u{2028}".as_bytes()), b"\\u2028");
        assert_eq!(line("\u{85}\u{85}".as_bytes()), b"\\u0085\\u0085");
        assert_eq!(line("\"\u{2029}\"\r\n".as_bytes()), b"\"\\u2029\"");
        assert_eq!(
            line("é€…".as_bytes()),
            "é€…".as_bytes(),
            "other C2/E2 characters stay"
        );
        // Not UTF-8 (never given, as bodies are checked): copied, no panic.
        assert_eq!(line(b"\xe2\x80"), b"\xe2\x80");
        assert_eq!(line(b"x\xc2"), b"x\xc2");
    }

    proptest::proptest! {
        /// Any JSON text: one line, no separator left raw, the same value.
        #[test]
        fn single_line_keeps_any_json(
            strings in proptest::collection::vec("[a\u{80}-\u{90}\u{2026}-\u{202a}\"\\\\\n]{0,6}", 0..5),
        ) {
            let value = serde_json::json!({ "s": strings });
            let pretty = serde_json::to_vec_pretty(&value).unwrap();
            let mut line = Vec::new();
            push_single_line(&mut line, &pretty);
            let text = std::str::from_utf8(&line).unwrap();
            let raw = text.contains(['\u{2028}', '\u{2029}', '\u{85}', '\r', '\n']);
            proptest::prop_assert!(!raw, "a line break left raw: {}", text);
            proptest::prop_assert_eq!(serde_json::from_str::<serde_json::Value>(text).unwrap(), value.clone());
            let mut written = Vec::new();
            write_json_line(&mut written, &value);
            proptest::prop_assert_eq!(serde_json::from_slice::<serde_json::Value>(&written).unwrap(), value);
        }
    }
}
