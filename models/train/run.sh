#!/usr/bin/env bash
# Reproduces Verdict's shipped fraud model in one command:
#   generate traffic -> point-in-time features -> train -> evaluate -> export.
#
#   models/train/run.sh                 the real pipeline
#   models/train/run.sh --events-only   train on event fields only, every feature
#                                       missing (proves the pipeline; not a model to ship)
#
# Environment: SEED (11), COUNT (200000), WORK (a temporary folder), OUT (models/),
# EXPORT_ARGS (more arguments for `verdict features export`, e.g. --config).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
seed="${SEED:-11}"
count="${COUNT:-200000}"
out="${OUT:-$root/models}"
events_only=0
case "${1:-}" in
  "") ;;
  --events-only) events_only=1 ;;
  *) echo "usage: models/train/run.sh [--events-only]" >&2; exit 2 ;;
esac
work="${WORK:-$(mktemp -d)}"
mkdir -p "$work"

scripts/ensure-python.sh
py="$root/.verdict/venv/bin/python"

echo "run: building verdict (release)" >&2
cargo build --release --locked -p verdict >&2
verdict="$root/target/release/verdict"

echo "run: generating $count events (seed $seed) into $work" >&2
"$verdict" gen --seed "$seed" --count "$count" --out "$work/events.jsonl"
"$verdict" gen profiles --seed "$seed" --out "$work/profiles.csv"

if [ "$events_only" = 1 ]; then
  echo "run: --events-only: training on event fields, features missing" >&2
  "$py" models/train/train.py --from-events "$work/events.jsonl" --data "$work/training.parquet" --out "$out"
  exit 0
fi

echo "run: computing point-in-time features" >&2
# The shipped definitions, with the batch profile table of this population.
sed "s#data/profiles.csv#$work/profiles.csv#" examples/features.toml > "$work/features.toml"
# shellcheck disable=SC2086 # EXPORT_ARGS is a list of words
"$verdict" features export --events "$work/events.jsonl" --out "$work/training.parquet" \
  --features "$work/features.toml" ${EXPORT_ARGS:-}
"$py" models/train/train.py --data "$work/training.parquet" --out "$out"
