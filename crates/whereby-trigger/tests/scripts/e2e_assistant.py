"""A long-running assistant for the end-to-end tests (tests/it/rules_e2e.rs,
tests/it/assistants_e2e.rs).

Usage: e2e_assistant.py DIR MODE [ARG...]

MODE is "term" (on SIGTERM: write DIR/term-PID and exit 0) or "ignore" (ignore
SIGTERM: only SIGKILL ends it early).

Once its SIGTERM handling is in place, it writes DIR/started-PID.json: its pid,
the arguments after MODE, the WHEREBY_* variables and stdin as read (to end of
file). The file is written under another name and renamed, so that a test that
sees it sees all of it, and can rely on the SIGTERM handling. Then it runs until
signalled, or until DIR is gone (a failed test must not leave it running).
"""

import json
import os
import signal
import sys
import time

directory = sys.argv[1]
mode = sys.argv[2]
pid = os.getpid()


def on_term(_signum, _frame):
    with open(os.path.join(directory, "term-%d" % pid), "w", encoding="utf-8") as f:
        f.write("SIGTERM\n")
    os._exit(0)


if mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_term)

stdin = sys.stdin.read()
print("e2e assistant %d started" % pid, flush=True)
record = {
    "pid": pid,
    "argv": sys.argv[3:],
    "env": {k: v for k, v in os.environ.items() if k.startswith("WHEREBY_")},
    "stdin": stdin,
}
out = os.path.join(directory, "started-%d.json" % pid)
with open(out + ".tmp", "w", encoding="utf-8") as f:
    json.dump(record, f)
os.replace(out + ".tmp", out)

while os.path.isdir(directory):
    time.sleep(0.02)
