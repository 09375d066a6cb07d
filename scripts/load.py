#!/usr/bin/env python3
"""The load benchmark, server by server as separate processes.

Builds release binaries, then for each server — the floor (a bare hyper server
that reads the body and answers 200: `examples/floor.rs`), whereby-trigger in
memory (`serve --ephemeral --on room.client.joined`, logging at `info`, one
line per webhook), the same with the log at `warn` (`memory-warn`: what the
log line costs), the same with its admin listener on and `/metrics` scraped
every second (`metrics`), durable (`--data-dir` on a fresh directory) and, with
--store-url, on PostgreSQL — and each connection count, in interleaved rounds
(floor, memory, …, floor, …), it starts the server, drives it with the
throughput benchmark's load generator (`--external`: every request a freshly
signed webhook with a unique id), and reads from /proc:

- CPU per request: the server's user + system time (/proc/PID/stat) over the
  run, divided by the requests answered — steadier than requests/s on a
  shared machine;
- idle RSS before the load (VmRSS, and RssAnon: the part that is not the
  program's own code mapped from its file), peak RSS after it (VmHWM);
- start-up: from spawn to the first accepted connection.

It prints the medians over the rounds, each server's ratio to the floor, and
which of the targets below hold. Every server binds 127.0.0.1 only; each run
is bounded in time.

    python3 scripts/load.py                       # 3 rounds, 5 s, 1 and 64 connections
    python3 scripts/load.py --rounds 5 --seconds 10 --store-url postgres://…
    python3 scripts/load.py --postgres --only postgres,durable --connections 64

`--postgres` starts a throw-away PostgreSQL cluster for the run (initdb into a
temporary directory, as `nobody` when run as root, on a free loopback port,
`fsync` on), gives each start of the server an empty database of its own (so
that none starts by loading the ids of the rounds before), and removes it at
the end.
"""

import argparse
import contextlib
import glob
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
import threading
import time
import urllib.request

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


@contextlib.contextmanager
def throwaway_postgres():
    """A PostgreSQL cluster of its own for the run; yields a function that
    creates an empty database in it and returns its URL."""
    initdb = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None)
    if not initdb:
        sys.exit("--postgres: PostgreSQL's programs (initdb, pg_ctl) are not installed")
    bin_dir = os.path.dirname(os.path.realpath(initdb))
    pg_ctl = os.path.join(bin_dir, "pg_ctl")
    work = tempfile.mkdtemp(prefix="whereby-trigger-load-pg-")
    as_owner = []
    if os.geteuid() == 0:
        shutil.chown(work, "nobody")
        as_owner = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(work, "data")
    quiet = dict(stdout=subprocess.DEVNULL, check=True, timeout=120)
    try:
        subprocess.run(as_owner + [initdb, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                                   "--no-sync", "-D", data], **quiet)
        subprocess.run(as_owner + [pg_ctl, "-D", data, "-l", os.path.join(work, "server.log"),
                                   "-w", "-t", "30", "-o",
                                   f"-p {port} -k {work} -c listen_addresses=127.0.0.1",
                                   "start"], **quiet)
        createdb = os.path.join(bin_dir, "createdb")
        created = [0]

        def fresh_database():
            created[0] += 1
            name = f"load{created[0]}"
            subprocess.run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name],
                           **quiet)
            return f"postgres://postgres@127.0.0.1:{port}/{name}"

        yield fresh_database
    finally:
        subprocess.run(as_owner + [pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30",
                                   "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        shutil.rmtree(work, ignore_errors=True)


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
        self.admin = None
        started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL if "serve" in argv else log,
            stderr=log, env=env, cwd=ROOT)
        self.addr = self._wait_addr(started + 20)
        self._wait_accepting(started + 20)
        self.startup_ms = (time.monotonic() - started) * 1000

    def _wait_addr(self, deadline):
        pattern = re.compile(r"(?:listening on |addr=)(127\.0\.0\.1:\d+)")
        admin = re.compile(r"admin=(127\.0\.0\.1:\d+)")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"the server exited with {self.proc.returncode}; see {self.log.name}")
            with open(self.log.name) as f:
                for line in f:
                    m = admin.search(line)
                    if m:
                        self.admin = m.group(1)
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


class Scraper:
    """Fetches the admin listener's /metrics every second while the load runs,
    as Prometheus would."""

    def __init__(self, admin):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(admin,), daemon=True)
        self.thread.start()

    def _run(self, admin):
        while not self.stop.wait(1.0):
            try:
                urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read()
            except OSError as err:
                print(f"scraping /metrics failed: {err}", file=sys.stderr)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=10)


def targets(results, connections, names):
    """The issue's targets, each with the figures it was judged on."""
    median = lambda name, conns, key: statistics.median(r[key] for r in results[(name, conns)])
    rows = []
    if 64 in connections:
        floor_cpu, floor_rate = median("floor", 64, "cpu_us"), median("floor", 64, "rate")
        mem_cpu, mem_rate = median("memory", 64, "cpu_us"), median("memory", 64, "rate")
        rows.append(("in memory: CPU per request <= floor + 5 µs",
                     mem_cpu <= floor_cpu + 5, f"{mem_cpu:.1f} vs {floor_cpu + 5:.1f}"))
        if "memory-warn" in names:
            warn_cpu = median("memory-warn", 64, "cpu_us")
            rows.append(("  the same with the log at warn", warn_cpu <= floor_cpu + 5,
                         f"{warn_cpu:.1f} vs {floor_cpu + 5:.1f}"))
        rows.append(("in memory: req/s >= 0.75 of the floor (64 connections)",
                     mem_rate >= 0.75 * floor_rate, f"{mem_rate / floor_rate:.2f}"))
        if "durable" in names:
            dur_cpu, dur_rate = median("durable", 64, "cpu_us"), median("durable", 64, "rate")
            rows.append(("durable: CPU per request <= in memory + 15 µs",
                         dur_cpu <= mem_cpu + 15, f"{dur_cpu:.1f} vs {mem_cpu + 15:.1f}"))
            rows.append(("durable: req/s >= 0.5 of the floor", dur_rate >= 0.5 * floor_rate,
                         f"{dur_rate / floor_rate:.2f}"))
            rows.append(("durable: req/s >= 0.6 of in memory", dur_rate >= 0.6 * mem_rate,
                         f"{dur_rate / mem_rate:.2f}"))
            dur_p99 = median("durable", 64, "p99")
            rows.append(("durable: p99 <= 8 ms (64 connections)", dur_p99 <= 8, f"{dur_p99:.2f} ms"))
        mem_p99 = median("memory", 64, "p99")
        rows.append(("in memory: p99 <= 5 ms (64 connections)", mem_p99 <= 5, f"{mem_p99:.2f} ms"))
        if "metrics" in names:
            met_cpu = median("metrics", 64, "cpu_us")
            spread = max(r["cpu_us"] for r in results[("memory", 64)]) - min(
                r["cpu_us"] for r in results[("memory", 64)])
            # One-sided: scraping cannot make a webhook cheaper, so a lower
            # figure is the noise between identical servers.
            rows.append(("metrics on: CPU within the rounds' spread of in memory",
                         met_cpu - mem_cpu <= max(spread, 0.05 * mem_cpu),
                         f"{met_cpu:.1f} vs {mem_cpu:.1f} ± {max(spread, 0.05 * mem_cpu):.1f}"))
    conns = connections[0]
    idle = median("memory", conns, "idle_mib")
    rows.append(("in memory: idle RSS <= 10 MiB", idle <= 10,
                 f"{idle:.1f} MiB ({median('memory', conns, 'idle_anon_mib'):.1f} not code)"))
    start = median("memory", conns, "startup_ms")
    rows.append(("in memory: ready within 20 ms", start <= 20, f"{start:.1f} ms"))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", default="1,64", help="comma-separated [1,64]")
    parser.add_argument("--only", help="comma-separated servers (floor and memory always run)")
    parser.add_argument("--store-url", help="also measure the PostgreSQL store (an empty database)")
    parser.add_argument("--postgres", action="store_true",
                        help="also measure the PostgreSQL store, on a throw-away cluster")
    args = parser.parse_args()
    if args.postgres and not args.store_url:
        with throwaway_postgres() as fresh_database:
            return run(args, fresh_database)
    return run(args, (lambda: args.store_url) if args.store_url else None)


def run(args, store_url):
    """The rounds; `store_url` gives the PostgreSQL database of each start, if any."""
    connections = [int(c) for c in args.connections.split(",")]

    whereby_trigger, floor, generator = build()
    work = tempfile.mkdtemp(prefix="whereby-trigger-load-")
    env = dict(os.environ, NO_COLOR="1")
    env.pop("RUST_LOG", None)
    serve = [whereby_trigger, "serve", "--bind", "127.0.0.1", "--port", "0",
             "--admin-bind", "off", "--secret", SECRET, "--on", "room.client.joined"]
    with_admin = [a if a != "off" else "127.0.0.1:0" for a in serve]
    # name: (argv for a data directory, extra environment, scrape /metrics)
    servers = {
        "floor": (lambda d: [floor, "127.0.0.1:0"], {}, False),
        "memory": (lambda d: serve + ["--ephemeral"], {}, False),
        # The start-up lines say where it listens.
        "memory-warn": (lambda d: serve + ["--ephemeral"],
                        {"RUST_LOG": "warn,whereby_trigger::trigger=info"}, False),
        "metrics": (lambda d: with_admin + ["--ephemeral"], {}, True),
        "durable": (lambda d: serve + ["--data-dir", d], {}, False),
    }
    if store_url:
        servers["postgres"] = (lambda d: serve + ["--store-url", store_url(),
                                                  "--dedup-max-age", "1h"], {}, False)
    if args.only:
        keep = {"floor", "memory"} | set(args.only.split(","))
        servers = {k: v for k, v in servers.items() if k in keep}
    results = {}
    try:
        for round_ in range(args.rounds):
            for conns in connections:
                for name, (argv, extra, scrape) in servers.items():
                    data = tempfile.mkdtemp(dir=work)
                    with open(os.path.join(work, f"{name}-{round_}-{conns}.log"), "w+") as log:
                        server = Server(argv(data), log, dict(env, **extra))
                        time.sleep(0.3)
                        idle = memory_kib(server.proc.pid, "VmRSS")
                        idle_anon = memory_kib(server.proc.pid, "RssAnon")
                        scraper = Scraper(server.admin) if scrape and server.admin else None
                        before = cpu_seconds(server.proc.pid)
                        requests, rate, p50, p99 = drive(generator, server.addr, args.seconds, conns)
                        cpu = cpu_seconds(server.proc.pid) - before
                        if scraper:
                            scraper.close()
                        peak = memory_kib(server.proc.pid, "VmHWM")
                        server.stop()
                    shutil.rmtree(data, ignore_errors=True)
                    results.setdefault((name, conns), []).append({
                        "rate": rate, "p50": p50, "p99": p99,
                        "cpu_us": cpu / max(requests, 1) * 1e6,
                        "idle_mib": idle / 1024, "idle_anon_mib": idle_anon / 1024,
                        "peak_mib": peak / 1024, "startup_ms": server.startup_ms,
                    })
                    print(f"round {round_ + 1}: {name:<11} {conns:>3} conn  {rate:>8.0f} req/s  "
                          f"{cpu / max(requests, 1) * 1e6:6.1f} µs CPU/req", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    median = lambda rows, key: statistics.median(r[key] for r in rows)
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.rounds} interleaved rounds "
          f"of {args.seconds:g} s; medians\n")
    print(f"{'server':<12}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}"
          f"{'idle MiB':>10}{'(anon)':>8}{'peak MiB':>10}{'start ms':>10}{'× floor':>9}{'CPU - floor':>13}")
    for conns in connections:
        floor_rows = results[("floor", conns)]
        for name in servers:
            rows = results[(name, conns)]
            rate, cpu = median(rows, "rate"), median(rows, "cpu_us")
            print(f"{name:<12}{conns:>6}{rate:>10.0f}{median(rows, 'p50'):>9.2f}{median(rows, 'p99'):>9.2f}"
                  f"{cpu:>12.1f}{median(rows, 'idle_mib'):>10.1f}{median(rows, 'idle_anon_mib'):>8.1f}"
                  f"{median(rows, 'peak_mib'):>10.1f}{median(rows, 'startup_ms'):>10.1f}"
                  f"{rate / median(floor_rows, 'rate'):>9.2f}{cpu - median(floor_rows, 'cpu_us'):>+13.1f}")
    print("\ntargets:")
    for what, holds, figures in targets(results, connections, servers):
        print(f"  {'holds' if holds else 'MISSED':<7}{what}: {figures}")


if __name__ == "__main__":
    main()
