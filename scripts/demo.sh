#!/usr/bin/env bash
# Verdict's main job on an embedded default: an in-process Kafka-protocol
# broker, the synthetic traffic generator, and the full pipeline deciding
# every event. Installs what it needs first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/ensure-python.sh ]; then
  scripts/ensure-python.sh
  ORT_DYLIB_PATH="$(scripts/ensure-python.sh --print-ort-path)"
  export ORT_DYLIB_PATH
fi

cargo build --release --locked --bin verdict
exec target/release/verdict demo "$@"
