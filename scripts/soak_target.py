#!/usr/bin/env python3
"""A flapping `forward` target for scripts/soak.sh, on 127.0.0.1 only.

It cycles through --phases (default down,200,500,200), each --phase-seconds long:

  down  the request's head is read, then the connection is reset (no answer);
  500   the request is read and answered 500 (every other one with Retry-After: 1);
  200   the request is read, checked, and answered 200.

The default cycle is bad half the time. With down,500,200 (bad two thirds of
the time) a delivery exhausts whereby-trigger's 30 attempts about once in
75,000 events, which a long soak would report as a (by-design) dead letter.

Every request is appended to --log as one tab-separated line:

  <unix time>  <phase>  <status>  <Idempotency-Key>  <note>

where status is the answer (reset, 500, 200) and note is "ok" or what was wrong
with the request (its key does not match the event in its body, a header is
missing, the body is not the action JSON). Only a "200" line is a delivery.

Once the file --recover-file exists (or on SIGUSR1), the flapping ends: from
then on every request is answered 200 (the receiver "recovers"). SIGTERM or
SIGINT stop the server. It also stops by itself after --max-seconds, so it can
never outlive a broken soak run.
"""

import argparse
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_PHASES = "down,200,500,200"


class State:
    def __init__(self, phases, phase_seconds, log_path, expect_auth, recover_file):
        self.started = time.monotonic()
        self.phases = phases
        self.recover_file = recover_file
        self.phase_seconds = phase_seconds
        self.recovered = False
        self.lock = threading.Lock()
        self.log = open(log_path, "a", buffering=1, encoding="utf-8")
        self.expect_auth = expect_auth
        self.counter = 0

    def phase(self):
        if not self.recovered and self.recover_file and os.path.exists(self.recover_file):
            self.recovered = True
        if self.recovered:
            return "200"
        n = int((time.monotonic() - self.started) / self.phase_seconds)
        return self.phases[n % len(self.phases)]

    def record(self, phase, status, key, note):
        line = f"{time.time():.3f}\t{phase}\t{status}\t{key}\t{note}\n"
        with self.lock:
            self.counter += 1
            self.log.write(line)
            return self.counter


STATE = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "soak-target"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        phase = STATE.phase()
        key = self.headers.get("Idempotency-Key", "")
        if phase == "down":
            STATE.record(phase, "reset", key, "-")
            # RST instead of FIN: the sender sees a reset connection, no answer.
            try:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            except OSError:
                pass
            self.close_connection = True
            self.connection.close()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        note = self.check(key, body)
        if phase == "500":
            n = STATE.record(phase, "500", key, note)
            self.answer(500, retry_after=(n % 2 == 0))
            return
        STATE.record(phase, "200", key, note)
        self.answer(200)

    def check(self, key, body):
        if not key:
            return "no Idempotency-Key"
        if STATE.expect_auth and self.headers.get("Authorization") != STATE.expect_auth:
            return "wrong or missing Authorization"
        try:
            doc = json.loads(body)
            event_id = doc["triggerWebhook"]["id"]
            trigger = doc["trigger"]
            action = doc["action"]
        except (ValueError, KeyError, TypeError):
            return "body is not the action JSON"
        expected = f"{trigger}:{event_id}" + (":stop" if action == "stop" else "")
        if key != expected:
            return f"key does not match the body ({expected})"
        return "ok"

    def answer(self, status, retry_after=False):
        payload = b'{"ok":true}' if status == 200 else b'{"error":"flapping"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if retry_after:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(payload)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A reset connection in the "down" phase is the point, not an error.
        pass


def main():
    global STATE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", required=True, help="file every request is appended to")
    parser.add_argument("--port-file", required=True, help="the chosen port is written here")
    parser.add_argument("--phase-seconds", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--auth", default="", help="expected Authorization header value")
    parser.add_argument("--recover-file", default="", help="stop flapping once this file exists")
    parser.add_argument("--phases", default=DEFAULT_PHASES,
                        help=f"comma-separated cycle of down, 500, 200 [default: {DEFAULT_PHASES}]")
    args = parser.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not phases or any(p not in ("down", "500", "200") for p in phases):
        parser.error("--phases takes a comma-separated list of down, 500 and 200")
    if args.phase_seconds <= 0:
        parser.error("--phase-seconds must be positive")

    STATE = State(phases, args.phase_seconds, args.log, args.auth, args.recover_file)
    server = Server(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{port}\n")
    os.replace(tmp, args.port_file)

    def recover(_signum, _frame):
        STATE.recovered = True
        print("soak_target: recovered, answering 200 from now on", file=sys.stderr, flush=True)

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGUSR1, recover)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Timer(args.max_seconds, server.shutdown).start()
    print(
        f"soak_target: listening on 127.0.0.1:{port}, phases {'/'.join(phases)} "
        f"of {args.phase_seconds:g} s",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        STATE.log.flush()
    os._exit(0)  # the max-seconds timer thread must not keep the process alive


if __name__ == "__main__":
    main()
