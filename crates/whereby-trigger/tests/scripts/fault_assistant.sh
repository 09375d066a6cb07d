#!/bin/sh
# An assistant for tests/faults.rs.
#
# Usage: fault_assistant.sh DIR MODE
#
# Sets up its SIGTERM handling (create DIR/term-PID, exit 0), then writes its
# event id ($WHEREBY_EVENT_ID) to DIR/start-PID, then by MODE:
#   crash:      exits 3 at once;
#   crash-once: exits 3 if DIR/crashed does not exist yet (creating it), else
#               goes on as hold;
#   hold:       writes DIR/running-PID and runs until signalled, or until DIR
#               is gone (a failed test must not leave it running).
# Files are written under another name and renamed, so that a test that sees
# one sees all of it.
dir=$1
mode=$2
trap ': > "$dir/term-$$"; exit 0' TERM
echo "$WHEREBY_EVENT_ID" > "$dir/.start-$$" && mv "$dir/.start-$$" "$dir/start-$$"
case $mode in
  crash) exit 3 ;;
  crash-once)
    if [ ! -e "$dir/crashed" ]; then
      : > "$dir/crashed"
      exit 3
    fi
    ;;
esac
echo "$WHEREBY_EVENT_ID" > "$dir/.running-$$" && mv "$dir/.running-$$" "$dir/running-$$"
while [ -d "$dir" ]; do sleep 0.02; done
