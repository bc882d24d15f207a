#!/usr/bin/env bash
# Cairn vs MLflow, side by side, one run, through the same MLflow REST API (docs/BENCHMARKS.md,
# "MLflow API: Cairn vs MLflow").
#
# Installs (or reuses) a venv with the pinned mlflow, builds `cairn` and `cairn-bench` in
# release, then `cairn-bench --cairn-api mlflow` starts each server on loopback in turn on a
# fresh data directory (Cairn: embedded SQLite, local blob directory, rate limiting off;
# MLflow: `mlflow server` with a SQLite backend store and `--serve-artifacts`), drives both
# with the same requests (Cairn's carry `Authorization: Bearer`), transfers the same files
# through the mlflow-artifacts API, samples each server's memory for the whole run, and prints
# ops/s, p50/p99, MiB/s, peak RSS and the ratios against the targets.
#
#   bash bench/mlflow/run.sh                           # the recorded run
#   MLFLOW_SCALE=0.2 BENCH_MAX_SECS=40 bash bench/mlflow/run.sh
#   CAIRN_BIN=… CAIRN_BENCH_BIN=… bash bench/mlflow/run.sh   # skip the build
#
# The benchmark itself is bounded: every phase stops at its operation count or its time cap,
# and the whole run is stopped after BENCH_TIMEOUT seconds (default 570) whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."

MLFLOW_VERSION="3.17.2"
CACHE_DIR="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}"
VENV="$CACHE_DIR/venv-mlflow"
PY="$VENV/bin/python"

# Operation counts for Cairn; MLflow gets MLFLOW_SCALE of them (it is far slower).
MODELS=${BENCH_MODELS:-3000}
VERSIONS=${BENCH_VERSIONS:-10000}
VERSION_MODELS=${BENCH_VERSION_MODELS:-10}
READS=${BENCH_READS:-10000}
MLFLOW_SCALE=${MLFLOW_SCALE:-0.1}
MAX_SECS=${BENCH_MAX_SECS:-25}
FILES=${BENCH_FILES:-16}
FILE_MIB=${BENCH_FILE_MIB:-16}
CLIENTS=${BENCH_CLIENTS:-8}
TIMEOUT=${BENCH_TIMEOUT:-570}
JSON=${BENCH_JSON:-${TMPDIR:-/tmp}/cairn-mlflow-bench.json}

# MLflow's telemetry would reach out to the network: off for the server and the clients.
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

mkdir -p "$CACHE_DIR"
if [ ! -x "$PY" ]; then
  echo "creating $VENV" >&2
  python3 -m venv "$VENV"
fi
installed="$("$PY" -c "import importlib.metadata as m; print(m.version('mlflow'))" 2>/dev/null || true)"
if [ "$installed" != "$MLFLOW_VERSION" ]; then
  echo "installing mlflow==$MLFLOW_VERSION (found: ${installed:-none})" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "mlflow==$MLFLOW_VERSION" >&2
fi

if [ -z "${CAIRN_BIN:-}" ] || [ -z "${CAIRN_BENCH_BIN:-}" ]; then
  cargo build --release -p cairn -p cairn-bench >&2
  CAIRN_BIN="${CARGO_TARGET_DIR:-target}/release/cairn"
  CAIRN_BENCH_BIN="${CARGO_TARGET_DIR:-target}/release/cairn-bench"
fi

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg); \
cairn $("$CAIRN_BIN" --version | awk '{print $2}'); mlflow $("$PY" -c 'import mlflow; print(mlflow.__version__)')" >&2

# SIGTERM first: cairn-bench then stops both servers (MLflow's whole process group) itself.
exec timeout -k 20 "$TIMEOUT" "$CAIRN_BENCH_BIN" \
  --cairn "$CAIRN_BIN" --cairn-api mlflow --mlflow "$PY" --mlflow-scale "$MLFLOW_SCALE" \
  --clients "$CLIENTS" --models "$MODELS" --versions "$VERSIONS" --version-models "$VERSION_MODELS" \
  --reads "$READS" --max-secs "$MAX_SECS" --files "$FILES" --file-mib "$FILE_MIB" --json "$JSON"
