#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the parsers, bounded in time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, every target)
#
# The targets live in fuzz/fuzz_targets/ (a workspace of its own, built with the
# stable toolchain: no sanitizer, which needs nightly; the crates under test have no
# unsafe code). Each target starts from its tracked seeds in fuzz/seeds/TARGET plus
# what earlier runs found in fuzz/corpus/TARGET (not tracked). A crash, a panic
# (a failed property), a timeout or running out of memory stops that target and
# leaves the input in fuzz/artifacts/TARGET/; the script goes on with the other
# targets, prints every reproducer and exits 1.
#
# Environment:
#   FUZZ_BUILD=release|dev  release (default): optimised, fast to run, slow to build;
#                           dev: unoptimised, quick to build (what CI uses).
#   FUZZ_JOBS=N             run N targets at once (default 1).
#
# Reproduce a crash:   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET ARTIFACT
#   (or cargo fuzz run --fuzz-dir fuzz --sanitizer none TARGET ARTIFACT)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(signature_header webhook_parse room_url rfc3339 config_load cel_when template units)

seconds=${1:-20}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
jobs=${FUZZ_JOBS:-1}

case ${FUZZ_BUILD:-release} in
  release) build_flags=(--sanitizer none --codegen-units 16); profile=release ;;
  dev) build_flags=(--sanitizer none --dev); profile=debug ;;
  *) echo "FUZZ_BUILD must be release or dev" >&2; exit 2 ;;
esac

if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  # --debug: it only drives cargo, and builds in ~45 s instead of ~75 s from cold.
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --debug
fi

# The fuzz workspace builds the crates with the main workspace's versions.
cp Cargo.lock fuzz/Cargo.lock

echo "== cargo fuzz build (${FUZZ_BUILD:-release})"
started=$(date +%s)
# Line tables are enough for a readable backtrace and cheaper than full debug info.
CARGO_PROFILE_DEV_DEBUG=line-tables-only \
  cargo fuzz build --fuzz-dir fuzz "${build_flags[@]}"
echo "   built in $(($(date +%s) - started)) s"
bin_dir=fuzz/target/x86_64-unknown-linux-gnu/$profile

# The README's config examples are seeds too, taken fresh each run.
mkdir -p fuzz/corpus/config_load
awk '/^```toml$/ { n++; f = 1; next } /^```$/ { f = 0 } f { print > ("fuzz/corpus/config_load/readme-" n ".toml") }' README.md

# Runs one target; its log is fuzz/artifacts/TARGET/last-run.log.
fuzz_one() {
  local target=$1
  local corpus=fuzz/corpus/$target artifacts=fuzz/artifacts/$target
  mkdir -p "$corpus" "$artifacts"
  local args=("$corpus")
  [ -d "fuzz/seeds/$target" ] && args+=("fuzz/seeds/$target")
  args+=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192
    -artifact_prefix="$artifacts/" -print_final_stats=1)
  [ -f "fuzz/dicts/$target.dict" ] && args+=(-dict="fuzz/dicts/$target.dict")
  local log=$artifacts/last-run.log status=0
  # libFuzzer stops itself after max_total_time; the hard limit is for a hang
  # that libFuzzer cannot interrupt.
  timeout -k 10 $((seconds + 60)) "$bin_dir/$target" "${args[@]}" >"$log" 2>&1 || status=$?
  local runs
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  if [ "$status" -eq 0 ]; then
    echo "   $target: ok, ${runs:-?} runs in ${seconds} s, corpus $(find "$corpus" -type f | wc -l) inputs"
    return 0
  fi
  echo "!! $target: FAILED (exit $status)"
  grep -E "panicked at|^SUMMARY|ERROR: libFuzzer|^==[0-9]+== ERROR" -A2 "$log" | head -20 | sed 's/^/   /' || true
  local written
  written=$(sed -n "s/.*Test unit written to \(.*\)$/\1/p" "$log")
  if [ -n "$written" ]; then
    echo "   reproducer: $written"
    echo "   rerun:      $bin_dir/$target $written"
    echo "   bytes:      $(od -An -c "$written" | head -5 | tr -s ' ' | tr -d '\n' || true)"
  elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "   hung past the hard limit of $((seconds + 60)) s; no reproducer"
  fi
  echo "   log:        $log"
  return 1
}

echo "== fuzzing ${#targets[@]} target(s), $seconds s each, $jobs at a time"
failed=()
pids=()
names=()
for target in "${targets[@]}"; do
  if [ ! -x "$bin_dir/$target" ]; then
    echo "!! unknown target $target" >&2
    failed+=("$target")
    continue
  fi
  fuzz_one "$target" &
  pids+=($!)
  names+=("$target")
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || failed+=("${names[0]}")
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed+=("${names[$i]}")
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "== fuzzing found problems in: ${failed[*]}"
  echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
  exit 1
fi
echo "== fuzzing: ${#targets[@]} target(s) ran ${seconds} s each, no crash"
echo "fuzz: ${#targets[@]} passed, 0 failed"
