#!/usr/bin/env bash
# Loading and training through real weight files on CUDA, in one device call: flux2-dit's parity example on
# every committed DiT fixture (checkpoint loading incl. the per-tensor finiteness check, f32), then the
# README's demo job on the GPU (the trainer end to end: VAE, text encoder, transformer loaded from files,
# run lock, 300 steps, samples, final LoRA). Expects $BIN with parity(.xz) and flux2-train(.xz).
set -u -o pipefail
source "$(dirname "$0")/device_env.sh"
for case in tests/fixtures/dit/*/; do
  timeout 60 "$BIN"/dit_parity "$case" --device cuda:0 --dtype f32 2>&1 | grep -i "rel_err\|error\|panic" | sed "s|^|parity $(basename "$case"): |"
done
{ time timeout 200 "$BIN"/flux2-train demo --device cuda:0 --root /tmp/demo --fresh; } 2>&1 | tr '\r' '\n' | grep -v "^\s*$" | tail -15
echo "demo exit status: ${PIPESTATUS[0]}"
