#!/usr/bin/env bash
# Full FLUX.2 [dev] training step (random weights, 1024^2, batch 1, rank 32, block checkpointing) with
# bf16 base weights, then quantized ones, in one device call (issue 17; docs/memory.md):
#   BIN=device-bin/q17 tools/bench/quantized_full.sh qfloat8 uint4
set -u -o pipefail
source "$(dirname "$0")/device_env.sh"
for q in bf16 "$@"; do
  flags="--full --ckpt --steps ${STEPS:-3} --warmup ${WARMUP:-1}"
  [ "$q" != bf16 ] && flags="$flags --qtype $q"
  echo "=== $q: $flags"
  { time timeout ${BENCH_TIMEOUT:-280} "$BIN"/bench_train_step $flags; } 2>&1 | grep -E "built|step:|memory:|RESULT|error|panic|real" | tail -6
done
