"""Records how the `run` action started it, for tests/run_action.rs.

Usage: record.py OUT [ARG...]

Writes OUT as JSON: the arguments after OUT, the WHEREBY_* variables and HOME,
stdin as read, and whether stdin is /dev/null. The file is written under another
name and renamed, so that a test that sees OUT sees all of it. Also prints one
line on stdout and one on stderr, for the test to find in the log.
"""

import json
import os
import sys

out = sys.argv[1]
stdin_is_devnull = os.path.samestat(os.fstat(0), os.stat(os.devnull))
stdin = sys.stdin.read()
print("record: hello on stdout", flush=True)
print("record: hello on stderr", file=sys.stderr, flush=True)
record = {
    "argv": sys.argv[2:],
    "env": {
        name: value
        for name, value in os.environ.items()
        if name.startswith("WHEREBY_") or name == "HOME"
    },
    "stdin": stdin,
    "stdin_is_devnull": stdin_is_devnull,
}
with open(out + ".tmp", "w", encoding="utf-8") as f:
    json.dump(record, f)
os.replace(out + ".tmp", out)
