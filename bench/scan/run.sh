#!/usr/bin/env bash
# What artifact scanning costs a push, side by side in one run: the same model directories
# pushed with `cairn push` to two `cairn serve` on loopback, one scanning every file before
# the commit (the default) and one with CAIRN_SCAN_ARTIFACTS=false; and the scanners alone,
# `cairn scan DIR` against `modelscan -p DIR` (the reference tool) on the same directories. Four shapes of about
# SIZE_MIB MiB each (bench/scan/make_models.py): a PyTorch zip checkpoint, a joblib dump of
# NumPy arrays, an opcode-dense pickle (the scanner's worst case), a safetensors file.
# Content is regenerated for every run, so nothing is deduplicated. Also: the offline
# scanner alone (`cairn scan DIR`), and each server's peak RSS (VmHWM) after all pushes.
# Each timing is the best of BENCH_RUNS runs.
#
#   bash bench/scan/run.sh                    # builds target/release/cairn if CAIRN_BIN is unset
#   SIZE_MIB=512 BENCH_RUNS=5 bash bench/scan/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZE_MIB=${SIZE_MIB:-256}
RUNS=${BENCH_RUNS:-3}
if [ -z "${CAIRN_BIN:-}" ]; then
  cargo build --release -p cairn >&2
  CAIRN_BIN="${CARGO_TARGET_DIR:-target}/release/cairn"
fi
PY="$(bash .ci/setup-scan-python.sh | tail -n1)"
MODELSCAN="$(dirname "$PY")/modelscan"
WORK=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/cairn-scanbench.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

TOKEN="cairn_bench_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export CAIRN_TOKEN="$TOKEN" CAIRN_CONFIG_DIR="$WORK/config"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
best() { sort -g | head -n1; }

declare -A URL PID
start_server() { # $1 = on|off
  local port; port=$(free_port)
  env CAIRN_BOOTSTRAP_ADMIN_TOKEN="$TOKEN" CAIRN_BOOTSTRAP_ADMIN_PASSWORD="bench admin password" CAIRN_LOG=warn \
    CAIRN_RATE_LIMIT_REQUESTS=0 CAIRN_SCAN_ARTIFACTS="$([ "$1" = on ] && echo true || echo false)" \
    "$CAIRN_BIN" serve --listen "127.0.0.1:$port" --data-dir "$WORK/data-$1" >"$WORK/server-$1.log" 2>&1 &
  PID[$1]=$!; PIDS+=("$!"); URL[$1]="http://127.0.0.1:$port"
  for _ in $(seq 1 200); do
    curl -fs "${URL[$1]}/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  cat "$WORK/server-$1.log" >&2; exit 1
}
peak_rss_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

SHAPES=(torch joblib pickle safetensors)
start_server on; start_server off
for mode in on off; do
  for shape in "${SHAPES[@]}"; do CAIRN_URL="${URL[$mode]}" "$CAIRN_BIN" models create "bench/$shape" >/dev/null; done
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); cairn $("$CAIRN_BIN" --version | awk '{print $2}'); ~${SIZE_MIB} MiB per model, best of $RUNS" >&2

declare -A T MIB
for run in $(seq 1 "$RUNS"); do
  "$PY" bench/scan/make_models.py "$WORK/models-$run" "$SIZE_MIB" "$run"
  for shape in "${SHAPES[@]}"; do
    dir="$WORK/models-$run/$shape"
    cat "$dir"/* >/dev/null
    MIB[$shape]=$(du -sm "$dir" | cut -f1)
    t0=$(now); "$CAIRN_BIN" scan "$dir" >/dev/null; t1=$(now)
    T[scan,$shape]+="$(echo "$t1 - $t0" | bc) "
    t0=$(now); "$MODELSCAN" -p "$dir" >/dev/null 2>&1 || true; t1=$(now)
    T[modelscan,$shape]+="$(echo "$t1 - $t0" | bc) "
    # Alternate which server goes first, so neither always meets a warmer cache.
    order=(on off); [ $((run % 2)) = 0 ] && order=(off on)
    for mode in "${order[@]}"; do
      t0=$(now); CAIRN_URL="${URL[$mode]}" "$CAIRN_BIN" push "bench/$shape" "$dir" --quiet >/dev/null; t1=$(now)
      T[$mode,$shape]+="$(echo "$t1 - $t0" | bc) "
    done
  done
  rm -rf "$WORK/models-$run"
done

printf '%-14s %9s %11s %11s %7s %11s %11s %9s\n' "shape" "file MiB" "push, scan" "push, off" "ratio" "cairn scan" "modelscan" "ratio"
for shape in "${SHAPES[@]}"; do
  on=$(printf '%s\n' ${T[on,$shape]} | best); off=$(printf '%s\n' ${T[off,$shape]} | best)
  scan=$(printf '%s\n' ${T[scan,$shape]} | best); ms=$(printf '%s\n' ${T[modelscan,$shape]} | best)
  printf '%-14s %9s %11.2f %11.2f %7.2f %11.2f %11.2f %9.3f\n' "$shape" "${MIB[$shape]}" "$on" "$off" \
    "$(echo "scale=3; $on / $off" | bc)" "$scan" "$ms" "$(echo "scale=4; $scan / $ms" | bc)"
done
printf 'server peak RSS after all pushes: scanning %s MiB, not scanning %s MiB\n' "$(peak_rss_mib "${PID[on]}")" "$(peak_rss_mib "${PID[off]}")"
CAIRN_URL="${URL[on]}" "$CAIRN_BIN" scan bench/pickle:1 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("scan of bench/pickle:1:", d["summary"])' || true
