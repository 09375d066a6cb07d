#!/usr/bin/env python3
"""Load and verdict for scripts/soak.sh, on 127.0.0.1 only.

  soak_client.py fire  --url URL --secret S --seconds N --rate R --results FILE
                       [--retry-after SECONDS]
  soak_client.py check --results FILE --deliveries FILE --trigger NAME [--kills FILE]

`fire` sends a bounded mix of webhooks (at most --rate per second for --seconds)
from a few keep-alive connections and appends every answer to --results as a
JSON line:

  valid       a signed room.client.joined with a fresh id      -> 200 triggered
  race        the same, sent twice at the same moment           -> one triggered, one duplicate
  duplicate   an id already sent, signed afresh                 -> 200 duplicate
  nonmatching a signed room.client.left (the trigger ignores it) -> 200 not_matched
  malformed   signed, but not JSON / not an object / a missing field /
              a bad subdomain or roomName / wrong Content-Type   -> 400 (415)
  unsigned    a valid joined event with no signature, a wrong secret, a stale
              timestamp, a garbled header or a tampered body    -> 401

With --retry-after S, a request that got no answer (refused, reset, timed out)
is sent once more after S seconds, as Whereby retries; each attempt is a line
of its own ("attempt": 1 or 2).

`check` reads the answers and the target's log (scripts/soak_target.py) and
verifies: every id answered "triggered" (or "duplicate": the server says so
only once the id is committed) was delivered (answered 200 by the target) at
least once; no key of a rejected (malformed, unsigned) or non-matching webhook
ever reached the target, answered or not; no id was answered "triggered"
twice; every answer was the one expected; every request the target saw carried
a key matching its body. A triggering id none of whose requests got an answer
is unknown (it may have been committed just before the server died): its
delivery is allowed, not required. Requests without an answer are tolerated as
noise up to UNANSWERED_TOLERANCE of all requests, except that with --kills
(soak.sh --kill-every) those around a server kill are expected, and then at
most UNKNOWN_TOLERANCE of the triggering ids may stay unknown. It prints a
summary and exits 1 on any violation.
"""

import argparse
import collections
import datetime
import hashlib
import hmac
import http.client
import json
import os
import queue
import random
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "crates", "whereby-webhook", "fixtures")

# kind -> weight in the mix (out of 100).
MIX = [
    ("valid", 45),
    ("race", 5),
    ("duplicate", 12),
    ("nonmatching", 8),
    ("malformed", 15),
    ("unsigned", 15),
]
MALFORMED = ["not_json", "not_object", "missing_room_name", "bad_subdomain", "bad_room_name",
             "wrong_type_field", "content_type"]
UNSIGNED = ["no_header", "wrong_secret", "stale", "garbled", "tampered"]
REQUEST_TIMEOUT = 10.0
# Reconnect before sending on a connection idle for longer than this.
IDLE_RECONNECT = 3.0
# Requests without any answer (time-outs, resets) tolerated as noise, as a
# fraction of all requests; beyond it they are a violation.
UNANSWERED_TOLERANCE = 0.005
# With --kills: a request without an answer counts as caused by a kill if it
# ended after (kill time - KILL_MARGIN) and was sent before the restarted server
# accepted connections (+ KILL_MARGIN) or on a connection opened before then.
KILL_MARGIN = 0.5
# With --kills, at most this fraction of the triggering events may be unknown
# (no request of theirs answered), or the run proves too little.
UNKNOWN_TOLERANCE = 0.10


def now_iso():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def fixture(name):
    with open(os.path.join(FIXTURES, name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def sign(secret, timestamp, body):
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


# ---------------------------------------------------------------------------
# fire
# ---------------------------------------------------------------------------


class Job:
    __slots__ = ("id", "kind", "variant", "body", "headers", "group")

    def __init__(self, id_, kind, variant, body, headers, group=None):
        self.id = id_
        self.kind = kind
        self.variant = variant
        self.body = body
        self.headers = headers
        self.group = group


class Maker:
    def __init__(self, secret, run):
        self.secret = secret
        self.run = run
        self.n = 0
        self.joined = fixture("room.client.joined")
        self.left = fixture("room.client.left")
        self.sent_valid = []  # ids of valid/race jobs already queued
        self.rng = random.Random(run)

    def fresh_id(self, kind):
        self.n += 1
        return f"soak-{self.run}-{self.n:07d}-{kind}"

    def event(self, template, event_id):
        doc = json.loads(json.dumps(template))
        doc["id"] = event_id
        doc["createdAt"] = now_iso()
        doc["data"]["roomName"] = f"/soak-room-{self.rng.randrange(40)}"
        return doc

    def signed(self, body, content_type="application/json"):
        return {
            "Content-Type": content_type,
            "Whereby-Signature": sign(self.secret, int(time.time()), body),
        }

    def make(self):
        """One or two jobs of a kind drawn from MIX."""
        kind = self.rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        if kind == "duplicate" and not self.sent_valid:
            kind = "valid"
        if kind in ("valid", "race"):
            event_id = self.fresh_id(kind)
            body = json.dumps(self.event(self.joined, event_id), separators=(",", ":")).encode()
            self.sent_valid.append(event_id)
            if kind == "valid":
                return [Job(event_id, kind, "-", body, self.signed(body))]
            return [Job(event_id, kind, "a", body, self.signed(body), group=event_id),
                    Job(event_id, kind, "b", body, self.signed(body), group=event_id)]
        if kind == "duplicate":
            event_id = self.rng.choice(self.sent_valid[-500:])
            body = json.dumps(self.event(self.joined, event_id), separators=(",", ":")).encode()
            return [Job(event_id, kind, "-", body, self.signed(body))]
        if kind == "nonmatching":
            event_id = self.fresh_id(kind)
            body = json.dumps(self.event(self.left, event_id), separators=(",", ":")).encode()
            return [Job(event_id, kind, "-", body, self.signed(body))]
        if kind == "malformed":
            return [self.malformed(self.rng.choice(MALFORMED))]
        return [self.unsigned(self.rng.choice(UNSIGNED))]

    def malformed(self, variant):
        event_id = self.fresh_id("malformed")
        doc = self.event(self.joined, event_id)
        content_type = "application/json"
        if variant == "not_json":
            body = ('{"id":"%s","type":"room.client.joined","data":{' % event_id).encode()
        elif variant == "not_object":
            body = json.dumps([doc]).encode()
        else:
            if variant == "missing_room_name":
                del doc["data"]["roomName"]
            elif variant == "bad_subdomain":
                doc["data"]["subdomain"] = "evil.example.com/x"
            elif variant == "bad_room_name":
                doc["data"]["roomName"] = "/x?next=//evil.example.com"
            elif variant == "wrong_type_field":
                doc["data"]["numClients"] = "many"
            elif variant == "content_type":
                content_type = "text/plain"
            body = json.dumps(doc, separators=(",", ":")).encode()
        return Job(event_id, "malformed", variant, body, self.signed(body, content_type))

    def unsigned(self, variant):
        event_id = self.fresh_id("unsigned")
        body = json.dumps(self.event(self.joined, event_id), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        now = int(time.time())
        if variant == "wrong_secret":
            headers["Whereby-Signature"] = sign(self.secret + "-wrong", now, body)
        elif variant == "stale":
            headers["Whereby-Signature"] = sign(self.secret, now - 3600, body)
        elif variant == "garbled":
            headers["Whereby-Signature"] = "t=soon,v1=zz"
        elif variant == "tampered":
            other = body.replace(b'"numClients":1', b'"numClients":2')
            headers["Whereby-Signature"] = sign(self.secret, now, other if other != body else body + b" ")
        return Job(event_id, "unsigned", variant, body, headers)


def expected(kind, variant):
    """(status, outcome) expected for a webhook; outcome None = any body.

    The joined family (valid, race, duplicate) is checked per id instead: every
    answer 200, exactly one "triggered" and the rest "duplicate", whichever
    copy happened to arrive first.
    """
    if kind in ("valid", "race", "duplicate"):
        return 200, None
    if kind == "nonmatching":
        return 200, "not_matched"
    if kind == "malformed":
        return (415 if variant == "content_type" else 400), None
    return 401, None


def worker(index, host, port, path, jobs, results, lock, retry_after):
    conn = None
    last_used = 0.0
    opened = 0.0
    opened_wall = 0.0
    used = 0
    while True:
        job = jobs.get()
        if job is None:
            break
        attempt = 1
        while True:
            # The server closes a connection idle for 6 s; a request sent just as
            # it does would fail for a reason that is not the server's fault.
            if conn is not None and time.monotonic() - last_used > IDLE_RECONNECT:
                conn.close()
                conn = None
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
                opened = time.monotonic()
                opened_wall = time.time()
                used = 0
            used += 1
            record = {"id": job.id, "kind": job.kind, "variant": job.variant, "group": job.group,
                      "status": None, "outcome": None, "error": None, "worker": index,
                      "attempt": attempt, "opened": round(opened_wall, 3),
                      "conn_request": used, "conn_age": round(time.monotonic() - opened, 3),
                      "idle": round(time.monotonic() - last_used, 3) if used > 1 else None}
            sent = time.time()
            try:
                conn.request("POST", path, body=job.body, headers=job.headers)
                response = conn.getresponse()
                payload = response.read()
                record["status"] = response.status
                try:
                    record["outcome"] = json.loads(payload).get("outcome")
                except (ValueError, AttributeError):
                    record["outcome"] = None
                # A 413 or 415 is answered before the body is read, and the server
                # may then close the connection without saying so (no
                # `Connection: close`): do not send on it again.
                if response.will_close or response.status in (413, 415):
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                record["error"] = f"{type(e).__name__}: {e}"
                conn.close()
                conn = None
            last_used = time.monotonic()
            record["t"] = round(sent, 3)
            record["ms"] = round((time.time() - sent) * 1000, 1)
            with lock:
                results.write(json.dumps(record) + "\n")
            # Like Whereby, send a webhook that got no answer (refused, reset,
            # timed out) once more after a pause; once only, so it stays bounded.
            if record["status"] is not None or retry_after <= 0 or attempt > 1:
                break
            attempt += 1
            time.sleep(retry_after)
    if conn is not None:
        conn.close()


def fire(args):
    url = urllib.parse.urlsplit(args.url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"soak_client: {args.url} is not a loopback address")
    run = args.run or f"{int(time.time())}-{os.getpid()}"
    maker = Maker(args.secret, run)
    jobs = queue.Queue(maxsize=args.workers * 4)
    lock = threading.Lock()
    counts = collections.Counter()
    with open(args.results, "a", buffering=1, encoding="utf-8") as results:
        threads = [threading.Thread(target=worker, daemon=True,
                                    args=(i, url.hostname, url.port, url.path or "/", jobs, results, lock,
                                          args.retry_after))
                   for i in range(args.workers)]
        for t in threads:
            t.start()
        started = time.monotonic()
        deadline = started + args.seconds
        limit = int(args.seconds * args.rate)
        sent = 0
        last_report = started
        while sent < limit:
            now = time.monotonic()
            if now >= deadline:
                break
            due = started + sent / args.rate
            if due > now:
                time.sleep(min(due - now, deadline - now))
                continue
            for job in maker.make():
                jobs.put(job)
                counts[job.kind] += 1
            sent += 1
            if now - last_report >= 30:
                last_report = now
                print(f"soak_client: {int(now - started)} s, {sum(counts.values())} webhooks sent",
                      file=sys.stderr, flush=True)
        for _ in threads:
            jobs.put(None)
        for t in threads:
            t.join(timeout=REQUEST_TIMEOUT * 3 + args.retry_after)
    print("soak_client: sent " + ", ".join(f"{k} {counts[k]}" for k, _ in MIX), file=sys.stderr)


# ---------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------


def read_kills(path):
    """(kill time, accepting-again time) pairs written by soak.sh --kill-every."""
    kills = []
    if path:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 2:
                    kills.append((float(parts[0]), float(parts[1])))
    return kills


def around_a_kill(a, kills):
    """Whether a request that got no answer is explained by a server kill: it
    ended after the kill and was sent before the restarted server accepted
    connections, or on a connection opened before then (to the killed server),
    which the client drops after IDLE_RECONNECT idle seconds."""
    t0 = a["t"]
    t1 = t0 + (a.get("ms") or 0) / 1000
    opened = a.get("opened", t0)
    for killed, ready in kills:
        if t1 >= killed - KILL_MARGIN and t0 <= ready + KILL_MARGIN + IDLE_RECONNECT and (
                t0 <= ready + KILL_MARGIN or opened <= ready):
            return True
    return False


def check(args):
    answers = []
    with open(args.results, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                answers.append(json.loads(line))
    deliveries = []  # (time, phase, status, key, note)
    with open(args.deliveries, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 5:
                deliveries.append((float(parts[0]), parts[1], parts[2], parts[3], parts[4]))
    kills = read_kills(args.kills)

    violations = []

    def violation(message):
        violations.append(message)

    # What each id was answered. Every request is a line, a re-sent one too
    # (attempt 2). A request without an answer may or may not have been
    # committed before the server died; the answers to the other requests of
    # the same id decide what it must be, and if there are none it is unknown.
    triggered = collections.Counter()
    must_deliver = {}  # id -> time it was first answered as accepted
    must_not = set()   # ids whose webhook was rejected or did not match
    unknown = set()    # joined ids none of whose requests got an answer
    by_kind = collections.defaultdict(collections.Counter)
    family = collections.defaultdict(list)  # joined ids -> their outcomes
    family_answers = collections.defaultdict(list)  # joined ids -> (status, outcome, t)
    uncertain = set()  # joined ids with a request that got no answer
    unanswered = 0
    near_kill = 0
    resent = 0
    resent_answered = 0
    unanswered_examples = []
    for a in answers:
        kind = a["kind"]
        status, outcome = a["status"], a["outcome"]
        by_kind[kind][str(status) + ("/" + outcome if outcome else "") if status else "error"] += 1
        if a.get("attempt", 1) > 1:
            resent += 1
            resent_answered += status is not None
        if kind in ("malformed", "unsigned", "nonmatching"):
            # Never deliverable, answered or not: the server's answer to these
            # does not depend on its state, so no lost answer was an acceptance.
            must_not.add(a["id"])
        if status is None:
            unanswered += 1
            if kills and around_a_kill(a, kills):
                near_kill += 1
            else:
                unanswered_examples.append(f"{kind} {a['id']} ({a['variant']}): {a['error']}")
            if kind in ("valid", "race", "duplicate"):
                uncertain.add(a["id"])
            continue
        if status == 200 and outcome == "triggered":
            triggered[a["id"]] += 1
        want_status, want_outcome = expected(kind, a["variant"])
        if status != want_status or (want_outcome and outcome != want_outcome):
            violation(f"{kind} {a['id']} ({a['variant']}): answered {status} {outcome}, "
                      f"expected {want_status} {want_outcome or ''}".rstrip())
        if kind in ("valid", "race", "duplicate"):
            family[a["id"]].append(outcome)
            family_answers[a["id"]].append((status, outcome, a["t"]))
    for event_id in set(family) | uncertain:
        got = family_answers[event_id]
        # "duplicate" is only answered once the id is committed (with the
        # delivery it fired), so it stands for an accepted event as well.
        accepted = [t for status, outcome, t in got if status == 200
                    and outcome in ("triggered", "duplicate")]
        if accepted:
            must_deliver[event_id] = min(accepted)
        elif any(status < 500 for status, _, _ in got):
            # Answered, and not accepted (an answer already reported above).
            must_not.add(event_id)
        else:
            unknown.add(event_id)
    for event_id, outcomes in family.items():
        n = outcomes.count("triggered")
        others = [o for o in outcomes if o != "triggered"]
        # With an unanswered copy, its "triggered" may be the one lost.
        wanted = (0, 1) if event_id in uncertain else (1,)
        if n not in wanted or any(o != "duplicate" for o in others):
            violation(f"{event_id}: answered {outcomes}, expected exactly one triggered "
                      f"and the rest duplicate")
    if not must_deliver:
        violation("no event was answered as accepted: the run proves nothing")

    # What reached the target.
    prefix = args.trigger + ":"
    attempts = collections.Counter()
    delivered = collections.Counter()
    first_delivery = {}
    phases = collections.Counter()
    for t, phase, status, key, note in deliveries:
        phases[f"{phase}->{status}"] += 1
        if status != "reset" and note != "ok":
            violation(f"target got a bad request for key {key!r}: {note}")
        event_id = key[len(prefix):] if key.startswith(prefix) else None
        if event_id is None:
            violation(f"target got a request with an unexpected key {key!r}")
            continue
        attempts[event_id] += 1
        if status == "200":
            delivered[event_id] += 1
            first_delivery.setdefault(event_id, t)
        if event_id in must_not:
            violation(f"{key} reached the target, but its webhook was rejected or did not match")
        elif event_id not in must_deliver and event_id not in unknown:
            violation(f"{key} reached the target, but its webhook was never answered triggered")

    missing = [i for i in must_deliver if delivered[i] == 0]
    for event_id in missing[:20]:
        violation(f"soak:{event_id} was answered {'triggered' if triggered[event_id] else 'duplicate'} "
                  f"but never delivered ({attempts[event_id]} attempts seen)")
    if len(missing) > 20:
        violation(f"... and {len(missing) - 20} more accepted events never delivered")

    redelivered = sum(1 for i in must_deliver if delivered[i] > 1)
    delays = sorted(first_delivery[i] - must_deliver[i] for i in must_deliver if i in first_delivery)
    tries = sorted(attempts[i] for i in must_deliver if attempts[i])

    def pct(xs, p):
        return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0

    print("soak summary")
    print(f"  webhooks answered: {len(answers)} ({unanswered} without an answer)")
    for kind, _ in MIX:
        if by_kind[kind]:
            print(f"    {kind:<12} " + ", ".join(f"{k} x{v}" for k, v in sorted(by_kind[kind].items())))
    print(f"  accepted triggering events: {len(must_deliver)}; delivered: "
          f"{len(must_deliver) - len(missing)}; redelivered (at-least-once duplicates): {redelivered}")
    print(f"  rejected or non-matching ids: {len(must_not)}; reached the target: "
          f"{sum(1 for i in must_not if attempts[i])}")
    print(f"  target requests: {len(deliveries)} (" +
          ", ".join(f"{k} x{v}" for k, v in sorted(phases.items())) + ")")
    if tries:
        print(f"  attempts per delivered event: median {pct(tries, 0.5)}, p99 {pct(tries, 0.99)}, "
              f"max {tries[-1]}")
    if delays:
        print(f"  answer-to-delivery time: median {pct(delays, 0.5):.1f} s, p99 {pct(delays, 0.99):.1f} s, "
              f"max {delays[-1]:.1f} s")
    elsewhere = unanswered - near_kill
    if kills:
        print(f"  server kills: {len(kills)} (SIGKILL, restarted on the same data dir and port); "
              f"requests without an answer: {unanswered} ({near_kill} around a kill); "
              f"re-sent: {resent}, answered: {resent_answered}")
    if kills or unknown:
        print(f"  unknown events (no request of the id answered; delivery allowed, not required): "
              f"{len(unknown)}; delivered: {sum(1 for i in unknown if delivered[i])}")
        joined = len(set(family) | uncertain)
        if len(unknown) > UNKNOWN_TOLERANCE * joined:
            violation(f"{len(unknown)} of {joined} triggering events are unknown (more than "
                      f"{UNKNOWN_TOLERANCE:.0%}): too few answers for the check to mean much")
    if elsewhere:
        print(f"  requests without an answer{' away from a kill' if kills else ''}: {elsewhere} "
              f"(tolerated up to {UNANSWERED_TOLERANCE:.1%} of all requests), e.g.")
        for example in unanswered_examples[:3]:
            print(f"    {example}")
        if elsewhere > UNANSWERED_TOLERANCE * len(answers):
            violation(f"{elsewhere} of {len(answers)} requests got no answer"
                      + (" away from a server kill" if kills else ""))
    if violations:
        print(f"FAIL: {len(violations)} violation(s)")
        for v in violations[:40]:
            print(f"  - {v}")
        if len(violations) > 40:
            print(f"  ... and {len(violations) - 40} more")
        return 1
    print("PASS: every accepted triggering event was delivered, nothing was delivered for a "
          "rejected or non-matching webhook")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fire", help="send the webhook mix")
    f.add_argument("--url", required=True)
    f.add_argument("--secret", required=True)
    f.add_argument("--seconds", type=float, required=True)
    f.add_argument("--rate", type=float, default=25.0, help="webhook draws per second")
    f.add_argument("--workers", type=int, default=8)
    f.add_argument("--results", required=True)
    f.add_argument("--run", default="")
    f.add_argument("--retry-after", type=float, default=0.0,
                   help="re-send a webhook that got no answer once, after this many seconds "
                        "[default: 0 = never]")
    c = sub.add_parser("check", help="compare the answers with what the target received")
    c.add_argument("--results", required=True)
    c.add_argument("--deliveries", required=True)
    c.add_argument("--trigger", required=True)
    c.add_argument("--kills", default="",
                   help="soak.sh's kill log (kill time, accepting-again time per line): requests "
                        "without an answer around a kill are expected, not noise")
    args = parser.parse_args()
    if args.command == "fire":
        if args.rate <= 0 or args.seconds <= 0 or args.workers < 2 or not 0 <= args.retry_after <= 10:
            sys.exit("soak_client: --rate and --seconds must be positive, --workers at least 2, "
                     "--retry-after between 0 and 10")
        fire(args)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
