#!/usr/bin/env bash
# Compiles the shipped model with treelite + tl2cgen (PyPI packages of
# models/train/requirements.txt) into .verdict/treelite/fraud-gbt.so, the
# peer that benches/benches/models.rs measures the native evaluator against.
# Quick when the library is newer than the model and this script's Python.
#
#   scripts/ensure-treelite.sh            build if needed
#   scripts/ensure-treelite.sh --print    print the library's path
set -euo pipefail
cd "$(dirname "$0")/.."

lib=.verdict/treelite/fraud-gbt.so
model=models/fraud-gbt.onnx
build=models/train/treelite_build.py

case "${1:-}" in
  "") ;;
  --print) echo "$PWD/$lib"; exit 0 ;;
  *) echo "usage: scripts/ensure-treelite.sh [--print]" >&2; exit 2 ;;
esac

if [ -f "$lib" ] && [ "$lib" -nt "$model" ] && [ "$lib" -nt "$build" ]; then
  exit 0
fi
if ! command -v gcc >/dev/null 2>&1; then
  echo "treelite: gcc not found (Debian: apt-get install gcc)" >&2
  exit 1
fi
scripts/ensure-python.sh
echo "treelite: compiling $model into $lib" >&2
"$(scripts/ensure-python.sh --python)" "$build" "$model" "$lib"
