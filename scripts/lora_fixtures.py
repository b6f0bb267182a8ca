#!/usr/bin/env python3
"""Tiny random LoRA files for the tiny sd1 and sdxl models, and diffusers' outputs with them.

Run from the repository root after scripts/make_fixtures.py, with the same venv plus `peft`
(diffusers' `load_lora_weights` needs it; made with peft 0.21.2):

    /path/to/venv/bin/python scripts/lora_fixtures.py

Writes
  fixtures/tiny/lora/sd1-kohya.safetensors    kohya naming (lora_unet_/lora_te_, lora_down/lora_up, alpha)
  fixtures/tiny/lora/sd1-peft.safetensors     diffusers/PEFT naming (unet./text_encoder., lora_A/lora_B, no alpha)
  fixtures/tiny/lora/sdxl-kohya.safetensors   kohya SDXL naming (lora_te1_/lora_te2_, UNet blocks by their
                                              original names: lora_unet_input_blocks_4_1_…)
  fixtures/ref/lora.safetensors               per file: the conditioning and a 4-step text-to-image run
                                              (final latents) with the LoRA loaded by diffusers and fused
                                              at LORA_SCALE, plus the same run without it
Each LoRA touches attention projections, a feed-forward layer, a 3x3 resnet convolution (LoCon)
and the text encoders' projections and MLP.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402

LORA_DIR = mf.TINY / "lora"
LORA_SCALE = 0.8
RANK = 4
ALPHA = 2.0
SEED = 9000
UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_k", "ff.net.0.proj", "resnets.0.conv1")
TE_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1")


def targets(module: torch.nn.Module, suffixes) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in module.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and n.endswith(suffixes)]


def random_pair(m: torch.nn.Module, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) with kohya/PEFT shapes; up is not zero (a fresh LoRA's is) so it matters."""
    if isinstance(m, torch.nn.Conv2d):
        out_c, in_c, kh, kw = m.weight.shape
        down = torch.randn(RANK, in_c, kh, kw, generator=g) * 0.3
        up = torch.randn(out_c, RANK, 1, 1, generator=g) * 0.3
    else:
        out_c, in_c = m.weight.shape
        down = torch.randn(RANK, in_c, generator=g) * 0.3
        up = torch.randn(out_c, RANK, generator=g) * 0.3
    return down, up


def kohya_name(prefix: str, module_name: str) -> str:
    return prefix + module_name.replace(".", "_")


def make_lora(arch: str, pipe, style: str) -> dict[str, torch.Tensor]:
    g = mf.gen(SEED + {"sd1": 0, "sdxl": 100}[arch] + {"kohya": 0, "peft": 50}[style])
    sd: dict[str, torch.Tensor] = {}
    encoders = [("text_encoder", pipe.text_encoder, "lora_te_" if arch == "sd1" else "lora_te1_")]
    if arch == "sdxl":
        encoders.append(("text_encoder_2", pipe.text_encoder_2, "lora_te2_"))
    parts = [("unet", pipe.unet, "lora_unet_", UNET_TARGETS)] + [(c, m, p, TE_TARGETS) for c, m, p in encoders]
    cfg = mf.unet_config(arch)
    for component, module, kprefix, suffixes in parts:
        for name, m in targets(module, suffixes):
            down, up = random_pair(m, g)
            if component != "unet" and not name.startswith("text_model."):
                # transformers 5 drops the `text_model` level from module names; files name it.
                name = "text_model." + name
            if style == "peft":
                sd[f"{component}.{name}.lora_A.weight"] = down
                sd[f"{component}.{name}.lora_B.weight"] = up
                continue
            if component == "unet" and arch == "sdxl":
                # kohya's SDXL files name UNet modules as the original checkpoint does.
                key = kohya_name(kprefix, mf.unet_key_to_ldm(name + ".weight", cfg)[: -len(".weight")])
            else:
                key = kohya_name(kprefix, name)
            sd[f"{key}.lora_down.weight"] = down
            sd[f"{key}.lora_up.weight"] = up
            sd[f"{key}.alpha"] = torch.tensor(ALPHA)
    return {k: v.contiguous() for k, v in sd.items()}


def expected_delta(sd: dict, key: str, style: str) -> torch.Tensor:
    if style == "peft":
        down, up, scale = sd[f"{key}.lora_A.weight"], sd[f"{key}.lora_B.weight"], 1.0
    else:
        down, up = sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"]
        scale = float(sd[f"{key}.alpha"]) / down.shape[0]
    return (up.flatten(1) @ down.flatten(1)).reshape(-1, *down.shape[1:]) * scale * LORA_SCALE


def check_fused(pipe, before: dict, sd: dict, style: str) -> float:
    """The fused weights must be W + scale * alpha/rank * up @ down for a sampled module."""
    name = next(iter(before))
    key = f"unet.{name}" if style == "peft" else None
    if key is None:
        key = next(k[: -len(".lora_down.weight")] for k in sd if k.endswith(".lora_down.weight") and "attn1_to_q" in k)
    m = pipe.unet.get_submodule(name)
    got = getattr(m, "base_layer", m).weight.detach()
    want = before[name] + expected_delta(sd, key, style).reshape(got.shape)
    return mf.maxdiff(got, want)


def t2i(arch: str, pipe, R: dict, tag: str, latents: torch.Tensor) -> None:
    kw = dict(prompt=mf.PROMPT, negative_prompt=mf.NEG, height=mf.HW, width=mf.HW, num_inference_steps=mf.STEPS,
              guidance_scale=mf.GUIDANCE[arch], output_type="latent", latents=latents.clone())
    if arch == "sdxl":
        kw.update(original_size=(mf.HW, mf.HW), target_size=(mf.HW, mf.HW))
    R[f"{tag}_final_latents"] = mf.to_f32(pipe(**kw).images)
    pos, neg = pipe.encode_prompt(prompt=mf.PROMPT, device="cpu", num_images_per_prompt=1,
                                 do_classifier_free_guidance=True, negative_prompt=mf.NEG)[:2]
    R[f"{tag}_cond"] = mf.to_f32(torch.cat([neg, pos]))


def build(arch: str, R: dict) -> None:
    pipe = mf.load_pipeline_f32(arch, mf.TINY / arch)
    latents = torch.randn(1, 4, mf.HW // 8, mf.HW // 8, generator=mf.gen(SEED + 7))
    R[f"{arch}_latents"] = latents
    t2i(arch, pipe, R, f"{arch}_base", latents)
    for style in (("kohya", "peft") if arch == "sd1" else ("kohya",)):
        sd = make_lora(arch, pipe, style)
        path = LORA_DIR / f"{arch}-{style}.safetensors"
        save_file(sd, str(path))
        before = {n: m.weight.detach().clone() for n, m in targets(pipe.unet, ("attn1.to_q",))}
        pipe.load_lora_weights(str(LORA_DIR), weight_name=path.name, adapter_name=style)
        pipe.fuse_lora(lora_scale=LORA_SCALE)
        print(f"   {path.name}: {len(sd)} tensors; fused weight vs W + s*alpha/r*up@down: {check_fused(pipe, before, sd, style):.2e}")
        t2i(arch, pipe, R, f"{arch}_{style}", latents)
        moved = mf.maxdiff(R[f"{arch}_{style}_final_latents"], R[f"{arch}_base_final_latents"])
        assert moved > 1e-2, f"the LoRA must change the output ({moved})"
        cond_moved = mf.maxdiff(R[f"{arch}_{style}_cond"], R[f"{arch}_base_cond"])
        assert cond_moved > 1e-3, f"the LoRA must change the text encoders' output ({cond_moved})"
        pipe.unfuse_lora()
        pipe.unload_lora_weights()


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    LORA_DIR.mkdir(parents=True, exist_ok=True)
    R: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for arch in ("sd1", "sdxl"):
            print(f"== {arch}", flush=True)
            build(arch, R)
    R["lora_scale"] = torch.tensor([LORA_SCALE])
    mf.save_ref("lora", R)


if __name__ == "__main__":
    main()
