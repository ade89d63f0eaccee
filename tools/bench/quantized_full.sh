#!/usr/bin/env bash
# Quantized base weights on the device (issue 17; docs/memory.md), in two calls on one warm machine:
#   BIN=device-bin/q18 tools/bench/quantized_full.sh ours qfloat8 uint4
#     quant_check (CUDA quantize/dequantize kernels bit-equal to the host quantizer), then the full FLUX.2
#     [dev] training step (random weights, 1024^2, batch 1, rank 32, block checkpointing) with bf16 base
#     weights and then each qtype, then the text encoder's encode (30 layers, 512 tokens) bf16 and qfloat8;
#   BIN=device-bin/q18 tools/bench/quantized_full.sh torch qfloat8
#     the PyTorch twins: diffusers + peft, quantized as ai-toolkit does (tools/bench/bench_train_step.py
#     --qtype), and transformers' encode.
set -u -o pipefail
source "$(dirname "$0")/device_env.sh"
mode=$1; shift
if [ "$mode" = ours ]; then
  timeout 120 "$BIN"/quant_check --device cuda:0 > "$OUT/quant_check.log" 2>&1
  echo "quant_check exit $?: $(grep -c '^PASS' "$OUT/quant_check.log") cases pass"; grep -v "^PASS" "$OUT/quant_check.log" | tail -8
fi
for q in bf16 "$@"; do
  flags="--full --ckpt --steps ${STEPS:-3} --warmup ${WARMUP:-1}"
  [ "$q" != bf16 ] && flags="$flags --qtype $q"
  echo "=== $mode $q: $flags"
  if [ "$mode" = ours ]; then
    { time timeout ${BENCH_TIMEOUT:-200} "$BIN"/bench_train_step $flags; } 2>&1 | grep -E "built|step:|memory:|RESULT|error|panic|real" | tail -6
  else
    { time timeout ${BENCH_TIMEOUT:-200} python3 tools/bench/bench_train_step.py $flags; } 2>&1 | grep -E "config|torch|step|memory|RESULT|Error|error|real" | tail -8
  fi
done
if [ "$mode" = ours ]; then
  for q in bf16 qfloat8; do
    flags="--layers 30 --tokens 512 --device cuda:0"
    [ "$q" != bf16 ] && flags="$flags --qtype $q"
    echo "=== encode $q"; timeout 150 "$BIN"/encode_bench $flags 2>&1 | tail -4
  done
else
  echo "=== encode transformers bf16"; timeout 150 python3 tools/bench/encode_bench.py --layers 30 --tokens 512 2>&1 | tail -4
fi
