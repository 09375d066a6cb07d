#!/usr/bin/env bash
# Soak run: mixed webhooks against a durable whereby-trigger while its forward
# target flaps, then a verdict. Loopback only; every process is bounded.
#
#   scripts/soak.sh                 # 10 minutes of load
#   scripts/soak.sh --minutes 1     # a quick check
#   scripts/soak.sh --minutes 60 --rate 50
#   scripts/soak.sh --minutes 5 --kill-every 20   # and SIGKILL the server every 20 s
#
# 1. builds the release binary (cargo build --release -p whereby-trigger);
# 2. starts scripts/soak_target.py on 127.0.0.1: it flaps through --phases
#    (down = connection reset, 500, 200; default down,200,500,200), each
#    --phase-seconds long, and logs every request's Idempotency-Key;
# 3. starts `whereby-trigger serve` on 127.0.0.1 with a durable data dir in a
#    temporary directory and one trigger, `soak`, that forwards every
#    room.client.joined to the target (in the [[trigger]] `forward` form);
# 4. fires --rate webhook draws per second for --minutes (scripts/soak_client.py
#    fire): valid, racing and later duplicates, non-matching, malformed and
#    unsigned/badly signed ones, recording every answer;
#    with --kill-every S, every S seconds of it the server (the process, not
#    its `timeout` wrapper) gets SIGKILL and is started again at once on the
#    same data dir, port and config (each wait for it to accept connections is
#    bounded); the client then re-sends a webhook that got no answer once,
#    after a second, as Whereby retries; kills go to kills.tsv;
# 5. lets the target recover and waits (at most --drain-seconds) until
#    `whereby-trigger outbox list` shows no pending delivery;
# 6. stops the server and the target and checks (soak_client.py check) that
#    every event answered "triggered" was delivered at least once and that no
#    key of a rejected or non-matching webhook ever reached the target. An
#    event none of whose requests got an answer (the server died with it in
#    flight, or was down) is unknown: it may be delivered, need not be.
#
# Exit status: 0 pass, 1 a violation (or a step failed), 2 a usage error.
# The work directory is removed on success and kept (its path printed) on
# failure, or always with --keep.

set -euo pipefail

minutes=10
rate=25
phase_seconds=3
phases=down,200,500,200
drain_seconds=120
kill_every=0
keep=0
# Longest wait for a restarted server to accept connections again.
restart_wait=20

usage() {
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --minutes N        minutes of load [default: 10]
  --rate R           webhook draws per second [default: 25]
  --phases LIST      the target's cycle of down, 500 and 200 [default: down,200,500,200]
  --phase-seconds S  length of each phase [default: 3]
  --drain-seconds S  longest wait for the outbox to empty at the end [default: 120]
  --kill-every S     during the load, SIGKILL the server every S seconds and restart it
                     at once on the same data dir and port, e.g. 20 [default: 0 = off]
  --keep             keep the work directory (logs, answers, data dir)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="${2:?--minutes needs a value}"; shift 2 ;;
        --minutes=*) minutes="${1#*=}"; shift ;;
        --rate) rate="${2:?--rate needs a value}"; shift 2 ;;
        --rate=*) rate="${1#*=}"; shift ;;
        --phases) phases="${2:?--phases needs a value}"; shift 2 ;;
        --phases=*) phases="${1#*=}"; shift ;;
        --phase-seconds) phase_seconds="${2:?--phase-seconds needs a value}"; shift 2 ;;
        --phase-seconds=*) phase_seconds="${1#*=}"; shift ;;
        --drain-seconds) drain_seconds="${2:?--drain-seconds needs a value}"; shift 2 ;;
        --drain-seconds=*) drain_seconds="${1#*=}"; shift ;;
        --kill-every) kill_every="${2:?--kill-every needs a value}"; shift 2 ;;
        --kill-every=*) kill_every="${1#*=}"; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "soak: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$minutes" "$drain_seconds"; do
    case "$n" in ''|*[!0-9]*|0) echo "soak: --minutes and --drain-seconds take whole numbers > 0" >&2; exit 2 ;; esac
done
case "$rate$phase_seconds" in *[!0-9.]*) echo "soak: --rate and --phase-seconds take numbers" >&2; exit 2 ;; esac
case "$kill_every" in ''|*[!0-9]*) echo "soak: --kill-every takes a whole number of seconds (0 = off)" >&2; exit 2 ;; esac
kill_every=$((10#$kill_every))
if [ "$kill_every" -gt 0 ] && [ "$kill_every" -ge $((minutes * 60)) ]; then
    echo "soak: --kill-every must be shorter than the load (--minutes)" >&2; exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
scripts="$root/scripts"
load_seconds=$((minutes * 60))
# Everything after the build: load, drain, stopping, checking, with slack (and
# with --kill-every the wait for a restart the load may end in). Every server,
# restarted ones too, runs under `timeout` until the same end.
budget=$((load_seconds + drain_seconds + 120))
if [ "$kill_every" -gt 0 ]; then budget=$((budget + restart_wait + 10)); fi

log() { printf 'soak: %s\n' "$*" >&2; }

# Loopback only: no proxy may see the forward requests or the webhooks.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

log "building the release binary"
timeout 1800 cargo build --release --quiet -p whereby-trigger --manifest-path "$root/Cargo.toml"
bin="$root/target/release/whereby-trigger"
[ -x "$bin" ] || { log "no binary at $bin"; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/whereby-soak.XXXXXX")"
data="$work/data"
target_pid=""
server_pid=""   # the `timeout` wrapper of the current server (changes with each restart)
server_child="" # the server process itself, the wrapper's child
client_pid=""
kills=0
status=1

cleanup() {
    # Only the processes this script started, by their ids: each `timeout`
    # passes SIGTERM on to its command (the server may take its 10 s drain);
    # what is still there after 20 s is killed, command first.
    for pid in $client_pid $server_pid $target_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $client_pid $server_pid $target_pid; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            for child in $(pgrep -P "$pid" 2>/dev/null); do kill -KILL "$child" 2>/dev/null || true; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [ "$status" -eq 0 ] && [ "$keep" -eq 0 ]; then
        rm -rf "$work"
    else
        log "work directory kept: $work"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
run_end=$((SECONDS + budget))

secret="whsec_soak_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
auth="Bearer soak-$RANDOM$RANDOM"

# The target, for at most the whole budget.
timeout --kill-after=5 "$budget" python3 "$scripts/soak_target.py" \
    --log "$work/target.log" --port-file "$work/target.port" \
    --phase-seconds "$phase_seconds" --max-seconds "$budget" --auth "$auth" \
    --recover-file "$work/recover" --phases "$phases" \
    2>"$work/target.err" &
target_pid=$!
for _ in $(seq 100); do [ -s "$work/target.port" ] && break; sleep 0.1; done
[ -s "$work/target.port" ] || { log "the target did not start"; cat "$work/target.err" >&2; exit 1; }
target_port="$(cat "$work/target.port")"

# A free port for the server (a tiny race with other programs is harmless: the
# server would fail to bind and the run would stop).
server_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

cat >"$work/soak.toml" <<EOF
[server]
bind = "127.0.0.1"
port = $server_port

[verify]
secrets = ["\${SOAK_SECRET}"]

[[trigger]]
name = "soak"
on = ["room.client.joined"]
forward = { url = "http://127.0.0.1:$target_port/assistants", timeout = "2s", headers = { Authorization = "\${SOAK_AUTH}" } }
EOF

accepting() {
    timeout 2 bash -c ": <'/dev/tcp/127.0.0.1/$server_port'" 2>/dev/null
}

# Starts the server under `timeout` until the end of the budget, on the one
# config, data dir and port, and waits (at most $1 seconds) until it accepts
# connections. Sets server_pid (the wrapper) and server_child (the server).
start_server() {
    local wait_deadline=$((SECONDS + $1)) left=$((run_end - SECONDS))
    [ "$left" -gt 0 ] || left=1
    SOAK_SECRET="$secret" SOAK_AUTH="$auth" RUST_LOG="${RUST_LOG:-info}" \
        timeout --kill-after=60 "$left" "$bin" serve --config "$work/soak.toml" --data-dir "$data" \
        >>"$work/server.out" 2>>"$work/server.log" &
    server_pid=$!
    server_child=""
    while [ "$SECONDS" -le "$wait_deadline" ]; do
        if [ -z "$server_child" ]; then
            server_child="$(pgrep -P "$server_pid" 2>/dev/null | head -1 || true)"
        fi
        if [ -n "$server_child" ] && accepting; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# SIGKILL for the server process (not its wrapper), then a restart at once.
kill_and_restart() {
    local old_wrapper="$server_pid" victim killed_at ready_at
    victim="$(pgrep -P "$server_pid" 2>/dev/null || true)"
    if [ -z "$victim" ] || [ "$victim" != "$server_child" ]; then
        log "the server (pid ${server_child:-?} under $server_pid) is gone before kill $((kills + 1))"
        tail -30 "$work/server.log" >&2
        return 1
    fi
    # Out of the job table, so that bash does not report it "Killed" (it still
    # reaps it); its status is of no interest.
    disown "$old_wrapper" 2>/dev/null || true
    killed_at="$(date +%s.%N)"
    kill -KILL "$victim"
    # The wrapper exits as soon as its command is dead (bounded wait).
    for _ in $(seq 100); do kill -0 "$old_wrapper" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$old_wrapper" 2>/dev/null; then
        log "the timeout wrapper $old_wrapper outlived the killed server $victim"; return 1
    fi
    kills=$((kills + 1))
    printf '==== soak: kill %d: SIGKILL to pid %s; restarting ====\n' "$kills" "$victim" >>"$work/server.log"
    if ! start_server "$restart_wait"; then
        log "the server did not accept connections within ${restart_wait}s of restart $kills"
        tail -30 "$work/server.log" >&2
        return 1
    fi
    ready_at="$(date +%s.%N)"
    printf '%s\t%s\t%s\t%s\n' "$killed_at" "$ready_at" "$victim" "$server_child" >>"$work/kills.tsv"
    log "kill $kills: SIGKILL to server pid $victim; restarted as pid $server_child," \
        "accepting after $(awk -v a="$killed_at" -v b="$ready_at" 'BEGIN { printf "%.2f", b - a }')s"
}

if ! start_server 10; then
    log "the server did not start"; tail -20 "$work/server.log" >&2; exit 1
fi
log "server on 127.0.0.1:$server_port (data dir $data), target on 127.0.0.1:$target_port flapping $phases, ${phase_seconds}s each"
log "firing for ${minutes} min at $rate draws/s"

if [ "$kill_every" -eq 0 ]; then
    timeout --kill-after=5 $((load_seconds + 60)) python3 "$scripts/soak_client.py" fire \
        --url "http://127.0.0.1:$server_port/" --secret "$secret" \
        --seconds "$load_seconds" --rate "$rate" --results "$work/answers.jsonl"
else
    log "killing the server (SIGKILL) every ${kill_every}s of the load"
    : >"$work/kills.tsv"
    timeout --kill-after=5 $((load_seconds + 60)) python3 "$scripts/soak_client.py" fire \
        --url "http://127.0.0.1:$server_port/" --secret "$secret" \
        --seconds "$load_seconds" --rate "$rate" --results "$work/answers.jsonl" \
        --retry-after 1 &
    client_pid=$!
    next_kill=$((SECONDS + kill_every))
    while kill -0 "$client_pid" 2>/dev/null; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            log "the server died during the load (not killed by the soak)"; tail -30 "$work/server.log" >&2; exit 1
        fi
        if [ "$SECONDS" -ge "$next_kill" ]; then
            kill_and_restart || exit 1
            next_kill=$((next_kill + kill_every))
        fi
        sleep 0.2
    done
    client_rc=0
    wait "$client_pid" || client_rc=$?
    client_pid=""
    if [ "$client_rc" -ne 0 ]; then
        log "the client failed (status $client_rc)"; exit 1
    fi
    log "$kills kill(s) during the load"
fi

if ! kill -0 "$server_pid" 2>/dev/null; then
    log "the server died during the load"; tail -30 "$work/server.log" >&2; exit 1
fi

# The target recovers; the outbox must drain.
touch "$work/recover"
log "target recovered; waiting up to ${drain_seconds}s for the outbox to drain"
drained=0
pending=0
dead=0
deadline=$((SECONDS + drain_seconds))
while [ "$SECONDS" -lt "$deadline" ]; do
    outbox="$(timeout 30 "$bin" outbox list --data-dir "$data" 2>&1 || true)"
    pending="$(printf '%s\n' "$outbox" | awk -F'\t' '$2 == "pending"' | wc -l)"
    dead="$(printf '%s\n' "$outbox" | awk -F'\t' '$2 == "dead"' | wc -l)"
    if printf '%s\n' "$outbox" | grep -q 'the outbox is empty'; then
        drained=1
        break
    fi
    if [ "$pending" -eq 0 ] && [ "$dead" -gt 0 ]; then
        break
    fi
    sleep 2
done
printf '%s\n' "${outbox:-}" >"$work/outbox.txt"
if [ "$drained" -eq 1 ]; then
    log "outbox empty after $((SECONDS - deadline + drain_seconds))s"
else
    log "outbox NOT empty: $pending pending, $dead dead (see $work/outbox.txt)"
fi

# Stop the server (graceful: SIGTERM, which `timeout` passes on; the server
# may take its 10 s drain for deliveries in flight), then the target, so that
# every request the target got is in its log before the check.
kill -TERM "$server_pid" 2>/dev/null || true
stop_started=$SECONDS
for _ in $(seq 225); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$server_pid" 2>/dev/null; then
    log "the server did not stop within 45s of SIGTERM; killing it"
    kill -KILL "$server_pid" 2>/dev/null || true
fi
server_rc=0
wait "$server_pid" 2>/dev/null || server_rc=$?
server_pid=""
log "server stopped $((SECONDS - stop_started))s after SIGTERM (status $server_rc)"
kill -TERM "$target_pid" 2>/dev/null || true
wait "$target_pid" 2>/dev/null || true
target_pid=""

verdict=0
kill_args=()
if [ "$kill_every" -gt 0 ]; then kill_args=(--kills "$work/kills.tsv"); fi
python3 "$scripts/soak_client.py" check --results "$work/answers.jsonl" \
    --deliveries "$work/target.log" --trigger soak "${kill_args[@]}" || verdict=1
if [ "$kill_every" -gt 0 ] && [ "$kills" -eq 0 ]; then
    echo "FAIL: --kill-every $kill_every, but the server was never killed"
    verdict=1
fi
if [ "$drained" -ne 1 ]; then
    echo "FAIL: the outbox did not drain: $pending pending, $dead dead"
    verdict=1
fi
if [ "$server_rc" -ne 0 ]; then
    echo "FAIL: the server exited with status $server_rc"
    verdict=1
fi
errors="$(grep -c ' ERROR ' "$work/server.log" || true)"
warnings="$(grep -c ' WARN ' "$work/server.log" || true)"
echo "  server log: $errors error line(s), $warnings warning line(s) (retries are warnings)"
if [ "$errors" -gt 0 ]; then
    grep ' ERROR ' "$work/server.log" | sed 's/^/    /' | head -5
fi
status=$verdict
exit "$status"
