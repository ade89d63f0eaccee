"""PyTorch reference for `examples/examples/bench_train_step.rs` (issue 9): the same FLUX.2 [dev] slice,
the same LoRA, optimizer and timing, in diffusers + peft.

    python tools/bench/bench_train_step.py [--small | --full] [--double N] [--single N] [--img HxW] [--txt N]
        [--ckpt] [--steps 12] [--warmup 3] [--matmul] [--ours-ms X --ours-gib Y]

Default slice: D=6144 (48 heads x 128), F=18432, 2 double + 6 single blocks, 64x64 = 4096 image + 512 text
tokens, batch 1; random bf16 base weights; peft LoRA rank 32 (alpha 32) on every nn.Linear inside
`transformer_blocks` / `single_transformer_blocks`, adapters kept in f32 (peft's autocast_adapter_dtype);
attention via SDPA (diffusers' default processor); torch.optim.AdamW (lr 1e-4, wd 1e-2) over the
adapters; loss = MSE against a random target. Step = forward, backward, optimizer step, zero_grad,
cuda synchronize; median over the timed steps. Memory: torch.cuda.max_memory_allocated and
max_memory_reserved over the timed steps (peak stats reset after the warm-up).

Shape flags (the same names as the Burn benchmark's):
  --full        full FLUX.2 [dev]: 8 double + 48 single blocks, 64x64 image, 512 text tokens (32B params,
                ~60 GiB of bf16 weights)
  --small       a tiny config (D=128, 2 + 2 blocks, 16x16 image, 64 text tokens, rank 8) for smoke tests
  --double N    number of double-stream blocks      } override the preset (default, --small or --full)
  --single N    number of single-stream blocks      } when given
  --img HxW     image token grid (e.g. 64x64; a single number means square)
  --txt N       text tokens
  --ckpt        gradient checkpointing per block (diffusers' `enable_gradient_checkpointing`,
                torch.utils.checkpoint with use_reentrant=False)
The base weights are created directly in bf16 on the GPU (default dtype bf16 during construction, nn.Linear's
own uniform(+-1/sqrt(fan_in)) init), never in f32, so the full model builds in seconds within its 60 GiB.
A `config:` line names blocks, tokens, rank and ckpt so the log describes itself.

With --ours-ms/--ours-gib (the Burn run's numbers) it prints the final comparison line
`ratio=<ours/pytorch> mem_ratio=<ours/pytorch>`.
"""

import argparse
import statistics
import time

import torch
from diffusers import Flux2Transformer2DModel
from peft import LoraConfig, get_peft_model


def grid(v):
    """`HxW` (or `N` for a square grid) -> (H, W)."""
    parts = v.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(x.isdigit() and int(x) > 0 for x in parts):
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 64x64), got {v!r}")
    return int(parts[0]), int(parts[1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--small", action="store_true")
    p.add_argument("--full", action="store_true", help="full FLUX.2 [dev]: 8 double + 48 single blocks")
    p.add_argument("--double", type=int, help="double-stream blocks (default 2; --full 8)")
    p.add_argument("--single", type=int, help="single-stream blocks (default 6; --full 48)")
    p.add_argument("--img", type=grid, help="image token grid HxW (default 64x64)")
    p.add_argument("--txt", type=int, help="text tokens (default 512)")
    p.add_argument("--ckpt", action="store_true", help="gradient checkpointing per block")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--ours-ms", type=float)
    p.add_argument("--ours-gib", type=float)
    p.add_argument("--matmul", action="store_true", help="also time a bf16 8192^3 matmul and SDPA fwd+bwd")
    a = p.parse_args()
    if a.small and a.full:
        p.error("--small and --full exclude each other")

    dev = "cuda"
    torch.manual_seed(0)
    if a.small:
        cfg = dict(in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=32, num_attention_heads=4,
                   joint_attention_dim=64, timestep_guidance_channels=32, axes_dims_rope=(8, 8, 8, 8))
        h = w = 16
        txt, rank = 64, 8
    else:
        cfg = dict(in_channels=128, num_layers=2, num_single_layers=6, attention_head_dim=128, num_attention_heads=48,
                   joint_attention_dim=15360, timestep_guidance_channels=256, axes_dims_rope=(32, 32, 32, 32))
        h = w = 64
        txt, rank = 512, 32
        if a.full:
            cfg.update(num_layers=8, num_single_layers=48)
    if a.double is not None:
        cfg["num_layers"] = a.double
    if a.single is not None:
        cfg["num_single_layers"] = a.single
    if a.img is not None:
        h, w = a.img
    if a.txt is not None:
        txt = a.txt
    print(f"config: {'small' if a.small else 'full' if a.full else 'slice'} double={cfg['num_layers']} "
          f"single={cfg['num_single_layers']} D={cfg['num_attention_heads'] * cfg['attention_head_dim']} "
          f"tokens={h * w}+{txt} (img {h}x{w}) rank={rank} ckpt={a.ckpt} steps={a.steps} warmup={a.warmup}")
    # Built straight in bf16 on the GPU: an f32 build then .to(bf16) would need twice the memory (128 GB at
    # the full size). nn.Linear's default init (uniform +-1/sqrt(fan_in)) runs in bf16 on the device.
    s = time.perf_counter()
    prev_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(dev):
            model = Flux2Transformer2DModel(**cfg)
    finally:
        torch.set_default_dtype(prev_dtype)
    model.to(torch.bfloat16)
    model.requires_grad_(False)
    torch.cuda.synchronize()
    n_base = sum(p.numel() for p in model.parameters())
    print(f"torch: base params {n_base / 1e9:.3f} B, {torch.cuda.memory_allocated() / 2**30:.2f} GiB allocated, "
          f"build {time.perf_counter() - s:.1f} s")
    if a.ckpt:
        # Before peft wraps it: sets gradient_checkpointing on the Flux2Transformer2DModel, whose forward then
        # runs every double / single block under torch.utils.checkpoint (use_reentrant=False).
        model.enable_gradient_checkpointing()
    targets = [n for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n.split(".")[0] in ("transformer_blocks", "single_transformer_blocks")]
    lora = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, init_lora_weights=True, target_modules=targets)
    # peft keeps the adapters in f32 over the bf16 base (autocast_adapter_dtype).
    model = get_peft_model(model, lora, autocast_adapter_dtype=True)
    adapted = sum(1 for n, m in model.named_modules() if hasattr(m, "lora_A") and len(getattr(m, "lora_A", {})) > 0)
    params = [p for p in model.parameters() if p.requires_grad]
    dtypes = {p.dtype for p in params}
    print(f"torch: adapted_linears={adapted} lora_params={sum(p.numel() for p in params)} adapter dtypes={dtypes}")
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)

    n_img = h * w
    x = torch.randn(1, n_img, cfg["in_channels"], device=dev, dtype=torch.bfloat16)
    ctx = torch.randn(1, txt, cfg["joint_attention_dim"], device=dev, dtype=torch.bfloat16)
    target = torch.randn(1, n_img, cfg["in_channels"], device=dev)
    t = torch.tensor([0.7], device=dev, dtype=torch.bfloat16)
    g = torch.tensor([4.0], device=dev, dtype=torch.bfloat16)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols, torch.zeros_like(rows)], -1).reshape(1, -1, 4).to(dev)
    txt_ids = torch.zeros(1, txt, 4, dtype=torch.int64, device=dev)
    txt_ids[..., 3] = torch.arange(txt)

    times = []
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        s = time.perf_counter()
        pred = model(hidden_states=x, encoder_hidden_states=ctx, timestep=t, guidance=g, img_ids=img_ids,
                     txt_ids=txt_ids, return_dict=False)[0]
        loss = (pred.float() - target).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        e = time.perf_counter() - s
        if i >= a.warmup:
            times.append(e)
        else:
            print(f"torch warm-up step {i + 1}: {e * 1e3:.1f} ms")
    med = statistics.median(times)
    alloc = torch.cuda.max_memory_allocated() / 2**30
    reserved = torch.cuda.max_memory_reserved() / 2**30
    print(f"torch: step median {med * 1e3:.1f} ms over {len(times)} (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}); "
          f"loss {loss.item():.4f}; peak allocated {alloc:.2f} GiB, peak reserved {reserved:.2f} GiB")

    if a.matmul:
        del model, opt, params
        torch.cuda.empty_cache()
        n = 8192
        A = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        B = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        for _ in range(3):
            A @ B
        torch.cuda.synchronize()
        ts = []
        for _ in range(10):
            s = time.perf_counter(); A @ B; torch.cuda.synchronize(); ts.append(time.perf_counter() - s)
        mm = statistics.median(ts)
        print(f"torch: matmul {n}^3 bf16 {mm * 1e3:.2f} ms = {2 * n ** 3 / mm / 1e12:.1f} TFLOP/s")
        L = n_img + txt
        H, D = cfg["num_attention_heads"], cfg["attention_head_dim"]
        q, k, v = (torch.randn(1, H, L, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        f = torch.nn.functional.scaled_dot_product_attention
        def fb():
            f(q, k, v).float().sum().backward()
        for _ in range(3):
            fb()
        torch.cuda.synchronize()
        ts = []
        for _ in range(10):
            s = time.perf_counter(); fb(); torch.cuda.synchronize(); ts.append(time.perf_counter() - s)
        at = statistics.median(ts)
        print(f"torch: SDPA [1,{H},{L},{D}] fwd+bwd {at * 1e3:.2f} ms = {12 * H * L * L * D / at / 1e12:.1f} TFLOP/s")

    print(f"RESULT torch_ms={med * 1e3:.3f} torch_alloc_gib={alloc:.3f} torch_reserved_gib={reserved:.3f}")
    if a.ours_ms is not None and a.ours_gib is not None:
        print(f"ratio={a.ours_ms / (med * 1e3):.3f} mem_ratio={a.ours_gib / alloc:.3f}")


if __name__ == "__main__":
    main()
