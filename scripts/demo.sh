#!/usr/bin/env bash
# Verdict's main job on an embedded default: an in-process Kafka-protocol
# broker, the synthetic traffic generator, and the full pipeline deciding
# every event with the example schema, features, model and rules. Installs
# and builds what it needs first (quick the second time): ONNX Runtime from
# PyPI into .verdict/venv, the workbench's browser bundle (npm), then a
# release build. Options go to
# `verdict demo` (see --help), e.g.
#   scripts/demo.sh --rate 5000 --duration 60
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-python.sh
ORT_DYLIB_PATH="$(scripts/ensure-python.sh --print-ort-path)"
export ORT_DYLIB_PATH
scripts/build-webui.sh
cargo build --release --locked --bin verdict
exec target/release/verdict demo "$@"
