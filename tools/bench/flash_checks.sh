#!/usr/bin/env bash
# The one-kernel attention (issue 19; flux2-ops/src/cuda/flash.cu) on the device, in one call:
#   BIN=device-bin/f1 tools/bench/flash_checks.sh
# 1. fused_attention_check: forward and q/k/v gradients against f32 matmul-softmax-matmul (bf16 and f16 at head
#    dim 128 take the one-kernel path, odd and cross lengths included; f32 and head dim 64 the block path);
# 2. the slice step with --breakdown (its attention micro-benchmark is [1,48,4608,128] forward + backward),
#    with the one-kernel path and with FLUX2_ATTENTION=blocks, then PyTorch's twin with --matmul (its SDPA forward + backward at the same shape);
# 3. FULL=1: the full FLUX.2 [dev] checkpointed step, ours then PyTorch's.
set -u -o pipefail
source "$(dirname "$0")/device_env.sh"
echo "=== fused_attention_check"
timeout 240 "$BIN"/fused_attention_check --device cuda:0 2>&1 | tail -16
slice="--ckpt --steps ${STEPS:-10} --warmup 3 --breakdown"
for mode in flash blocks; do
  echo "=== ours slice ($mode): $slice"
  if [ $mode = blocks ]; then export FLUX2_ATTENTION=blocks; else unset FLUX2_ATTENTION; fi
  timeout 150 "$BIN"/bench_train_step $slice 2>&1 | grep -E "step:|memory:|micro: attention|breakdown|RESULT|error|panic" | tail -6
done
unset FLUX2_ATTENTION
echo "=== torch slice: $slice"
timeout 150 python3 tools/bench/bench_train_step.py ${slice/--breakdown/--matmul} 2>&1 | grep -E "step|memory|SDPA|RESULT|Error" | tail -6
if [ "${FULL:-0}" = 1 ]; then
  full="--full --ckpt --steps 4 --warmup 2"
  echo "=== ours full: $full"; timeout 200 "$BIN"/bench_train_step $full 2>&1 | grep -E "step:|memory:|RESULT|error|panic" | tail -4
  echo "=== torch full: $full"; timeout 200 python3 tools/bench/bench_train_step.py $full 2>&1 | grep -E "step|memory|RESULT|Error" | tail -4
fi
