#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one.
#
# Installs what the tests need (idempotently, quickly the second time), then
# runs every crate's unit, integration and doc tests once, on one debug build.
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool checks the /metrics output and the alert rules.
if ! command -v promtool >/dev/null 2>&1; then
  echo "test: installing promtool (Debian package prometheus)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# A real Kafka-protocol broker for the end-to-end test (tansu), built once
# into .verdict/bin (about 12 minutes on 2 cores the first time).
TANSU_VERSION=0.6.0
if ! .verdict/bin/tansu --version 2>/dev/null | grep -q " $TANSU_VERSION"; then
  echo "test: building tansu $TANSU_VERSION into .verdict/bin (once)" >&2
  cargo install tansu --version "$TANSU_VERSION" --features dynostore --root .verdict --locked
fi
VERDICT_TANSU="$PWD/.verdict/bin/tansu"
export VERDICT_TANSU

# Redis 7 for the shared feature store's tests.
scripts/ensure-redis.sh

# The Python tools the tests use (the Kafka client of the end-to-end test),
# in .verdict/venv.
scripts/ensure-python.sh
VERDICT_PYTHON="$(scripts/ensure-python.sh --python)"
export VERDICT_PYTHON
ORT_DYLIB_PATH="$(scripts/ensure-python.sh --print-ort-path)"
export ORT_DYLIB_PATH

# The workbench's browser bundle (embedded in the binary) and, for its
# browser test, headless Chromium with its WebDriver.
scripts/build-webui.sh
scripts/ensure-browser.sh

cargo test --workspace --all-targets --locked "$@"
cargo test --workspace --doc --locked
