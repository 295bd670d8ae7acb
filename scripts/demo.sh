#!/usr/bin/env bash
# Verdict's main job on an embedded default: an in-process Kafka-protocol
# broker, the synthetic traffic generator, and the full pipeline deciding
# every event with the example schema and rules. Builds what it needs first
# (quick the second time). Options go to `verdict demo` (see --help), e.g.
#   scripts/demo.sh --rate 5000 --duration 60
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin verdict
exec target/release/verdict demo "$@"
