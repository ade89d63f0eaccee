#!/usr/bin/env bash
# Issue 19's kernels on the device, in one call (binaries: fused_attention_check, fused_ops_check,
# bench_train_step in $BIN):
#   BIN=device-bin/f2 tools/bench/kernel_checks.sh
# 1. fused_attention_check: forward and q/k/v gradients against f32 matmul-softmax-matmul (bf16 and f16 at head
#    dim 128 take the one-kernel path of flux2-ops/src/cuda/flash.cu, odd and cross lengths included; f32 and
#    head dim 64 the block path); fused_ops_check: the fused element-wise ops against their compositions;
# 2. the slice step with --breakdown (its attention micro-benchmark is [1,48,4608,128] forward + backward),
#    with the new kernels (FLUX2_FAST_KERNELS=1) and without, then PyTorch's twin with --matmul (its SDPA
#    forward + backward at the same shape);
# 3. FULL=1: the full FLUX.2 [dev] checkpointed step, ours then PyTorch's.
set -u -o pipefail
source "$(dirname "$0")/device_env.sh"
export FLUX2_FAST_KERNELS=1  # the checks test the new kernels (opt-in until these pass)
echo "=== fused_attention_check"
timeout 240 "$BIN"/fused_attention_check --device cuda:0 2>&1 | tail -16
echo "=== fused_ops_check"
timeout 240 "$BIN"/fused_ops_check --device cuda:0 2>&1 | tail -24
slice="--ckpt --steps ${STEPS:-10} --warmup 3 --breakdown"
for mode in 1 0; do
  echo "=== ours slice (FLUX2_FAST_KERNELS=$mode): $slice"
  export FLUX2_FAST_KERNELS=$mode
  timeout 150 "$BIN"/bench_train_step $slice 2>&1 | grep -E "step:|memory:|micro: attention|breakdown|RESULT|error|panic" | tail -6
done
export FLUX2_FAST_KERNELS=1
echo "=== torch slice: $slice"
timeout 150 python3 tools/bench/bench_train_step.py ${slice/--breakdown/--matmul} 2>&1 | grep -E "step|memory|SDPA|RESULT|Error" | tail -6
if [ "${FULL:-0}" = 1 ]; then
  full="--full --ckpt --steps 4 --warmup 2"
  echo "=== ours full: $full"; timeout 200 "$BIN"/bench_train_step $full 2>&1 | grep -E "step:|memory:|RESULT|error|panic" | tail -4
  echo "=== torch full: $full"; timeout 200 python3 tools/bench/bench_train_step.py $full 2>&1 | grep -E "step|memory|RESULT|Error" | tail -4
fi
