#!/usr/bin/env bash
# Installs ONNX Runtime and the Python tools Verdict's models need into the
# project-local virtual environment .verdict/venv, from the pinned versions in
# models/train/requirements.txt.
#
# Idempotent: a marker in the venv holds the hash of the requirements file, so
# a second run with nothing changed returns at once.
#
#   scripts/ensure-python.sh                   install (or confirm) the venv
#   scripts/ensure-python.sh --print-ort-path  print the absolute path of
#                                              libonnxruntime.so inside it
#                                              (the value for ORT_DYLIB_PATH)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.verdict/venv"
req="$root/models/train/requirements.txt"
marker="$venv/.verdict-requirements.sha256"

find_ort() {
  local lib
  lib="$(ls -1 "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* 2>/dev/null | sort | head -n 1 || true)"
  if [ -z "$lib" ]; then
    echo "ensure-python: libonnxruntime.so not found under $venv; run scripts/ensure-python.sh" >&2
    return 1
  fi
  echo "$lib"
}

if [ "${1:-}" = "--print-ort-path" ]; then
  find_ort
  exit $?
elif [ $# -gt 0 ]; then
  echo "usage: scripts/ensure-python.sh [--print-ort-path]" >&2
  exit 2
fi

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && find_ort >/dev/null 2>&1; then
  exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "ensure-python: $python not found; install Python 3.10 or newer (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "ensure-python: creating $venv" >&2
  mkdir -p "$root/.verdict"
  "$python" -m venv "$venv"
fi
echo "ensure-python: installing models/train/requirements.txt into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
find_ort >/dev/null
echo "$want" >"$marker"
echo "ensure-python: ready ($(find_ort))" >&2
