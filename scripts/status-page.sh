#!/usr/bin/env bash
# The status page in a real browser: a server with a `run` trigger plays
# `send --scenario meeting` and a join whose displayName is a <script> tag; then
# headless Chromium reads /status on the admin port. Checks that the page shows
# the room, the assistant and the webhooks, and that the script tag is text,
# not an element; saves a screenshot as target/status-page.png.
#
# Installs Chromium from Debian's packages when it is missing (as root); when it
# cannot be installed or run here, says so and exits 0 (skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
skip() {
  echo "status page: SKIPPED: $*"
  exit 0
}

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "status page: installing chromium from Debian's packages"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ||
      skip "chromium could not be installed"
  fi
  command -v chromium >/dev/null 2>&1 || skip "no chromium, and it cannot be installed here"
fi

cargo build -q -p whereby-trigger --bin whereby-trigger
bin="$target/debug/whereby-trigger"

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
admin="$(free_port)"

# One assistant per room, started by the first join and left running (no stop),
# so that the page has one to show.
cat >"$work/run.toml" <<'EOF'
[verify]
secrets = ["${WHEREBY_WEBHOOK_SECRET}"]

[[trigger]]
name = "page-assistant"
on = ["room.client.joined"]
once_per = "room"
run = { command = ["sleep", "120"], timeout = "5m" }
EOF

export WHEREBY_WEBHOOK_SECRET=whsec_status_page_test
"$bin" serve --config "$work/run.toml" --bind 127.0.0.1 --port "$port" \
  --admin-bind "127.0.0.1:$admin" --ephemeral 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/serve.log"; echo "the server did not start"; exit 1; }

"$bin" send --scenario meeting --to "http://127.0.0.1:$port/" >"$work/send.log"
"$bin" send room.client.joined --to "http://127.0.0.1:$port/" \
  --set 'displayName=<script>alert(1)</script>' >>"$work/send.log"

url="http://127.0.0.1:$admin/status"
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars)
"${chrome[@]}" --dump-dom "$url" >"$work/dom.html" 2>"$work/chromium.log" ||
  skip "chromium cannot run here: $(tail -1 "$work/chromium.log")"
"${chrome[@]}" --screenshot="$target/status-page.png" --window-size=1280,1600 "$url" \
  >>"$work/chromium.log" 2>&1 || skip "chromium cannot take a screenshot here"

fail=0
check() {
  if grep -qF -- "$2" "$work/dom.html"; then echo "ok: $1"; else echo "FAILED: $1 (no '$2')"; fail=1; fi
}
# The HTML of the page's section headed $1, up to the next heading: a name
# found there is not one of another table (the trigger's name is in Triggers).
section() {
  python3 - "$1" "$work/dom.html" <<'PY'
import re, sys
heading, path = sys.argv[1], sys.argv[2]
page = open(path, encoding="utf-8").read()
found = re.search(r"<h2>" + re.escape(heading) + r"\b.*?(?=<h2>|</body>)", page, re.S)
print(found.group(0) if found else "")
PY
}
# check_in WHAT SECTION TEXT: like check, within one section.
check_in() {
  local html
  html="$(section "$2")"
  if grep -qF -- "$3" <<<"$html"; then echo "ok: $1"; else echo "FAILED: $1 (no '$3' under '$2')"; fail=1; fi
}
check "the page is the status page" "whereby-trigger"
check "the room is listed" "acme/"
# Its row: the trigger, then the room it runs in.
check_in "the assistant is listed" "Running assistants" "<tr><td>page-assistant</td><td>acme/"
check_in "the webhooks are listed" "Last webhooks" "<td>room.session.started</td>"
check_in "the join is listed" "Last webhooks" "<td>room.client.joined</td>"
check "the script tag is text" "&lt;script&gt;alert(1)&lt;/script&gt;"
if grep -qF "<script>alert(1)" "$work/dom.html"; then
  echo "FAILED: the payload's script tag is an element of the page"
  fail=1
fi
if [ "$fail" != 0 ]; then
  echo "--- the page's DOM"; cat "$work/dom.html"
  exit 1
fi
echo "status page: screenshot in $target/status-page.png"
