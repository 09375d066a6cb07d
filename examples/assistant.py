#!/usr/bin/env python3
"""A stand-in assistant for trying `run`: prints what it was given, then stays in
the "meeting" until whereby-trigger stops it (SIGTERM) or its timeout passes."""
import json
import os
import signal
import sys
import time

event = json.load(sys.stdin) if not sys.stdin.isatty() else {}
print(f"assistant: joining {os.environ.get('WHEREBY_ROOM_URL')} "
      f"(args {sys.argv[1:]}, trigger {event.get('trigger')})", flush=True)


def leave(signum, frame):
    print("assistant: asked to stop, leaving the room", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, leave)
while True:
    time.sleep(1)
