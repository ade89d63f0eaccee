#!/usr/bin/env python3
"""Reference numbers for the `flow-train` crate's unit tests.

Writes `flow-train/tests/fixtures/flow_reference.json`. Python is never needed by `cargo test`;
run this only to regenerate the committed file:

    source .venv/bin/activate          # pinned stack from tools/requirements.txt
    git clone https://github.com/ostris/ai-toolkit /tmp/ai-toolkit
    git -C /tmp/ai-toolkit checkout 27a03a91f23eb1b757d5ec2e80ee3e129cfcc350
    python tools/reference/flow_train_reference.py --ai-toolkit /tmp/ai-toolkit

What it records (every number comes from running the reference code, not from re-typed formulas,
except where a section says otherwise):

* `schedules`: FLUX.2 inference sigmas exactly as diffusers' Flux2Pipeline builds them:
  `np.linspace(1, 1/N, N)` sigmas, `compute_empirical_mu(S, N)`, `retrieve_timesteps` on a
  `FlowMatchEulerDiscreteScheduler` with dynamic (exponential) shifting. Values are float32 (as in
  diffusers) written with the shortest repr that round-trips to the same float32.
* `train_shift`: ai-toolkit's 'shift' training-timestep table (CustomFlowMatchEulerDiscreteScheduler
  with ai-toolkit's FLUX.2 scheduler config) for several token counts.
* `lognorm_blend_linear_part`: the deterministic quarter of ai-toolkit's lognorm_blend table.
* `weighting`: ai-toolkit's measured 1000-entry 'weighted' table (index i = timestep 1000 - i), the
  piecewise-linear least-squares fit that flow-train ships instead of a verbatim copy (knots, fitted
  values at sample indices, fit statistics). See `derive_weighting` for the method.
* `formulas`: noising, velocity target, the three loss types with timestep weights and loss
  multipliers, the differential-guidance target and the DOP term on small seeded inputs (stored with
  them, float32). Noising calls ai-toolkit's `CustomFlowMatchEulerDiscreteScheduler.add_noise` per
  item (as `BaseModel.add_noise` does) and the weights come from its `get_weights_for_timesteps`;
  the target, losses, reduction, differential guidance and DOP are inline expressions in
  ai-toolkit's `SDTrainer` (`calculate_loss`, the DOP block), copied here verbatim.
* `sampler_stats`: Monte Carlo statistics (mean and quantiles of sigma = timestep/1000) of
  ai-toolkit's training timestep selection: its own `set_train_timesteps` tables, and index selection
  re-implemented here after jobs/process/BaseSDTrainProcess.py (balanced: torch.randint(min, max);
  content: u^3 * 1000, style: (1 - u^3) * 1000, mapped onto [min, max], truncated, clamped).
"""

import argparse
import importlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch

AI_TOOLKIT_COMMIT = "27a03a91f23eb1b757d5ec2e80ee3e129cfcc350"

# ai-toolkit extensions_built_in/diffusion_models/flux2/flux2_model.py `scheduler_config` (numbers only).
AITK_FLUX2_SCHEDULER = dict(
    base_image_seq_len=256,
    base_shift=0.5,
    max_image_seq_len=4096,
    max_shift=1.15,
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
)

SCHEDULE_SEQ_LENS = [1, 16, 256, 1024, 1536, 2304, 3600, 4096, 4300, 4301, 6144, 16384]
SCHEDULE_STEPS = [1, 2, 3, 4, 8, 20, 28, 50]
SCHEDULE_EXTRA = [(4096, 100), (1024, 250), (65536, 30), (777, 13)]

# (latent height, latent width) in tokens; image_seq_len = h * w.
SHIFT_SHAPES = [(8, 8), (16, 16), (32, 32), (64, 64), (64, 96)]
SHIFT_SAMPLE_INDICES = [0, 1, 2, 10, 100, 250, 500, 750, 900, 990, 997, 998, 999]

# Piecewise-linear knots (timesteps) for the 'weighted' table fit: dense where the measured curve
# bends (both ends, around the peak near t=876), sparse on the smooth middle.
WEIGHT_KNOTS = [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 125, 150, 175, 200, 250, 300, 350, 400,
                450, 500, 550, 600, 650, 700, 750, 800, 825, 850, 875, 900, 920, 940, 960, 970, 980,
                990, 1000]
WEIGHT_KNOT_DECIMALS = 6
WEIGHT_SAMPLE_INDICES = [0, 1, 13, 50, 124, 200, 300, 500, 600, 750, 800, 875, 900, 950, 997, 999]

F32_REPR = lambda x: float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def f32_list(values):
    return [F32_REPR(v) for v in np.asarray(values, dtype=np.float32).tolist()]


def load_ai_toolkit(path):
    sys.path.insert(0, os.path.abspath(path))
    head = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    sampler = importlib.import_module("toolkit.samplers.custom_flowmatch_sampler")
    weights = importlib.import_module("toolkit.timestep_weighing.default_weighing_scheme")
    return sampler, weights, head or "unknown (not a git checkout)"


def schedules():
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu, retrieve_timesteps

    # FLUX.2-dev scheduler config: dynamic shifting, exponential time shift, nothing else enabled.
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential"
    )
    cases = [(s, n) for s in SCHEDULE_SEQ_LENS for n in SCHEDULE_STEPS] + SCHEDULE_EXTRA
    out = []
    worst_f64 = 0.0
    for seq_len, steps in cases:
        # Same calls, in the same order, as Flux2Pipeline.__call__ step 6.
        sigmas_in = np.linspace(1.0, 1 / steps, steps)
        mu = compute_empirical_mu(image_seq_len=seq_len, num_steps=steps)
        timesteps, n = retrieve_timesteps(scheduler, steps, "cpu", sigmas=sigmas_in, mu=mu)
        assert n == steps
        sig = scheduler.sigmas.numpy().astype(np.float32)
        exact = np.append(math.exp(mu) / (math.exp(mu) + (1.0 / sigmas_in - 1.0)), 0.0)
        worst_f64 = max(worst_f64, float(np.abs(exact - sig.astype(np.float64)).max()))
        case = dict(image_seq_len=seq_len, steps=steps, mu=mu, sigmas=f32_list(sig))
        if steps <= 8:  # scheduler.timesteps (sigma * 1000 in float32), kept for the short cases only
            case["timesteps"] = f32_list(timesteps.numpy())
        out.append(case)
    return out, worst_f64


def train_shift(sampler_mod):
    out = []
    for h, w in SHIFT_SHAPES:
        seq_len = h * w
        sched = sampler_mod.CustomFlowMatchEulerDiscreteScheduler(**AITK_FLUX2_SCHEDULER)
        # FLUX.2 latents in ai-toolkit are [B, 128, H/16, W/16]; the FLUX.2 transformer's FakeConfig
        # has patch_size 1, so image_seq_len = h * w = token count.
        latents = torch.zeros(1, 128, h, w)
        table = sched.set_train_timesteps(1000, "cpu", timestep_type="shift", latents=latents, patch_size=1)
        mu = sampler_mod.calculate_shift(seq_len, 256, 4096, 0.5, 1.15)
        t = table.numpy()
        out.append(
            dict(
                image_seq_len=seq_len,
                mu=mu,
                indices=SHIFT_SAMPLE_INDICES,
                timesteps=f32_list(t[SHIFT_SAMPLE_INDICES]),
                mean_sigma=float(t.astype(np.float64).mean() / 1000.0),
            )
        )
    return out


def lognorm_linear_part():
    # ai-toolkit: torch.linspace(1000, 1, int(1000 * (1 - 0.75))) cast to int after sorting.
    return torch.linspace(1000, 1, 250).to(torch.int).tolist()


def derive_weighting(weights_mod):
    """Derive flow-train's 'weighted' curve from ai-toolkit's measured table.

    ai-toolkit's table (toolkit/timestep_weighing/default_weighing_scheme.py) is 1000 measured numbers
    ("calculated using flex.1-alpha" per its header), not a formula. Index i belongs to timestep
    1000 - i (CustomFlowMatchEulerDiscreteScheduler.get_weights_for_timesteps looks the timestep up in
    torch.linspace(1000, 1, 1000)). flow-train represents it by a continuous piecewise-linear function of
    the timestep with knots WEIGHT_KNOTS whose knot values minimise the squared error to the measured
    table over all 1000 entries (linear least squares on hat functions). The knot values are rounded to
    WEIGHT_KNOT_DECIMALS decimals; the function is then scaled so its mean over t = 1..1000 is exactly 1.
    """
    w = np.asarray(weights_mod.default_weighing_scheme, dtype=np.float64)
    assert w.shape == (1000,)
    # The measured values are float32 numbers; the JSON stores them in float32 shortest form, losslessly.
    assert np.all(w.astype(np.float32).astype(np.float64) == w)
    t = 1000.0 - np.arange(1000)
    knots = np.asarray(WEIGHT_KNOTS, dtype=np.float64)
    basis = np.stack([np.interp(t, knots, np.eye(len(knots))[j]) for j in range(len(knots))], axis=1)
    coef, *_ = np.linalg.lstsq(basis, w, rcond=None)
    coef = np.round(coef, WEIGHT_KNOT_DECIMALS)
    raw = np.interp(t, knots, coef)
    scale = 1000.0 / raw.sum()
    fitted = raw * scale
    resid = fitted - w
    return dict(
        source="ai-toolkit toolkit/timestep_weighing/default_weighing_scheme.py",
        index_to_timestep="timestep = 1000 - index",
        aitk_table=f32_list(w),
        aitk_mean=float(w.mean()),
        knots_timestep=WEIGHT_KNOTS,
        knots_value=[float(x) for x in coef.tolist()],
        scale=float(scale),
        sample_indices=WEIGHT_SAMPLE_INDICES,
        fitted_at_samples=[float(fitted[i]) for i in WEIGHT_SAMPLE_INDICES],
        fit_max_abs_error=float(np.abs(resid).max()),
        fit_max_abs_error_index=int(np.abs(resid).argmax()),
        fit_rms_error=float(np.sqrt((resid**2).mean())),
    )


def formulas(sampler_mod):
    """See the module docs (`formulas`). Latents in ai-toolkit's FLUX.2 layout [B, C, h, w]."""
    gen = torch.Generator().manual_seed(20251126)
    shape = (4, 4, 2, 3)
    x0 = torch.randn(shape, generator=gen)
    noise = torch.randn(shape, generator=gen)
    # Prediction errors of different sizes per item, so pseudo-Huber (c = 0.01) is seen in its
    # linear (|d| >> c), transitional and quadratic (|d| << c) regimes.
    err_scale = torch.tensor([1.0, 0.05, 0.005, 0.3]).view(-1, 1, 1, 1)
    target = (noise - x0).detach()  # SDTrainer, flow matching
    pred = target + err_scale * torch.randn(shape, generator=gen)
    prior_pred = pred + 0.1 * torch.randn(shape, generator=gen)

    sched = sampler_mod.CustomFlowMatchEulerDiscreteScheduler(**AITK_FLUX2_SCHEDULER)
    noise_timesteps = torch.tensor([1000.0, 876.5432, 437.0, 1.0])
    noisy = torch.cat(
        [sched.add_noise(x0[i : i + 1], noise[i : i + 1], noise_timesteps[i : i + 1]) for i in range(shape[0])]
    )

    sched.set_train_timesteps(1000, "cpu", timestep_type="weighted")
    weight_timesteps = torch.tensor([1000.0, 876.0, 437.0, 1.0])
    weights = sched.get_weights_for_timesteps(weight_timesteps, timestep_type="weighted")
    loss_multiplier = torch.tensor([1.0, 0.5, 2.0, 1.25])

    def calculate_loss(loss_type, pred, target):
        # SDTrainer.calculate_loss: element loss in f32, x timestep weight, mean over [1, 2, 3],
        # x loss_multiplier, mean.
        if loss_type == "pseudo_huber":
            diff = pred.float() - target.float()
            c = 0.01
            loss = torch.sqrt(diff.pow(2) + c**2) - c
        elif loss_type == "mae":
            loss = torch.nn.functional.l1_loss(pred.float(), target.float(), reduction="none")
        else:
            loss = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none")
        loss = loss * weights.view(-1, 1, 1, 1)
        per_sample = loss.mean([1, 2, 3]) * loss_multiplier
        return dict(per_sample=f32_list(per_sample), total=F32_REPR(per_sample.mean()))

    losses = {t: calculate_loss(t, pred, target) for t in ["mse", "mae", "pseudo_huber"]}
    dg_scale = 3.0
    with torch.no_grad():
        dg_target = pred + dg_scale * (target - pred)  # SDTrainer, do_differential_guidance
    dop_multiplier = 0.75
    dop = torch.nn.functional.mse_loss(pred, prior_pred) * dop_multiplier  # SDTrainer, DOP block
    return dict(
        shape=list(shape),
        x0=f32_list(x0.flatten()),
        noise=f32_list(noise.flatten()),
        pred=f32_list(pred.flatten()),
        prior_pred=f32_list(prior_pred.flatten()),
        noise_timesteps=f32_list(noise_timesteps),
        noisy=f32_list(noisy.flatten()),
        target=f32_list(target.flatten()),
        weight_timesteps=f32_list(weight_timesteps),
        timestep_weights=f32_list(weights),
        loss_multipliers=f32_list(loss_multiplier),
        losses=losses,
        differential_guidance=dict(
            scale=dg_scale,
            target=f32_list(dg_target.flatten()),
            mse=calculate_loss("mse", pred, dg_target),
        ),
        dop=dict(multiplier=dop_multiplier, loss=F32_REPR(dop)),
    )


def aitk_indices(bias, batch, lo, hi, gen):
    """Index selection of BaseSDTrainProcess (flowmatch branch), vectorised over steps."""
    if bias == "balanced":
        if lo == hi:
            return torch.full(batch, lo, dtype=torch.long)
        return torch.randint(lo, hi, batch, generator=gen)  # upper bound exclusive, as in ai-toolkit
    u = torch.rand(batch, generator=gen)
    x = u**3 * 1000 if bias == "content" else (1 - u**3) * 1000
    x = (x - 0) * (hi - lo) / (999 - 0) + lo  # toolkit.basic.value_map
    return x.long().clamp(lo, hi)


def sampler_stats(sampler_mod, seed=1234, steps=50000, batch=4):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # set_train_timesteps draws from torch's global generator
    quantiles = [0.05, 0.25, 0.5, 0.75, 0.95]
    cases = []
    for ttype in ["linear", "sigmoid", "weighted", "shift", "lognorm_blend"]:
        for bias in ["balanced", "content", "style"]:
            cases.append((ttype, bias, 0, 999, 4096))
    cases += [
        ("linear", "balanced", 200, 600, 4096),
        ("linear", "content", 200, 600, 4096),
        ("sigmoid", "style", 100, 900, 4096),
        ("shift", "balanced", 0, 999, 256),
        ("shift", "content", 0, 999, 1024),
    ]
    out = []
    for ttype, bias, lo, hi, seq_len in cases:
        sched = sampler_mod.CustomFlowMatchEulerDiscreteScheduler(**AITK_FLUX2_SCHEDULER)
        side = int(math.isqrt(seq_len))
        latents = torch.zeros(1, 128, side, side)
        if ttype in ("sigmoid", "lognorm_blend"):
            # A fresh random table per training step, as ai-toolkit does; vectorised over steps.
            tables = torch.stack(
                [sched.set_train_timesteps(1000, "cpu", timestep_type=ttype).float() for _ in range(steps)]
            )
        else:
            tt = "linear" if ttype == "weighted" else ttype
            table = sched.set_train_timesteps(1000, "cpu", timestep_type=tt, latents=latents, patch_size=1).float()
            tables = table.unsqueeze(0).expand(steps, -1)
        idx = aitk_indices(bias, (steps, batch), lo, hi, gen)
        sig = (torch.gather(tables, 1, idx) / 1000.0).double().flatten()
        qs = torch.quantile(sig, torch.tensor(quantiles, dtype=torch.float64)).tolist()
        out.append(
            dict(
                timestep_type=ttype,
                bias=bias,
                min_denoising_steps=lo,
                max_denoising_steps=hi,
                image_seq_len=seq_len,
                draws=int(sig.numel()),
                mean=float(sig.mean()),
                std=float(sig.std()),
                quantile_levels=quantiles,
                quantiles=qs,
            )
        )
        print(f"  {ttype:13s} {bias:8s} [{lo},{hi}] S={seq_len}: mean {sig.mean():.4f} q {['%.4f' % q for q in qs]}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ai-toolkit", required=True, help=f"checkout of ostris/ai-toolkit at {AI_TOOLKIT_COMMIT}")
    ap.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(__file__), "..", "..", "flow-train", "tests", "fixtures", "flow_reference.json"),
    )
    args = ap.parse_args()

    import diffusers

    sampler_mod, weights_mod, aitk_head = load_ai_toolkit(args.ai_toolkit)
    if aitk_head not in (AI_TOOLKIT_COMMIT, "unknown (not a git checkout)"):
        print(f"warning: ai-toolkit checkout is at {aitk_head}, numbers were committed from {AI_TOOLKIT_COMMIT}")

    sched, worst_f64 = schedules()
    print(f"schedules: {len(sched)} cases; exact f64 formula vs diffusers float32: max |diff| {worst_f64:.3e}")
    weighting = derive_weighting(weights_mod)
    print(
        f"weighting fit: max |err| {weighting['fit_max_abs_error']:.4f} at index {weighting['fit_max_abs_error_index']},"
        f" rms {weighting['fit_rms_error']:.5f}; ai-toolkit table mean {weighting['aitk_mean']:.9f}"
    )
    print("sampler stats (ai-toolkit semantics):")
    stats = sampler_stats(sampler_mod)
    doc = dict(
        generator="tools/reference/flow_train_reference.py",
        versions=dict(
            python=sys.version.split()[0],
            torch=torch.__version__,
            numpy=np.__version__,
            diffusers=diffusers.__version__,
            ai_toolkit_commit=AI_TOOLKIT_COMMIT if aitk_head.startswith("unknown") else aitk_head,
        ),
        schedule_exact_f64_max_abs_diff=worst_f64,
        schedules=sched,
        train_shift=train_shift(sampler_mod),
        lognorm_blend_linear_part=lognorm_linear_part(),
        weighting=weighting,
        formulas=formulas(sampler_mod),
        sampler_stats=stats,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.abspath(args.out)} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
