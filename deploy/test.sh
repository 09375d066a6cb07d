#!/usr/bin/env bash
# Checks every file in deploy/ as far as this machine allows:
#
#   1. the Kubernetes manifests, the Containerfile and the unit, read offline
#      (deploy/check_deploy.py: YAML parsed, required fields asserted);
#   2. the example config (and the ConfigMap's copy) through `whereby-trigger check`;
#   3. the systemd unit through `systemd-analyze verify` (any warning fails);
#   4. the server started as the deploy files start it: /healthz and /readyz
#      answer 200, a second server on the same data directory is refused (the
#      rule behind `strategy: Recreate`), SIGTERM ends it in time;
#   5. the container's dependency layer (the manifests with stub sources) reads;
#   6. the container image built with podman (or buildah), when it can be here.
#
# Exits non-zero on a real failure; what the machine cannot do prints a
# "skipped: …" line and does not fail. Each step is bounded in time.
# Environment: CARGO_TARGET_DIR (where the binary is), DEPLOY_BUILD_TIMEOUT
# (seconds for the image build, default 1500), DEPLOY_SKIP_CONTAINER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

passed=0
failed=0
skipped=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }
skip() { echo "skipped: $*"; skipped=$((skipped + 1)); }

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

apt_install() {
  # Debian packages, only as root with apt; bounded.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    timeout 120 apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive timeout 300 \
      apt-get install -y -qq --no-install-recommends "$@" >"$WORK/apt.log" 2>&1
  else
    return 1
  fi
}

# --- 1. offline checks of the files ------------------------------------------
echo "== deploy: manifests, Containerfile and unit (offline)"
PY=
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import yaml' 2>/dev/null; then
    PY=$candidate
    break
  fi
done
if [ -z "$PY" ] && apt_install python3-yaml && /usr/bin/python3 -c 'import yaml'; then
  PY=/usr/bin/python3
fi
if [ -z "$PY" ]; then
  fail "no python3 with PyYAML, and python3-yaml could not be installed"
elif timeout 120 "$PY" deploy/check_deploy.py; then
  pass "deploy/check_deploy.py"
else
  fail "deploy/check_deploy.py"
fi

# --- the binary ---------------------------------------------------------------
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${WHEREBY_TRIGGER_BIN:-$TARGET/debug/whereby-trigger}
# The one `cargo test --workspace` built (CI runs this script after it), unless
# it is missing or older than the sources. (`cargo build` after `cargo test`
# would rebuild much of the tree: the dev-dependencies change features.)
if [ ! -x "$BIN" ] || [ -n "$(find crates Cargo.lock -newer "$BIN" \( -name '*.rs' -o -name '*.toml' -o -name Cargo.lock \) -print -quit)" ]; then
  echo "== building the binary (missing or older than the sources)"
  timeout 900 cargo build --locked -q -p whereby-trigger --bin whereby-trigger
  BIN=$TARGET/debug/whereby-trigger
fi
echo "binary: $BIN"

# --- 2. the config ------------------------------------------------------------
echo "== deploy: the example config"
if "$BIN" check --config deploy/config.example.toml >"$WORK/check.out" 2>&1; then
  pass "whereby-trigger check --config deploy/config.example.toml"
else
  cat "$WORK/check.out"
  fail "whereby-trigger check --config deploy/config.example.toml"
fi
if [ -n "$PY" ]; then
  "$PY" deploy/check_deploy.py --print-configmap-config >"$WORK/configmap.toml"
  if "$BIN" check --config "$WORK/configmap.toml" >"$WORK/check.out" 2>&1; then
    pass "whereby-trigger check on the ConfigMap's config.toml"
  else
    cat "$WORK/check.out"
    fail "whereby-trigger check on the ConfigMap's config.toml"
  fi
  "$PY" deploy/check_deploy.py --print-shared-configmap-config >"$WORK/shared.toml"
  if "$BIN" check --config "$WORK/shared.toml" >"$WORK/check.out" 2>&1; then
    pass "whereby-trigger check on the shared ConfigMap's config.toml"
  else
    cat "$WORK/check.out"
    fail "whereby-trigger check on the shared ConfigMap's config.toml"
  fi
fi

# --- 3. systemd-analyze verify ------------------------------------------------
echo "== deploy: systemd-analyze verify"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  skip "systemd-analyze verify: systemd-analyze is not installed (Debian's systemd package; not installed by this script, it would replace the machine's init)"
else
  # verify checks that ExecStart's program exists: point it at the built binary.
  mkdir -p "$WORK/unit"
  sed "s#/usr/local/bin/whereby-trigger#$BIN#" deploy/whereby-trigger.service \
    >"$WORK/unit/whereby-trigger.service"
  # It exits 0 on unknown keys and bad values (it only warns), so any output fails.
  if timeout 60 systemd-analyze verify "$WORK/unit/whereby-trigger.service" >"$WORK/verify.out" 2>&1 \
    && [ ! -s "$WORK/verify.out" ]; then
    pass "systemd-analyze verify deploy/whereby-trigger.service"
  else
    cat "$WORK/verify.out"
    fail "systemd-analyze verify deploy/whereby-trigger.service"
  fi
fi

# --- 4. the server as deployed -----------------------------------------------
echo "== deploy: the server with the deploy files' flags, its probes, one writer"
free_port() {
  "${PY:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
http_status() { # URL -> status code, or 000
  "${PY:-python3}" - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=3).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}
PORT=$(free_port)
DATA=$WORK/data
ARGS=(serve --config deploy/config.example.toml --data-dir "$DATA" --port "$PORT" --bind 127.0.0.1)
"$BIN" serve --help >"$WORK/help.txt" 2>&1 || true
if grep -q -- '--admin-bind' "$WORK/help.txt"; then
  ADMIN_PORT=$(free_port)
  ARGS+=(--admin-bind "127.0.0.1:$ADMIN_PORT")
else
  ADMIN_PORT=
  echo "note: this binary has no --admin-bind yet (issue 12, part 1); run without it"
fi
WHEREBY_WEBHOOK_SECRET=whsec_deploy_test "$BIN" "${ARGS[@]}" >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
up=
for _ in $(seq 1 100); do
  if [ "$(http_status "http://127.0.0.1:$PORT/healthz")" = 200 ]; then up=1; break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -n "$up" ] && [ "$(http_status "http://127.0.0.1:$PORT/readyz")" = 200 ]; then
  pass "GET /healthz and /readyz answer 200 (liveness, readiness)"
else
  cat "$WORK/serve.err"
  fail "GET /healthz and /readyz on a server started with the deploy flags"
fi
if [ -n "$ADMIN_PORT" ]; then
  if [ "$(http_status "http://127.0.0.1:$ADMIN_PORT/metrics")" = 200 ]; then
    pass "GET /metrics on the admin port"
  else
    fail "GET /metrics on the admin port"
  fi
fi
# A second server on the same directory, as a rolling update would start.
set +e
WHEREBY_WEBHOOK_SECRET=whsec_deploy_test timeout 20 "$BIN" serve --config deploy/config.example.toml \
  --data-dir "$DATA" --port "$(free_port)" --bind 127.0.0.1 >/dev/null 2>"$WORK/second.err"
second=$?
set -e
if [ "$second" = 2 ]; then
  pass "a second server on the same data directory exits 2"
else
  cat "$WORK/second.err"
  fail "a second server on the same data directory exited $second, not 2"
fi
kill -TERM "$SERVER_PID"
stopped=
for _ in $(seq 1 150); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then stopped=1; break; fi
  sleep 0.1
done
if [ -n "$stopped" ] && wait "$SERVER_PID"; then
  pass "SIGTERM stops the server cleanly within 15 s (the grace periods are 60 s)"
else
  cat "$WORK/serve.err"
  fail "SIGTERM did not stop the server cleanly within 15 s"
fi
SERVER_PID=

# --- 5. the container's dependency layer -------------------------------------
echo "== deploy: the Containerfile's dependency layer (manifests with stub sources)"
# The build stage first copies the manifests and the files they name, with
# stubs for the sources, to fetch the dependencies in a layer of their own. A
# target added to a manifest without being copied there breaks that layer:
# this replays that step's cargo fetch (from the local registry cache when it
# has the crates).
LAYER=$WORK/layer
mkdir -p "$LAYER"
"${PY:-python3}" - "$ROOT" "$LAYER" <<'EOF'
import re, shutil, sys
from pathlib import Path
root, dest = Path(sys.argv[1]), Path(sys.argv[2])
text = re.sub(r"\\\n", " ", (root / "deploy/Containerfile").read_text())
build = text.split("\nFROM ")[1]            # the build stage
before = build.split("\nCOPY crates crates")[0]
for line in before.splitlines():
    if line.startswith("COPY ") and "--from" not in line:
        *srcs, dst = line.split()[1:]
        for src in srcs:
            s = root / src
            d = dest / dst
            if s.is_dir():
                shutil.copytree(s, d, dirs_exist_ok=True)
            else:
                if dst.endswith("/"):
                    d = d / s.name
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(s, d)
stubs = re.search(r"for f in (.*?); do", before, re.S).group(1).split()
for stub in stubs:
    (dest / stub).parent.mkdir(parents=True, exist_ok=True)
    (dest / stub).write_text("fn main() {}\n")
EOF
if (cd "$LAYER" && CARGO_TARGET_DIR="$LAYER/target" timeout 300 cargo fetch --locked -q 2>"$WORK/layer.err"); then
  pass "the dependency layer's manifests read with stub sources"
else
  cat "$WORK/layer.err"
  fail "the dependency layer of deploy/Containerfile: cargo cannot read the manifests with stubs"
fi

# --- 6. the container image ---------------------------------------------------
echo "== deploy: container image build"
container_build() {
  if [ "${DEPLOY_SKIP_CONTAINER:-}" = 1 ]; then
    skip "container build: DEPLOY_SKIP_CONTAINER=1"
    return
  fi
  if ! command -v podman >/dev/null 2>&1 && ! apt_install podman; then
    skip "container build: no podman, and it could not be installed from Debian's packages"
    return
  fi
  if ! timeout 60 podman info >"$WORK/podman-info" 2>&1; then
    tail -n 3 "$WORK/podman-info"
    skip "container build: podman cannot run on this machine (podman info failed)"
    return
  fi
  # The base images come from a container registry. DEPLOY_RUST_IMAGE and
  # DEPLOY_RUNTIME_IMAGE name local stand-ins where there is none.
  local rust_image runtime_image image
  rust_image=${DEPLOY_RUST_IMAGE:-$(sed -n 's/^ARG RUST_IMAGE=//p' deploy/Containerfile)}
  runtime_image=${DEPLOY_RUNTIME_IMAGE:-$(sed -n 's/^ARG RUNTIME_IMAGE=//p' deploy/Containerfile)}
  for image in "$rust_image" "$runtime_image"; do
    if ! podman image exists "$image" \
      && ! timeout 300 podman pull -q "$image" >"$WORK/pull.log" 2>&1; then
      tail -n 1 "$WORK/pull.log"
      skip "container build: the base image $image cannot be pulled here (no container registry is reachable from this machine; DEPLOY_RUST_IMAGE and DEPLOY_RUNTIME_IMAGE can name local ones)"
      return
    fi
  done
  # Podman's defaults raise RLIMIT_NOFILE and use crun, which a sandbox may
  # refuse (no CAP_SYS_RESOURCE, cgroups in hybrid mode): find the options
  # under which a container starts at all, with the runtime base.
  local pod=() opts=() found=
  local limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
  for candidate in default limits runc; do
    case $candidate in
      default) pod=(podman); opts=() ;;
      limits) pod=(podman); opts=("${limits[@]}") ;;
      runc) command -v runc >/dev/null 2>&1 || apt_install runc || continue
        pod=(podman --runtime runc); opts=("${limits[@]}") ;;
    esac
    if timeout 60 "${pod[@]}" run --rm --network none "${opts[@]}" "$runtime_image" true >"$WORK/probe.log" 2>&1; then
      found=$candidate
      break
    fi
  done
  if [ -z "$found" ]; then
    tail -n 1 "$WORK/probe.log"
    skip "container build: podman cannot start a container on this machine"
    return
  fi
  [ "$found" = default ] || echo "podman on this machine needs: ${pod[*]} ${opts[*]}"
  local start end
  start=$(date +%s)
  if timeout "${DEPLOY_BUILD_TIMEOUT:-1500}" "${pod[@]}" build --format docker --network host \
    "${opts[@]}" --build-arg "RUST_IMAGE=$rust_image" --build-arg "RUNTIME_IMAGE=$runtime_image" \
    -f deploy/Containerfile -t localhost/whereby-trigger:test . >"$WORK/build.log" 2>&1; then
    end=$(date +%s)
    echo "container build took $((end - start)) s"
    pass "podman build -f deploy/Containerfile"
  else
    tail -n 40 "$WORK/build.log"
    fail "podman build -f deploy/Containerfile (see above)"
    return
  fi
  if timeout 60 "${pod[@]}" run --rm "${opts[@]}" --network none localhost/whereby-trigger:test \
      check --config /etc/whereby-trigger/config.toml >"$WORK/run.log" 2>&1 \
    && [ "$(timeout 60 "${pod[@]}" run --rm "${opts[@]}" --network none --entrypoint id localhost/whereby-trigger:test -u)" = 10001 ]; then
    pass "the image runs, as uid 10001, and accepts its config"
  else
    cat "$WORK/run.log"
    fail "podman run of the built image"
    return
  fi
  # The image's own command, with a volume for the data directory, until its
  # HEALTHCHECK (GET /healthz from inside) passes.
  local cmd=() name=whereby-trigger-deploy-test healthy=
  "${pod[@]}" run --rm "${opts[@]}" --network none localhost/whereby-trigger:test serve --help \
    >"$WORK/help.txt" 2>&1 || true
  if ! grep -q -- --admin-bind "$WORK/help.txt"; then
    echo "note: this binary has no --admin-bind yet (issue 12, part 1); the image's CMD without it"
    cmd=(serve --config /etc/whereby-trigger/config.toml --data-dir /var/lib/whereby-trigger --port 8080)
  fi
  "${pod[@]}" rm -f "$name" >/dev/null 2>&1 || true
  "${pod[@]}" volume rm -f "$name" >/dev/null 2>&1 || true
  if timeout 60 "${pod[@]}" run -d --name "$name" "${opts[@]}" --network none \
    -e WHEREBY_WEBHOOK_SECRET=whsec_deploy_test -v "$name:/var/lib/whereby-trigger" \
    localhost/whereby-trigger:test "${cmd[@]}" >/dev/null 2>"$WORK/run.log"; then
    for _ in $(seq 1 30); do
      if timeout 20 "${pod[@]}" healthcheck run "$name" >/dev/null 2>&1; then healthy=1; break; fi
      sleep 1
    done
  fi
  if [ -n "$healthy" ]; then
    pass "the container's HEALTHCHECK passes (GET /healthz), its data directory on a volume"
  else
    cat "$WORK/run.log"
    timeout 20 "${pod[@]}" logs "$name" 2>&1 | tail -n 20 || true
    fail "the container's HEALTHCHECK did not pass within 30 s"
  fi
  timeout 70 "${pod[@]}" stop -t 60 "$name" >/dev/null 2>&1 || true
  "${pod[@]}" rm -f "$name" >/dev/null 2>&1 || true
  "${pod[@]}" volume rm -f "$name" >/dev/null 2>&1 || true
}
container_build

echo "deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
