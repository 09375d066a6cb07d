#!/usr/bin/env python3
"""The load benchmark, server by server as separate processes.

Builds release binaries, then for each server — the floor (a bare hyper server
that reads the body and answers 200: `examples/floor.rs`), whereby-trigger in
memory (`serve --ephemeral --on room.client.joined`), durable (`--data-dir` on
a fresh directory) and, with --store-url, on PostgreSQL — and each connection
count, in interleaved rounds (floor, memory, durable, floor, …), it starts the
server, drives it with the throughput benchmark's load generator (`--external`:
every request a freshly signed webhook with a unique id), and reads from /proc:

- CPU per request: the server's user + system time (/proc/PID/stat) over the
  run, divided by the requests answered — steadier than requests/s on a
  shared machine;
- idle RSS before the load (VmRSS), peak RSS after it (VmHWM);
- start-up: from spawn to the first accepted connection.

It prints the medians over the rounds, and each server's ratio to the floor.
Every server binds 127.0.0.1 only; each run is bounded in time.

    python3 scripts/load.py                       # 3 rounds, 5 s, 1 and 64 connections
    python3 scripts/load.py --rounds 5 --seconds 10 --store-url postgres://…
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SECRET = "whsec_bench_only"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def build():
    """The server binary, the floor and the load generator, built for release."""
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "-q", "-p", "whereby-trigger",
         "--bin", "whereby-trigger", "--example", "floor"],
        cwd=ROOT, check=True)
    out = subprocess.run(
        ["cargo", "bench", "--locked", "-q", "-p", "whereby-trigger", "--bench", "throughput",
         "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    generator = None
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "throughput":
            generator = msg.get("executable") or generator
    if not generator:
        sys.exit("cannot find the throughput benchmark's executable")
    target = os.path.join(ROOT, "target", "release")
    return os.path.join(target, "whereby-trigger"), os.path.join(target, "examples", "floor"), generator


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Server:
    """One server process: started, waited for, measured, stopped."""

    def __init__(self, argv, log, env=None):
        self.log = log
        started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL if "serve" in argv else log,
            stderr=log, env=env, cwd=ROOT)
        self.addr = self._wait_addr(started + 20)
        self._wait_accepting(started + 20)
        self.startup_ms = (time.monotonic() - started) * 1000

    def _wait_addr(self, deadline):
        pattern = re.compile(r"(?:listening on |addr=)(127\.0\.0\.1:\d+)")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"the server exited with {self.proc.returncode}; see {self.log.name}")
            with open(self.log.name) as f:
                for line in f:
                    m = pattern.search(line)
                    if m and "admin" not in line:
                        return m.group(1)
            time.sleep(0.002)
        sys.exit(f"the server did not say where it listens; see {self.log.name}")

    def _wait_accepting(self, deadline):
        host, port = self.addr.rsplit(":", 1)
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                time.sleep(0.002)
        sys.exit(f"the server at {self.addr} does not accept connections")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def drive(generator, addr, seconds, connections):
    """Runs the load generator against `addr`; returns (requests, req/s, p50 ms, p99 ms)."""
    out = subprocess.run(
        [generator, "--external", addr, "--only", "external", "--secret", SECRET,
         "--seconds", str(seconds), "--connections", str(connections), "--warmup-ms", "0"],
        capture_output=True, text=True, timeout=seconds + 120)
    for line in out.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == "external" and len(fields) >= 10 and fields[1].isdigit():
            errors = int(fields[9])
            if errors:
                sys.exit(f"{errors} request(s) failed:\n{out.stdout}")
            return int(fields[1]), float(fields[2]), float(fields[3]), float(fields[5])
    sys.exit(f"the load generator printed no result:\n{out.stdout}\n{out.stderr}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", default="1,64", help="comma-separated [1,64]")
    parser.add_argument("--store-url", help="also measure the PostgreSQL store (an empty database)")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]

    whereby_trigger, floor, generator = build()
    work = tempfile.mkdtemp(prefix="whereby-trigger-load-")
    env = dict(os.environ, NO_COLOR="1")
    serve = [whereby_trigger, "serve", "--bind", "127.0.0.1", "--port", "0",
             "--admin-bind", "off", "--secret", SECRET, "--on", "room.client.joined"]
    servers = {
        "floor": lambda d: [floor, "127.0.0.1:0"],
        "memory": lambda d: serve + ["--ephemeral"],
        "durable": lambda d: serve + ["--data-dir", d],
    }
    if args.store_url:
        servers["postgres"] = lambda d: serve + ["--store-url", args.store_url,
                                                 "--dedup-max-age", "1h"]
    results = {}
    try:
        for round_ in range(args.rounds):
            for conns in connections:
                for name, argv in servers.items():
                    data = tempfile.mkdtemp(dir=work)
                    with open(os.path.join(work, f"{name}-{round_}-{conns}.log"), "w+") as log:
                        server = Server(argv(data), log, env)
                        time.sleep(0.3)
                        idle = memory_kib(server.proc.pid, "VmRSS")
                        before = cpu_seconds(server.proc.pid)
                        requests, rate, p50, p99 = drive(generator, server.addr, args.seconds, conns)
                        cpu = cpu_seconds(server.proc.pid) - before
                        peak = memory_kib(server.proc.pid, "VmHWM")
                        server.stop()
                    shutil.rmtree(data, ignore_errors=True)
                    results.setdefault((name, conns), []).append({
                        "rate": rate, "p50": p50, "p99": p99,
                        "cpu_us": cpu / max(requests, 1) * 1e6,
                        "idle_mib": idle / 1024, "peak_mib": peak / 1024,
                        "startup_ms": server.startup_ms,
                    })
                    print(f"round {round_ + 1}: {name:<8} {conns:>3} conn  {rate:>8.0f} req/s  "
                          f"{cpu / max(requests, 1) * 1e6:6.1f} µs CPU/req", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    median = lambda rows, key: statistics.median(r[key] for r in rows)
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.rounds} interleaved rounds "
          f"of {args.seconds:g} s; medians\n")
    print(f"{'server':<9}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}"
          f"{'idle MiB':>10}{'peak MiB':>10}{'start ms':>10}{'× floor':>9}{'CPU - floor':>13}")
    for conns in connections:
        floor_rows = results[("floor", conns)]
        for name in servers:
            rows = results[(name, conns)]
            rate, cpu = median(rows, "rate"), median(rows, "cpu_us")
            print(f"{name:<9}{conns:>6}{rate:>10.0f}{median(rows, 'p50'):>9.2f}{median(rows, 'p99'):>9.2f}"
                  f"{cpu:>12.1f}{median(rows, 'idle_mib'):>10.1f}{median(rows, 'peak_mib'):>10.1f}"
                  f"{median(rows, 'startup_ms'):>10.1f}{rate / median(floor_rows, 'rate'):>9.2f}"
                  f"{cpu - median(floor_rows, 'cpu_us'):>+13.1f}")


if __name__ == "__main__":
    main()
