use super::*;
use crate::actions::ActionKind;
use bytes::Bytes;

fn event(edit: impl FnOnce(&mut Value)) -> ActionEvent {
    let mut v: Value =
        serde_json::from_str(whereby_webhook::sample::sample("room.client.joined").unwrap())
            .unwrap();
    edit(&mut v);
    let raw = Bytes::from(v.to_string());
    let webhook = whereby_webhook::parse(&raw).unwrap();
    ActionEvent::new(ActionKind::Start, "note-taker", webhook, raw)
}

fn spec(command: &[&str]) -> RunSpec {
    RunSpec {
        command: command
            .iter()
            .map(|arg| Template::compile(arg).unwrap())
            .collect(),
        stdin: StdinMode::Event,
        timeout: Duration::from_secs(60),
        stop_grace: Duration::from_secs(1),
        max_running: 1,
        when_full: WhenFull::Wait,
        restart: RestartPolicy::No,
        max_restarts: 0,
    }
}

#[test]
fn stdin_mode_reads_lowercase_and_defaults_to_event() {
    assert_eq!(
        serde_json::from_str::<StdinMode>(r#""none""#).unwrap(),
        StdinMode::None
    );
    assert_eq!(
        serde_json::from_str::<StdinMode>(r#""event""#).unwrap(),
        StdinMode::Event
    );
    assert!(serde_json::from_str::<StdinMode>(r#""None""#).is_err());
    assert_eq!(StdinMode::default(), StdinMode::Event);
}

#[test]
fn when_full_reads_lowercase_and_defaults_to_wait() {
    assert_eq!(
        serde_json::from_str::<WhenFull>(r#""wait""#).unwrap(),
        WhenFull::Wait
    );
    assert_eq!(
        serde_json::from_str::<WhenFull>(r#""drop""#).unwrap(),
        WhenFull::Drop
    );
    assert!(serde_json::from_str::<WhenFull>(r#""Drop""#).is_err());
    assert_eq!(WhenFull::default(), WhenFull::Wait);
}

#[test]
fn validate_wants_a_program_and_a_slot() {
    assert_eq!(spec(&[]).validate(), Err(RunSpecError::EmptyCommand));
    let mut zero = spec(&["true"]);
    zero.max_running = 0;
    assert_eq!(zero.validate(), Err(RunSpecError::ZeroMaxRunning));
    assert_eq!(spec(&["true"]).validate(), Ok(()));
}

#[test]
fn environment_names_the_event_and_room() {
    let env: HashMap<_, _> = environment(&event(|_| {})).into_iter().collect();
    assert_eq!(
        env["WHEREBY_ROOM_URL"],
        "https://acme.whereby.com/standup-3f9a2c"
    );
    assert_eq!(env["WHEREBY_EVENT_TYPE"], "room.client.joined");
    assert_eq!(env["WHEREBY_EVENT_ID"].len(), 64);
    assert_eq!(env["WHEREBY_TRIGGER"], "note-taker");
    assert_eq!(env["WHEREBY_SUBDOMAIN"], "acme");
    assert_eq!(env["WHEREBY_ROOM_NAME"], "/standup-3f9a2c");
    assert_eq!(
        env["WHEREBY_ROOM_SESSION_ID"],
        "c1b5e7a0-8d2f-4b6e-9a41-2f7d3e5c9b10"
    );
    let no_session = event(|v| v["data"]["roomSessionId"] = Value::Null);
    let env: HashMap<_, _> = environment(&no_session).into_iter().collect();
    assert_eq!(env["WHEREBY_ROOM_SESSION_ID"], "");
}

#[test]
fn command_renders_each_argument_whole() {
    let tricky = r#"Ada "the countess" O'Lovelace; $(id)"#;
    let e = event(|v| v["data"]["displayName"] = Value::String(tricky.into()));
    let (program, command) = command(
        &spec(&["{data.subdomain}-bin", "--name={data.displayName}"]),
        &e,
    )
    .unwrap();
    assert_eq!(program, "acme-bin");
    let args: Vec<_> = command.as_std().get_args().collect();
    assert_eq!(args, [format!("--name={tricky}").as_str()]);
    assert!(matches!(
        super::command(&spec(&[]), &e),
        Err(RunSpecError::EmptyCommand)
    ));
}

#[test]
fn data_is_empty_when_the_body_is_not_json() {
    let mut e = event(|_| {});
    assert_eq!(webhook_data(&e).unwrap()["subdomain"], "acme");
    e.raw = Bytes::from_static(b"not json");
    assert!(webhook_data(&e).is_none());
}

async fn lines(input: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for_each_line(input, |line| out.push(line.to_owned()))
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn output_is_split_into_lines() {
    assert_eq!(lines(b"a\nb\r\n\nlast").await, ["a", "b", "", "last"]);
    assert!(lines(b"").await.is_empty());
    assert_eq!(lines(b"caf\xc3\xa9 \xff\n").await, ["café \u{fffd}"]);
    let long = vec![b'x'; MAX_LINE * 2 + 3];
    let pieces = lines(&long).await;
    assert_eq!(
        pieces.iter().map(String::len).collect::<Vec<_>>(),
        [MAX_LINE, MAX_LINE, 3]
    );
}

#[cfg(unix)]
#[test]
fn signal_names() {
    assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
    assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
    assert_eq!(signal_name(64), "signal 64");
}

#[tokio::test]
async fn a_stop_before_the_spawn_cancels_it_and_the_waiting_starts() {
    let claims = crate::state::claims::Claims::new();
    let mut e = event(|_| {});
    let key = crate::state::claims::ClaimKey::new(
        "t".into(),
        crate::state::claims::OncePer::Room,
        e.room.clone().unwrap(),
        "id",
        None,
    );
    let lease = Duration::from_secs(60);
    let now = std::time::Instant::now();
    let claim = claims.try_claim(key, lease, now).unwrap();
    e.claim = Some(claim.clone());
    let e = Arc::new(e);
    let action = RunAction::new("t".into(), spec(&["/nonexistent/never-run"]));
    let job = {
        // Admitted by hand so that the job is not launched yet.
        let mut state = action.inner.lock();
        state.queue.push_back(e.clone());
        state.queue.push_back(e.clone());
        let mut jobs = action.inner.admit(&mut state);
        assert_eq!((jobs.len(), state.queue.len()), (1, 1));
        jobs.remove(0)
    };
    action.stop(e.clone());
    assert_eq!((action.running(), action.waiting()), (1, 0));
    job.run().await;
    assert_eq!(action.running(), 0);
    assert!(!claim.is_held(now));
}
