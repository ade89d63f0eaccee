#!/usr/bin/env bash
# Ours vs PyTorch for each benchmark config given, in one device call (issue 15; docs/performance.md):
#   tools/bench/pairs.sh "--steps 10 --warmup 3" "--ckpt --steps 10 --warmup 3" "--full --ckpt --steps 5 --warmup 2"
# Each argument is the flag set of both bench_train_step (ours) and tools/bench/bench_train_step.py
# (PyTorch), run back to back on the same GPU; a config suffixed with " ours-only" skips PyTorch.
# Expects $BIN (default device-bin/i15, carried) with bench_train_step(.xz) and wheels/diffusers-*.whl,
# wheels/peft-*.whl.
set -u -o pipefail
source "$(dirname "$0")/device_env.sh"
for config in "$@"; do
  flags=${config% ours-only}
  echo "=== config: $config"
  timeout ${BENCH_TIMEOUT:-300} "$BIN"/bench_train_step $flags 2>&1 | grep -v "^\s*$" | grep -v "^warm-up" | tee -a "$OUT/ours.log"
  ms=$(tail -50 "$OUT/ours.log" | sed -n 's/.*ours_ms=\([0-9.]*\).*/\1/p' | tail -1)
  gib=$(tail -50 "$OUT/ours.log" | sed -n 's/.*ours_peak_in_use_gib=\([0-9.]*\).*/\1/p' | tail -1)
  [ "$flags" != "$config" ] && continue
  timeout ${TORCH_TIMEOUT:-300} python3 tools/bench/bench_train_step.py $flags ${ms:+--ours-ms $ms} ${gib:+--ours-gib $gib} 2>&1 \
    | grep -v Warning | tee -a "$OUT/torch.log"
done
