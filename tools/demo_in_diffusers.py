#!/usr/bin/env python3
"""The demo pipeline folder in diffusers: `Flux2Pipeline.from_pretrained` loads it as it is (every file
diffusers needs is there), and diffusers' image equals ours for the same prompt and initial noise, with and
without the demo's trained LoRA.

  cargo run --release -p flux2-train -- demo          # writes output/demo/pipeline and trains the LoRA
  .venv/bin/python tools/demo_in_diffusers.py output/demo/pipeline /tmp/demo_check \
      --lora output/demo/demo_ring_lora/demo_ring_lora.safetensors --flux2-train target/release/flux2-train

Our side runs `flux2-train sample --latents` on the noise this script draws (torch's generator), so both
start from the same tensor. Exits non-zero when an image differs by more than --tolerance (relative L2).
"""
import argparse
import os
import subprocess
import sys

import torch
from diffusers import Flux2Pipeline
from safetensors.torch import load_file, save_file

PROMPT = "a photo of sks on a blue background"
OUT_LAYERS = (1, 2, 3)
MAX_LEN = 64


def ours(args, latents_file, out_file, lora):
    cmd = [args.flux2_train, "sample", "--model", args.pipeline, "--prompt", PROMPT, "--width", str(args.size),
           "--height", str(args.size), "--steps", str(args.steps), "--guidance", str(args.guidance),
           "--latents", latents_file, "--text-encoder-out-layers", ",".join(map(str, OUT_LAYERS)),
           "--max-sequence-length", str(MAX_LEN), "--out", out_file.replace(".safetensors", ".png"),
           "--save-tensor", out_file]
    if lora:
        cmd += ["--lora", lora]
    subprocess.run(cmd, check=True, capture_output=True)
    return load_file(out_file)["image"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("pipeline")
    p.add_argument("out")
    p.add_argument("--lora")
    p.add_argument("--flux2-train", default="target/release/flux2-train")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    pipe = Flux2Pipeline.from_pretrained(args.pipeline, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    print(f"loaded {args.pipeline} with diffusers: tokenizer padding {pipe.tokenizer.padding_side}, "
          f"chat template {'set' if pipe.tokenizer.chat_template else 'MISSING'}")
    channels = pipe.transformer.config.in_channels
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, channels, args.size // 16, args.size // 16, generator=gen)
    latents_file = os.path.join(args.out, "latents.safetensors")
    save_file({"latents": latents.contiguous()}, latents_file)

    worst = 0.0
    for label, lora in [("base", None), ("lora", args.lora)]:
        if label == "lora":
            if not lora:
                continue
            pipe.load_lora_weights(lora, adapter_name="demo")
        with torch.no_grad():
            theirs = pipe(prompt=PROMPT, height=args.size, width=args.size, num_inference_steps=args.steps,
                          guidance_scale=args.guidance, latents=latents.clone(), output_type="pt",
                          text_encoder_out_layers=OUT_LAYERS, max_sequence_length=MAX_LEN, return_dict=False)[0]
        mine = ours(args, latents_file, os.path.join(args.out, f"ours_{label}.safetensors"), lora)
        err = ((theirs - mine).norm() / theirs.norm()).item()
        print(f"{label}: image {tuple(theirs.shape)}, relative error ours vs diffusers {err:.3e}")
        worst = max(worst, err)
    print(f"rel_err={worst:.6e}")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
