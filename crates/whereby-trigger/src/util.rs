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

/// Copies JSON without its line breaks. In valid JSON a raw CR or LF can only be
/// whitespace between tokens (inside strings they must be escaped), so dropping
/// them keeps the document and its meaning.
pub(crate) fn push_single_line(out: &mut Vec<u8>, json: &[u8]) {
    out.extend(json.iter().copied().filter(|b| *b != b'\n' && *b != b'\r'));
}

/// Milliseconds since the Unix epoch: what the store records times in, so that
/// a restart (a new `Instant` origin) can still tell what has expired.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

/// `duration` in whole milliseconds, as the store keeps times and spans;
/// saturates (a lease of centuries is "forever").
pub(crate) fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
