use super::*;

const SECRET: &str = "Bearer hunter2-very-secret";

fn spec(url: &str) -> ForwardSpec {
    ForwardSpec {
        headers: vec![("Authorization".into(), SECRET.into())],
        ..ForwardSpec::new(url)
    }
}

fn error_of(spec: &ForwardSpec) -> String {
    spec.validate().unwrap_err().to_string()
}

#[test]
fn valid_specs_pass() {
    spec("http://127.0.0.1:9000/assistants").validate().unwrap();
    spec("https://assistants.example.com/start?x=1")
        .validate()
        .unwrap();
}

#[test]
fn bad_urls_are_named() {
    let e = error_of(&spec("not a url"));
    assert!(e.contains("\"not a url\""), "{e}");
    let e = error_of(&spec("ftp://files.example.com/in"));
    assert!(e.contains("ftp") && e.contains("files.example.com"), "{e}");
    // The password of a URL with the wrong scheme is not echoed.
    let e = error_of(&spec("ws://user:pa55@example.com/"));
    assert!(!e.contains("pa55"), "{e}");
}

#[test]
fn bad_headers_are_named_without_their_value() {
    let mut s = spec("http://127.0.0.1/");
    s.headers = vec![("Bad Name".into(), SECRET.into())];
    let e = error_of(&s);
    assert!(e.contains("\"Bad Name\"") && !e.contains("hunter2"), "{e}");

    s.headers = vec![(
        "Authorization".into(),
        "Bearer hunter2\nX-Injected: 1".into(),
    )];
    let e = error_of(&s);
    assert!(
        e.contains("\"Authorization\"") && !e.contains("hunter2"),
        "{e}"
    );

    s.headers = vec![("Idempotency-Key".into(), "mine".into())];
    let e = error_of(&s);
    assert!(
        e.contains("\"Idempotency-Key\"") && !e.contains("mine"),
        "{e}"
    );
    s.headers = vec![("content-type".into(), "text/plain".into())];
    assert!(matches!(
        s.validate(),
        Err(ForwardSpecError::ReservedHeader { .. })
    ));
}

#[test]
fn timeouts_and_retry_policy_are_checked() {
    let mut s = spec("http://127.0.0.1/");
    s.timeout = Duration::ZERO;
    assert!(matches!(s.validate(), Err(ForwardSpecError::ZeroTimeout)));
    let mut s = spec("http://127.0.0.1/");
    s.retry.max_attempts = 0;
    assert!(matches!(s.validate(), Err(ForwardSpecError::ZeroAttempts)));
    let mut s = spec("http://127.0.0.1/");
    s.retry.initial_backoff = Duration::from_secs(60);
    assert!(matches!(
        s.validate(),
        Err(ForwardSpecError::Backoff { .. })
    ));
}

#[test]
fn debug_hides_header_values_and_url_secrets() {
    let s = spec("http://user:pa55@127.0.0.1/in?token=t0k3n");
    let shown = format!("{s:?}");
    assert!(shown.contains("Authorization"), "{shown}");
    for secret in ["hunter2", "pa55", "t0k3n"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let action = ForwardAction::new("t".into(), s, reqwest::Client::new()).unwrap();
    let shown = format!("{action:?}");
    assert!(shown.contains("authorization"), "{shown}");
    for secret in ["hunter2", "pa55", "t0k3n"] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 100,
        initial_backoff: Duration::from_millis(250),
        max_backoff: Duration::from_secs(30),
        max_age: DEFAULT_RETRY_MAX_AGE,
    }
}

#[test]
fn backoff_ceiling_doubles_up_to_the_cap() {
    let p = policy();
    assert_eq!(p.ceiling(1), Duration::from_millis(250));
    assert_eq!(p.ceiling(2), Duration::from_millis(500));
    assert_eq!(p.ceiling(3), Duration::from_secs(1));
    assert_eq!(p.ceiling(8), Duration::from_secs(30));
    // No overflow, however many attempts.
    assert_eq!(p.ceiling(40), Duration::from_secs(30));
    assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(30));
    let huge = RetryPolicy {
        initial_backoff: Duration::MAX / 2,
        max_backoff: Duration::MAX,
        ..p
    };
    assert_eq!(huge.ceiling(5), Duration::MAX);
    for n in 1..40 {
        assert!(p.ceiling(n) <= p.ceiling(n + 1));
    }
}

#[test]
fn delay_is_jitter_times_ceiling_or_retry_after() {
    let p = policy();
    assert_eq!(p.delay(3, None, 0.0), Duration::ZERO);
    assert_eq!(p.delay(3, None, 1.0), Duration::from_secs(1));
    assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(500));
    // Out-of-range jitter is clamped rather than trusted.
    assert_eq!(p.delay(3, None, 7.0), Duration::from_secs(1));
    assert_eq!(p.delay(3, None, -1.0), Duration::ZERO);
    // Retry-After wins over backoff, but never beyond the cap.
    assert_eq!(
        p.delay(1, Some(Duration::from_secs(2)), 0.1),
        Duration::from_secs(2)
    );
    assert_eq!(p.delay(1, Some(Duration::ZERO), 0.9), Duration::ZERO);
    assert_eq!(
        p.delay(1, Some(Duration::from_secs(3600)), 0.1),
        Duration::from_secs(30)
    );
}

#[test]
fn jitter_draws_cover_the_range_and_differ() {
    let action = ForwardAction::new(
        "t".into(),
        spec("http://127.0.0.1/"),
        reqwest::Client::new(),
    )
    .unwrap();
    let draws: Vec<f64> = (0..1000).map(|_| action.inner.jitter()).collect();
    assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
    assert!(draws.iter().any(|j| *j < 0.25) && draws.iter().any(|j| *j > 0.75));
    let p = policy();
    for (n, j) in draws.iter().enumerate() {
        let attempt = (n % 12) as u32 + 1;
        let delay = p.delay(attempt, None, *j);
        assert!(delay <= p.ceiling(attempt) && delay <= p.max_backoff);
    }
}

#[test]
fn retry_after_is_seconds_only() {
    assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
    assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
    assert_eq!(
        parse_retry_after("99999999999999999999999"),
        Some(Duration::from_secs(u64::MAX))
    );
    for bad in ["", "-1", "1.5", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"] {
        assert_eq!(parse_retry_after(bad), None, "{bad:?}");
    }
}

#[test]
fn statuses_are_classified() {
    for s in [200, 201, 202, 204] {
        assert_eq!(
            classify_status(StatusCode::from_u16(s).unwrap()),
            StatusClass::Delivered
        );
    }
    for s in [408, 429, 500, 502, 503, 504] {
        assert_eq!(
            classify_status(StatusCode::from_u16(s).unwrap()),
            StatusClass::Retry
        );
    }
    for s in [301, 302, 400, 401, 403, 404, 409, 413, 422] {
        assert_eq!(
            classify_status(StatusCode::from_u16(s).unwrap()),
            StatusClass::Final
        );
    }
}

#[test]
fn idempotency_keys() {
    let key = |trigger, id, action| {
        idempotency_key(trigger, id, action)
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        key("note-taker", "evt_1", ActionKind::Start),
        "note-taker:evt_1"
    );
    assert_eq!(
        key("note-taker", "evt_1", ActionKind::Stop),
        "note-taker:evt_1:stop"
    );
    // Controls and non-ASCII, which a header value cannot carry as they are.
    assert_eq!(key("t", "a\nb", ActionKind::Start), "t:a%0Ab");
    assert_eq!(key("t", "é", ActionKind::Start), "t:%C3%A9");
}

#[test]
fn redacted_urls_hide_passwords_and_queries() {
    let url = Url::parse("https://me:pa55@example.com:8443/in?token=t0k3n").unwrap();
    assert_eq!(
        redact_url(&url),
        "https://me:redacted@example.com:8443/in?redacted"
    );
    let plain = Url::parse("http://127.0.0.1:9000/assistants").unwrap();
    assert_eq!(redact_url(&plain), "http://127.0.0.1:9000/assistants");
}

#[test]
fn signing_secrets_are_checked_and_never_shown() {
    let mut s = spec("http://127.0.0.1/");
    s.signing_secrets = vec![
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        "whsec_hunter2!".into(),
    ];
    let e = error_of(&s);
    assert!(
        e.contains("signing secret number 2") && e.contains("base64") && !e.contains("hunter2"),
        "{e}"
    );
    s.signing_secrets.truncate(1);
    s.validate().unwrap();
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("MfKQ9r8") && shown.contains("signing_secrets: 1"),
        "{shown}"
    );
}

#[test]
fn signing_reserves_the_standard_webhooks_headers() {
    for name in ["webhook-id", "Webhook-Timestamp", "webhook-signature"] {
        let mut s = spec("http://127.0.0.1/");
        s.headers = vec![(name.into(), "x".into())];
        // Free without a secret, as before signing existed.
        s.validate().unwrap();
        s.signing_secrets = vec!["whsec_YQ==".into()];
        let e = error_of(&s);
        assert!(
            e.contains(name) && e.contains("set by whereby-trigger"),
            "{e}"
        );
    }
}
