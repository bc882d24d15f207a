#!/usr/bin/env bash
# Model-file transfer benchmark, side by side with the baseline in one run:
#   baseline  `sha256sum f && cp f dst && sync dst` of the same file on the same disk (Cairn
#             fsyncs every blob before it becomes visible), and the same without the sync
#   push      `cairn push` of a directory holding that file to `cairn serve` on loopback
#   pull      `cairn pull` of it into a fresh directory
#   push-enc  the same push and pull with encryption at rest (CAIRN_ENCRYPTION_KEY_FILE)
# and the server's peak RSS (VmHWM) across a push and a pull of a BIG_MIB file.
# Each timing is the best of BENCH_RUNS runs; the page cache is warm for every contender.
#
#   bash bench/artifacts/run.sh                      # builds target/release/cairn if CAIRN_BIN is unset
#   SIZE_MIB=1024 BIG_MIB=2048 BENCH_RUNS=3 bash bench/artifacts/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZE_MIB=${SIZE_MIB:-1024}
BIG_MIB=${BIG_MIB:-2048}
RUNS=${BENCH_RUNS:-3}
if [ -z "${CAIRN_BIN:-}" ]; then
  cargo build --release -p cairn >&2
  CAIRN_BIN="${CARGO_TARGET_DIR:-target}/release/cairn"
fi
WORK=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/cairn-artifacts.XXXXXX")
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

TOKEN="cairn_bench_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CAIRN_URL="http://127.0.0.1:$PORT" CAIRN_TOKEN="$TOKEN" CAIRN_CONFIG_DIR="$WORK/config"

now() { date +%s.%N; }
best() { sort -g | head -n1; }

start_server() { # $1 = data dir, $2 = key file or ""
  # Rate limiting off: a benchmark is one client with one key (docs/BENCHMARKS.md).
  local env=(CAIRN_BOOTSTRAP_ADMIN_TOKEN="$TOKEN" CAIRN_BOOTSTRAP_ADMIN_PASSWORD="bench admin password" CAIRN_LOG=warn CAIRN_RATE_LIMIT_REQUESTS=0)
  if [ -n "$2" ]; then env+=(CAIRN_ENCRYPTION_KEY_FILE="$2"); fi
  env "${env[@]}" "$CAIRN_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$1" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    curl -fs "$CAIRN_URL/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  cat "$WORK/server.log" >&2; exit 1
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; }
peak_rss_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER_PID/status"; }

make_file() { # $1 = path, $2 = MiB (incompressible)
  mkdir -p "$(dirname "$1")"
  head -c "$(( $2 * 1024 * 1024 ))" /dev/urandom >"$1"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); cairn $("$CAIRN_BIN" --version | awk '{print $2}'); file ${SIZE_MIB} MiB, best of $RUNS" >&2
make_file "$WORK/src/model/weights.bin" "$SIZE_MIB"
cat "$WORK/src/model/weights.bin" >/dev/null

baseline=(); nosync=(); push=(); pull=(); pushenc=(); pullenc=()
for run in $(seq 1 "$RUNS"); do
  t0=$(now); sha256sum "$WORK/src/model/weights.bin" >/dev/null; cp "$WORK/src/model/weights.bin" "$WORK/copy.bin"; t1=$(now)
  nosync+=("$(echo "$t1 - $t0" | bc)"); rm -f "$WORK/copy.bin"; sync
  t0=$(now); sha256sum "$WORK/src/model/weights.bin" >/dev/null; cp "$WORK/src/model/weights.bin" "$WORK/copy.bin"; sync "$WORK/copy.bin"; t1=$(now)
  baseline+=("$(echo "$t1 - $t0" | bc)"); rm -f "$WORK/copy.bin"

  for mode in plain enc; do
    data="$WORK/data-$mode-$run"; key=""
    if [ "$mode" = enc ]; then key="$WORK/key"; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$key"; echo >>"$key"; fi
    start_server "$data" "$key"
    "$CAIRN_BIN" models create bench/model >/dev/null
    t0=$(now); "$CAIRN_BIN" push bench/model "$WORK/src/model" --quiet >/dev/null; t1=$(now)
    if [ "$mode" = plain ]; then
      push+=("$(echo "$t1 - $t0" | bc)")
      t0=$(now); "$CAIRN_BIN" pull bench/model:1 -o "$WORK/pulled-$run" --quiet >/dev/null; t1=$(now)
      pull+=("$(echo "$t1 - $t0" | bc)")
      cmp "$WORK/src/model/weights.bin" "$WORK/pulled-$run/weights.bin"
      rm -rf "$WORK/pulled-$run"
    else
      pushenc+=("$(echo "$t1 - $t0" | bc)")
      t0=$(now); "$CAIRN_BIN" pull bench/model:1 -o "$WORK/pulled-enc-$run" --quiet >/dev/null; t1=$(now)
      pullenc+=("$(echo "$t1 - $t0" | bc)")
      cmp "$WORK/src/model/weights.bin" "$WORK/pulled-enc-$run/weights.bin"
      rm -rf "$WORK/pulled-enc-$run"
    fi
    stop_server; rm -rf "$data"
  done
done

b=$(printf '%s\n' "${baseline[@]}" | best); n=$(printf '%s\n' "${nosync[@]}" | best); p=$(printf '%s\n' "${push[@]}" | best)
l=$(printf '%s\n' "${pull[@]}" | best); e=$(printf '%s\n' "${pushenc[@]}" | best)
le=$(printf '%s\n' "${pullenc[@]}" | best)
mib_s() { echo "scale=0; $SIZE_MIB / $1" | bc; }
ratio() { echo "scale=2; $1 / $b" | bc; }
printf '%-34s %8s %9s %8s\n' "operation (${SIZE_MIB} MiB)" "seconds" "MiB/s" "ratio"
printf '%-34s %8.2f %9s %8s\n' "sha256sum + cp + sync (baseline)" "$b" "$(mib_s "$b")" "1.00"
printf '%-34s %8.2f %9s %8s\n' "sha256sum + cp, no sync" "$n" "$(mib_s "$n")" "$(ratio "$n")"
printf '%-34s %8.2f %9s %8s\n' "cairn push" "$p" "$(mib_s "$p")" "$(ratio "$p")"
printf '%-34s %8.2f %9s %8s\n' "cairn pull" "$l" "$(mib_s "$l")" "$(ratio "$l")"
printf '%-34s %8.2f %9s %8s\n' "cairn push, encrypted at rest" "$e" "$(mib_s "$e")" "$(ratio "$e")"
printf '%-34s %8.2f %9s %8s\n' "cairn pull, encrypted at rest" "$le" "$(mib_s "$le")" "$(ratio "$le")"

# Peak server memory across a push and a pull of a BIG_MIB file.
rm -rf "$WORK/src"; make_file "$WORK/big/model/weights.bin" "$BIG_MIB"
start_server "$WORK/data-big" ""
"$CAIRN_BIN" models create bench/big >/dev/null
"$CAIRN_BIN" push bench/big "$WORK/big/model" --quiet >/dev/null
"$CAIRN_BIN" pull bench/big:1 -o "$WORK/big-pulled" --quiet >/dev/null
cmp "$WORK/big/model/weights.bin" "$WORK/big-pulled/weights.bin"
printf 'server peak RSS across push + pull of %s MiB: %s MiB\n' "$BIG_MIB" "$(peak_rss_mib)"
stop_server
