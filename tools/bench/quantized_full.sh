#!/usr/bin/env bash
# Quantized and offloaded base weights on the device (issues 17, 18; docs/memory.md), ours then PyTorch's in
# one call:
#   BIN=device-bin/q19 tools/bench/quantized_full.sh bf16 qfloat8 uint4 qfloat8:1.0 -- bf16 qfloat8
# Before `--`: our runs (quant_check first: the CUDA quantize/dequantize kernels bit-equal to the host
# quantizer), each the full FLUX.2 [dev] training step (random weights, 1024^2, batch 1, rank 32, block
# checkpointing) with that base: `bf16`, a qtype, or `qtype:P` / `bf16:P` with the first share P of the
# blocks offloaded. After `--`: the PyTorch twins (diffusers + peft, quantized as ai-toolkit does:
# tools/bench/bench_train_step.py --qtype). ENCODE=1 adds the text encoder's encode, ours and transformers'.
# $BIN holds (plain or .xz) quant_check and bench_train_step, built with
#   cargo build --release -p examples --features examples/cuda --example quant_check --example bench_train_step
# and for ENCODE=1 encode_bench, a mistral-encoder example (a `-p examples` build that names it fails whole):
#   cargo build --release -p mistral-encoder --features cuda --example encode_bench
set -u -o pipefail
source "$(dirname "$0")/device_env.sh"
timeout 120 "$BIN"/quant_check --device cuda:0 > "$OUT/quant_check.log" 2>&1
echo "quant_check exit $?: $(grep -c '^PASS' "$OUT/quant_check.log") cases pass"; grep -v "^PASS" "$OUT/quant_check.log" | tail -8
mode=ours
for entry in "$@"; do
  [ "$entry" = -- ] && { mode=torch; continue; }
  q=${entry%%:*}; offload=; [ "$entry" != "$q" ] && offload=${entry#*:}
  flags="--full --ckpt --steps ${STEPS:-2} --warmup ${WARMUP:-1}"
  [ "$q" != bf16 ] && flags="$flags --qtype $q"
  [ -n "$offload" ] && flags="$flags --offload $offload"
  echo "=== $mode $entry: $flags"
  if [ $mode = ours ]; then
    { time timeout ${BENCH_TIMEOUT:-200} "$BIN"/bench_train_step $flags; } 2>&1 | grep -E "built|offload:|step:|memory:|RESULT|error|panic|real" | tail -7
  else
    { time timeout ${BENCH_TIMEOUT:-200} python3 tools/bench/bench_train_step.py $flags; } 2>&1 | grep -E "config|step|memory|RESULT|Error|error|real" | tail -8
  fi
done
if [ "${ENCODE:-0}" = 1 ]; then
  for q in bf16 qfloat8; do
    flags="--layers 30 --tokens 512 --device cuda:0"; [ "$q" != bf16 ] && flags="$flags --qtype $q"
    echo "=== encode $q"; timeout 150 "$BIN"/encode_bench $flags 2>&1 | tail -4
  done
  echo "=== encode transformers bf16"; timeout 150 python3 tools/bench/encode_bench.py --layers 30 --tokens 512 2>&1 | tail -4
fi
