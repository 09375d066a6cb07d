//! Several `serve` processes on one PostgreSQL database act as one: the real
//! binary, two replicas, webhooks posted concurrently to either, duplicates
//! racing at both, and the counts checked where the actions arrive.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::common::binary::{Server, loopback_command, poll};
use crate::common::fixture::TempDir;
use crate::common::postgres::Postgres;
use crate::common::receiver::Receiver;
use crate::common::{SECRET, sample_with};

/// One forward per joined event, and one assistant start per room.
fn config(dir: &TempDir, target: &Receiver) -> PathBuf {
    let path = dir.join("whereby-trigger.toml");
    std::fs::write(
        &path,
        format!(
            r#"[verify]
secrets = ["{SECRET}"]

[[trigger]]
name = "greeter"
on = ["room.client.joined"]
forward = {{ url = "{url}", timeout = "5s" }}

[[trigger]]
name = "assistant"
on = ["room.session.started"]
once_per = "room"
forward = {{ url = "{url}", timeout = "5s" }}
"#,
            url = target.url()
        ),
    )
    .expect("write the config");
    path
}

fn replica(config: &Path, url: &str, node: &str) -> Server {
    Server::start_from(
        loopback_command(),
        [
            "--config",
            config.to_str().expect("a UTF-8 path"),
            "--store-url",
            url,
            "--node-id",
            node,
        ],
    )
}

fn webhook(event_type: &str, id: &str, room: usize) -> String {
    sample_with(event_type, |v| {
        v["id"] = Value::from(id);
        v["data"]["roomName"] = Value::from(format!("/room-{room}"));
    })
}

/// A small deterministic generator: the same run every time.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).expect("small")
    }
}

/// Posts `body` as Whereby behind a load balancer would see it: first to
/// `addrs[first]`; after a 503 or a connection that failed (a receiver gone),
/// again after a pause, to the next receiver (bounded). The last answer's
/// status and outcome.
async fn deliver(
    client: reqwest::Client,
    addrs: Arc<Vec<SocketAddr>>,
    first: usize,
    body: Arc<String>,
) -> (u16, String) {
    let mut to = first;
    for _ in 0..200 {
        let request = client
            .post(format!("http://{}/", addrs[to]))
            .header("content-type", "application/json")
            .header(
                whereby_trigger::webhook::SIGNATURE_HEADER,
                crate::common::sign(SECRET, &body),
            )
            .body(body.to_string());
        if let Ok(response) = request.send().await {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            if status != 503 {
                let outcome = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["outcome"].as_str().map(str::to_owned))
                    .unwrap_or(text);
                return (status, outcome);
            }
        }
        to = (to + 1) % addrs.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (503, "gave up".to_owned())
}

/// The number of rows of `table` in the store's schema.
fn rows(url: &str, table: &str) -> i64 {
    let (url, sql) = (
        url.to_owned(),
        format!("SELECT count(*) FROM whereby_trigger.{table}"),
    );
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        client.query_one(&sql, &[]).expect("count").get::<_, i64>(0)
    })
    .join()
    .expect("the count")
}

/// How the processes of a load test share the work.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Two `serve`s, each carrying out what it decides.
    Replicas,
    /// Two `serve --no-actions` and two `worker`s.
    ReceiversAndWorkers,
}

/// 1,000 webhooks posted concurrently to the receivers of `layout`: 650
/// events (500 joins, 3 session starts in each of 50 rooms) and 350
/// duplicates, half of them racing at both receivers at once. With `faults`,
/// the database stops for two seconds a third of the way in, and a receiver is
/// killed (`kill -9`) two thirds of the way in. Checked at the receiving end:
/// one forward per join, one assistant start per room, nothing left queued.
fn load(layout: Layout, faults: bool) {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let url = pg.database("load");
    let dir = TempDir::new("load");
    let target = Receiver::start();
    let config = config(&dir, &target);
    let (receivers, workers) = match layout {
        Layout::Replicas => (
            vec![replica(&config, &url, "a"), replica(&config, &url, "b")],
            Vec::new(),
        ),
        Layout::ReceiversAndWorkers => (
            vec![receiver(&config, &url, "r1"), receiver(&config, &url, "r2")],
            vec![worker(&config, &url, "w1"), worker(&config, &url, "w2")],
        ),
    };
    let addrs = Arc::new(receivers.iter().map(|r| r.addr).collect::<Vec<_>>());

    const ROOMS: usize = 50;
    let mut events: Vec<(String, Arc<String>)> = Vec::new();
    for n in 0..500 {
        let id = format!("j-{n}");
        let body = webhook("room.client.joined", &id, n % ROOMS);
        events.push((id, Arc::new(body)));
    }
    for room in 0..ROOMS {
        for k in 0..3 {
            let id = format!("s-{room}-{k}");
            let body = webhook("room.session.started", &id, room);
            events.push((id, Arc::new(body)));
        }
    }
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let mut posts: Vec<Vec<(usize, usize)>> = events
        .iter()
        .enumerate()
        .map(|(event, _)| vec![(event, dice.below(2))])
        .collect();
    for n in 0..350 {
        let event = dice.below(events.len());
        if n % 2 == 0 {
            let other = 1 - posts[event][0].1;
            posts[event].push((event, other));
        } else {
            let later = dice.below(posts.len());
            posts[later].push((event, dice.below(2)));
        }
    }
    let total: usize = posts.iter().map(Vec::len).sum();
    assert_eq!(total, 1000);

    // The faults, from a thread of their own, as the answers come in.
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let victim = receivers[0].child.id();
    // The cluster is moved to the fault thread only when there are faults;
    // otherwise it stays here, running until the test ends.
    let (pg, faulty) = if faults {
        let answered = answered.clone();
        let thread = std::thread::spawn(move || {
            let reached = |n: usize| {
                poll(&format!("{n} answers"), || {
                    (answered.load(std::sync::atomic::Ordering::SeqCst) >= n).then_some(())
                });
            };
            reached(total / 3);
            pg.pause();
            std::thread::sleep(Duration::from_secs(2));
            pg.resume();
            reached(2 * total / 3);
            crate::common::binary::kill("KILL", victim);
            pg
        });
        (None, Some(thread))
    } else {
        (Some(pg), None)
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime to post from");
    let answers: Vec<(String, u16, String)> = runtime.block_on(async {
        let client = crate::common::client();
        let limit = Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = tokio::task::JoinSet::new();
        for group in posts {
            // A group goes out at once: the racing duplicates of one event.
            for (event, to) in group {
                let (id, body) = events[event].clone();
                let (client, addrs, answered) = (client.clone(), addrs.clone(), answered.clone());
                let permit = limit.clone().acquire_owned().await.expect("open");
                tasks.spawn(async move {
                    let (status, outcome) = deliver(client, addrs, to, body).await;
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    drop(permit);
                    (id, status, outcome)
                });
            }
        }
        let mut answers = Vec::new();
        while let Some(answer) = tasks.join_next().await {
            answers.push(answer.expect("a post task"));
        }
        answers
    });
    // The cluster comes back from the fault thread, to be stopped last.
    let _pg = faulty.map_or(pg, |t| Some(t.join().expect("the faults")));

    // Every post answered 200 in the end, and each event evaluated at most
    // once: one answer that is not `duplicate` per id, whichever receiver gave
    // it (none, when the receiver that committed it died before answering: its
    // retry is then a duplicate).
    let mut evaluated: HashMap<&str, usize> = HashMap::new();
    for (id, status, outcome) in &answers {
        assert_eq!(*status, 200, "{id}: {status} {outcome}");
        if outcome != "duplicate" {
            *evaluated.entry(id.as_str()).or_default() += 1;
        }
    }
    if !faults {
        assert_eq!(evaluated.len(), events.len(), "every event was evaluated");
    }
    let twice: Vec<_> = evaluated.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "evaluated more than once: {twice:?}");

    // At the receiving end: one forward per join, one start per room.
    let joins: Vec<String> = (0..500).map(|n| format!("greeter:j-{n}")).collect();
    target.wait_delivered(&joins);
    // Only the assistant's requests are read (their key says whose they are):
    // the check runs at every arrival.
    let per_room = |requests: &[crate::common::receiver::Request]| {
        let mut rooms: BTreeMap<String, usize> = BTreeMap::new();
        for request in requests
            .iter()
            .filter(|r| r.key().starts_with("assistant:"))
        {
            let body = request.json();
            let room = body["roomUrl"].as_str().unwrap_or_default().to_owned();
            *rooms.entry(room).or_default() += 1;
        }
        rooms
    };
    target.wait_until("a start in every room", |requests| {
        per_room(requests).len() == ROOMS
    });
    // Stopping drains what is in flight; then nothing is left to deliver.
    for (n, server) in receivers.into_iter().chain(workers).enumerate() {
        if faults && n == 0 {
            continue; // killed
        }
        drop(server.stop());
    }
    poll("the shared outbox to empty", || {
        (rows(&url, "deliveries") == 0).then_some(())
    });
    let delivered = target.delivered();
    let again: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(again.is_empty(), "delivered more than once: {again:?}");
    assert_eq!(delivered.len(), 500 + ROOMS, "{delivered:?}");
    let rooms = per_room(&target.received());
    assert!(rooms.values().all(|n| *n == 1), "{rooms:?}");
    assert_eq!(rows(&url, "events"), 650);
    // One claim per room, and the greeter's per event (`once_per = "event"`).
    assert_eq!(rows(&url, "claims"), i64::try_from(ROOMS + 500).unwrap());
}

#[test]
fn two_replicas_fire_each_event_once_and_start_one_assistant_per_room() {
    load(Layout::Replicas, false);
}

#[test]
fn receivers_and_workers_lose_nothing_when_the_database_stops_and_a_receiver_dies_mid_load() {
    load(Layout::ReceiversAndWorkers, true);
}

/// A config whose deliveries lapse to another replica after 2 s.
fn short_lease_config(dir: &TempDir, target: &Receiver) -> PathBuf {
    let path = config(dir, target);
    let text = std::fs::read_to_string(&path).expect("read the config");
    std::fs::write(&path, format!("[store]\nlease = \"2s\"\n\n{text}")).expect("write");
    path
}

fn post(server: &Server, id: &str) -> (u16, String) {
    let reply = crate::common::post_signed_blocking(
        server.addr,
        SECRET,
        &webhook("room.client.joined", id, 0),
    );
    // The outcome of a 2xx, the code of an error.
    let json = reply.json();
    let outcome = json["outcome"]
        .as_str()
        .or_else(|| json["code"].as_str())
        .unwrap_or_default()
        .to_owned();
    (reply.status.as_u16(), outcome)
}

/// The status of `GET path` on `server`'s public port.
fn status_of(server: &Server, path: &str) -> u16 {
    let url = format!("http://{}{path}", server.addr);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(crate::common::send(crate::common::client().get(url)))
        .status
        .as_u16()
}

fn keys(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    ids.into_iter().map(|id| format!("greeter:{id}")).collect()
}

#[test]
fn a_replica_killed_with_deliveries_in_hand_loses_none_of_them() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("killed");
    let dir = TempDir::new("killed");
    // The service is down: every delivery stays in the hands of its replica.
    let target = Receiver::closed();
    let config = short_lease_config(&dir, &target);
    let a = replica(&config, &url, "a");
    let b = replica(&config, &url, "b");
    let ids: Vec<String> = (0..40).map(|n| format!("k-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let to = if n % 2 == 0 { &a } else { &b };
        assert_eq!(post(to, id), (200, "triggered".to_owned()), "{id}");
    }
    // The operator sees the shared queue from anywhere.
    let out = loopback_command()
        .args(["outbox", "list", "--json", "--store-url", &url])
        .output()
        .expect("run outbox list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("a JSON list");
    assert_eq!(listed.len(), ids.len(), "{listed:?}");
    assert!(
        listed.iter().all(|d| d["status"] == "pending"),
        "{listed:?}"
    );
    // Each with the replica that carries it out.
    assert!(
        listed.iter().all(|d| d["node"] == "a" || d["node"] == "b"),
        "{listed:?}"
    );
    a.signal("KILL");
    drop(a);
    target.listen();
    // b delivers its own, and a's once their lease lapses: each once.
    target.wait_delivered(&keys(ids.clone()));
    drop(b.stop());
    poll("the shared outbox to empty", || {
        (rows(&url, "deliveries") == 0).then_some(())
    });
    let delivered = target.delivered();
    assert_eq!(delivered.len(), ids.len(), "{delivered:?}");
    assert!(delivered.values().all(|n| *n == 1), "{delivered:?}");
}

#[test]
fn while_the_database_is_down_webhooks_get_503_and_service_resumes_without_a_restart() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let url = pg.database("outage");
    let dir = TempDir::new("outage");
    let target = Receiver::start();
    let config = config(&dir, &target);
    let server = replica(&config, &url, "a");
    let before: Vec<String> = (0..10).map(|n| format!("o-{n}")).collect();
    for id in &before {
        assert_eq!(post(&server, id), (200, "triggered".to_owned()), "{id}");
    }
    target.wait_delivered(&keys(before.clone()));
    poll("the outbox to empty", || {
        (rows(&url, "deliveries") == 0).then_some(())
    });

    pg.pause();
    let (status, code) = post(&server, "o-down");
    assert_eq!(status, 503, "{code}");
    assert!(
        ["store_unavailable", "deadline"].contains(&code.as_str()),
        "{code}"
    );
    let ready = status_of(&server, "/readyz");
    assert_eq!(ready, 503, "/readyz while the database is down");
    pg.resume();

    // Whereby's retry of the refused webhook fires it, once; the server was
    // not restarted.
    let fired = poll("the store to take webhooks again", || {
        let (status, outcome) = post(&server, "o-down");
        (status == 200).then_some(outcome)
    });
    assert_eq!(fired, "triggered");
    assert_eq!(post(&server, "o-down"), (200, "duplicate".to_owned()));
    assert_eq!(post(&server, "o-1"), (200, "duplicate".to_owned()));
    let mut all = before;
    all.push("o-down".to_owned());
    target.wait_delivered(&keys(all.clone()));
    drop(server.stop());
    let delivered = target.delivered();
    assert_eq!(delivered.len(), all.len(), "{delivered:?}");
    assert!(delivered.values().all(|n| *n == 1), "{delivered:?}");
}

// ---------------------------------------------------------------------------
// Assistants (`run`) across replicas.

/// A throw-away database and a config with a `run` assistant per room, from
/// a session's start to its end (`stop_after` later, if given), its leases
/// `lease` long, and the triggers of `more`; the assistants record into
/// `procs`.
struct Assistants {
    pg: Postgres,
    url: String,
    config: PathBuf,
    procs: PathBuf,
    _dir: TempDir,
}

impl Assistants {
    /// `None` (the test is skipped) without PostgreSQL.
    fn start(name: &str, lease: &str, stop_after: Option<&str>) -> Option<Assistants> {
        Assistants::start_with(name, lease, stop_after, "")
    }

    /// [`Assistants::start`], with the triggers of `more` in the config too.
    fn start_with(
        name: &str,
        lease: &str,
        stop_after: Option<&str>,
        more: &str,
    ) -> Option<Assistants> {
        use crate::common::fixture::run_table;
        let pg = Postgres::start()?;
        let url = pg.database(name);
        let dir = TempDir::new(name);
        let procs = dir.sub("procs");
        let stop_after = stop_after.map_or_else(String::new, |s| format!("stop_after = \"{s}\""));
        let config = dir.join("assistants.toml");
        std::fs::write(
            &config,
            format!(
                r#"[store]
lease = "{lease}"

[verify]
secrets = ["{SECRET}"]

[[trigger]]
name = "notes"
on = ["room.session.started"]
once_per = "room"
stop_on = ["room.session.ended"]
{stop_after}
{run}

{more}
"#,
                run = run_table(&procs, "term", "")
            ),
        )
        .expect("write the config");
        Some(Assistants {
            pg,
            url,
            config,
            procs,
            _dir: dir,
        })
    }

    /// A `serve` replica named `node`.
    fn replica(&self, node: &str) -> Server {
        replica(&self.config, &self.url, node)
    }

    /// The pid of the first assistant, once it has started.
    fn first(&self) -> u32 {
        crate::common::fixture::wait_started(&self.procs, 1)[0].pid
    }

    /// The pid of an assistant started after `first`, once there is one.
    fn another(&self, first: u32) -> u32 {
        crate::common::fixture::wait_started(&self.procs, 2)
            .into_iter()
            .find(|s| s.pid != first)
            .expect("a second assistant")
            .pid
    }

    /// Waits for assistant `pid` to get SIGTERM and end.
    fn wait_terminated(&self, pid: u32) {
        crate::common::fixture::E2E_ASSISTANT.wait_terminated(&self.procs, pid);
    }

    /// How many assistants have started.
    fn count(&self) -> usize {
        crate::common::fixture::started_in(&self.procs).len()
    }
}

/// Posts a session event of the samples' room and returns the outcome.
fn session(server: &Server, event_type: &str, id: &str) -> String {
    let reply =
        crate::common::post_signed_blocking(server.addr, SECRET, &webhook(event_type, id, 7));
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    reply.json()["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_stop_received_by_the_replica_that_does_not_run_the_assistant_stops_it() {
    let Some(notes) = Assistants::start("remote_stop", "30s", None) else {
        return;
    };
    let (a, b) = (notes.replica("a"), notes.replica("b"));
    assert_eq!(session(&a, "room.session.started", "s-1"), "triggered");
    let pid = notes.first();
    // b knows the room is claimed: a second start there is suppressed (the
    // database refuses b the claim if b had not heard of it yet).
    assert_eq!(session(&b, "room.session.started", "s-2"), "suppressed");
    // The session ends at b; the assistant runs at a, and stops there.
    assert_eq!(session(&b, "room.session.ended", "e-1"), "stopped");
    notes.wait_terminated(pid);
    // The room is free again, for either replica.
    assert_eq!(session(&a, "room.session.started", "s-3"), "triggered");
    notes.another(pid);
    assert_eq!(notes.count(), 2);
    drop(a.stop());
    drop(b.stop());
}

#[test]
fn an_assistant_whose_replica_died_is_started_again_on_another() {
    use crate::common::fixture::{E2E_ASSISTANT, started_in};
    let Some(notes) = Assistants::start("failover", "2s", None) else {
        return;
    };
    let (a, b) = (notes.replica("a"), notes.replica("b"));
    assert_eq!(session(&a, "room.session.started", "s-1"), "triggered");
    let first = notes.first();
    // a's machine is gone: its assistant dies with it …
    a.signal("KILL");
    drop(a);
    E2E_ASSISTANT.wait_gone(first);
    // … and b starts it again once a's lease has lapsed, the claim holding.
    let second = notes.another(first);
    assert!(E2E_ASSISTANT.alive(second));
    let started = started_in(&notes.procs);
    assert_eq!(
        started[1].argv, started[0].argv,
        "the same room and trigger"
    );
    // Only one: the room still has its claim, so a new start is suppressed.
    assert_eq!(session(&b, "room.session.started", "s-2"), "suppressed");
    // The meeting ends: the assistant that took over stops.
    assert_eq!(session(&b, "room.session.ended", "e-1"), "stopped");
    notes.wait_terminated(second);
    assert_eq!(notes.count(), 2);
    drop(b.stop());
}

// ---------------------------------------------------------------------------
// Receivers and workers.

/// A `worker` on the shared database.
fn worker(config: &Path, url: &str, node: &str) -> Server {
    Server::start_as(
        loopback_command(),
        "worker",
        [
            "--config",
            config.to_str().expect("a UTF-8 path"),
            "--store-url",
            url,
            "--node-id",
            node,
        ],
        |_| || (),
    )
}

/// A receiver that runs no actions.
fn receiver(config: &Path, url: &str, node: &str) -> Server {
    Server::start_from(
        loopback_command(),
        [
            "--config",
            config.to_str().expect("a UTF-8 path"),
            "--store-url",
            url,
            "--node-id",
            node,
            "--no-actions",
        ],
    )
}

/// The parent of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn receivers_queue_and_workers_carry_out_with_assistants_that_fail_over() {
    use crate::common::fixture::E2E_ASSISTANT;
    let target = Receiver::start();
    let greeter = format!(
        "[[trigger]]\nname = \"greeter\"\non = [\"room.client.joined\"]\nforward = {{ url = \"{}\", timeout = \"5s\" }}\n",
        target.url()
    );
    let Some(notes) = Assistants::start_with("split", "2s", None, &greeter) else {
        return;
    };
    let (config, url) = (&notes.config, &notes.url);
    let receivers = [receiver(config, url, "r1"), receiver(config, url, "r2")];
    let workers = vec![worker(config, url, "w1"), worker(config, url, "w2")];

    // A worker receives nothing: Whereby would retry elsewhere.
    let refused = crate::common::post_signed_blocking(
        workers[0].addr,
        SECRET,
        &webhook("room.client.joined", "nope", 0),
    );
    assert_eq!(refused.status.as_u16(), 503, "{}", refused.body);
    assert_eq!(refused.json()["code"], "not_receiving");
    assert_eq!(status_of(&workers[0], "/readyz"), 200);

    // Joins at either receiver, each twice: one forward each, by a worker.
    let ids: Vec<String> = (0..30).map(|n| format!("j-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        for k in 0..2 {
            let to = &receivers[(n + k) % 2];
            let reply = crate::common::post_signed_blocking(
                to.addr,
                SECRET,
                &webhook("room.client.joined", id, n % 3),
            );
            assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
        }
    }
    target.wait_delivered(&keys(ids.clone()));

    // An assistant starts on a worker, not on a receiver.
    assert_eq!(
        session(&receivers[0], "room.session.started", "s-1"),
        "triggered"
    );
    let first = notes.first();
    let parent = parent_of(first).expect("the assistant's parent");
    let runner = workers
        .iter()
        .position(|w| w.child.id() == parent)
        .unwrap_or_else(|| panic!("the assistant's parent {parent} is not a worker"));
    // Its worker dies: the other starts the assistant again.
    let mut workers = workers;
    let dead = workers.remove(runner);
    dead.signal("KILL");
    drop(dead);
    E2E_ASSISTANT.wait_gone(first);
    let second = notes.another(first);
    assert_eq!(parent_of(second), Some(workers[0].child.id()));
    // The session ends at the other receiver: the assistant stops.
    assert_eq!(
        session(&receivers[1], "room.session.ended", "e-1"),
        "stopped"
    );
    notes.wait_terminated(second);

    for server in receivers.into_iter().chain(workers) {
        drop(server.stop());
    }
    let delivered = target.delivered();
    assert_eq!(delivered.len(), ids.len(), "{delivered:?}");
    assert!(delivered.values().all(|n| *n == 1), "{delivered:?}");
    assert_eq!(rows(url, "deliveries"), 0);
}

#[test]
fn a_pending_stop_is_fired_by_another_replica_when_the_one_that_scheduled_it_died() {
    // The stop waits 2 s after the session's end.
    let Some(notes) = Assistants::start("due_stop", "30s", Some("2s")) else {
        return;
    };
    let (a, b) = (notes.replica("a"), notes.replica("b"));
    assert_eq!(session(&b, "room.session.started", "s-1"), "triggered");
    let pid = notes.first();
    // a schedules the stop, then dies before it is due.
    session(&a, "room.session.ended", "e-1");
    poll("the stop to be stored", || {
        (stops_stored(&notes.url) == 1).then_some(())
    });
    a.signal("KILL");
    drop(a);
    // b fires it when due: its assistant stops.
    notes.wait_terminated(pid);
    poll("the claim to end", || {
        (rows(&notes.url, "claims") == 0).then_some(())
    });
    drop(b.stop());
}

/// Claims with a stop pending on them.
fn stops_stored(url: &str) -> i64 {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        client
            .query_one(
                "SELECT count(*) FROM whereby_trigger.claims WHERE stop IS NOT NULL",
                &[],
            )
            .expect("count")
            .get::<_, i64>(0)
    })
    .join()
    .expect("the count")
}

#[test]
fn cut_off_from_the_database_a_replica_stops_its_assistants_and_starts_them_again_after() {
    let Some(mut notes) = Assistants::start("fenced", "4s", None) else {
        return;
    };
    let a = notes.replica("a");
    assert_eq!(session(&a, "room.session.started", "s-1"), "triggered");
    let first = notes.first();
    // Cut off for longer than half a lease: another replica could take the
    // assistant over, so this one stops it.
    notes.pg.pause();
    notes.wait_terminated(first);
    notes.pg.resume();
    // Back: the claim still holds, so the assistant runs again (here, the
    // only replica).
    let second = notes.another(first);
    assert!(crate::common::fixture::E2E_ASSISTANT.alive(second));
    assert_eq!(session(&a, "room.session.ended", "e-1"), "stopped");
    notes.wait_terminated(second);
    drop(a.stop());
}

#[test]
fn a_replica_stopped_cleanly_hands_its_assistants_over_at_once() {
    // A lease longer than any wait of the test: the handover cannot be its
    // lapse.
    let Some(notes) = Assistants::start("handover", "60s", None) else {
        return;
    };
    let (a, b) = (notes.replica("a"), notes.replica("b"));
    assert_eq!(session(&a, "room.session.started", "s-1"), "triggered");
    let first = notes.first();
    // A rolling update stops a: its assistant stops, and b runs it again.
    drop(a.stop());
    notes.wait_terminated(first);
    let second = notes.another(first);
    assert_eq!(parent_of(second), Some(b.child.id()));
    assert_eq!(session(&b, "room.session.ended", "e-1"), "stopped");
    notes.wait_terminated(second);
    drop(b.stop());
}
