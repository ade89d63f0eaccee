#!/usr/bin/env bash
# Peak host RSS while loading the real-size FLUX.2 [dev] transformer (issue 17 item 3: it stays under the
# memory-mapped file + 8 GiB), in one device call:
#   BIN=device-bin/h17 tools/bench/host_rss.sh
# The disk (64 GiB) cannot hold the 64.4 GB bf16 file, so examples/sparse_checkpoint writes one with the
# real header and a hole for data (no disk, reads as zeros; loading costs the same memory whatever the
# values). Then, each run's peak RSS (ru_maxrss from /usr/bin/time: VmHWM at exit) against its budget:
#   (a) flux2-train quantize of the sparse bf16 file to $DIR/fp8.safetensors (33 GB really written)
#   (b) bench_train_step --full --ckpt --load <sparse bf16> --qtype qfloat8 (quantized while loading)
#   (c) the same with --load <fp8 file> (float8 as stored)
#   (d) --load <fp8 file> --offload 1.0 (every block in pinned host memory: that copy, ~31 GiB, comes on
#       top of the budget by design)
# The binaries print their own "host memory" lines too. The files are deleted at the end.
# $BIN holds (plain or .xz): sparse_checkpoint, flux2-train and bench_train_step (the last built with
# --features cuda), e.g.
#   cargo build --release -p examples --example sparse_checkpoint --example bench_train_step --features cuda
#   cargo build --release -p flux2-train --features cuda
# Environment: DIR (default /tmp; must not be tmpfs, where read holes take memory), STEPS (default 2),
# WARMUP (default 1), BENCH_TIMEOUT (per run, default 200 s), QUANTIZE_TIMEOUT (default 300 s).
set -u -o pipefail
source "$(dirname "$0")/device_env.sh"
DIR=${DIR:-/tmp}; mkdir -p "$DIR"
bf16=$DIR/flux2-dev-sparse.safetensors; fp8=$DIR/fp8.safetensors
trap 'rm -f "$bf16" "$fp8" "$DIR"/.flux2-dev-sparse.safetensors.*.tmp "$DIR"/.fp8.safetensors.*.tmp' EXIT
fs=$(stat -f -c %T "$DIR")
echo "DIR=$DIR ($fs): $(df -h --output=avail "$DIR" | tail -1 | tr -d ' ') free; $(free -g | awk '/^Mem:/ {print $2 " GiB RAM"}')"
[ "$fs" = tmpfs ] && { echo "$DIR is tmpfs: reading the file's hole would take memory; set DIR to a disk folder"; exit 1; }

gib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1073741824 }'; }
describe() { echo "$1: $(stat -c %s "$1") bytes ($(gib "$(stat -c %s "$1")") GiB), $(( $(stat -c %b "$1") * $(stat -c %B "$1") / 1024 )) KiB on disk"; }
# measure NAME FILE TIMEOUT CMD...: runs CMD, shows its key lines, then its peak RSS (ru_maxrss from
# /usr/bin/time, else the binary's own last "peak RSS" line) against FILE + 8 GiB.
measure() {
  local name=$1 file=$2 limit=$3; shift 3
  local log="$OUT/host_rss_$name.log" timer=()
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -f "TIME peak_rss_kib=%M elapsed_s=%e")
  echo "=== ($name) $*"
  timeout "$limit" "${timer[@]}" "$@" > "$log" 2>&1
  echo "exit $?"
  tr '\r' '\n' < "$log" | grep -E "wrote|model:|offload:|host memory|^step:|^memory|TIME|rror|panic" | tail -9
  local peak budget
  peak=$(sed -n 's/.*peak_rss_kib=\([0-9]*\).*/\1/p' "$log" | tail -1)
  if [ -n "$peak" ]; then peak=$(awk -v k="$peak" 'BEGIN { printf "%.2f", k / 1048576 }')
  else peak=$(sed -n 's/.*peak RSS \([0-9.]*\) GiB.*/\1/p' "$log" | tail -1); fi
  budget=$(gib $(( $(stat -c %s "$file") + (8 << 30) )))
  local verdict
  verdict=$(awk -v p="${peak:-0}" -v b="$budget" 'BEGIN { print (p + 0 > b + 0) ? "OVER" : "within" }')
  echo "RSS ($name): peak ${peak:-n/a} GiB; budget $(basename "$file") + 8 GiB = $budget GiB: ${peak:+$verdict}"
}

"$BIN"/sparse_checkpoint --out "$bf16" || exit 1
describe "$bf16"
measure a "$bf16" "${QUANTIZE_TIMEOUT:-300}" "$BIN"/flux2-train quantize --model "$bf16" --out "$fp8"
[ -f "$fp8" ] && describe "$fp8"
flags=(--full --ckpt --steps "${STEPS:-2}" --warmup "${WARMUP:-1}" --device cuda:0)
measure b "$bf16" "${BENCH_TIMEOUT:-200}" "$BIN"/bench_train_step "${flags[@]}" --load "$bf16" --qtype qfloat8
if [ -f "$fp8" ]; then
  measure c "$fp8" "${BENCH_TIMEOUT:-200}" "$BIN"/bench_train_step "${flags[@]}" --load "$fp8"
  measure d "$fp8" "${BENCH_TIMEOUT:-200}" "$BIN"/bench_train_step "${flags[@]}" --load "$fp8" --offload 1.0
else
  echo "(c), (d) skipped: quantize wrote no $fp8"
fi
