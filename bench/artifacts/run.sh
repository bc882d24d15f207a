#!/usr/bin/env bash
# Model-file transfer benchmark, side by side with the baseline in one run:
#   baseline  `sha256sum f && cp f dst && sync dst` of the same file on the same disk (Cairn
#             fsyncs every blob before it becomes visible), and the same without the sync
#   push      `cairn push` of a directory holding that file to `cairn serve` on loopback
#   pull      `cairn pull` of it into a fresh directory
#   push-enc  the same push and pull with encryption at rest (CAIRN_ENCRYPTION_KEY_FILE)
# then a push and a pull of a directory holding a BIG_MIB file and SMALL_FILES small ones, with
# encryption off and on, each checked with `diff -r`, and the server's peak RSS (VmHWM) in each.
# Each timing is the best of BENCH_RUNS runs; the page cache is warm for every contender.
#
# BACKEND=s3 stores the blobs on an S3-compatible server instead of the local directory: the
# `s3_server` example of cairn-blob (s3s-fs, the server the tests embed), a process of its own on
# loopback whose objects are files on the same disk. Its own work (it writes every part, then
# joins them, then copies the object to its final key) is in the timings.
#
#   bash bench/artifacts/run.sh                      # builds target/release/cairn if CAIRN_BIN is unset
#   SIZE_MIB=1024 BIG_MIB=2048 SMALL_FILES=1000 BENCH_RUNS=3 bash bench/artifacts/run.sh
#   BACKEND=s3 bash bench/artifacts/run.sh           # builds the s3_server example if S3_BIN is unset
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZE_MIB=${SIZE_MIB:-1024}
BIG_MIB=${BIG_MIB:-2048}
SMALL_FILES=${SMALL_FILES:-1000}
RUNS=${BENCH_RUNS:-3}
BACKEND=${BACKEND:-local}
case "$BACKEND" in local | s3) ;; *) echo "BACKEND must be local or s3" >&2; exit 2 ;; esac
if [ -z "${CAIRN_BIN:-}" ]; then
  cargo build --release -p cairn >&2
  CAIRN_BIN="${CARGO_TARGET_DIR:-target}/release/cairn"
fi
if [ "$BACKEND" = s3 ] && [ -z "${S3_BIN:-}" ]; then
  cargo build --release -p cairn-blob --features test-support --example s3_server >&2
  S3_BIN="${CARGO_TARGET_DIR:-target}/release/examples/s3_server"
fi
WORK=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/cairn-artifacts.XXXXXX")
SERVER_PID=""
S3_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "$S3_PID" ]; then kill "$S3_PID" 2>/dev/null || true; wait "$S3_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

S3_ENV=()
if [ "$BACKEND" = s3 ]; then
  mkdir -p "$WORK/s3"
  TMPDIR="$WORK/s3" "$S3_BIN" >"$WORK/s3.env" 2>"$WORK/s3.log" &
  S3_PID=$!
  for _ in $(seq 1 200); do grep -q '^S3_ROOT=' "$WORK/s3.env" 2>/dev/null && break; sleep 0.05; done
  grep -q '^S3_ROOT=' "$WORK/s3.env" || { cat "$WORK/s3.log" >&2; exit 1; }
  while IFS= read -r line; do
    case "$line" in
      AWS_*) S3_ENV+=("$line") ;;
      S3_BUCKET=*) S3_BUCKET=${line#S3_BUCKET=} ;;
      S3_ROOT=*) S3_ROOT=${line#S3_ROOT=} ;;
    esac
  done <"$WORK/s3.env"
fi
STORE_SEQ=0

TOKEN="cairn_bench_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CAIRN_URL="http://127.0.0.1:$PORT" CAIRN_TOKEN="$TOKEN" CAIRN_CONFIG_DIR="$WORK/config"

now() { date +%s.%N; }
best() { sort -g | head -n1; }

start_server() { # $1 = data dir, $2 = key file or ""
  # Rate limiting off: a benchmark is one client with one key (docs/BENCHMARKS.md).
  local env=(CAIRN_BOOTSTRAP_ADMIN_TOKEN="$TOKEN" CAIRN_BOOTSTRAP_ADMIN_PASSWORD="bench admin password" CAIRN_LOG=warn CAIRN_RATE_LIMIT_REQUESTS=0)
  if [ -n "$2" ]; then env+=(CAIRN_ENCRYPTION_KEY_FILE="$2"); fi
  if [ "$BACKEND" = s3 ]; then
    # A fresh prefix per server, so no run finds the blobs of the one before.
    STORE_SEQ=$((STORE_SEQ + 1))
    env+=("${S3_ENV[@]}" CAIRN_BLOB_URL="s3://$S3_BUCKET/run-$STORE_SEQ")
  fi
  env "${env[@]}" "$CAIRN_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$1" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    curl -fs "$CAIRN_URL/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  cat "$WORK/server.log" >&2; exit 1
}
stop_server() {
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  # The S3 server's files for this store go too: the disk holds one store at a time.
  if [ "$BACKEND" = s3 ]; then rm -rf "${S3_ROOT:?}/$S3_BUCKET/run-$STORE_SEQ"; fi
}
peak_rss_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER_PID/status"; }
# VmHWM counts the pages of the executable that were mapped in (about 34 MiB of a release
# build); the sampler below records the peak of the server's anonymous memory alone.
sample_anon() { # $1 = output file; samples RssAnon (kB) every 0.1 s until the server is gone
  local pid=$SERVER_PID
  while [ -r "/proc/$pid/status" ]; do
    awk '/RssAnon/ { print $2 }' "/proc/$pid/status" 2>/dev/null >>"$1" || true
    sleep 0.1
  done
}
peak_anon_mib() { sort -n "$1" | tail -n1 | awk '{ printf "%.1f", $1 / 1024 }'; }

make_file() { # $1 = path, $2 = MiB (incompressible)
  mkdir -p "$(dirname "$1")"
  head -c "$(( $2 * 1024 * 1024 ))" /dev/urandom >"$1"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); cairn $("$CAIRN_BIN" --version | awk '{print $2}'); blob store: $BACKEND; file ${SIZE_MIB} MiB, best of $RUNS" >&2
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

# A directory with a BIG_MIB file and SMALL_FILES small ones (1 B to 64 KiB, a few of them the
# same bytes), pushed and pulled with encryption off and on: the pulled tree must equal the
# pushed one, and the server's peak RSS is read in each mode.
rm -rf "$WORK/src"
make_file "$WORK/big/model/weights.bin" "$BIG_MIB"
python3 - "$WORK/big/model" "$SMALL_FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(n):
    d = os.path.join(root, "shards", f"{i % 16:02d}")
    os.makedirs(d, exist_ok=True)
    data = b"shared config\n" if i % 50 == 0 else os.urandom(rng.randint(1, 64 * 1024))
    with open(os.path.join(d, f"part-{i:05d}.json"), "wb") as f:
        f.write(data)
PY
printf '%-42s %8s %8s %14s %15s\n' "directory: ${BIG_MIB} MiB + ${SMALL_FILES} small files" "push s" "pull s" "peak RSS MiB" "peak anon MiB"
for mode in plain enc; do
  key=""
  if [ "$mode" = enc ]; then key="$WORK/key-big"; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$key"; echo >>"$key"; fi
  start_server "$WORK/data-big-$mode" "$key"
  rm -f "$WORK/anon-$mode"; sample_anon "$WORK/anon-$mode" &
  "$CAIRN_BIN" models create "bench/big-$mode" >/dev/null
  t0=$(now); "$CAIRN_BIN" push "bench/big-$mode" "$WORK/big/model" --quiet >/dev/null; t1=$(now)
  "$CAIRN_BIN" pull "bench/big-$mode:1" -o "$WORK/big-pulled-$mode" --quiet >/dev/null; t2=$(now)
  diff -r "$WORK/big/model" "$WORK/big-pulled-$mode"
  label="$BACKEND, encryption $([ "$mode" = enc ] && echo on || echo off)"
  printf '%-42s %8.2f %8.2f %14s %15s\n' "$label" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" \
    "$(peak_rss_mib)" "$(peak_anon_mib "$WORK/anon-$mode")"
  stop_server
  rm -rf "$WORK/big-pulled-$mode" "$WORK/data-big-$mode"
done
