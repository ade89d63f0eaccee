#!/usr/bin/env bash
# One device call for issue 9 (run from the repo root on the GPU machine, see docs/performance.md):
# fused-attention check on CUDA, the Burn training-step benchmark, the PyTorch reference, the final ratio
# line. Expects the binaries and the diffusers wheel in device-bin/i9/ (git-ignored, carried), and restores /
# saves cubecl's autotune cache (kept under target/, the default "target" location) as
# device-bin/i9/cubecl_cache.tgz <-> $OUT/cubecl_cache.tgz.
set -u -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for f in device-bin/i9/*.gz; do [ -f "$f" ] && gunzip -f "$f" && chmod +x "${f%.gz}"; done
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal} PYTHONUNBUFFERED=1
if [ -f device-bin/i9/cubecl_cache.tgz ]; then mkdir -p target && tar xzf device-bin/i9/cubecl_cache.tgz -C target && echo "autotune cache restored"; fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site device-bin/i9/wheels/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
date -u
if [ "${SKIP_CHECK:-0}" != 1 ]; then
  timeout 100 ./device-bin/i9/fused_attention_check --device cuda:0 2>&1 | tee "$OUT/check.log"
fi
timeout ${BENCH_TIMEOUT:-330} ./device-bin/i9/bench_train_step ${BENCH_ARGS:---breakdown} 2>&1 | grep -v "^\s*$" | tee "$OUT/ours.log"
ours_ms=$(sed -n 's/.*ours_ms=\([0-9.]*\).*/\1/p' "$OUT/ours.log")
ours_gib=$(sed -n 's/.*ours_peak_in_use_gib=\([0-9.]*\).*/\1/p' "$OUT/ours.log")
tar czf "$OUT/cubecl_cache.tgz" -C target . 2>/dev/null && echo "autotune cache saved ($(du -h "$OUT/cubecl_cache.tgz" | cut -f1))"
timeout 150 python3 tools/bench/bench_train_step.py --matmul ${ours_ms:+--ours-ms $ours_ms} ${ours_gib:+--ours-gib $ours_gib} 2>&1 | grep -v Warning | tee "$OUT/torch.log"
