"""PyTorch twin of `mistral-encoder/examples/encode_bench.rs`: encode one prompt with the FLUX.2 [dev]
text encoder's language model at full Mistral Small 3.x width (random weights, no download).

    python tools/bench/encode_bench.py [--tokens 512] [--layers 30] [--dtype bf16|f32] [--runs 5]

transformers' `MistralModel` with Mistral Small 3.x's text config (hidden 5120, 32 heads / 8 KV heads of
128, MLP 32768, vocab 131072, rope theta 1e9), built with `--layers` decoder layers (FLUX.2 reads hidden
states 10, 20 and 30, so layers 31..40 never run), weights N(0, 0.02) created directly in the model dtype
on the GPU, SDPA attention; one left-padded row of `--tokens` tokens (100 real), `output_hidden_states=True`,
the three states stacked as FLUX.2 does. Median over `--runs` after one warm-up, cuda synchronize around
each; prints `encode_ms=` and the allocator's peak (`max_memory_allocated`).
"""

import argparse
import statistics
import time

import torch
from transformers import MistralConfig, MistralModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    config = MistralConfig(
        vocab_size=131072, hidden_size=5120, intermediate_size=32768, num_hidden_layers=a.layers,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=1e9,
        max_position_embeddings=131072, sliding_window=None, attn_implementation="sdpa",
    )
    torch.set_default_dtype(dtype)
    with torch.device("cuda"):
        model = MistralModel(config).eval()
    torch.set_default_dtype(torch.float32)
    torch.cuda.synchronize()
    real = min(100, a.tokens)
    ids = torch.tensor([[(i * 7919) % (config.vocab_size - 1) + 1 for i in range(a.tokens)]], device="cuda")
    mask = torch.tensor([[int(i >= a.tokens - real) for i in range(a.tokens)]], device="cuda")
    wanted = [min(l, a.layers) for l in (10, 20, 30)]
    torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode():
        for run in range(a.runs + 1):
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            stacked = torch.cat([out.hidden_states[l] for l in wanted], dim=-1)
            torch.cuda.synchronize()
            if run > 0:
                times.append((time.perf_counter() - t) * 1e3)
    print(f"output {list(stacked.shape)}")
    print(f"pytorch encode_ms={statistics.median(times):.1f} (median of {len(times)}; min {min(times):.1f}) "
          f"tokens={a.tokens} layers={a.layers} dtype={a.dtype} "
          f"max_allocated_gib={torch.cuda.max_memory_allocated() / 2**30:.2f}")


if __name__ == "__main__":
    main()
