#!/usr/bin/env bash
# The full-size training rehearsal through the CLI, in one device call (issue 15; docs/performance.md):
# `flux2-train configs` writes FLUX.2 [dev]'s configs, one 1024x1024 image is painted, and
# examples/jobs/flux2_dev_rehearsal.yaml trains 5 steps with --random-weights (gradient checkpointing on,
# cached latents and prompt embeddings). nvidia-smi samples the GPU's used memory every 200 ms.
# Expects $BIN (default device-bin/i15, carried) with flux2-train(.xz).
set -u -o pipefail
source "$(dirname "$0")/device_env.sh"
repo=$PWD
work=/tmp/rehearsal; rm -rf "$work"; mkdir -p "$work/data/rehearsal"; cd "$work"
python3 - <<'PY'
from PIL import Image, ImageDraw
im = Image.new("RGB", (1024, 1024), (40, 90, 160))
ImageDraw.Draw(im).ellipse((256, 256, 768, 768), fill=(230, 200, 40))
im.save("data/rehearsal/sun.png")
open("data/rehearsal/sun.txt", "w").write("a yellow [trigger] disc on a blue background")
PY
"$BIN"/flux2-train configs output/flux2-dev-configs
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader -lms 200 > "$OUT/gpu_memory.csv" &
sampler=$!
/usr/bin/time -v "$BIN"/flux2-train train "$repo/examples/jobs/flux2_dev_rehearsal.yaml" --random-weights --fresh 2>&1 \
  | tr '\r' '\n' | grep -v "^\s*$" | tee "$OUT/rehearsal.log"
kill $sampler
cp output/flux2_dev_rehearsal/loss_log.jsonl "$OUT/" 2>/dev/null
ls -la output/flux2_dev_rehearsal | tee -a "$OUT/rehearsal.log"
echo "GPU memory used (nvidia-smi, MiB): max $(cut -d, -f2 "$OUT/gpu_memory.csv" | tr -dc '0-9\n' | sort -n | tail -1)" | tee -a "$OUT/rehearsal.log"
