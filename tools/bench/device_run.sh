#!/usr/bin/env bash
# One device call for issue 9 (run from the repo root on the GPU machine, see docs/performance.md):
# fused-attention check on CUDA, the Burn training-step benchmark, the PyTorch reference, the final ratio
# line. Expects the binaries and the diffusers wheel in $BIN (default device-bin/i15; git-ignored, carried),
# and restores / saves cubecl's autotune cache (kept under target/, the default "target" location) as
# "$BIN"/cubecl_cache.tgz <-> $OUT/cubecl_cache.tgz.
#
# Environment:
#   BIN           folder with the binaries and wheels/ (default device-bin/i15)
#   BENCH_ARGS    arguments of ours (bench_train_step; default --breakdown)
#   TORCH_ARGS    arguments of the PyTorch reference (tools/bench/bench_train_step.py; --matmul and the
#                 --ours-ms/--ours-gib comparison are always added). Default: the shape and timing flags
#                 found in BENCH_ARGS (--small --full --ckpt --double N --single N --img HxW --txt N
#                 --steps N --warmup N), so both run the same config; set TORCH_ARGS (even to "") to override.
#   BENCH_TIMEOUT / TORCH_TIMEOUT   limits of the two benchmarks in seconds (default 330 / 150)
#   SKIP_CHECK=1, SKIP_DEMO=1, DEMO_TIMEOUT, CACHE_DEMO=1, CUBECL_AUTOTUNE_LEVEL (default minimal)
#   e.g. BENCH_ARGS="--full --ckpt" runs the full FLUX.2 [dev] size with checkpointing in both.
set -u -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
BIN=${BIN:-device-bin/i15}
case $BIN in /*) BIN_ABS=$BIN ;; *) BIN_ABS=$PWD/$BIN ;; esac
BENCH_ARGS=${BENCH_ARGS:---breakdown}
if [ -z "${TORCH_ARGS+set}" ]; then
  # The shape / timing flags of BENCH_ARGS (both "--flag value" and "--flag=value").
  TORCH_ARGS=""; set -- $BENCH_ARGS
  while [ $# -gt 0 ]; do
    case $1 in
      --small|--full|--ckpt) TORCH_ARGS+=" $1" ;;
      --double=*|--single=*|--img=*|--txt=*|--steps=*|--warmup=*) TORCH_ARGS+=" $1" ;;
      --double|--single|--img|--txt|--steps|--warmup) [ $# -ge 2 ] && TORCH_ARGS+=" $1 $2" && shift ;;
    esac
    shift
  done
  set --
fi
echo "bin: $BIN; ours: $BENCH_ARGS; torch:$TORCH_ARGS"
for f in "$BIN"/*.gz; do [ -f "$f" ] && gunzip -f "$f" && chmod +x "${f%.gz}"; done
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal} PYTHONUNBUFFERED=1
# The cuda feature loads libcublas.so.13 at run time: the toolkit's, else the pip wheel PyTorch uses.
cublas=$(ls /usr/local/cuda/lib64/libcublas.so.13* 2>/dev/null | head -1)
[ -z "$cublas" ] && cublas=$(python3 - <<'PY'
import glob, site
hits = sorted(p for d in site.getsitepackages() for p in glob.glob(d + "/nvidia/**/libcublas.so.13*", recursive=True))
print(hits[0] if hits else "")
PY
)
[ -n "$cublas" ] && export LD_LIBRARY_PATH="$(dirname "$cublas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" && echo "cuBLAS: $cublas"
if [ -f "$BIN"/cubecl_cache.tgz ]; then mkdir -p target && tar xzf "$BIN"/cubecl_cache.tgz -C target && echo "autotune cache restored"; fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$BIN"/wheels/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
date -u
if [ "${SKIP_CHECK:-0}" != 1 ]; then
  timeout 100 "$BIN"/fused_attention_check --device cuda:0 2>&1 | tee "$OUT/check.log"
fi
if [ -x "$BIN"/dit_parity ]; then
  # DiT parity fixtures on CUDA (flux2-dit's parity example built with --features cuda).
  # f32 on every fixture; bf16 on the fixture with exactly representable sigma/guidance (docs/cuda.md).
  for run in "f32 tests/fixtures/dit/*" "bf16 tests/fixtures/dit/bf16_realistic"; do
    set -- $run; dt=$1; shift
    timeout 120 "$BIN"/dit_parity "$@" --device cuda:0 --dtype $dt 2>&1 \
      | grep -i "rel_err\|error\|panic" | sed "s/^/parity $dt: /" | tee -a "$OUT/parity.log"
  done
fi
if [ -x "$BIN"/flux2-train ] && [ "${SKIP_DEMO:-0}" != 1 ]; then
  # The README's demo job on the GPU (trainer end to end: caching, 300 LoRA steps, samples, checkpoints).
  { time timeout ${DEMO_TIMEOUT:-240} "$BIN"/flux2-train demo --device cuda:0 --root /tmp/demo --fresh; } 2>&1 \
    | tr '\r' '\n' | grep -v "^\s*$" | tail -25 | tee "$OUT/demo.log"
fi
if [ "${CACHE_DEMO:-0}" = 1 ]; then
  # Autotune + compilation caches (cubecl.toml: both under target/): the same short run twice at the
  # default tuning level, from an empty cache and then from the cache the first run wrote.
  mkdir -p /tmp/cache-demo && cp cubecl.toml /tmp/cache-demo/ && echo '[package]' > /tmp/cache-demo/Cargo.toml
  for run in cold warm; do
    (cd /tmp/cache-demo && CUBECL_AUTOTUNE_LEVEL=balanced timeout 150 "$BIN_ABS/bench_train_step" --steps 1 --warmup 1 2>&1 \
      | grep "warm-up step 1\|step: median" | sed "s/^/cache $run: /" | tee -a "$OUT/cache.log")
    echo "cache $run: target/ holds $(find /tmp/cache-demo/target -type f | wc -l) files, $(du -sh /tmp/cache-demo/target | cut -f1)" | tee -a "$OUT/cache.log"
  done
fi
timeout ${BENCH_TIMEOUT:-330} "$BIN"/bench_train_step $BENCH_ARGS 2>&1 | grep -v "^\s*$" | tee "$OUT/ours.log"
ours_ms=$(sed -n 's/.*ours_ms=\([0-9.]*\).*/\1/p' "$OUT/ours.log")
ours_gib=$(sed -n 's/.*ours_peak_in_use_gib=\([0-9.]*\).*/\1/p' "$OUT/ours.log")
tar czf "$OUT/cubecl_cache.tgz" -C target . 2>/dev/null && echo "autotune cache saved ($(du -h "$OUT/cubecl_cache.tgz" | cut -f1))"
timeout ${TORCH_TIMEOUT:-150} python3 tools/bench/bench_train_step.py --matmul $TORCH_ARGS ${ours_ms:+--ours-ms $ours_ms} ${ours_gib:+--ours-gib $ours_gib} 2>&1 | grep -v Warning | tee "$OUT/torch.log"
