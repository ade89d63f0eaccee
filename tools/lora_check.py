#!/usr/bin/env python3
"""Loads LoRAs written by `lora-adapters` into diffusers and compares outputs with ours.

  cargo run --release -p lora-adapters --example lora_export -- tests/fixtures/dit/guidance_b1 /tmp/lora_check
  .venv/bin/python tools/lora_check.py tests/fixtures/dit/guidance_b1 /tmp/lora_check

Uses the public diffusers path users take: `Flux2Pipeline.lora_state_dict` (which converts the
ai-toolkit/ComfyUI layout) then `Flux2Transformer2DModel.load_lora_adapter`.
"""
import os
import sys

import torch
from diffusers import Flux2Pipeline, Flux2Transformer2DModel
from safetensors.torch import load_file


def main():
    fixture, out = sys.argv[1], sys.argv[2]
    inputs = load_file(os.path.join(fixture, "inputs.safetensors"))
    worst = 0.0
    for label in ["ai_toolkit", "diffusers"]:
        model = Flux2Transformer2DModel.from_pretrained(os.path.join(fixture, "transformer")).eval()
        sd, meta = Flux2Pipeline.lora_state_dict(os.path.join(out, f"ours_{label}.safetensors"), return_lora_metadata=True)
        model.load_lora_adapter(sd, prefix="transformer", metadata=meta, adapter_name="ours")
        with torch.no_grad():
            sample = model(hidden_states=inputs["hidden_states"], encoder_hidden_states=inputs["encoder_hidden_states"],
                           timestep=inputs["timestep"], guidance=inputs.get("guidance"), img_ids=inputs["img_ids"],
                           txt_ids=inputs["txt_ids"], return_dict=False)[0]
        ours = load_file(os.path.join(out, f"ours_{label}_expected.safetensors"))["sample"]
        err = ((sample - ours).norm() / ours.norm()).item()
        base_model = Flux2Transformer2DModel.from_pretrained(os.path.join(fixture, "transformer")).eval()
        with torch.no_grad():
            base = base_model(hidden_states=inputs["hidden_states"], encoder_hidden_states=inputs["encoder_hidden_states"],
                              timestep=inputs["timestep"], guidance=inputs.get("guidance"), img_ids=inputs["img_ids"],
                              txt_ids=inputs["txt_ids"], return_dict=False)[0]
        effect = ((base - ours).norm() / ours.norm()).item()
        print(f"{label}: {len(sd)} tensors, rel_err vs ours={err:.3e} (LoRA effect {effect:.3f})")
        worst = max(worst, err)
    print(f"rel_err={worst:.6e}")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
