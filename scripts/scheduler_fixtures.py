#!/usr/bin/env python3
"""Generate diffusers parity fixtures for the `plantain-schedulers` crate.

Run from the repository root with the project venv:

    /work/pyvenv/bin/python scripts/scheduler_fixtures.py

Writes JSON files under fixtures/schedulers/. Everything recorded here is
produced by the installed diffusers schedulers themselves; the Rust tests in
crates/schedulers/tests/ replay the same inputs and compare.

Noise used by stochastic steps is captured by wrapping `randn_tensor` in each
scheduler module, so the recorded noise is exactly the tensor diffusers added.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import torch

import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
)
from diffusers.schedulers import (
    scheduling_ddim,
    scheduling_dpmsolver_multistep,
    scheduling_euler_ancestral_discrete,
    scheduling_lcm,
)

OUT_DIR = os.path.join("fixtures", "schedulers")
# Latent buffer used by trajectories: (batch, channels, h, w) = 32 floats.
SHAPE = (1, 2, 4, 4)

torch.set_num_threads(1)

# ----------------------------------------------------------------------------
# Noise capture: every randn_tensor call made by a scheduler step is recorded.
# ----------------------------------------------------------------------------
DRAWN: list[torch.Tensor] = []


def _wrap_randn(module):
    original = module.randn_tensor

    def recording_randn_tensor(*args, **kwargs):
        t = original(*args, **kwargs)
        DRAWN.append(t.detach().clone())
        return t

    module.randn_tensor = recording_randn_tensor


for _m in (scheduling_ddim, scheduling_dpmsolver_multistep, scheduling_euler_ancestral_discrete, scheduling_lcm):
    _wrap_randn(_m)

# ----------------------------------------------------------------------------
# Configs, written the way they appear in hub `scheduler_config.json` files.
# ----------------------------------------------------------------------------
SD15 = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}
# The original SD1.5 file has no timestep_spacing: each class's default applies.
SD15_NO_SPACING = {k: v for k, v in SD15.items() if k != "timestep_spacing"}
SD2V = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
TURBO = {
    "_class_name": "EulerAncestralDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
SDXL = dict(TURBO, _class_name="EulerDiscreteScheduler", timestep_spacing="leading")
LCM_CFG = {
    "_class_name": "LCMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "num_train_timesteps": 1000,
    "original_inference_steps": 50,
    "prediction_type": "epsilon",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "thresholding": False,
    "timestep_scaling": 10.0,
    "timestep_spacing": "leading",
    "trained_betas": None,
}
LINEAR = {"_class_name": "DDPMScheduler", "beta_schedule": "linear", "num_train_timesteps": 1000}
COSINE = {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000}
ZSNR = dict(SD15, rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
CONT_V = dict(SDXL, prediction_type="v_prediction", timestep_type="continuous", timestep_spacing="linspace")
SAMPLE_PRED = dict(SD15, prediction_type="sample")


def with_(cfg, **kw):
    return dict(cfg, **kw)


# ----------------------------------------------------------------------------
# Building diffusers schedulers the way plantain's `build(kind, config)` does.
# ----------------------------------------------------------------------------
CLASS_FOR_KIND = {
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "turbo": EulerAncestralDiscreteScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
    "dpm++2m-karras": DPMSolverMultistepScheduler,
    "dpm++2m-sde": DPMSolverMultistepScheduler,
    "dpm++2m-sde-karras": DPMSolverMultistepScheduler,
    "ddim": DDIMScheduler,
    "lcm": LCMScheduler,
}
# Settings a kind forces on top of the file (see SchedulerKind docs in Rust).
OVERRIDES = {
    "turbo": {"timestep_spacing": "trailing"},
    "dpm++2m": {"use_karras_sigmas": False, "algorithm_type": "dpmsolver++", "solver_order": 2},
    "dpm++2m-karras": {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++", "solver_order": 2},
    "dpm++2m-sde": {"use_karras_sigmas": False, "algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    "dpm++2m-sde-karras": {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++", "solver_order": 2},
}


def make(kind, cfg):
    cls = CLASS_FOR_KIND[kind]
    return cls.from_config(dict(cfg), **OVERRIDES.get(kind, {}))


# ----------------------------------------------------------------------------
# Float encoding: shortest decimal that maps back to the same f32 via f64.
# ----------------------------------------------------------------------------
def f32(x) -> float:
    v = np.float32(x)
    if not np.isfinite(v):
        raise ValueError(f"non-finite value in fixture: {v}")
    s = float(str(v))
    if np.float32(s) != v:
        s = float(v)  # exact f64 value of the f32
    return s


def f32s(t) -> list[float]:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().to(torch.float32).numpy()
    return [f32(x) for x in np.asarray(t, dtype=np.float32).reshape(-1)]


def timesteps_of(s) -> list:
    t = s.timesteps
    if t.dtype in (torch.int64, torch.int32):
        return [int(x) for x in t.tolist()]
    return f32s(t)


def sigmas_of(s):
    sig = getattr(s, "sigmas", None)
    if sig is None or isinstance(s, (DDIMScheduler, LCMScheduler)):
        return None
    return f32s(sig)


def fake_model(scaled: torch.Tensor, i: int) -> torch.Tensor:
    """Bounded, input-dependent stand-in for a UNet so multistep state matters."""
    n = scaled.numel()
    wave = torch.sin(torch.arange(n, dtype=torch.float32) * 0.37 + 0.5 * i).reshape(scaled.shape)
    return 0.8 * torch.tanh(scaled) + 0.3 * wave


# ----------------------------------------------------------------------------
# One trajectory case
# ----------------------------------------------------------------------------
def run_case(name, kind, cfg, steps, strength=None, seed=0, step_kwargs=None):
    step_kwargs = dict(step_kwargs or {})
    s = make(kind, cfg)
    gen = torch.Generator().manual_seed(seed)
    begin = 0
    if strength is None:
        s.set_timesteps(steps)
    elif isinstance(s, LCMScheduler):
        # LCM img2img passes strength to set_timesteps and runs every step.
        s.set_timesteps(steps, strength=strength)
    else:
        # StableDiffusionImg2ImgPipeline.get_timesteps
        s.set_timesteps(steps)
        init_timestep = min(int(steps * strength), steps)
        begin = max(steps - init_timestep, 0)
        if hasattr(s, "set_begin_index"):
            s.set_begin_index(begin * s.order)
    case = {
        "name": name,
        "kind": kind,
        "config": cfg,
        "num_inference_steps": steps,
        "strength": strength,
        "step_kwargs": step_kwargs,
        "begin_index": begin,
        "timesteps": timesteps_of(s),
        "sigmas": sigmas_of(s),
        "init_noise_sigma": f32(float(s.init_noise_sigma)),
    }
    if strength is None:
        latents = torch.randn(SHAPE, generator=gen, dtype=torch.float32) * s.init_noise_sigma
    else:
        original = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
        noise0 = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
        latent_timestep = s.timesteps[begin : begin + 1]
        latents = s.add_noise(original, noise0, latent_timestep)
        case["add_noise"] = {"original": f32s(original), "noise": f32s(noise0), "output": f32s(latents)}
    case["initial_latents"] = f32s(latents)
    identity_scale = isinstance(s, (DPMSolverMultistepScheduler, DDIMScheduler, LCMScheduler))
    steps_out = []
    for i in range(begin, len(s.timesteps)):
        t = s.timesteps[i]
        scaled = s.scale_model_input(latents, t)
        mo = fake_model(scaled, i)
        DRAWN.clear()
        if "eta" in step_kwargs:
            out = s.step(mo, t, latents, generator=gen, **step_kwargs).prev_sample
        else:
            out = s.step(mo, t, latents, generator=gen).prev_sample
        if len(DRAWN) > 1:
            raise RuntimeError(f"{name}: step {i} drew {len(DRAWN)} noise tensors")
        rec = {
            "step_index": i,
            "scaled": None if identity_scale else f32s(scaled),
            "model_output": f32s(mo),
            "noise": f32s(DRAWN[0]) if DRAWN else None,
            "prev_sample": f32s(out),
        }
        if identity_scale and not torch.equal(scaled, latents):
            raise RuntimeError(f"{name}: scale_model_input was expected to be the identity")
        steps_out.append(rec)
        latents = out
    case["steps"] = steps_out
    return case


# ----------------------------------------------------------------------------
# Schedule-only sweeps (timesteps / sigmas / init_noise_sigma for many counts)
# ----------------------------------------------------------------------------
SWEEP_STEPS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 50, 100]


def sweep(name, kind, cfg, steps_list=SWEEP_STEPS, strength=None):
    entries = []
    for n in steps_list:
        s = make(kind, cfg)
        try:
            if strength is None:
                s.set_timesteps(n)
            else:
                s.set_timesteps(n, strength=strength)
        except ValueError as e:
            entries.append({"steps": n, "error": str(e)})
            continue
        entries.append(
            {
                "steps": n,
                "timesteps": timesteps_of(s),
                "sigmas": sigmas_of(s),
                "init_noise_sigma": f32(float(s.init_noise_sigma)),
            }
        )
    return {"name": name, "kind": kind, "config": cfg, "strength": strength, "entries": entries}


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    meta = {
        "generator": "scripts/scheduler_fixtures.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }

    # alphas_cumprod for each beta schedule, straight from the schedulers.
    alphas = {}
    for label, cfg in [
        ("scaled_linear", SD15),
        ("linear", LINEAR),
        ("squaredcos_cap_v2", COSINE),
        ("scaled_linear_zero_snr_euler", ZSNR),
    ]:
        alphas[label] = {"config": cfg, "kind": "euler", "alphas_cumprod": f32s(make("euler", cfg).alphas_cumprod)}
    alphas["scaled_linear_zero_snr_ddim"] = {
        "config": ZSNR,
        "kind": "ddim",
        "alphas_cumprod": f32s(make("ddim", ZSNR).alphas_cumprod),
    }

    files = {"alphas_cumprod": {"meta": meta, "schedules": alphas}}

    files["schedules"] = {
        "meta": meta,
        "sweeps": [
            sweep("euler/sd15-leading", "euler", SD15),
            sweep("euler/sd15-pndm-file-linspace", "euler", SD15_NO_SPACING),
            sweep("euler/trailing", "euler", with_(SD15, timestep_spacing="trailing")),
            sweep("euler/karras-leading", "euler", with_(SD15, use_karras_sigmas=True)),
            sweep("euler/karras-trailing", "euler", with_(SD15, use_karras_sigmas=True, timestep_spacing="trailing")),
            sweep("euler/karras-sigma-range", "euler", with_(SD15, use_karras_sigmas=True, sigma_min=0.1, sigma_max=10.0)),
            sweep("euler/final-sigma-min", "euler", with_(SD15, final_sigmas_type="sigma_min")),
            sweep("euler/continuous-v", "euler", CONT_V),
            sweep("euler/cosine", "euler", COSINE),
            sweep("euler-a/sd15-leading", "euler-a", SD15),
            sweep("turbo/sd-turbo", "turbo", TURBO),
            sweep("dpm/sd15-leading", "dpm++2m", SD15),
            sweep("dpm/linspace", "dpm++2m", with_(SD15, timestep_spacing="linspace")),
            sweep("dpm/trailing", "dpm++2m", with_(SD15, timestep_spacing="trailing")),
            sweep("dpm/karras", "dpm++2m-karras", SD15),
            sweep("dpm/karras-cosine", "dpm++2m-karras", COSINE),
            sweep("dpm/lambda-clipped", "dpm++2m", with_(COSINE, lambda_min_clipped=-5.1, timestep_spacing="linspace")),
            sweep("dpm/final-sigma-min", "dpm++2m", with_(SD15, final_sigmas_type="sigma_min")),
            sweep("ddim/sd15-leading", "ddim", SD15),
            sweep("ddim/linspace", "ddim", with_(SD15, timestep_spacing="linspace")),
            sweep("ddim/trailing", "ddim", with_(SD15, timestep_spacing="trailing")),
            sweep("lcm/default", "lcm", LCM_CFG, SWEEP_STEPS[:-1] + [51]),
            sweep("lcm/strength-0.6", "lcm", LCM_CFG, [1, 2, 4, 8, 30, 31], strength=0.6),
            sweep("lcm/strength-0.7", "lcm", LCM_CFG, [1, 2, 4, 8, 35], strength=0.7),
            sweep("lcm/strength-0.3", "lcm", LCM_CFG, [1, 2, 4, 15, 16], strength=0.3),
        ],
    }

    files["euler"] = {
        "meta": meta,
        "cases": [
            run_case("euler/sd15-1", "euler", SD15, 1),
            run_case("euler/sd15-4", "euler", SD15, 4),
            run_case("euler/sd15-20", "euler", SD15, 20),
            run_case("euler/karras-4", "euler", with_(SD15, use_karras_sigmas=True), 4),
            run_case("euler/karras-20", "euler", with_(SD15, use_karras_sigmas=True), 20),
            run_case("euler/sd2v-20", "euler", SD2V, 20),
            run_case("euler/trailing-4", "euler", TURBO, 4),
            run_case("euler/pndm-file-linspace-4", "euler", SD15_NO_SPACING, 4),
            run_case("euler/img2img-20-0.6", "euler", SD15, 20, strength=0.6),
            run_case("euler/zsnr-v-4", "euler", ZSNR, 4),
            run_case("euler/cosine-4", "euler", COSINE, 4),
            run_case("euler/continuous-v-4", "euler", CONT_V, 4),
            run_case("euler/sample-pred-4", "euler", SAMPLE_PRED, 4),
        ],
    }
    files["euler_ancestral"] = {
        "meta": meta,
        "cases": [
            run_case("euler-a/sd15-4", "euler-a", SD15, 4, seed=1),
            run_case("euler-a/sd15-20", "euler-a", SD15, 20, seed=2),
            run_case("euler-a/sd2v-4", "euler-a", SD2V, 4, seed=3),
            run_case("euler-a/img2img-20-0.6", "euler-a", SD15, 20, strength=0.6, seed=4),
            run_case("turbo/1", "turbo", TURBO, 1, seed=5),
            run_case("turbo/2", "turbo", TURBO, 2, seed=6),
            run_case("turbo/4", "turbo", TURBO, 4, seed=7),
            run_case("turbo/from-sd15-file-4", "turbo", SD15, 4, seed=8),
            run_case("turbo/img2img-2-0.5", "turbo", TURBO, 2, strength=0.5, seed=9),
        ],
    }
    files["dpm"] = {
        "meta": meta,
        "cases": [
            run_case("dpm/sd15-1", "dpm++2m", SD15, 1),
            run_case("dpm/sd15-4", "dpm++2m", SD15, 4),
            run_case("dpm/sd15-20", "dpm++2m", SD15, 20),
            run_case("dpm/karras-4", "dpm++2m-karras", SD15, 4),
            run_case("dpm/karras-20", "dpm++2m-karras", SD15, 20),
            run_case("dpm/sd2v-20", "dpm++2m", SD2V, 20),
            run_case("dpm/final-sigma-min-20", "dpm++2m", with_(SD15, final_sigmas_type="sigma_min"), 20),
            run_case("dpm/img2img-20-0.6", "dpm++2m", SD15, 20, strength=0.6),
            run_case("dpm/trailing-4", "dpm++2m", TURBO, 4),
            run_case("dpm/heun-8", "dpm++2m", with_(SD15, solver_type="heun"), 8),
            run_case("dpm/sample-pred-4", "dpm++2m", SAMPLE_PRED, 4),
            run_case("dpm-sde/karras-8", "dpm++2m-sde-karras", SD15, 8, seed=11),
            run_case("dpm-sde/4", "dpm++2m-sde", SD15, 4, seed=12),
        ],
    }
    files["ddim"] = {
        "meta": meta,
        "cases": [
            run_case("ddim/sd15-1", "ddim", SD15, 1),
            run_case("ddim/sd15-4", "ddim", SD15, 4),
            run_case("ddim/sd15-20", "ddim", SD15, 20),
            run_case("ddim/sd2v-20", "ddim", SD2V, 20),
            run_case("ddim/eta-0.5-4", "ddim", SD15, 4, seed=13, step_kwargs={"eta": 0.5}),
            run_case("ddim/trailing-4", "ddim", with_(SD15, timestep_spacing="trailing"), 4),
            run_case("ddim/img2img-20-0.6", "ddim", SD15, 20, strength=0.6),
            run_case("ddim/zsnr-v-4", "ddim", ZSNR, 4),
            run_case("ddim/linspace-4", "ddim", with_(SD15, timestep_spacing="linspace"), 4),
            run_case("ddim/class-defaults-clip-4", "ddim", LINEAR, 4),
        ],
    }
    files["lcm"] = {
        "meta": meta,
        "cases": [
            run_case("lcm/1", "lcm", LCM_CFG, 1, seed=21),
            run_case("lcm/4", "lcm", LCM_CFG, 4, seed=22),
            run_case("lcm/8", "lcm", LCM_CFG, 8, seed=23),
            run_case("lcm/img2img-4-0.6", "lcm", LCM_CFG, 4, strength=0.6, seed=24),
            run_case("lcm/v-pred-4", "lcm", with_(LCM_CFG, prediction_type="v_prediction"), 4, seed=25),
        ],
    }

    total = 0
    for fname, data in files.items():
        path = os.path.join(OUT_DIR, f"{fname}.json")
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
        with open(path, "w") as f:
            f.write(text)
            f.write("\n")
        total += len(text) + 1
        print(f"wrote {path} ({len(text) + 1} bytes)")
    print(f"total {total} bytes")
    if total > 1_000_000:
        print("warning: fixtures exceed 1 MB", file=sys.stderr)


if __name__ == "__main__":
    main()
