"""PyTorch reference for `examples/examples/bench_train_step.rs` (issue 9): the same FLUX.2 [dev] slice,
the same LoRA, optimizer and timing, in diffusers + peft.

    python tools/bench/bench_train_step.py [--small | --full] [--double N] [--single N] [--img HxW] [--txt N]
        [--ckpt] [--qtype NAME] [--device cuda|cpu] [--steps 12] [--warmup 3] [--matmul] [--ours-ms X --ours-gib Y]

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
A `config:` line names blocks, tokens, rank, ckpt and qtype so the log describes itself.

  --qtype NAME  quantize the frozen base weights before the LoRA goes on, the way ostris ai-toolkit does for
                FLUX.2 with `model.quantize: true` + `model.qtype: NAME` (qfloat8, qfloat8_e4m3fn, qint8,
                float8, int8, uint2 .. uint8: the names flux2-ops/src/quant/qtype.rs accepts). Followed from
                ai-toolkit (github.com/ostris/ai-toolkit, read at 27a03a9):
                  - name -> quantizer: `get_qtype` in toolkit/util/quantize.py: `float8` / `int8` are torchao
                    `Float8WeightOnlyConfig()` / `Int8WeightOnlyConfig()` through `torchao.quantize_`; `uintN`
                    is ai-toolkit's own `UIntXQuantizer` backend (toolkit/util/uintx_quant.py, torchao 0.10's
                    uintx arithmetic: asymmetric, groups of 64 inputs, bf16 scale and zero point) that swaps
                    each nn.Linear into an `OstrisLinear` (toolkit/util/ostris_quant.py) whose forward unpacks
                    and dequantizes the whole weight, then F.linear; that backend is copied below, since it is
                    not a package; every other name is an optimum-quanto qtype (`qtypes[name]`, quanto's
                    `_quantize_submodule` -> QLinear, then `freeze`).
                  - what and in which order: `quantize_model` in toolkit/util/quantize.py, called by
                    extensions_built_in/diffusion_models/flux2/flux2_model.py `load_model`: block by block
                    over `get_transformer_block_names()` (BFL's double_blocks + single_blocks = diffusers'
                    transformer_blocks + single_transformer_blocks), `quantize(block)` then `freeze(block)`,
                    then the "extras" with `quantize(model)` + `freeze(model)`: every remaining Linear
                    (x/context embedders, time/guidance embedders, modulations, norm_out, proj_out). FLUX.2
                    excludes nothing (BaseModel.get_quantization_exclude_modules returns None, read as []).
                    Layers a quantizer cannot take stay bf16 as in ai-toolkit: uintN needs in_features % 64
                    == 0, and `uint8` quantizes nothing at all (UIntXQuantizer.can_quantize refuses 8 bits,
                    keeping torchao 0.10's silent failure), which the config line and a warning show.
                ai-toolkit quantizes each block on the GPU and the extras on the CPU, then moves the model to
                the GPU; here the model is already on the device, so blocks and extras are quantized there (the
                same arithmetic), then the cache is emptied (ai-toolkit's flush()). ai-toolkit puts its own LoRA network on top (base forward + LoRA); the
                twin keeps peft, whose lora.Linear wraps QLinear, OstrisLinear and torchao-quantized Linears
                the same way (base_layer(x) + B(A(x)) * scale; with torchao 0.10 peft's own torchao dispatch
                is disabled, it needs >= 0.16, so the plain lora.Linear is used). If peft refuses a quantized
                layer, or adapts fewer Linears than targeted, the script exits non-zero: never a bf16 fallback.
                The config line reports `qtype=NAME quantized_linears=K/N (blocks B, extras E)`, and a
                `torch: peft wraps` line names the peft and base layer classes.
                Needs optimum-quanto 0.2.4 and torchao 0.10.0 (ai-toolkit's pins, tools/requirements.txt; on
                the device machine their wheels go into $BIN/wheels), imported only with --qtype.
  --device D    cuda (default), cuda:N or cpu (smoke tests; memory is then reported as 0)

With --ours-ms/--ours-gib (the Burn run's numbers) it prints the final comparison line
`ratio=<ours/pytorch> mem_ratio=<ours/pytorch>`.
"""

import argparse
import gc
import statistics
import sys
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


# ---- ai-toolkit's quantization of the FLUX.2 transformer (see --qtype in the module docstring) ----

QTYPES = ["qfloat8", "qfloat8_e4m3fn", "qint8", "float8", "int8"] + [f"uint{b}" for b in range(2, 9)]

# toolkit/util/quantize.py Q_MODULES: module classes `quantize` never touches again (OstrisLinear only when the
# new qtype is another ostris one, a same-qtype no-op here).
Q_MODULES = {"QLinear", "QConv2d", "QEmbedding", "QBatchNorm2d", "QLayerNorm", "QConvTranspose2d", "QEmbeddingBag",
             "OstrisLinear"}


class UIntXQuantizer:
    """toolkit/util/uintx_quant.py `UIntXQuantizer` (with `OstrisQuantizer`'s contract), copied op for op."""

    group_size = 64
    _EPS = torch.finfo(torch.float32).eps

    def __init__(self, nbits, qtype):
        self.nbits, self.qtype = nbits, qtype
        self.qmin, self.qmax = 0, (1 << nbits) - 1

    def can_quantize(self, module):
        if self.nbits == 8:  # ai-toolkit: uint8 "has always been a silent no-op"
            return False
        weight = getattr(module, "weight", None)
        return weight is not None and weight.dim() == 2 and weight.shape[1] % self.group_size == 0

    @torch.no_grad()
    def quantize_(self, module, w):
        out_f, in_f = w.shape
        groups = in_f // self.group_size
        wv = w.contiguous().view(out_f, groups, self.group_size)
        min_val_neg = torch.min(torch.amin(wv, dim=2), torch.zeros_like(wv[..., 0]))
        max_val_pos = torch.max(torch.amax(wv, dim=2), torch.zeros_like(wv[..., 0]))
        scale = torch.clamp((max_val_pos - min_val_neg) / float(self.qmax - self.qmin), min=self._EPS)
        zero_point = torch.clamp(self.qmin - torch.round(min_val_neg / scale), self.qmin, self.qmax).to(torch.int32)
        q = torch.clamp(torch.round(wv * (1.0 / scale.view(out_f, groups, 1))) + zero_point.view(out_f, groups, 1),
                        self.qmin, self.qmax)
        q = q.view(out_f, in_f).to(torch.uint8)
        module.register_buffer("uintx_packed", _pack_uintx(q, self.nbits), persistent=False)
        module.register_buffer("uintx_scale", scale.contiguous().view(torch.uint8), persistent=False)
        module.register_buffer("uintx_zero_point", zero_point.to(torch.uint8), persistent=False)

    def _dequantize_native(self, module):
        out_f, in_f = module.out_features, module.in_features
        groups = in_f // self.group_size
        scale = module.uintx_scale.view(module.ostris_orig_dtype)
        q = _unpack_uintx(module.uintx_packed, self.nbits, out_f * in_f)
        dq = q.view(out_f, groups, self.group_size).to(scale.dtype)
        dq -= module.uintx_zero_point.to(scale.dtype).view(out_f, groups, 1)
        dq *= scale.view(out_f, groups, 1)
        return dq.view(out_f, in_f)

    def forward(self, module, x):
        with torch.no_grad():
            w = self._dequantize_native(module)
            if w.dtype != x.dtype:
                w = w.to(x.dtype)
        return torch.nn.functional.linear(x, w, module.bias)


def _pack_shard(vals, k):
    vpb = 8 // k
    if vpb == 1:
        return vals.clone()
    pad = (-vals.numel()) % vpb
    if pad:
        vals = torch.cat([vals, vals.new_zeros(pad)])
    chunks = vals.view(vpb, -1)
    out = chunks[0].clone()
    for j in range(1, vpb):
        out |= chunks[j] << (j * k)
    return out


def _unpack_shard(packed, k, numel):
    vpb = 8 // k
    if vpb == 1:
        return packed[:numel]
    out = torch.empty(vpb, packed.numel(), dtype=torch.uint8, device=packed.device)
    for j in range(vpb):
        torch.bitwise_right_shift(packed, j * k, out=out[j])
    out.bitwise_and_((1 << k) - 1)
    return out.view(-1)[:numel]


def _pack_uintx(codes, nbits):
    """uintx_quant.py `pack_uintx`: the N-bit codes as power-of-two bit shards (uint3 = a 2-bit + a 1-bit one)."""
    flat = codes.flatten().to(torch.uint8)
    shards, offset = [], 0
    for k in (8, 4, 2, 1):
        if nbits & k:
            shards.append(_pack_shard(flat if k == nbits else (flat >> offset) & ((1 << k) - 1), k))
            offset += k
    return torch.cat(shards) if len(shards) > 1 else shards[0]


def _unpack_uintx(packed, nbits, numel):
    out, offset, pos = None, 0, 0
    for k in (8, 4, 2, 1):
        if nbits & k:
            nbytes = -(-numel // (8 // k))
            vals = _unpack_shard(packed[pos:pos + nbytes], k, numel)
            if out is None:
                out = vals
            else:
                out |= vals.bitwise_left_shift_(offset)
            offset += k
            pos += nbytes
    return out


class OstrisLinear(torch.nn.Linear):
    """toolkit/util/ostris_quant.py `OstrisLinear`: an nn.Linear (class-swapped in place) whose weight lives in
    its quantizer's buffers; `.weight` dequantizes on access, forward is the quantizer's."""

    is_ostris_quantized = True

    @property
    def weight(self):
        with torch.no_grad():
            return self.ostris_quantizer._dequantize_native(self)

    def forward(self, x):
        return self.ostris_quantizer.forward(self, x)


@torch.no_grad()
def convert_linear_to_ostris(module, quantizer):
    """ostris_quant.py `convert_linear_to_ostris` (the fresh-module path; same qtype again is a no-op)."""
    if isinstance(module, OstrisLinear):
        return True
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.nn.Parameter) or not weight.dtype.is_floating_point:
        return False
    if type(weight.data) is not torch.Tensor or not quantizer.can_quantize(module):
        return False
    quantizer.quantize_(module, weight.data)  # wants_fp32_weight = False: in the weight's dtype
    module.ostris_quantizer = quantizer
    module.ostris_orig_dtype = weight.dtype
    del module._parameters["weight"]
    if module.bias is not None:
        module.bias.requires_grad_(False)
    module.__class__ = OstrisLinear
    return True


def get_qtype(name):
    """toolkit/util/quantize.py `get_qtype`: (backend, quantizer) for an ai-toolkit qtype name."""
    if name in ("float8", "int8"):
        from torchao.quantization.quant_api import Float8WeightOnlyConfig, Int8WeightOnlyConfig
        return "torchao", {"float8": Float8WeightOnlyConfig, "int8": Int8WeightOnlyConfig}[name]()
    if name.startswith("uint"):
        return "ostris", UIntXQuantizer(int(name[4:]), name)
    from optimum.quanto import qtypes
    return "quanto", qtypes[name]


def aitk_quantize(model, qtype):
    """toolkit/util/quantize.py `quantize(model, weights=qtype, exclude=[])`, the call `quantize_model` makes
    (exclude is `get_quantization_exclude_modules() or []`, never None: torchao then goes Linear by Linear)."""
    from optimum.quanto.quantize import _quantize_submodule
    from torchao.quantization.quant_api import quantize_ as torchao_quantize_
    backend, q = qtype
    for name, m in list(model.named_modules()):
        if type(m).__name__ in Q_MODULES and not (backend == "ostris" and isinstance(m, OstrisLinear)):
            continue
        if backend == "torchao" and not isinstance(m, torch.nn.Linear):
            continue
        try:
            if backend == "ostris":
                if isinstance(m, torch.nn.Linear):
                    convert_linear_to_ostris(m, q)
            elif backend == "torchao":
                torchao_quantize_(m, q)
            else:
                _quantize_submodule(model, name, m, weights=q)
        except Exception as e:  # ai-toolkit prints and goes on; the counts in the config line show it
            print(f"Failed to quantize {name}: {e}")


def is_quantized_linear(m):
    w = m._parameters.get("weight") if isinstance(m, torch.nn.Linear) else None
    return isinstance(m, OstrisLinear) or type(m).__name__ == "QLinear" or (
        w is not None and "torchao" in type(w).__module__)


def quantize_flux2(model, name, dev):
    """toolkit/util/quantize.py `quantize_model` for FLUX.2 (no accuracy-recovery adapter): every block, then the
    extras. Returns (quantized Linears in the blocks, in the extras, Linears in all)."""
    from optimum.quanto import freeze
    qtype = get_qtype(name)
    blocks = list(model.transformer_blocks) + list(model.single_transformer_blocks)
    for block in blocks:
        if qtype[0] == "ostris" and not any(
                isinstance(m, torch.nn.Linear) and not isinstance(m, OstrisLinear) and qtype[1].can_quantize(m)
                for m in block.modules()):
            continue  # `_has_quantizable_linear` is False: ai-toolkit skips the block ("already quantized")
        block.to(dev, dtype=torch.bfloat16)
        aitk_quantize(block, qtype)
        freeze(block)
    in_blocks = sum(is_quantized_linear(m) for b in blocks for m in b.modules())
    aitk_quantize(model, qtype)  # " - quantizing extras"
    freeze(model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    total_q = sum(is_quantized_linear(m) for m in linears)
    return in_blocks, total_q - in_blocks, len(linears)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--small", action="store_true")
    p.add_argument("--full", action="store_true", help="full FLUX.2 [dev]: 8 double + 48 single blocks")
    p.add_argument("--double", type=int, help="double-stream blocks (default 2; --full 8)")
    p.add_argument("--single", type=int, help="single-stream blocks (default 6; --full 48)")
    p.add_argument("--img", type=grid, help="image token grid HxW (default 64x64)")
    p.add_argument("--txt", type=int, help="text tokens (default 512)")
    p.add_argument("--ckpt", action="store_true", help="gradient checkpointing per block")
    p.add_argument("--qtype", choices=QTYPES, help="quantize the base Linears as ai-toolkit's model.qtype does")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--ours-ms", type=float)
    p.add_argument("--ours-gib", type=float)
    p.add_argument("--matmul", action="store_true", help="also time a bf16 8192^3 matmul and SDPA fwd+bwd")
    a = p.parse_args()
    if a.small and a.full:
        p.error("--small and --full exclude each other")

    dev = a.device
    cuda = torch.device(dev).type == "cuda"
    if cuda and torch.device(dev).index is not None:
        torch.cuda.set_device(torch.device(dev))

    def sync():
        if cuda:
            torch.cuda.synchronize()

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
    sync()
    n_base = sum(p.numel() for p in model.parameters())
    allocated = lambda: torch.cuda.memory_allocated() / 2**30 if cuda else 0.0
    print(f"torch: base params {n_base / 1e9:.3f} B, {allocated():.2f} GiB allocated, "
          f"build {time.perf_counter() - s:.1f} s")
    quant = "qtype=none"
    if a.qtype:
        s = time.perf_counter()
        # quanto's QLinear draws a fresh init before copying the weight in: keep the RNG stream (LoRA init,
        # inputs) the same as without --qtype
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
            in_blocks, extras, n_linear = quantize_flux2(model, a.qtype, dev)
        model.requires_grad_(False)  # quanto's freeze makes new Parameters; BaseSDTrainProcess: unet.requires_grad_(False)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()  # ai-toolkit's flush(): reserved memory then holds the quantized model only
        sync()
        quant = f"qtype={a.qtype} quantized_linears={in_blocks + extras}/{n_linear} (blocks {in_blocks}, extras {extras})"
        print(f"torch: quantized to {a.qtype}: {allocated():.2f} GiB allocated, {time.perf_counter() - s:.1f} s")
        if in_blocks + extras == 0:
            print(f"warning: --qtype {a.qtype} quantized no Linear (ai-toolkit's UIntXQuantizer refuses 8 bits): "
                  f"the base stays bf16, as in ai-toolkit", file=sys.stderr)
            print(f"torch: warning: {a.qtype} quantized no Linear; the base stays bf16, as in ai-toolkit")
    print(f"config: {'small' if a.small else 'full' if a.full else 'slice'} double={cfg['num_layers']} "
          f"single={cfg['num_single_layers']} D={cfg['num_attention_heads'] * cfg['attention_head_dim']} "
          f"tokens={h * w}+{txt} (img {h}x{w}) rank={rank} ckpt={a.ckpt} {quant} steps={a.steps} warmup={a.warmup}")
    if a.ckpt:
        # Before peft wraps it: sets gradient_checkpointing on the Flux2Transformer2DModel, whose forward then
        # runs every double / single block under torch.utils.checkpoint (use_reentrant=False).
        model.enable_gradient_checkpointing()
    targets = [n for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n.split(".")[0] in ("transformer_blocks", "single_transformer_blocks")]
    lora = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, init_lora_weights=True, target_modules=targets)
    # peft keeps the adapters in f32 over the bf16 base (autocast_adapter_dtype).
    try:
        model = get_peft_model(model, lora, autocast_adapter_dtype=True)
    except Exception as e:
        if not a.qtype:
            raise
        sys.exit(f"error: peft refuses the {a.qtype}-quantized Linears ({type(e).__name__}: {e}); "
                 f"no bf16 fallback, the twin stops here")
    wrapped = [m for m in model.modules() if hasattr(m, "lora_A") and len(getattr(m, "lora_A", {})) > 0]
    adapted = len(wrapped)
    if a.qtype:
        def layer(m):  # peft layer(base layer class, torchao weight class)
            base = m.get_base_layer()
            w = base._parameters.get("weight")
            ao = f", {type(w).__name__}" if w is not None and "torchao" in type(w).__module__ else ""
            return f"{type(m).__name__}({type(base).__name__}{ao})"
        pairs = sorted({layer(m) for m in wrapped})
        print(f"torch: peft wraps {', '.join(pairs)}")
        if adapted != len(targets):
            sys.exit(f"error: peft adapted {adapted} of the {len(targets)} targeted {a.qtype} Linears")
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
        if i == a.warmup and cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        s = time.perf_counter()
        pred = model(hidden_states=x, encoder_hidden_states=ctx, timestep=t, guidance=g, img_ids=img_ids,
                     txt_ids=txt_ids, return_dict=False)[0]
        loss = (pred.float() - target).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        e = time.perf_counter() - s
        if i >= a.warmup:
            times.append(e)
        else:
            print(f"torch warm-up step {i + 1}: {e * 1e3:.1f} ms")
    med = statistics.median(times)
    alloc = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    reserved = torch.cuda.max_memory_reserved() / 2**30 if cuda else 0.0
    print(f"torch: step median {med * 1e3:.1f} ms over {len(times)} (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}); "
          f"loss {loss.item():.4f}; peak allocated {alloc:.2f} GiB, peak reserved {reserved:.2f} GiB")

    if a.matmul:
        del model, opt, params
        if cuda:
            torch.cuda.empty_cache()
        n = 8192
        A = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        B = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        for _ in range(3):
            A @ B
        sync()
        ts = []
        for _ in range(10):
            s = time.perf_counter(); A @ B; sync(); ts.append(time.perf_counter() - s)
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
        sync()
        ts = []
        for _ in range(10):
            s = time.perf_counter(); fb(); sync(); ts.append(time.perf_counter() - s)
        at = statistics.median(ts)
        print(f"torch: SDPA [1,{H},{L},{D}] fwd+bwd {at * 1e3:.2f} ms = {12 * H * L * L * D / at / 1e12:.1f} TFLOP/s")

    print(f"RESULT torch_ms={med * 1e3:.3f} torch_alloc_gib={alloc:.3f} torch_reserved_gib={reserved:.3f}")
    if a.ours_ms is not None and a.ours_gib is not None:
        print(f"ratio={a.ours_ms / (med * 1e3):.3f} mem_ratio={a.ours_gib / alloc if alloc else float('nan'):.3f}")


if __name__ == "__main__":
    main()
