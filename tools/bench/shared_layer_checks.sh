#!/usr/bin/env bash
# The shared kernel layer (flux2-ops) on CUDA, in one device call (issue 16; docs/cuda.md):
#  1. parity of every model against its committed diffusers/transformers fixtures in f32: the transformer
#     (dit_parity), the VAE (vae_parity), the text encoder (text_encoder_parity), and the end-to-end
#     pipeline, prompt -> image (pipeline_parity; also bf16 against diffusers' bf16 run);
#  2. the text encoder's encode time at full Mistral Small 3.x width, ours (encode_bench) and
#     transformers (tools/bench/encode_bench.py) back to back;
#  3. a regression look at the training slice (bench_train_step, ours only) and the demo job on the GPU.
# Expects $BIN (default device-bin/i15, carried) with the binaries named below (.xz allowed).
set -u -o pipefail
source "$(dirname "$0")/device_env.sh"
echo "=== dit_parity (f32)"
timeout 120 "$BIN"/dit_parity tests/fixtures/dit/*/ --device cuda:0 2>&1 | tail -12
echo "=== vae_parity (f32)"
timeout 120 "$BIN"/vae_parity tests/fixtures/vae/*/ --device cuda:0 2>&1 | tail -20
echo "=== text_encoder_parity (f32)"
for case in tests/fixtures/text_encoder/*/; do
  timeout 120 "$BIN"/text_encoder_parity "$case" --device cuda:0 2>&1 | tail -3 | sed "s|^|$(basename "$case"): |"
done
echo "=== pipeline_parity (f32, then bf16)"
timeout 300 "$BIN"/pipeline_parity tests/fixtures/pipeline --device cuda:0 2>&1 | grep -v "^\s*$" | tail -16
timeout 300 "$BIN"/pipeline_parity tests/fixtures/pipeline --device cuda:0 --dtype bf16 2>&1 | tail -3
echo "=== text encoder encode, full width, 512 tokens, bf16: ours then transformers"
timeout 300 "$BIN"/encode_bench --device cuda:0 --tokens 512 --layers 30 --dtype bf16 --runs 5 2>&1 | tail -3
python3 -c "import transformers; print('transformers', transformers.__version__)" 2>&1 | tail -1
timeout 300 python3 tools/bench/encode_bench.py --tokens 512 --layers 30 --dtype bf16 --runs 5 2>&1 | grep -v Warning | tail -3
echo "=== training slice (ours only)"
timeout 200 "$BIN"/bench_train_step --steps 6 --warmup 2 2>&1 | grep -E "ours_ms|peak|error|panic" | tail -4
echo "=== demo on the GPU"
{ time timeout 200 "$BIN"/flux2-train demo --device cuda:0 --root /tmp/demo --fresh; } 2>&1 | tr '\r' '\n' | grep -v "^\s*$" | tail -6
