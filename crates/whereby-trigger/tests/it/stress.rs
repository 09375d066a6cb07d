//! The server under stress and attack (issue 4, section 3), against the real
//! server on `127.0.0.1:0`: slow heads and bodies, oversized heads, a thousand
//! open connections, a cap on connections, the request deadline, a panicking
//! handler, idle connections and shutdown.
//!
//! The limits are made small through the builder so the tests are quick. The
//! only sleeps are those of clients whose point is to be slow; a timing
//! assertion is either a lower bound (a timer cannot fire early) or a generous
//! upper one, and every wait is bounded by `common::TIMEOUT`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{
    JSON, Server, TIMEOUT, builder, chunked_request, raw_exchange, sample, sample_with,
    sample_with_id, send, within,
};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use whereby_trigger::limits::DEFAULT_REQUEST_DEADLINE;
use whereby_trigger::webhook::RoomClientJoined;

/// The header and body timeouts of the tests that trip them.
const SHORT: Duration = Duration::from_millis(300);

/// A timer can fire late but never early; this much slack covers the
/// millisecond rounding of clocks.
const SLACK: Duration = Duration::from_millis(20);

/// How often a slow client sends its next byte or line.
const TRICKLE: Duration = Duration::from_millis(50);

/// Reads until the server closes the connection (an end of file, or a reset
/// when it closed with bytes unread), within [`TIMEOUT`]; returns what came.
async fn read_until_closed(mut reader: impl AsyncRead + Unpin) -> Vec<u8> {
    within("the server to close the connection", async {
        let mut answer = Vec::new();
        let mut buf = [0_u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return answer,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}

/// Reads one answer's head (up to the blank line), within [`TIMEOUT`].
async fn read_head(stream: &mut TcpStream) -> String {
    within("an answer's head", async {
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read the answer");
            assert_ne!(n, 0, "closed before the end of the head: {head:?}");
            head.push(byte[0]);
        }
        String::from_utf8(head).expect("the head is text")
    })
    .await
}

/// A fresh connection, within [`TIMEOUT`].
async fn connect(server: &Server) -> TcpStream {
    within("a connection", TcpStream::connect(server.addr()))
        .await
        .expect("connect")
}

/// A Trigger whose `room.client.joined` predicate always says yes.
fn yes() -> whereby_trigger::TriggerBuilder {
    builder().on(|_: &RoomClientJoined| true)
}

/// Posts a fresh `room.client.joined` and asserts it triggers one event.
async fn assert_served(server: &mut Server, id: &str) {
    let body = sample_with_id("room.client.joined", id);
    server.post(body).await.assert_outcome("triggered");
    assert_eq!(server.next_event().await.trigger_webhook.id(), id);
}

// ---------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------

/// What became of a slow-loris client.
#[derive(Debug)]
struct Cut {
    /// From just before connecting to the server's close.
    after: Duration,
    /// What the server answered before closing.
    answer: Vec<u8>,
}

/// Sends a request head one line at a time, never finishing it, until the
/// server closes the connection; says on `started` once the first line is out.
async fn slow_loris(server_addr: std::net::SocketAddr, started: mpsc::Sender<()>) -> Cut {
    let begin = Instant::now();
    let stream = TcpStream::connect(server_addr).await.expect("connect");
    let (reader, mut writer) = stream.into_split();
    let closed = tokio::spawn(read_until_closed(reader));
    writer
        .write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("the first line");
    let _ = started.send(()).await;
    // Bounded: TIMEOUT worth of lines at most, then `closed` fails the test.
    let lines = TIMEOUT.as_millis() / TRICKLE.as_millis();
    for line in 0..lines {
        if closed.is_finished() {
            break;
        }
        tokio::time::sleep(TRICKLE).await;
        if writer
            .write_all(format!("X-Slow-{line}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let answer = closed.await.expect("reader task");
    Cut {
        after: begin.elapsed(),
        answer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_heads_are_cut_off_while_others_are_served() {
    let mut server = Server::start(yes().header_read_timeout(SHORT)).await;
    // The header timer also closes a kept-alive connection idle for SHORT: a
    // pooled connection could be reused just as it is closed, so each
    // delivery here takes a fresh one.
    server.client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client");
    let (started, mut slow_started) = mpsc::channel(32);
    let mut lorises = JoinSet::new();
    for _ in 0..20 {
        lorises.spawn(slow_loris(server.addr(), started.clone()));
    }
    drop(started);
    for _ in 0..20 {
        within("a slow client to start", slow_started.recv())
            .await
            .expect("every slow client starts");
    }

    // Twenty heads are trickling in; deliveries are answered meanwhile.
    for n in 0..5 {
        assert_served(&mut server, &format!("loris-{n}")).await;
    }

    while let Some(cut) = within("the slow clients", lorises.join_next()).await {
        let cut = cut.expect("slow client task");
        assert!(cut.after + SLACK >= SHORT, "cut off too early: {cut:?}");
        // hyper closes without an answer: there is no request to answer.
        assert!(
            cut.answer.is_empty(),
            "{}",
            String::from_utf8_lossy(&cut.answer)
        );
    }
    assert_served(&mut server, "loris-after").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_body_timeout_is_408() {
    let mut server = Server::start(yes().body_read_timeout(SHORT)).await;
    let body = sample("room.client.joined");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );

    let begin = Instant::now();
    let (reader, mut writer) = connect(&server).await.into_split();
    let answered = tokio::spawn(read_until_closed(reader));
    writer.write_all(head.as_bytes()).await.expect("the head");
    // One byte at a time: the whole body would take half a minute.
    for byte in body.as_bytes() {
        if answered.is_finished() || writer.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(TRICKLE).await;
    }
    let answer = within("the answer", answered).await.expect("reader task");
    let answer = String::from_utf8_lossy(&answer);
    assert!(begin.elapsed() + SLACK >= SHORT, "refused too early");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
    server.assert_no_event();

    // Nothing was remembered: the same webhook, sent at once, triggers.
    server.post(body).await.assert_outcome("triggered");
    server.next_event().await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Oversized heads
// ---------------------------------------------------------------------------

/// Sends a GET whose head carries `padding` bytes of one header, and returns
/// what the server answered before closing.
async fn padded_head(server: &Server, padding: usize) -> String {
    let (reader, mut writer) = connect(server).await.into_split();
    let answered = tokio::spawn(read_until_closed(reader));
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\
         Connection: close\r\n\r\n",
        "a".repeat(padding)
    );
    // The server may close before it has read all of it.
    let _ = writer.write_all(head.as_bytes()).await;
    let answer = within("the answer", answered).await.expect("reader task");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_431_or_closed_and_others_are_served() {
    let mut server = Server::start(yes().max_header_bytes(4096)).await;

    // Under the cap, a padded head is served.
    let answer = padded_head(&server, 2048).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Over it, the answer is a 431, or a reset when the server closed with the
    // rest of the head unread.
    for padding in [4096, 64 * 1024, 1024 * 1024] {
        let answer = padded_head(&server, padding).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{padding} bytes: {answer}"
        );
        assert_served(&mut server, &format!("oversized-{padding}")).await;
    }
    server.shutdown().await;

    // The default cap (16 KiB) holds as well.
    let server = Server::start(yes()).await;
    let answer = padded_head(&server, 8 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = padded_head(&server, 32 * 1024).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_cap_does_not_limit_bodies() {
    // The read buffer is capped with the head; a body up to `max_body` still
    // streams through it, in one piece or in chunks.
    let mut server = Server::start(yes().max_header_bytes(1024)).await;
    let big = |id: &str| {
        sample_with("room.client.joined", |v| {
            v["id"] = id.into();
            v["padding"] = "x".repeat(60 * 1024).into();
        })
    };
    server
        .post(big("big-body"))
        .await
        .assert_outcome("triggered");
    server.next_event().await;
    let chunked = chunked_request("/", JSON, big("big-chunked").as_bytes(), 7000);
    let (status, answer) = raw_exchange(server.addr(), &chunked).await;
    assert_eq!(status, 200, "{answer}");
    server.next_event().await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Many connections
// ---------------------------------------------------------------------------

/// Raises this process's soft limit of open files to `wanted` if it is lower:
/// the test holds both ends of every connection.
#[cfg(unix)]
#[allow(unsafe_code)]
fn ensure_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` only writes the struct it is given, which we own.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit: {}", std::io::Error::last_os_error());
    if limit.rlim_cur >= wanted as libc::rlim_t {
        return;
    }
    assert!(
        limit.rlim_max >= wanted as libc::rlim_t,
        "this test needs {wanted} open files; the hard limit is {}",
        limit.rlim_max
    );
    limit.rlim_cur = wanted as libc::rlim_t;
    // SAFETY: `setrlimit` only reads the struct it is given.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(set, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_connections_do_not_keep_a_delivery_out() {
    const HELD: usize = 1000;
    ensure_open_files(2 * HELD as u64 + 256);
    // The default limits: 1024 connections, heads within 10 s.
    let mut server = Server::start(yes()).await;

    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let mut stream = connect(&server).await;
        // A head begun and not finished: each holds a connection task.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("the first line");
        held.push(stream);
    }

    let begin = Instant::now();
    assert_served(&mut server, "among-a-thousand").await;
    let took = begin.elapsed();
    assert!(
        took < DEFAULT_REQUEST_DEADLINE,
        "answered after {took:?}, later than Whereby waits"
    );

    // The thousand are served too, once they finish their heads.
    for stream in held.iter_mut().rev().take(10) {
        stream
            .write_all(b"Host: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("the rest of the head");
        let answer = read_until_closed(&mut *stream).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    drop(held);
    assert_served(&mut server, "after-a-thousand").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_the_oldest_connection_without_a_request_gives_way() {
    let mut server = Server::start(yes().max_connections(4)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(&server).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("the first line");
        held.push(stream);
    }

    // A complete webhook beyond the cap is served at once: the connection that
    // has waited longest without a complete head is closed for it.
    assert_served(&mut server, "beyond-the-cap").await;
    let oldest = held.remove(0);
    assert!(read_until_closed(oldest).await.is_empty());
    // The others were left alone and are answered once their heads are done.
    for stream in &mut held {
        stream
            .write_all(b"Host: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("the rest of the head");
        let answer = read_until_closed(&mut *stream).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_has_a_request_in_progress_a_new_one_waits_for_a_slot() {
    let server = Server::start(builder().max_connections(2)).await;
    // Two requests in progress: heads complete, bodies still arriving (within
    // the body timeout, 3 s by default). Neither may be cut off.
    let body = sample("room.client.joined");
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&server).await;
        // `Expect: 100-continue`: the server's `100 Continue` says the head
        // was read and the handler is reading the body.
        let head = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("the head");
        let go_on = read_head(&mut stream).await;
        assert!(go_on.starts_with("HTTP/1.1 100"), "{go_on}");
        stream
            .write_all(&body.as_bytes()[..10])
            .await
            .expect("part of the body");
        busy.push(stream);
    }

    // The third connection is in the kernel's backlog, not refused.
    let waiting = tokio::spawn(send(server.request(Method::GET, "/healthz")));
    // With a free slot it would be answered in a millisecond; with none it
    // cannot be answered at all, however long this waits.
    tokio::time::sleep(SHORT).await;
    assert!(
        !waiting.is_finished(),
        "served beyond the cap, though every connection had a request in progress"
    );

    // One request ends: its slot goes to the client that waited.
    drop(busy.pop());
    let reply = within("the waiting client", waiting)
        .await
        .expect("request task");
    assert_eq!(reply.status, StatusCode::OK);
    drop(busy);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_and_idle_connections_do_not_keep_a_webhook_out() {
    const SLOW: usize = 1500;
    const IDLE: usize = 500;
    ensure_open_files(2 * (SLOW + IDLE) as u64 + 256);
    // The default limits: 1024 connections, heads within 10 s.
    let mut server = Server::start(yes()).await;
    let mut held = Vec::with_capacity(SLOW + IDLE);
    for n in 0..SLOW + IDLE {
        let mut stream = connect(&server).await;
        if n < SLOW {
            // A head begun and not finished.
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .expect("the first line");
        }
        held.push(stream);
    }

    // Connected after all of them: answered well within Whereby's 5 s.
    let begin = Instant::now();
    assert_served(&mut server, "among-two-thousand").await;
    let took = begin.elapsed();
    eprintln!(
        "answered among {} slow and idle connections in {took:?}",
        SLOW + IDLE
    );
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    drop(held);
    assert_served(&mut server, "after-two-thousand").await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Handlers that hang or panic
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_deadline_is_503_and_not_remembered() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut server = Server::start(
        builder()
            .request_deadline(SHORT)
            // Longer than the deadline: the deadline is what answers.
            .predicate_timeout(Duration::from_secs(60))
            .on_async({
                let calls = calls.clone();
                move |_: RoomClientJoined| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<bool>()
                }
            }),
    )
    .await;
    let body = sample("room.client.joined");

    let begin = Instant::now();
    let reply = server.post(body).await;
    assert!(begin.elapsed() + SLACK >= SHORT, "answered too early");
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "deadline");
    // The abandoned request released its id: Whereby's retry is evaluated afresh.
    server
        .post(body)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "deadline");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    server.assert_no_event();

    let health = send(server.request(Method::GET, "/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_panic_is_500_and_the_server_keeps_serving() {
    // An observer runs inside the handler, outside the predicates' own guard.
    let mut server = Server::start(yes().observe(|parsed| {
        if parsed.event.id() == "boom" {
            panic!("observer bug with secret details");
        }
    }))
    .await;
    let boom = sample_with_id("room.client.joined", "boom");

    for _ in 0..2 {
        let reply = server.post(boom.clone()).await;
        reply.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
        // The panic message is the operator's business, not the sender's.
        assert!(!reply.body.contains("secret details"), "{}", reply.body);
    }
    server.assert_no_event();

    // Same client, same pool of connections: still served.
    assert_served(&mut server, "after-the-panic").await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Idle connections and shutdown
// ---------------------------------------------------------------------------

const HEALTH_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed() {
    // The header timer is far off, so the idle limit is what closes.
    let server = Server::start(
        builder()
            .keep_alive_idle(SHORT)
            .header_read_timeout(Duration::from_secs(60)),
    )
    .await;
    let mut stream = connect(&server).await;
    let begin = Instant::now();
    stream.write_all(HEALTH_REQUEST).await.expect("request");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );

    let rest = read_until_closed(&mut stream).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(begin.elapsed() + SLACK >= SHORT, "closed too early");
    server.shutdown().await;

    // Zero turns keep-alive off: the answer closes the connection.
    let server = Server::start(builder().keep_alive_idle(Duration::ZERO)).await;
    let mut stream = connect(&server).await;
    stream.write_all(HEALTH_REQUEST).await.expect("request");
    let head = read_head(&mut stream).await;
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(read_until_closed(&mut stream).await.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_without_waiting_for_their_timers() {
    let long = Duration::from_secs(60);
    let server = Server::start(builder().header_read_timeout(long).keep_alive_idle(long)).await;
    let addr = server.addr();
    // One connection that never sent a byte, one kept alive after an answer.
    let mut fresh = connect(&server).await;
    let mut kept = connect(&server).await;
    kept.write_all(HEALTH_REQUEST).await.expect("request");
    assert!(read_head(&mut kept).await.starts_with("HTTP/1.1 200"));

    // Bounded by TIMEOUT, well under the 60 s timers.
    server.shutdown().await;
    assert!(read_until_closed(&mut fresh).await.is_empty());
    assert!(read_until_closed(&mut kept).await.is_empty());
    let again = within("a connection attempt", TcpStream::connect(addr)).await;
    assert!(again.is_err(), "a connection was accepted after shutdown");
}
