#!/usr/bin/env bash
# Card benchmark: 100 MB CSV -> README (time, peak RSS), a small card end to end, and the
# same small card through huggingface_hub's ModelCard.from_template, in one run.
#
#   bash bench/card/run.sh                 # builds target/release/cairn if CAIRN_BIN is unset
#   BENCH_RUNS=50 BENCH_CSV_MB=100 bash bench/card/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${CAIRN_BIN:-}" ]; then
  cargo build --release -p cairn >&2
  CAIRN_BIN="${CARGO_TARGET_DIR:-target}/release/cairn"
fi
export CAIRN_BIN
PY="$(bash .ci/setup-card-python.sh | tail -n1)"
echo "cairn: $CAIRN_BIN ($("$CAIRN_BIN" --version)); python: $("$PY" --version); $(nproc) cores" >&2
"$PY" bench/card/bench.py
