#!/usr/bin/env bash
# Kills a `verdict run` process with SIGKILL mid-stream and restarts it,
# N times in each delivery mode (default 20), and prints the tally: every
# run must end with every event decided exactly once. Not part of CI (it
# takes several minutes); run it after changing the Kafka pipeline.
#
#   scripts/soak-crash.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"

scripts/ensure-python.sh
ORT_DYLIB_PATH="$(scripts/ensure-python.sh --print-ort-path)"
export ORT_DYLIB_PATH
cargo test -p verdict --test crash --no-run --locked 2>/dev/null

passed=0 failed=0
for i in $(seq 1 "$runs"); do
  for mode in at_least_once exactly_once; do
    if out=$(cargo test -q -p verdict --test crash --locked "${mode}_killed" 2>&1); then
      passed=$((passed + 1))
      echo "run $i $mode: exactly once"
    else
      failed=$((failed + 1))
      echo "run $i $mode: FAILED"
      echo "$out" | grep -E "lost:|more than one output|panicked" | head -3 | sed 's/^/    /'
    fi
  done
done
echo "soak: $passed passed, $failed failed of $((passed + failed)) crash-and-restart runs"
[ "$failed" -eq 0 ]
