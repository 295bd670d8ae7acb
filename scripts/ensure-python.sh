#!/usr/bin/env bash
# Creates (once) the project-local Python environment .verdict/venv with the
# pinned packages of scripts/requirements.txt (the tools the tests use, such
# as the end-to-end test's Kafka client) and models/train/requirements.txt
# (ONNX Runtime, whose libonnxruntime.so Verdict loads, and the training
# tools). Quick when nothing changed: a marker holds the hash of the
# requirements it was built from.
#
#   scripts/ensure-python.sh                   install if needed
#   scripts/ensure-python.sh --python          print the environment's python
#   scripts/ensure-python.sh --print-ort-path  print the absolute path of
#                                              libonnxruntime.so in it (the
#                                              value for ORT_DYLIB_PATH)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.verdict/venv
reqs=(scripts/requirements.txt models/train/requirements.txt)
marker=$venv/.requirements.sha256

find_ort() {
  local lib
  lib="$(ls -1 "$PWD/$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | sort | head -n 1 || true)"
  if [ -z "$lib" ]; then
    echo "python: libonnxruntime.so not found in $PWD/$venv; run scripts/ensure-python.sh" >&2
    return 1
  fi
  echo "$lib"
}

case "${1:-}" in
  "") ;;
  --python) echo "$PWD/$venv/bin/python"; exit 0 ;;
  --print-ort-path) find_ort; exit $? ;;
  *) echo "usage: scripts/ensure-python.sh [--python | --print-ort-path]" >&2; exit 2 ;;
esac

want=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && [ -x "$venv/bin/python" ] && find_ort >/dev/null 2>&1; then
  exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
  echo "python: python3 not found; install Python 3.10 or newer (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
echo "python: installing ${reqs[*]} into $venv" >&2
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
args=()
for r in "${reqs[@]}"; do args+=(-r "$r"); done
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}"
find_ort >/dev/null
echo "$want" > "$marker"
