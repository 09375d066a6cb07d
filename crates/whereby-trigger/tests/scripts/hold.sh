#!/bin/sh
# A long-running assistant for tests/run_action.rs.
#
# Usage: hold.sh DIR NAME [term|ignore]
#
# Appends NAME to DIR/order, then writes its pid to DIR/NAME.started (once its
# SIGTERM handling is in place, so a test that sees the file can rely on it),
# then runs until DIR/NAME.go exists (or DIR is gone: a failed test must not
# leave it running), printing "NAME done" as it exits.
#   term (default): on SIGTERM, creates DIR/NAME.term and exits 0.
#   ignore:         ignores SIGTERM; only SIGKILL ends it early.
dir=$1
name=$2
case ${3:-term} in
  ignore) trap '' TERM ;;
  *) trap ': > "$dir/$name.term"; exit 0' TERM ;;
esac
echo "$name" >> "$dir/order"
echo $$ > "$dir/$name.started.tmp" && mv "$dir/$name.started.tmp" "$dir/$name.started"
while [ ! -e "$dir/$name.go" ] && [ -d "$dir" ]; do sleep 0.02; done
echo "$name done"
