#!/usr/bin/env bash
# Creates (once) the project-local Python environment .verdict/venv with the
# packages of scripts/requirements.txt. Quick when nothing changed: a marker
# holds the hash of the requirements it was built from.
#
#   scripts/ensure-python.sh            install if needed
#   scripts/ensure-python.sh --python   print the environment's python
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.verdict/venv
req=scripts/requirements.txt
marker=$venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)

if [ "${1:-}" = "--python" ]; then
  echo "$PWD/$venv/bin/python"
  exit 0
fi

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi

echo "python: installing $req into $venv" >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$marker"
