#!/usr/bin/env python3
"""Reference numbers for flow-train's optimizers (flow-train/src/optim/), checked by
flow-train/tests/optimizers.rs.

For each optimizer a few cases (option sets) run STEPS updates on small deterministic tensors with a
varying learning rate, and the parameters and complete optimizer state after the last step are written to
flow-train/tests/fixtures/optim/<optimizer>.safetensors (the case list, settings, inputs recipe and final
scalars as JSON in the header metadata).

References (the implementations ai-toolkit runs):
  adamw      torch.optim.AdamW(foreach=False)             (ai-toolkit passes eps=1e-6)
  adafactor  transformers.optimization.Adafactor          (ai-toolkit's copy has the same math)
  prodigy    prodigyopt.Prodigy                           (ai-toolkit passes eps=1e-6, lr 1.0)
  lion       lion_pytorch.Lion
  adamw8bit  bitsandbytes AdamW8bit's CUDA kernels (kOptimizerStatic8bit2StateBlockwise for tensors of at
             least min_8bit_size elements, kOptimizer32bit2State below), ported line by line to numpy
             below, since bitsandbytes has no CPU implementation of its 8-bit optimizers. The quantization
             map is bitsandbytes' own create_dynamic_map. `--check-bitsandbytes` runs the real kernels on
             a CUDA machine (block size 256, the one bitsandbytes 0.50 compiles) against the port.

Inputs are exact dyadic numbers from an integer recipe (pattern() below), so the Rust test rebuilds
them bit for bit instead of reading them from the file.

    .venv/bin/python tools/optim/gen_optimizer_reference.py            # writes the fixtures
    python3 tools/optim/gen_optimizer_reference.py --check-bitsandbytes  # CUDA + bitsandbytes only
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

STEPS = 4
F32 = np.float32


# ---------------------------------------------------------------- inputs

def pattern(n, salt):
    """n exact dyadic values in (-1, 1): (k - 1023) / 1024 with k from an integer hash."""
    i = np.arange(n, dtype=np.int64)
    k = (i * 7919 + salt * 104729 + 17) % 2047
    return (k - 1023).astype(F32) / F32(1024.0)


def initial_param(t, spec):
    rows, cols = spec["shape"]
    if spec["init"] == "zeros":
        return np.zeros((rows, cols), F32)
    return (pattern(rows * cols, 1000 + t) * F32(0.25)).reshape(rows, cols)


def gradient(step, t, spec):
    """Gradient of tensor t at step (1-based). Row r is scaled by 2^-(r % 5) * 2^-6 so magnitudes vary
    inside quantization blocks; a `zero_first_grad` tensor gets zeros at step 1 (a LoRA down factor
    while the up factor is still zero)."""
    rows, cols = spec["shape"]
    if spec["zero_first_grad"] and step == 1:
        return np.zeros((rows, cols), F32)
    scale = (F32(2.0) ** -(np.arange(rows) % 5).astype(F32) * F32(2.0 ** -6)).reshape(rows, 1)
    return pattern(rows * cols, 31 * step + 7 * t + 1).reshape(rows, cols) * scale


def tensor(shape, init="pattern", zero_first_grad=False):
    return {"shape": list(shape), "init": init, "zero_first_grad": zero_first_grad}


# Small tensors for the exact optimizers; a "down" factor, a zero-initialised "up" factor, a 1-D tensor
# passed as [1, n] like the trainer does.
SMALL = [tensor([16, 48], zero_first_grad=True), tensor([48, 16], init="zeros"), tensor([1, 37])]
# adamw8bit: 4800 elements (2048-blocks: 2 full + a 704 tail; 256-blocks: 18 full + 192), 128 elements
# (one partial block, or 32-bit below min_8bit_size), 1500 elements (< 2048, < 4096).
EIGHT_BIT = [tensor([48, 100], zero_first_grad=True), tensor([8, 16], init="zeros"), tensor([30, 50])]


# ---------------------------------------------------------------- torch references

def run_torch(make_optimizer, specs, lrs, set_lr=True):
    params = [torch.nn.Parameter(torch.from_numpy(initial_param(t, s).copy())) for t, s in enumerate(specs)]
    opt = make_optimizer(params)
    for step, lr in enumerate(lrs, start=1):
        for t, (p, s) in enumerate(zip(params, specs)):
            p.grad = torch.from_numpy(gradient(step, t, s).copy())
        if set_lr:
            for group in opt.param_groups:
                group["lr"] = lr
        opt.step()
    return opt, params


def state_tensors(opt, params, names):
    out = {}
    for i, p in enumerate(params):
        st = opt.state[p]
        for name in names:
            if name in st and isinstance(st[name], torch.Tensor) and st[name].dim() > 0:
                out[f"{i}.{name}"] = st[name].detach().numpy().copy()
    return out


def adamw_case(name, params, lrs):
    from torch.optim import AdamW

    kw = {"eps": 1e-6, **params}
    opt, ps = run_torch(lambda p: AdamW(p, lr=lrs[0], foreach=False, **kw), SMALL, lrs)
    return case(name, "adamw", params, lrs, SMALL, ps, state_tensors(opt, ps, ["exp_avg", "exp_avg_sq"]),
                {"step": STEPS})


def lion_case(name, params, lrs):
    from lion_pytorch import Lion

    opt, ps = run_torch(lambda p: Lion(p, lr=lrs[0], **params), SMALL, lrs)
    return case(name, "lion", params, lrs, SMALL, ps, state_tensors(opt, ps, ["exp_avg"]), {"step": STEPS})


def adafactor_case(name, params, lrs):
    from transformers.optimization import Adafactor

    # ai-toolkit's defaults, then the job's keys.
    kw = {"relative_step": False, "scale_parameter": False, "warmup_init": False, **params}
    if "eps" in kw:
        kw["eps"] = tuple(kw["eps"])
    relative = kw["relative_step"]
    opt, ps = run_torch(lambda p: Adafactor(p, lr=None if relative else lrs[0], **kw), SMALL, lrs,
                        set_lr=not relative)
    names = ["exp_avg_sq_row", "exp_avg_sq_col", "exp_avg"]
    return case(name, "adafactor", params, lrs, SMALL, ps, state_tensors(opt, ps, names), {"step": STEPS})


def prodigy_case(name, params, lrs):
    from prodigyopt import Prodigy

    opt, ps = run_torch(lambda p: Prodigy(p, lr=lrs[0], eps=1e-6, **params), SMALL, lrs)
    g = opt.param_groups[0]
    scalars = {"step": g["k"], "d": g["d"], "d_max": g["d_max"], "d_numerator": float(g["d_numerator"]),
               "d_hat": float(g["d_hat"]), "d_denom": float(g["d_denom"])}
    states = state_tensors(opt, ps, ["exp_avg", "exp_avg_sq", "s", "p0"])
    scalars["p0_zero"] = [f"{i}.p0" not in states for i in range(len(ps))]
    return case(name, "prodigy", params, lrs, SMALL, ps, states, scalars)


# ---------------------------------------------------------------- bitsandbytes' 8-bit AdamW, ported

def quantize_2d(x, code, signed):
    """kernels' quantize_2D: binary search over the sorted 256-entry code, then the nearer neighbour
    by midpoint (ties keep the pivot). Vectorised over x; the same comparisons and f32 midpoints."""
    n = x.shape[0]
    pivot = np.full(n, 127, np.int64)
    upper_pivot = np.full(n, 255, np.int64)
    lower_pivot = np.zeros(n, np.int64)
    lower = np.full(n, F32(-1.0) if signed else F32(0.0), F32)
    upper = np.full(n, F32(1.0), F32)
    val = np.full(n, code[127], F32)
    for i in (64, 32, 16, 8, 4, 2, 1):
        gt = x > val
        lower_pivot = np.where(gt, pivot, lower_pivot)
        lower = np.where(gt, val, lower)
        upper_pivot = np.where(gt, upper_pivot, pivot)
        upper = np.where(gt, upper, val)
        pivot = np.where(gt, pivot + i, pivot - i)
        val = code[pivot]
    gt = x > val
    up = np.where(x > (upper + val) * F32(0.5), upper_pivot, pivot)
    down = np.where(x < (lower + val) * F32(0.5), lower_pivot, pivot)
    return np.where(gt, up, down)


def adam8bit_blockwise(p, g, st, step, lr, b1, b2, eps, wd, q1, q2, bs):
    """kOptimizerStatic8bit2StateBlockwise, OPTIMIZER=ADAM, gnorm_scale=1, finite gradients."""
    n = p.size
    blocks = -(-n // bs)
    pad = blocks * bs - n
    b1, b2, eps, lr, wd = F32(b1), F32(b2), F32(eps), F32(lr), F32(wd)
    correction1 = F32(1.0) - b1 ** F32(step)
    correction2 = np.sqrt(F32(1.0) - b2 ** F32(step))
    step_size = (-lr * correction2) / correction1
    gv = np.concatenate([g.ravel(), np.zeros(pad, F32)])
    c1 = np.concatenate([st["state1"], np.full(pad, 128, np.uint8)])  # the kernel loads 128 / 0 past n
    c2 = np.concatenate([st["state2"], np.zeros(pad, np.uint8)])
    block = np.arange(blocks * bs) // bs
    s2 = q2[c2] * st["absmax2"][block]
    s2 = (s2 * b2) + (((F32(1.0) - b2) * gv) * gv)
    s1 = q1[c1] * st["absmax1"][block]
    s1 = (s1 * b1) + ((F32(1.0) - b1) * gv)
    absmax1 = np.abs(s1).reshape(blocks, bs).max(axis=1)
    absmax2 = np.abs(s2).reshape(blocks, bs).max(axis=1)
    new_p = p.ravel() + step_size * (s1[:n] / (np.sqrt(s2[:n]) + correction2 * eps))
    if wd > 0:
        new_p = new_p * (F32(1.0) - lr * wd)
    with np.errstate(invalid="ignore", divide="ignore"):
        x1 = s1 / absmax1[block]
        x2 = s2 / absmax2[block]
    k1 = quantize_2d(x1, q1, True)
    # Keep the sign of the first moment (signbit comparison, as the kernel).
    flip = np.signbit(q1[k1]) != np.signbit(s1)
    k1 = np.where(flip, np.where(s1 > 0, k1 + 1, k1 - 1), k1) % 256
    k2 = quantize_2d(x2, q2, False)
    new_st = {"state1": k1[:n].astype(np.uint8), "state2": k2[:n].astype(np.uint8),
              "absmax1": absmax1.astype(F32), "absmax2": absmax2.astype(F32)}
    return new_p.reshape(p.shape).astype(F32), new_st


def adam32bit(p, g, st, step, lr, b1, b2, eps, wd):
    """kOptimizer32bit2State, OPTIMIZER=ADAM (tensors below min_8bit_size)."""
    b1, b2, eps, lr, wd = F32(b1), F32(b2), F32(eps), F32(lr), F32(wd)
    correction1 = F32(1.0) - b1 ** F32(step)
    correction2 = np.sqrt(F32(1.0) - b2 ** F32(step))
    step_size = (-lr * correction2) / correction1
    s1 = st["exp_avg"] * b1 + ((F32(1.0) - b1) * g)
    s2 = st["exp_avg_sq"] * b2 + ((F32(1.0) - b2) * (g * g))
    new_p = p + (F32(1.0) * step_size) * (s1 / (np.sqrt(s2) + eps * correction2))
    if wd > 0:
        new_p = new_p * (F32(1.0) - lr * wd)
    return new_p.astype(F32), {"exp_avg": s1, "exp_avg_sq": s2}


def dynamic_maps():
    import bitsandbytes.functional as F

    return (F.create_dynamic_map(signed=True).numpy().astype(F32),
            F.create_dynamic_map(signed=False).numpy().astype(F32))


def run_adam8bit_port(specs, lrs, betas, eps, wd, block_size, min_8bit_size, q1, q2):
    params = [initial_param(t, s) for t, s in enumerate(specs)]
    states = []
    for p in params:
        if p.size >= min_8bit_size:
            blocks = -(-p.size // block_size)
            states.append({"state1": np.zeros(p.size, np.uint8), "state2": np.zeros(p.size, np.uint8),
                           "absmax1": np.zeros(blocks, F32), "absmax2": np.zeros(blocks, F32)})
        else:
            states.append({"exp_avg": np.zeros(p.shape, F32), "exp_avg_sq": np.zeros(p.shape, F32)})
    for step, lr in enumerate(lrs, start=1):
        for t, s in enumerate(specs):
            g = gradient(step, t, s)
            if "state1" in states[t]:
                params[t], states[t] = adam8bit_blockwise(params[t], g, states[t], step, lr, *betas, eps, wd, q1,
                                                          q2, block_size)
            else:
                params[t], states[t] = adam32bit(params[t], g, states[t], step, lr, *betas, eps, wd)
    return params, states


def adamw8bit_case(name, params, lrs, q1, q2):
    wd = params.get("weight_decay", 0.01)  # bitsandbytes AdamW8bit's default
    betas = params.get("betas", [0.9, 0.999])
    bs = params.get("block_size", 2048)
    min8 = params.get("min_8bit_size", 4096)
    ps, sts = run_adam8bit_port(EIGHT_BIT, lrs, betas, 1e-6, wd, bs, min8, q1, q2)
    states = {f"{i}.{k}": v for i, st in enumerate(sts) for k, v in st.items()}
    return case(name, "adamw8bit", params, lrs, EIGHT_BIT, ps, states, {"step": STEPS})


def check_bitsandbytes():
    """On a CUDA machine: bitsandbytes' AdamW8bit kernels vs the numpy port (block size 256)."""
    import bitsandbytes as bnb

    q1, q2 = dynamic_maps()
    lrs = [1e-3, 5e-4, 1e-3, 2e-3]
    for min8, wd in ((4096, 0.01), (0, 0.0)):
        specs = EIGHT_BIT
        params = [torch.nn.Parameter(torch.from_numpy(initial_param(t, s)).cuda()) for t, s in enumerate(specs)]
        opt = bnb.optim.AdamW8bit(params, lr=lrs[0], eps=1e-6, weight_decay=wd, min_8bit_size=min8)
        for step, lr in enumerate(lrs, start=1):
            for t, (p, s) in enumerate(zip(params, specs)):
                p.grad = torch.from_numpy(gradient(step, t, s)).cuda()
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
        torch.cuda.synchronize()
        ref_p, ref_st = run_adam8bit_port(specs, lrs, [0.9, 0.999], 1e-6, wd, 256, min8, q1, q2)
        for t, p in enumerate(params):
            got = p.detach().cpu().numpy()
            st = opt.state[p]
            rel = np.abs(got - ref_p[t]).max() / max(np.abs(ref_p[t]).max(), 1e-30)
            line = f"min_8bit_size={min8} tensor {t} {list(got.shape)}: param max rel err {rel:.3e}"
            if "state1" in ref_st[t] and st["state1"].dtype == torch.uint8:
                for k in ("state1", "state2"):
                    codes = st[k].cpu().numpy().ravel()
                    absmax = ref_st[t]["absmax1" if k == "state1" else "absmax2"]
                    live = np.repeat(absmax > 0, 256)[: codes.size]
                    same = (codes == ref_st[t][k])[live].mean()
                    line += f", {k} codes equal {same * 100:.3f}%"
                for k in ("absmax1", "absmax2"):
                    a = st[k].cpu().numpy()
                    line += f", {k} max rel err {np.abs(a - ref_st[t][k]).max() / np.abs(ref_st[t][k]).max():.2e}"
            else:
                line += " (32-bit state)"
            print(line)


# ---------------------------------------------------------------- fixture files

def case(name, optimizer, params, lrs, specs, final_params, states, scalars):
    tensors = {f"{name}.{i}.param": np.ascontiguousarray(p.detach().numpy() if torch.is_tensor(p) else p)
               for i, p in enumerate(final_params)}
    tensors.update({f"{name}.{k}": np.ascontiguousarray(v) for k, v in states.items()})
    meta = {"name": name, "optimizer": optimizer, "optimizer_params": params, "lr": lrs[0], "lrs": lrs,
            "tensors": specs, "scalars": scalars}
    return meta, tensors


def write(path, cases, extra=None):
    from safetensors.numpy import save_file

    tensors = {}
    for _, t in cases:
        tensors.update(t)
    if extra:
        tensors.update(extra)
    versions = {"torch": torch.__version__, "numpy": np.__version__}
    for mod in ("transformers", "prodigyopt", "lion_pytorch", "bitsandbytes"):
        try:
            versions[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            pass
    meta = {"generator": "tools/optim/gen_optimizer_reference.py", "versions": versions, "steps": STEPS,
            "recipe": "pattern(n, salt): k = (i*7919 + salt*104729 + 17) % 2047, (k - 1023)/1024; param t: "
                      "pattern(n, 1000 + t)/4 (or zeros); grad of t at step s: pattern(n, 31 s + 7 t + 1) * "
                      "2^-(row % 5) * 2^-6, zeros at step 1 when zero_first_grad",
            "cases": [m for m, _ in cases]}
    save_file(tensors, str(path), metadata={"reference": json.dumps(meta)})
    print(f"{path}: {len(cases)} cases, {path.stat().st_size / 1024:.1f} KiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "flow-train/tests/fixtures/optim")
    ap.add_argument("--check-bitsandbytes", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.check_bitsandbytes:
        check_bitsandbytes()
        return
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    adam_lrs = [1e-3, 5e-4, 1e-3, 2e-3]
    write(out / "adamw.safetensors", [
        adamw_case("default", {}, adam_lrs),
        adamw_case("betas_wd", {"betas": [0.8, 0.99], "weight_decay": 0.1}, adam_lrs),
    ])
    write(out / "lion.safetensors", [
        lion_case("default", {}, [1e-4, 5e-5, 1e-4, 2e-4]),
        lion_case("decoupled_wd", {"betas": [0.95, 0.98], "weight_decay": 0.1, "decoupled_weight_decay": True},
                  [1e-4, 5e-5, 1e-4, 2e-4]),
    ])
    write(out / "adafactor.safetensors", [
        adafactor_case("ai_toolkit", {}, adam_lrs),
        adafactor_case("beta1_wd_clip", {"beta1": 0.9, "weight_decay": 0.01, "clip_threshold": 0.5,
                                         "decay_rate": -0.5, "eps": [1e-30, 2e-3]}, adam_lrs),
        adafactor_case("relative", {"relative_step": True, "scale_parameter": True, "warmup_init": True},
                       adam_lrs),
        adafactor_case("scaled", {"scale_parameter": True}, adam_lrs),
    ])
    write(out / "prodigy.safetensors", [
        prodigy_case("default", {}, [1.0, 1.0, 0.5, 1.0]),
        prodigy_case("options", {"use_bias_correction": True, "safeguard_warmup": True, "d_coef": 2.0,
                                 "growth_rate": 1.02, "weight_decay": 0.01, "betas": [0.9, 0.99]},
                     [1.0, 1.0, 0.5, 1.0]),
        prodigy_case("beta1_zero_sliced_coupled", {"betas": [0.0, 0.999], "slice_p": 3, "decouple": False,
                                                   "weight_decay": 0.05, "d0": 1e-5, "beta3": 0.9},
                     [1.0, 1.0, 0.5, 1.0]),
    ])
    q1, q2 = dynamic_maps()
    write(out / "adamw8bit_default.safetensors", [adamw8bit_case("default", {}, adam_lrs, q1, q2)],
          {"map.signed": q1, "map.unsigned": q2})
    write(out / "adamw8bit_block256.safetensors",
          [adamw8bit_case("block256", {"block_size": 256, "min_8bit_size": 0, "weight_decay": 0.0}, adam_lrs, q1,
                          q2)])


if __name__ == "__main__":
    sys.exit(main())
