#!/usr/bin/env python3
"""Load and verdict for scripts/soak.sh, on 127.0.0.1 only.

  soak_client.py fire  --url URL --secret S --seconds N --rate R --results FILE
  soak_client.py check --results FILE --deliveries FILE --trigger NAME

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

`check` reads the answers and the target's log (scripts/soak_target.py) and
verifies: every id answered "triggered" was delivered (answered 200 by the
target) at least once; no key of a rejected (malformed, unsigned) or
non-matching webhook ever reached the target; no id was answered "triggered"
twice; every answer was the one expected; every request the target saw carried
a key matching its body. It prints a summary and exits 1 on any violation.
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


def worker(index, host, port, path, jobs, results, lock):
    conn = None
    last_used = 0.0
    opened = 0.0
    used = 0
    while True:
        job = jobs.get()
        if job is None:
            break
        # The server closes a connection idle for 6 s; a request sent just as
        # it does would fail for a reason that is not the server's fault.
        if conn is not None and time.monotonic() - last_used > IDLE_RECONNECT:
            conn.close()
            conn = None
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
            opened = time.monotonic()
            used = 0
        used += 1
        record = {"id": job.id, "kind": job.kind, "variant": job.variant, "group": job.group,
                  "status": None, "outcome": None, "error": None, "worker": index,
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
                                    args=(i, url.hostname, url.port, url.path or "/", jobs, results, lock))
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
            t.join(timeout=REQUEST_TIMEOUT * 3)
    print("soak_client: sent " + ", ".join(f"{k} {counts[k]}" for k, _ in MIX), file=sys.stderr)


# ---------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------


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

    violations = []

    def violation(message):
        violations.append(message)

    # What each id was answered.
    triggered = collections.Counter()
    must_deliver = {}  # id -> time it was accepted
    must_not = set()   # ids whose webhook was rejected or did not match
    by_kind = collections.defaultdict(collections.Counter)
    family = collections.defaultdict(list)  # joined ids -> their outcomes
    uncertain = set()  # joined ids with a request that got no answer
    unanswered = 0
    unanswered_examples = []
    for a in answers:
        kind = a["kind"]
        status, outcome = a["status"], a["outcome"]
        by_kind[kind][str(status) + ("/" + outcome if outcome else "") if status else "error"] += 1
        if status is None:
            # Whether it was processed is unknown: a rejected kind must still
            # never be delivered, a valid one need not be.
            unanswered += 1
            unanswered_examples.append(f"{kind} {a['id']} ({a['variant']}): {a['error']}")
            if kind in ("malformed", "unsigned", "nonmatching"):
                must_not.add(a["id"])
            continue
        if status == 200 and outcome == "triggered":
            triggered[a["id"]] += 1
            must_deliver.setdefault(a["id"], a["t"])
        if kind in ("malformed", "unsigned", "nonmatching"):
            must_not.add(a["id"])
        want_status, want_outcome = expected(kind, a["variant"])
        if status != want_status or (want_outcome and outcome != want_outcome):
            violation(f"{kind} {a['id']} ({a['variant']}): answered {status} {outcome}, "
                      f"expected {want_status} {want_outcome or ''}".rstrip())
        if kind in ("valid", "race", "duplicate"):
            family[a["id"]].append(outcome)
    for a in answers:
        if a["status"] is None and a["kind"] in ("valid", "race", "duplicate"):
            uncertain.add(a["id"])
    for event_id, outcomes in family.items():
        n = outcomes.count("triggered")
        others = [o for o in outcomes if o != "triggered"]
        # With an unanswered copy, its "triggered" may be the one lost.
        wanted = (0, 1) if event_id in uncertain else (1,)
        if n not in wanted or any(o != "duplicate" for o in others):
            violation(f"{event_id}: answered {outcomes}, expected exactly one triggered "
                      f"and the rest duplicate")

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
        elif event_id not in must_deliver and event_id not in uncertain:
            violation(f"{key} reached the target, but its webhook was never answered triggered")

    missing = [i for i in must_deliver if delivered[i] == 0]
    for event_id in missing[:20]:
        violation(f"soak:{event_id} was answered triggered but never delivered "
                  f"({attempts[event_id]} attempts seen)")
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
    if unanswered:
        print(f"  requests without an answer: {unanswered} (tolerated up to "
              f"{UNANSWERED_TOLERANCE:.1%} of all requests), e.g.")
        for example in unanswered_examples[:3]:
            print(f"    {example}")
        if unanswered > UNANSWERED_TOLERANCE * len(answers):
            violation(f"{unanswered} of {len(answers)} requests got no answer")
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
    c = sub.add_parser("check", help="compare the answers with what the target received")
    c.add_argument("--results", required=True)
    c.add_argument("--deliveries", required=True)
    c.add_argument("--trigger", required=True)
    args = parser.parse_args()
    if args.command == "fire":
        if args.rate <= 0 or args.seconds <= 0 or args.workers < 2:
            sys.exit("soak_client: --rate and --seconds must be positive, --workers at least 2")
        fire(args)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
