#!/usr/bin/env python3
"""Build tiny, randomly initialised Stable Diffusion fixtures and diffusers reference outputs.

Run from the repository root with a venv that has torch, diffusers, transformers, safetensors:

    /path/to/venv/bin/python scripts/make_fixtures.py

Writes
  fixtures/tiny/{sd1,sd2,sdxl}/        diffusers layout (save_pretrained), tokenizer/ symlinks into assets/
  fixtures/tiny/{sd1,sd2,sdxl}.safetensors   single-file checkpoints with the ORIGINAL (CompVis/Stability) key names
  fixtures/tiny/taesd/                 AutoencoderTiny
  fixtures/tiny/clip/                  CLIPModel (vision + text towers), laid out like openai/clip-vit-large-patch14
  fixtures/ref/{sd1,sd2,sdxl,taesd,clip,...}.safetensors  reference tensors (fp32 floats, int64 ids)
  fixtures/ref/README.md

Everything is deterministic: fixed seeds, one CPU thread, deterministic algorithms.  Weights that are stored
in fp16/bf16 are reloaded as fp32 before any reference is computed, so a consumer that computes in f32 from
the stored weights can match the references to ~1e-4.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    AutoencoderTiny,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "fixtures"
TINY = FIX / "tiny"
REF = FIX / "ref"
TOK_ASSETS = REPO / "assets" / "clip-tokenizer"

PROMPT = "a red star above a blue circle, 35mm photo"
NEG = ""
STEPS = 4
HW = 64
STRENGTH = 0.6
GUIDANCE = {"sd1": 7.5, "sd2": 7.5, "sdxl": 5.0}
ARCH_SEED = {"sd1": 1000, "sd2": 2000, "sdxl": 3000, "taesd": 4000, "clip": 5000, "klein": 6000}
F32 = torch.float32

# --------------------------------------------------------------------------------------------
# tiny configurations
# --------------------------------------------------------------------------------------------

STORE_DTYPE = {"sd1": torch.float32, "sd2": torch.float16, "sdxl": torch.bfloat16, "taesd": torch.float32}


def clip_text_config(hidden_act: str, projection_dim: int | None = None) -> CLIPTextConfig:
    kw = dict(
        vocab_size=49408,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        dropout=0.0,
        initializer_factor=1.0,
        initializer_range=0.02,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )
    kw["projection_dim"] = 16 if projection_dim is None else projection_dim
    return CLIPTextConfig(**kw)


def unet_config(arch: str) -> dict:
    common = dict(
        sample_size=HW // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(16, 32, 32),
        norm_num_groups=8,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
        center_input_sample=False,
        downsample_padding=1,
        mid_block_scale_factor=1,
        norm_eps=1e-5,
    )
    if arch == "sd1":
        return dict(
            common,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16,
            attention_head_dim=2,  # legacy meaning (SD1): number of heads
            use_linear_projection=False,
        )
    if arch == "sd2":
        return dict(
            common,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16,
            attention_head_dim=(2, 4, 4),  # legacy meaning: heads per block -> head dim 8 everywhere
            use_linear_projection=True,
            upcast_attention=True,  # as in SD 2.1's config (no effect in fp32)
        )
    if arch == "sdxl":
        return dict(
            common,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 1, 2),
            cross_attention_dim=32,
            attention_head_dim=(2, 4, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 16,
        )
    raise ValueError(arch)


def vae_config(arch: str) -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=4,
        sample_size=HW,
        scaling_factor=0.13025 if arch == "sdxl" else 0.18215,
        force_upcast=True,
    )


TAESD_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    encoder_block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8, 8),
    act_fn="relu",
    latent_channels=4,
    upsampling_scaling_factor=2,
    num_encoder_blocks=(1, 3, 3, 3),
    num_decoder_blocks=(3, 3, 3, 1),
    latent_magnitude=3,
    latent_shift=0.5,
    scaling_factor=1.0,
)

SCHED_COMMON = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
)


def make_scheduler(arch: str):
    if arch == "sd1":
        # what you get by swapping Euler into SD 1.5 (its scheduler config: leading spacing, steps_offset 1)
        return EulerDiscreteScheduler(
            **SCHED_COMMON, prediction_type="epsilon", timestep_spacing="leading", steps_offset=1
        )
    if arch == "sd2":
        return DPMSolverMultistepScheduler(
            **SCHED_COMMON,
            prediction_type="v_prediction",
            use_karras_sigmas=True,
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="leading",
            steps_offset=1,
        )
    if arch == "sdxl":
        return EulerDiscreteScheduler(
            **SCHED_COMMON, prediction_type="epsilon", timestep_spacing="trailing", steps_offset=1
        )
    raise ValueError(arch)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Make the random init harder to match by accident: norm weights != 1, biases != 0, and sharper
    attention (q/k weights x2), so that a swapped/ignored parameter shows up in the parity tests."""
    g = gen(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)
            if any(s in name for s in ("to_q.", "to_k.", "q_proj.", "k_proj.")) and name.endswith("weight"):
                p.mul_(2.0)


# Token ids whose embedding rows are kept; every other row is zeroed so that git's zlib packs the
# 49408-row tables (the bulk of the fixture bytes) down to almost nothing.  Tests only tokenize these.
KEEP_TEXTS = [PROMPT, NEG, "a lighthouse at dusk, 35mm photo", "blurry, low quality"]


def sparse_vocab_(te: torch.nn.Module) -> None:
    tok = make_tokenizer("<|endoftext|>")
    keep = set(range(512)) | {49406, 49407}
    for text in KEEP_TEXTS:
        keep.update(tok(text).input_ids)
    emb = te.get_input_embeddings().weight
    mask = torch.zeros(emb.shape[0], dtype=torch.bool)
    mask[sorted(keep)] = True
    with torch.no_grad():
        emb[~mask] = 0.0


def to_f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous().clone()


def make_tokenizer(pad_token: str) -> CLIPTokenizer:
    return CLIPTokenizer(
        str(TOK_ASSETS / "vocab.json"),
        str(TOK_ASSETS / "merges.txt"),
        pad_token=pad_token,
        model_max_length=77,
    )


def gitify_tokenizer(dirpath: Path, pad_token: str) -> None:
    """Replace the big tokenizer.json written by save_pretrained with relative symlinks to the assets."""
    for f in ("tokenizer.json", "vocab.json", "merges.txt"):
        p = dirpath / f
        if p.exists() or p.is_symlink():
            p.unlink()
    rel = os.path.relpath(TOK_ASSETS, dirpath)
    assert (dirpath / rel).resolve() == TOK_ASSETS.resolve(), rel
    os.symlink(f"{rel}/vocab.json", dirpath / "vocab.json")
    os.symlink(f"{rel}/merges.txt", dirpath / "merges.txt")
    # transformers 5 no longer writes special_tokens_map.json; write the one the real SD repos carry
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": pad_token,
        "unk_token": "<|endoftext|>",
    }
    (dirpath / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def tokenize(tok: CLIPTokenizer, text: str) -> torch.Tensor:
    return tok(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(
        torch.int64
    )


def assert_all_f32(module: torch.nn.Module, what: str) -> None:
    bad = [n for n, p in module.state_dict().items() if p.is_floating_point() and p.dtype != torch.float32]
    assert not bad, f"{what}: not fp32 after reload: {bad[:5]}"


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# --------------------------------------------------------------------------------------------
# diffusers -> original (CompVis / Stability / OpenCLIP) key mapping
# --------------------------------------------------------------------------------------------

RESNET_RENAME = [
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
]


def _rename(rest: str, table) -> str:
    for a, b in table:
        if rest.startswith(a):
            return b + rest[len(a):]
    raise KeyError(rest)


def unet_key_to_ldm(key: str, cfg: dict) -> str:
    """diffusers UNet2DConditionModel key -> ldm `model.diffusion_model.` key (without the prefix)."""
    L = cfg["layers_per_block"]
    top = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",
        "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for a, b in top.items():
        if key.startswith(a):
            return b + key[len(a):]
    parts = key.split(".")
    if parts[0] == "down_blocks":
        i = int(parts[1])
        kind = parts[2]
        if kind == "resnets":
            j = int(parts[3])
            return f"input_blocks.{i * (L + 1) + j + 1}.0." + _rename(".".join(parts[4:]), RESNET_RENAME)
        if kind == "attentions":
            j = int(parts[3])
            return f"input_blocks.{i * (L + 1) + j + 1}.1." + ".".join(parts[4:])
        if kind == "downsamplers":
            assert parts[3] == "0" and parts[4] == "conv"
            return f"input_blocks.{(i + 1) * (L + 1)}.0.op." + ".".join(parts[5:])
    if parts[0] == "mid_block":
        kind = parts[1]
        j = int(parts[2])
        if kind == "resnets":
            return f"middle_block.{2 * j}." + _rename(".".join(parts[3:]), RESNET_RENAME)
        if kind == "attentions":
            return "middle_block.1." + ".".join(parts[3:])
    if parts[0] == "up_blocks":
        i = int(parts[1])
        kind = parts[2]
        has_attn = "CrossAttn" in cfg["up_block_types"][i]
        if kind == "resnets":
            j = int(parts[3])
            return f"output_blocks.{i * (L + 1) + j}.0." + _rename(".".join(parts[4:]), RESNET_RENAME)
        if kind == "attentions":
            j = int(parts[3])
            return f"output_blocks.{i * (L + 1) + j}.1." + ".".join(parts[4:])
        if kind == "upsamplers":
            assert parts[3] == "0"
            return f"output_blocks.{i * (L + 1) + L}.{2 if has_attn else 1}." + ".".join(parts[4:])
    raise KeyError(key)


VAE_RESNET_RENAME = [
    ("norm1.", "norm1."),
    ("conv1.", "conv1."),
    ("norm2.", "norm2."),
    ("conv2.", "conv2."),
    ("conv_shortcut.", "nin_shortcut."),
]
VAE_ATTN_RENAME = [
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
]


def vae_key_to_ldm(key: str, n_blocks: int) -> tuple[str, bool]:
    """diffusers AutoencoderKL key -> ldm `first_stage_model.` key; second value: attention linear -> 1x1 conv."""
    parts = key.split(".")
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return key, False
    side = parts[0]  # encoder / decoder
    rest = parts[1:]
    if rest[0] in ("conv_in", "conv_out"):
        return key, False
    if rest[0] == "conv_norm_out":
        return f"{side}.norm_out." + ".".join(rest[1:]), False
    if rest[0] == "mid_block":
        j = int(rest[2])
        if rest[1] == "resnets":
            return f"{side}.mid.block_{j + 1}." + _rename(".".join(rest[3:]), VAE_RESNET_RENAME), False
        if rest[1] == "attentions":
            sub = _rename(".".join(rest[3:]), VAE_ATTN_RENAME)
            return f"{side}.mid.attn_1." + sub, sub.endswith("weight") and not sub.startswith("norm.")
    if rest[0] == "down_blocks":
        i = int(rest[1])
        if rest[2] == "resnets":
            return f"{side}.down.{i}.block.{rest[3]}." + _rename(".".join(rest[4:]), VAE_RESNET_RENAME), False
        if rest[2] == "downsamplers":
            return f"{side}.down.{i}.downsample." + ".".join(rest[4:]), False
    if rest[0] == "up_blocks":
        i = n_blocks - 1 - int(rest[1])
        if rest[2] == "resnets":
            return f"{side}.up.{i}.block.{rest[3]}." + _rename(".".join(rest[4:]), VAE_RESNET_RENAME), False
        if rest[2] == "upsamplers":
            return f"{side}.up.{i}.upsample." + ".".join(rest[4:]), False
    raise KeyError(key)


def openclip_from_hf(sd: dict, prefix: str, n_layers: int) -> dict:
    """HF CLIPTextModel(WithProjection) state dict -> OpenCLIP text tower keys under `prefix`."""
    out = {}
    tm = "text_model."
    out[prefix + "token_embedding.weight"] = sd[tm + "embeddings.token_embedding.weight"]
    out[prefix + "positional_embedding"] = sd[tm + "embeddings.position_embedding.weight"]
    out[prefix + "ln_final.weight"] = sd[tm + "final_layer_norm.weight"]
    out[prefix + "ln_final.bias"] = sd[tm + "final_layer_norm.bias"]
    for n in range(n_layers):
        h = f"{tm}encoder.layers.{n}."
        o = f"{prefix}transformer.resblocks.{n}."
        out[o + "ln_1.weight"] = sd[h + "layer_norm1.weight"]
        out[o + "ln_1.bias"] = sd[h + "layer_norm1.bias"]
        out[o + "ln_2.weight"] = sd[h + "layer_norm2.weight"]
        out[o + "ln_2.bias"] = sd[h + "layer_norm2.bias"]
        out[o + "attn.in_proj_weight"] = torch.cat(
            [sd[h + f"self_attn.{x}_proj.weight"] for x in ("q", "k", "v")], dim=0
        ).contiguous()
        out[o + "attn.in_proj_bias"] = torch.cat([sd[h + f"self_attn.{x}_proj.bias"] for x in ("q", "k", "v")])
        out[o + "attn.out_proj.weight"] = sd[h + "self_attn.out_proj.weight"]
        out[o + "attn.out_proj.bias"] = sd[h + "self_attn.out_proj.bias"]
        out[o + "mlp.c_fc.weight"] = sd[h + "mlp.fc1.weight"]
        out[o + "mlp.c_fc.bias"] = sd[h + "mlp.fc1.bias"]
        out[o + "mlp.c_proj.weight"] = sd[h + "mlp.fc2.weight"]
        out[o + "mlp.c_proj.bias"] = sd[h + "mlp.fc2.bias"]
    if "text_projection.weight" in sd:
        # HF Linear weight is [proj, width]; OpenCLIP's text_projection is [width, proj] (x @ P)
        out[prefix + "text_projection"] = sd["text_projection.weight"].t().contiguous()
    return out


def random_openclip_resblock(prefix: str, n: int, width: int, mlp: int, dtype, seed: int) -> dict:
    g = gen(seed)

    def r(*shape, scale=1.0, base=0.0):
        return (base + torch.randn(*shape, generator=g) * scale).to(dtype)

    o = f"{prefix}transformer.resblocks.{n}."
    return {
        o + "ln_1.weight": r(width, scale=0.1, base=1.0),
        o + "ln_1.bias": r(width, scale=0.1),
        o + "attn.in_proj_weight": r(3 * width, width, scale=width**-0.5),
        o + "attn.in_proj_bias": r(3 * width, scale=0.1),
        o + "attn.out_proj.weight": r(width, width, scale=width**-0.5),
        o + "attn.out_proj.bias": r(width, scale=0.1),
        o + "ln_2.weight": r(width, scale=0.1, base=1.0),
        o + "ln_2.bias": r(width, scale=0.1),
        o + "mlp.c_fc.weight": r(mlp, width, scale=width**-0.5),
        o + "mlp.c_fc.bias": r(mlp, scale=0.1),
        o + "mlp.c_proj.weight": r(width, mlp, scale=mlp**-0.5),
        o + "mlp.c_proj.bias": r(width, scale=0.1),
    }


def load_component(d: Path, sub: str) -> dict:
    files = sorted((d / sub).glob("*.safetensors"))
    assert len(files) == 1, files
    return load_file(str(files[0]))


def write_single_file(arch: str, d: Path, out: Path) -> dict:
    unet_cfg = json.loads((d / "unet" / "config.json").read_text())
    vae_cfg = json.loads((d / "vae" / "config.json").read_text())
    dtype = STORE_DTYPE[arch]
    ck: dict[str, torch.Tensor] = {}
    for k, v in load_component(d, "unet").items():
        ck["model.diffusion_model." + unet_key_to_ldm(k, unet_cfg)] = v
    nb = len(vae_cfg["block_out_channels"])
    for k, v in load_component(d, "vae").items():
        nk, to_conv = vae_key_to_ldm(k, nb)
        if to_conv:
            assert v.ndim == 2
            v = v[:, :, None, None]
        ck["first_stage_model." + nk] = v.contiguous()
    te = load_component(d, "text_encoder")
    pos_ids = torch.arange(77, dtype=torch.int64)[None]
    if arch == "sd1":
        for k, v in te.items():
            ck["cond_stage_model.transformer." + k] = v
        ck["cond_stage_model.transformer.text_model.embeddings.position_ids"] = pos_ids
    elif arch == "sd2":
        n = json.loads((d / "text_encoder" / "config.json").read_text())["num_hidden_layers"]
        pre = "cond_stage_model.model."
        ck.update(openclip_from_hf(te, pre, n))
        # real SD2 checkpoints hold the full OpenCLIP tower: one more resblock than diffusers keeps
        ck.update(random_openclip_resblock(pre, n, 16, 32, dtype, ARCH_SEED[arch] + 77))
        g = gen(ARCH_SEED[arch] + 78)
        ck[pre + "text_projection"] = (torch.randn(16, 16, generator=g) * 16**-0.5).to(dtype)
        ck[pre + "logit_scale"] = torch.tensor(math.log(1 / 0.07)).to(dtype)
    elif arch == "sdxl":
        for k, v in te.items():
            ck["conditioner.embedders.0.transformer." + k] = v
        ck["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = pos_ids
        te2 = load_component(d, "text_encoder_2")
        n = json.loads((d / "text_encoder_2" / "config.json").read_text())["num_hidden_layers"]
        pre = "conditioner.embedders.1.model."
        ck.update(openclip_from_hf(te2, pre, n))
        ck[pre + "logit_scale"] = torch.tensor(math.log(1 / 0.07)).to(dtype)
    for k, v in ck.items():
        if v.is_floating_point():
            assert v.dtype == dtype, (k, v.dtype)
    ck = {k: ck[k].contiguous() for k in sorted(ck)}
    save_file(ck, str(out))
    return ck


# --------------------------------------------------------------------------------------------
# building the tiny pipelines
# --------------------------------------------------------------------------------------------


def build_pipeline(arch: str, d: Path) -> None:
    seed = ARCH_SEED[arch]
    dtype = STORE_DTYPE[arch]

    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**unet_config(arch))
    perturb_(unet, seed + 2)
    torch.manual_seed(seed + 3)
    vae = AutoencoderKL(**vae_config(arch))
    perturb_(vae, seed + 4)
    torch.manual_seed(seed + 5)
    if arch == "sd1":
        te = CLIPTextModel(clip_text_config("quick_gelu"))
    elif arch == "sd2":
        te = CLIPTextModel(clip_text_config("gelu"))
    else:
        te = CLIPTextModel(clip_text_config("quick_gelu"))
    perturb_(te, seed + 6)
    sparse_vocab_(te)
    sched = make_scheduler(arch)
    comps = dict(
        unet=unet.to(dtype).eval(),
        vae=vae.to(dtype).eval(),
        text_encoder=te.to(dtype).eval(),
        scheduler=sched,
    )
    if arch == "sdxl":
        torch.manual_seed(seed + 7)
        te2 = CLIPTextModelWithProjection(clip_text_config("gelu", projection_dim=16))
        perturb_(te2, seed + 8)
        sparse_vocab_(te2)
        comps["text_encoder_2"] = te2.to(dtype).eval()
        comps["tokenizer"] = make_tokenizer("<|endoftext|>")
        comps["tokenizer_2"] = make_tokenizer("!")
        pipe = StableDiffusionXLPipeline(
            **comps, image_encoder=None, feature_extractor=None, force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
    else:
        comps["tokenizer"] = make_tokenizer("<|endoftext|>" if arch == "sd1" else "!")
        pipe = StableDiffusionPipeline(
            **comps, safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False
        )
    if d.exists():
        shutil.rmtree(d)
    pipe.save_pretrained(str(d), safe_serialization=True)
    gitify_tokenizer(d / "tokenizer", "<|endoftext|>" if arch in ("sd1", "sdxl") else "!")
    legacy_clip_file(d / "text_encoder")
    if arch == "sdxl":
        gitify_tokenizer(d / "tokenizer_2", "!")
        legacy_clip_file(d / "text_encoder_2")


def legacy_clip_file(sub: Path) -> None:
    """transformers >= 5.6 saves CLIPTextModel without the `text_model.` prefix; every real SD repo on the hub
    (and transformers itself, on load) uses `text_model.*`. Rewrite the file with the hub layout, and put the
    legacy `torch_dtype` key next to transformers 5's `dtype` in config.json."""
    f = sub / "model.safetensors"
    sd = load_file(str(f))
    out = {}
    for k, v in sd.items():
        nk = k if (k.startswith("text_model.") or k.startswith("text_projection.")) else "text_model." + k
        out[nk] = v
    save_file({k: out[k] for k in sorted(out)}, str(f), metadata={"format": "pt"})
    cfg_path = sub / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load_pipeline_f32(arch: str, d: Path):
    kw = dict(torch_dtype=F32, local_files_only=True)
    if arch == "sdxl":
        pipe = StableDiffusionXLPipeline.from_pretrained(str(d), add_watermarker=False, **kw)
        assert pipe.watermark is None
    else:
        pipe = StableDiffusionPipeline.from_pretrained(str(d), **kw)
    for name, comp in pipe.components.items():
        if isinstance(comp, torch.nn.Module):
            assert_all_f32(comp, f"{arch}/{name}")
            comp.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_stored_dtype(arch: str, d: Path) -> None:
    subs = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if arch == "sdxl" else [])
    for s in subs:
        for k, v in load_component(d, s).items():
            if v.is_floating_point():
                assert v.dtype == STORE_DTYPE[arch], (arch, s, k, v.dtype)


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------


def synthetic_image(seed: int) -> torch.Tensor:
    """A deterministic 64x64 RGB picture in [0,1]: a gradient, a disc and a little noise."""
    y, x = torch.meshgrid(torch.linspace(0, 1, HW), torch.linspace(0, 1, HW), indexing="ij")
    r = 0.2 + 0.6 * x
    g_ = 0.3 + 0.4 * y
    b = 0.5 - 0.3 * x * y
    disc = (((x - 0.6) ** 2 + (y - 0.4) ** 2) < 0.06).float()
    img = torch.stack([r * (1 - disc) + 0.9 * disc, g_ * (1 - disc) + 0.1 * disc, b * (1 - disc) + 0.2 * disc])
    img = img + 0.05 * torch.randn(img.shape, generator=gen(seed))
    return img.clamp(0, 1)[None].contiguous()


def encode_refs(arch: str, pipe, R: dict) -> dict:
    tok = pipe.tokenizer
    R["prompt_ids"] = tokenize(tok, PROMPT)
    R["neg_ids"] = tokenize(tok, NEG)
    o = pipe.text_encoder(R["prompt_ids"], output_hidden_states=True)
    R["te1_last_hidden"] = to_f32(o.last_hidden_state)
    R["te1_pooled"] = to_f32(o.pooler_output)
    info = {}
    if arch == "sdxl":
        R["prompt_ids_2"] = tokenize(pipe.tokenizer_2, PROMPT)
        R["neg_ids_2"] = tokenize(pipe.tokenizer_2, NEG)
        o2 = pipe.text_encoder_2(R["prompt_ids_2"], output_hidden_states=True)
        R["te2_penultimate"] = to_f32(o2.hidden_states[-2])
        R["te2_text_embeds"] = to_f32(o2.text_embeds)
        pe, ne, pp, npool = pipe.encode_prompt(
            prompt=PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
            negative_prompt=NEG,
        )
        R["cond"], R["neg_cond"], R["pooled"], R["neg_pooled"] = map(to_f32, (pe, ne, pp, npool))
        # what SDXL does when negative_prompt is None (the default): zeros (force_zeros_for_empty_prompt)
        _, ne0, _, np0 = pipe.encode_prompt(
            prompt=PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
            negative_prompt=None,
        )
        info["sdxl_neg_none_is_zero"] = bool((ne0 == 0).all() and (np0 == 0).all())
        # self-checks of the conditioning recipe
        o1 = pipe.text_encoder(R["prompt_ids"], output_hidden_states=True)
        manual = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1)
        assert maxdiff(manual, R["cond"]) == 0.0
        assert maxdiff(R["pooled"], R["te2_text_embeds"]) == 0.0
        assert maxdiff(R["neg_cond"], R["cond"]) > 0
    else:
        pe, ne = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=NEG)
        R["cond"], R["neg_cond"] = to_f32(pe), to_f32(ne)
        assert maxdiff(R["cond"], R["te1_last_hidden"]) == 0.0
    return info


def unet_refs(arch: str, pipe, R: dict, seed: int) -> None:
    g = gen(seed + 100)
    C = pipe.unet.config.cross_attention_dim
    R["unet_in_sample"] = torch.randn(2, 4, HW // 8, HW // 8, generator=g)
    R["unet_in_t"] = torch.tensor([999.0, 421.0])
    R["unet_in_ctx"] = torch.randn(2, 77, C, generator=g)
    added = None
    if arch == "sdxl":
        R["unet_in_text_embeds"] = torch.randn(2, 16, generator=g)
        R["unet_in_time_ids"] = torch.tensor(
            [[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [1024.0, 768.0, 16.0, 32.0, 1024.0, 1024.0]]
        )
        added = {"text_embeds": R["unet_in_text_embeds"], "time_ids": R["unet_in_time_ids"]}
    out = pipe.unet(
        R["unet_in_sample"], R["unet_in_t"], encoder_hidden_states=R["unet_in_ctx"], added_cond_kwargs=added
    ).sample
    R["unet_out"] = to_f32(out)


def vae_refs(pipe, R: dict, seed: int) -> None:
    g = gen(seed + 200)
    R["vae_dec_in"] = torch.randn(1, 4, HW // 8, HW // 8, generator=g)
    R["vae_dec_out"] = to_f32(pipe.vae.decode(R["vae_dec_in"]).sample)
    R["vae_enc_in"] = torch.rand(1, 3, HW, HW, generator=g) * 2 - 1
    dist = pipe.vae.encode(R["vae_enc_in"]).latent_dist
    R["vae_enc_mean"] = to_f32(dist.mean)
    R["vae_enc_logvar"] = to_f32(dist.logvar)


def t2i_refs(arch: str, pipe, R: dict, seed: int) -> dict:
    R["t2i_latents"] = torch.randn(1, 4, HW // 8, HW // 8, generator=gen(seed + 300))
    kw = dict(
        prompt=PROMPT, height=HW, width=HW, num_inference_steps=STEPS, guidance_scale=GUIDANCE[arch],
        output_type="pt",
    )
    if arch == "sdxl":
        kw.update(original_size=(HW, HW), target_size=(HW, HW))

    if arch == "sdxl":
        kw["callback_on_step_end_tensor_inputs"] = ["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"]
    else:
        kw["callback_on_step_end_tensor_inputs"] = ["latents", "prompt_embeds"]
    seen = {}

    def run(negative_prompt):
        final = {}

        def cb(p, i, t, cbk):
            if i == STEPS - 1:
                final.update({k: v.detach().clone() for k, v in cbk.items()})
            return cbk

        img = pipe(**kw, negative_prompt=negative_prompt, latents=R["t2i_latents"].clone(), callback_on_step_end=cb)
        seen[negative_prompt] = final
        return to_f32(img.images), to_f32(final["latents"])

    R["t2i_image"], R["t2i_final_latents"] = run(NEG)
    R["t2i_timesteps"] = to_f32(pipe.scheduler.timesteps)
    R["t2i_sigmas"] = to_f32(pipe.scheduler.sigmas)
    R["t2i_init_noise_sigma"] = torch.tensor([float(pipe.scheduler.init_noise_sigma)])
    info = {"init_noise_sigma": float(pipe.scheduler.init_noise_sigma)}
    # what the pipeline fed the UNet (captured in the callback) must be what the refs describe
    fed = seen[NEG]
    assert torch.equal(fed["prompt_embeds"], torch.cat([R["neg_cond"], R["cond"]]))
    if arch == "sdxl":
        assert torch.equal(fed["add_text_embeds"], torch.cat([R["neg_pooled"], R["pooled"]]))
        tid = fed["add_time_ids"]
        assert tid.shape == (2, 6) and torch.equal(tid[0], tid[1]), tid
        R["t2i_time_ids"] = to_f32(tid[1:])
        assert R["t2i_time_ids"].tolist() == [[float(HW), float(HW), 0.0, 0.0, float(HW), float(HW)]]
        # also the pipeline's default behaviour (negative_prompt=None -> zero negative embeddings)
        R["t2i_negnone_image"], R["t2i_negnone_final_latents"] = run(None)
    # self-check: reproduce the pipeline's last latents with an explicit loop
    lat = manual_t2i(arch, pipe, R)
    d = maxdiff(lat, R["t2i_final_latents"])
    assert d < 1e-5, d
    info["t2i_manual_loop_maxdiff"] = d
    return info


def added_kwargs(arch: str, R: dict, neg_pooled=None, neg_cond=None):
    if arch != "sdxl":
        return None
    tid = torch.tensor([[float(HW), float(HW), 0.0, 0.0, float(HW), float(HW)]])
    return {
        "text_embeds": torch.cat([R["neg_pooled"] if neg_pooled is None else neg_pooled, R["pooled"]]),
        "time_ids": torch.cat([tid, tid]),
    }


def manual_t2i(arch: str, pipe, R: dict) -> torch.Tensor:
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sched.set_timesteps(STEPS, device="cpu")
    latents = R["t2i_latents"] * sched.init_noise_sigma
    ctx = torch.cat([R["neg_cond"], R["cond"]])
    added = added_kwargs(arch, R)
    for t in sched.timesteps:
        x = sched.scale_model_input(torch.cat([latents] * 2), t)
        eps = pipe.unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
        u, c = eps.chunk(2)
        eps = u + GUIDANCE[arch] * (c - u)
        latents = sched.step(eps, t, latents).prev_sample
    return latents


def i2i_refs(arch: str, pipe, R: dict, seed: int) -> dict:
    """Mirror of StableDiffusion(XL)Img2ImgPipeline, but with latent_dist.mode() and a given noise."""
    R["i2i_image"] = synthetic_image(seed + 400)
    noise_seed = seed + 401
    R["i2i_noise"] = torch.randn(1, 4, HW // 8, HW // 8, generator=gen(noise_seed))
    sf = pipe.vae.config.scaling_factor
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)

    image = pipe.image_processor.preprocess(R["i2i_image"])  # [0,1] -> [-1,1]
    sched.set_timesteps(STEPS, device="cpu")
    init_timestep = min(int(STEPS * STRENGTH), STEPS)
    t_start = max(STEPS - init_timestep, 0)
    timesteps = sched.timesteps[t_start * sched.order:]
    sched.set_begin_index(t_start * sched.order)
    latent_timestep = timesteps[:1]
    init_latents = pipe.vae.encode(image).latent_dist.mode() * sf
    latents = sched.add_noise(init_latents, R["i2i_noise"], latent_timestep)
    R["i2i_noised_latents"] = to_f32(latents)
    ctx = torch.cat([R["neg_cond"], R["cond"]])
    added = added_kwargs(arch, R)
    for t in timesteps:
        x = sched.scale_model_input(torch.cat([latents] * 2), t)
        eps = pipe.unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
        u, c = eps.chunk(2)
        eps = u + GUIDANCE[arch] * (c - u)
        latents = sched.step(eps, t, latents).prev_sample
    img = pipe.vae.decode(latents / sf).sample
    R["i2i_image_out"] = to_f32((img / 2 + 0.5).clamp(0, 1))
    R["i2i_timesteps"] = to_f32(timesteps)
    R["i2i_init_latents"] = to_f32(init_latents)

    # cross-check against the real img2img pipeline: feed it the (already scaled) mode latents as a
    # 4-channel "image" and a generator whose first draw is exactly i2i_noise.
    if arch == "sdxl":
        ip = StableDiffusionXLImg2ImgPipeline.from_pipe(pipe, add_watermarker=False)
        extra = dict(original_size=(HW, HW), target_size=(HW, HW))
    else:
        ip = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
        extra = {}
    ip.set_progress_bar_config(disable=True)
    out = ip(
        prompt=PROMPT, negative_prompt=NEG, image=init_latents, strength=STRENGTH, num_inference_steps=STEPS,
        guidance_scale=GUIDANCE[arch], generator=gen(noise_seed), output_type="pt", **extra,
    ).images
    d = maxdiff(out, R["i2i_image_out"])
    assert d < 1e-5, f"{arch}: img2img pipeline cross-check failed: {d}"
    return {"i2i_pipeline_crosscheck_maxdiff": d, "i2i_t_start": t_start}


def roundtrip_single_file(arch: str, d: Path, ckpt: Path, pipe) -> str:
    cls = StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline
    kw = dict(config=str(d), torch_dtype=F32, local_files_only=True)
    if arch == "sdxl":
        kw["add_watermarker"] = False
    else:
        kw.update(safety_checker=None, requires_safety_checker=False)
    try:
        sf = cls.from_single_file(str(ckpt), **kw)
    except Exception as e:  # noqa: BLE001
        return f"from_single_file failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    msgs = []
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a = getattr(pipe, name, None)
        b = getattr(sf, name, None)
        if a is None:
            continue
        sa, sb = a.state_dict(), b.state_dict()
        if arch == "sdxl" and name == "text_encoder_2":
            # diffusers tells the two SDXL text encoders apart by width (768 vs 1280); both are 16 wide here,
            # so from_single_file fills text_encoder_2 from embedders.0. Check our OpenCLIP keys with
            # diffusers' own converter instead.
            from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

            sb = convert_open_clip_checkpoint(a, load_file(str(ckpt)), prefix="conditioner.embedders.1.model.")
            name += " (via convert_open_clip_checkpoint)"
        keys = [k for k in sa if sa[k].is_floating_point()]
        missing = [k for k in keys if k not in sb or sb[k].is_meta]
        worst = max((maxdiff(sa[k], sb[k]) for k in keys if k not in missing), default=0.0)
        msgs.append(f"{name}: {len(keys)} tensors, missing {len(missing)}, max|diff| {worst:g}")
        if missing or worst != 0.0:
            msgs[-1] += " MISMATCH"
    return "; ".join(msgs)


def own_roundtrip(arch: str, d: Path, ck: dict) -> str:
    """Inverse check of our own mapping: every diffusers tensor appears exactly once in the single file."""
    subs = {"unet": "model.diffusion_model.", "vae": "first_stage_model."}
    n = 0
    vals = {k: v for k, v in ck.items()}
    unet_cfg = json.loads((d / "unet" / "config.json").read_text())
    for k, v in load_component(d, "unet").items():
        w = vals[subs["unet"] + unet_key_to_ldm(k, unet_cfg)]
        assert torch.equal(w, v), k
        n += 1
    for k, v in load_component(d, "vae").items():
        nk, conv = vae_key_to_ldm(k, 4)
        w = vals[subs["vae"] + nk]
        assert torch.equal(w.reshape(v.shape), v), k
        n += 1
    return f"{n} unet+vae tensors verified, {len(ck)} keys in file"


# --------------------------------------------------------------------------------------------
# taesd
# --------------------------------------------------------------------------------------------


def build_taesd() -> dict:
    seed = ARCH_SEED["taesd"]
    d = TINY / "taesd"
    torch.manual_seed(seed + 1)
    m = AutoencoderTiny(**TAESD_CONFIG)
    perturb_(m, seed + 2)
    if d.exists():
        shutil.rmtree(d)
    m.save_pretrained(str(d), safe_serialization=True)
    m = AutoencoderTiny.from_pretrained(str(d), torch_dtype=F32).eval()
    assert_all_f32(m, "taesd")
    g = gen(seed + 100)
    R = {}
    R["dec_in"] = torch.randn(1, 4, HW // 8, HW // 8, generator=g)
    R["dec_out"] = to_f32(m.decode(R["dec_in"]).sample)
    R["enc_in"] = torch.rand(1, 3, HW, HW, generator=g) * 2 - 1
    R["enc_out"] = to_f32(m.encode(R["enc_in"]).latents)
    return R


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def build_inpaint() -> dict:
    """A 9-channel inpainting UNet beside sd1's other parts (symlinked), and diffusers'
    StableDiffusionInpaintPipeline run on given noise, latent mask and masked-image latents."""
    from diffusers import StableDiffusionInpaintPipeline

    d = TINY / "sd1-inpaint"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    seed = ARCH_SEED["sd1"] + 500
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(unet_config("sd1"), in_channels=9))
    perturb_(unet, seed + 1)
    unet.to(torch.float16).save_pretrained(str(d / "unet"), safe_serialization=True)
    for sub in ("text_encoder", "tokenizer", "vae", "scheduler"):
        (d / sub).symlink_to(Path("..") / "sd1" / sub, target_is_directory=True)
    index = json.loads((TINY / "sd1" / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionInpaintPipeline"
    (d / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(d), torch_dtype=F32, local_files_only=True,
                                                          safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert_all_f32(pipe.unet, "sd1-inpaint/unet")
    R: dict[str, torch.Tensor] = {}
    h = HW // 8
    R["inpaint_latents"] = torch.randn(1, 4, h, h, generator=gen(seed + 10))
    R["inpaint_masked_latents"] = torch.randn(1, 4, h, h, generator=gen(seed + 11))
    mask = torch.zeros(1, 1, HW, HW)
    mask[..., HW // 2:] = 1.0  # repaint the right half: aligned to latent cells
    R["inpaint_mask_latent"] = mask[..., ::8, ::8].contiguous()
    final = {}

    def cb(p, i, t, cbk):
        final.update({k: v.detach().clone() for k, v in cbk.items()})
        return cbk

    img = pipe(prompt=PROMPT, negative_prompt=NEG, image=torch.zeros(1, 3, HW, HW), mask_image=mask,
               masked_image_latents=R["inpaint_masked_latents"].clone(), latents=R["inpaint_latents"].clone(),
               height=HW, width=HW, num_inference_steps=STEPS, guidance_scale=GUIDANCE["sd1"], strength=1.0,
               output_type="pt", callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["latents"])
    R["inpaint_final_latents"] = to_f32(final["latents"])
    R["inpaint_image"] = to_f32(img.images)
    return R


def sd1_parts_folder(name: str, in_channels: int, seed: int, class_name: str) -> Path:
    """A folder beside sd1 whose UNet (fp16, random) has `in_channels` inputs and whose other
    components are symlinks to sd1's."""
    d = TINY / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(unet_config("sd1"), in_channels=in_channels))
    perturb_(unet, seed + 1)
    unet.to(torch.float16).save_pretrained(str(d / "unet"), safe_serialization=True)
    for sub in ("text_encoder", "tokenizer", "vae", "scheduler"):
        (d / sub).symlink_to(Path("..") / "sd1" / sub, target_is_directory=True)
    index = json.loads((TINY / "sd1" / "model_index.json").read_text())
    index["_class_name"] = class_name
    (d / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return d


P2P_PROMPT = "turn the star into a green square"
P2P_IMAGE_GUIDANCE = 1.5


def build_pix2pix() -> dict:
    """An 8-channel InstructPix2Pix UNet beside sd1's other parts, and diffusers'
    StableDiffusionInstructPix2PixPipeline run on an 8-bit image and given noise."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    seed = ARCH_SEED["sd1"] + 600
    d = sd1_parts_folder("sd1-pix2pix", 8, seed, "StableDiffusionInstructPix2PixPipeline")
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        str(d), torch_dtype=F32, local_files_only=True, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert_all_f32(pipe.unet, "sd1-pix2pix/unet")
    R: dict[str, torch.Tensor] = {}
    h = HW // 8
    # 8-bit levels, so that the same picture can be handed to the engine as an RGB image.
    R["p2p_input"] = torch.randint(0, 256, (1, 3, HW, HW), generator=gen(seed + 10)).float() / 255.0
    R["p2p_latents"] = torch.randn(1, 4, h, h, generator=gen(seed + 11))
    R["p2p_image_latents"] = to_f32(pipe.vae.encode(R["p2p_input"] * 2 - 1).latent_dist.mode())
    final = {}

    def cb(p, i, t, cbk):
        final.update({k: v.detach().clone() for k, v in cbk.items()})
        return cbk

    for name, ig in (("", P2P_IMAGE_GUIDANCE), ("_ig0", 0.5)):
        img = pipe(prompt=P2P_PROMPT, image=R["p2p_input"].clone(), latents=R["p2p_latents"].clone(),
                   num_inference_steps=STEPS, guidance_scale=GUIDANCE["sd1"], image_guidance_scale=ig,
                   output_type="pt", callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["latents"])
        R[f"p2p{name}_final_latents"] = to_f32(final["latents"])
        R[f"p2p{name}_image"] = to_f32(img.images)
    return R


DIFFEDIT_SOURCE = PROMPT
DIFFEDIT_TARGET = "a green square above a blue circle, 35mm photo"
DIFFEDIT_MAPS = 3
DIFFEDIT_STEPS = 10
DIFFEDIT_STRENGTH = 0.5
DIFFEDIT_RATIO = 3.0


def build_diffedit() -> dict:
    """DiffEdit's mask (StableDiffusionDiffEditPipeline.generate_mask) on sd1's tiny model with a
    DDIM scheduler, given scaled image latents (the pipeline takes 4-channel input as latents)
    and noise drawn from a seeded generator; the script's own mirror gives the continuous map
    and must binarise to the pipeline's mask."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler, StableDiffusionDiffEditPipeline

    seed = ARCH_SEED["sd1"] + 700
    base = StableDiffusionPipeline.from_pretrained(str(TINY / "sd1"), torch_dtype=F32, local_files_only=True,
                                                   safety_checker=None, requires_safety_checker=False)
    sched = DDIMScheduler.from_config(base.scheduler.config)
    pipe = StableDiffusionDiffEditPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, inverse_scheduler=DDIMInverseScheduler.from_config(sched.config),
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    R: dict[str, torch.Tensor] = {}
    h = HW // 8
    R["diffedit_image_latents"] = torch.randn(1, 4, h, h, generator=gen(seed + 10))
    mask = pipe.generate_mask(image=R["diffedit_image_latents"].clone(), source_prompt=DIFFEDIT_SOURCE,
                              target_prompt=DIFFEDIT_TARGET, source_negative_prompt=NEG, target_negative_prompt=NEG,
                              num_maps_per_mask=DIFFEDIT_MAPS, mask_encode_strength=DIFFEDIT_STRENGTH,
                              mask_thresholding_ratio=DIFFEDIT_RATIO, num_inference_steps=DIFFEDIT_STEPS,
                              guidance_scale=GUIDANCE["sd1"], generator=gen(seed + 11), output_type="np")
    R["diffedit_mask"] = torch.from_numpy(mask).float()
    # The mirror: the same noise (the pipeline's first draw from the generator), one UNet batch.
    noise = torch.randn(DIFFEDIT_MAPS, 4, h, h, generator=gen(seed + 11))
    R["diffedit_noise"] = noise
    sched.set_timesteps(DIFFEDIT_STEPS)
    t_start = DIFFEDIT_STEPS - min(int(DIFFEDIT_STEPS * DIFFEDIT_STRENGTH), DIFFEDIT_STEPS)
    t = sched.timesteps[t_start]
    R["diffedit_timestep"] = torch.tensor([int(t)])
    noisy = sched.add_noise(R["diffedit_image_latents"].repeat(DIFFEDIT_MAPS, 1, 1, 1), noise, t)
    # encode_prompt returns (prompt, negative).  generate_mask unpacks it the other way round, so
    # its "guided" branches are p + g(n - p) rather than n + g(p - n); with the same negative
    # prompt on both sides its |target - source| is (g - 1)/g of the paper's, and the mask, which
    # is normalised by the map's mean, is the same.  The map recorded here is the paper's.
    pos_s, neg_s = pipe.encode_prompt(DIFFEDIT_SOURCE, "cpu", 1, True, NEG)
    pos_t, neg_t = pipe.encode_prompt(DIFFEDIT_TARGET, "cpu", 1, True, NEG)
    preds = []
    for cond in (neg_s, pos_s, neg_t, pos_t):
        preds.append(pipe.unet(sched.scale_model_input(noisy, t), t,
                               encoder_hidden_states=cond.repeat(DIFFEDIT_MAPS, 1, 1)).sample)
    g = GUIDANCE["sd1"]
    source = preds[0] + g * (preds[1] - preds[0])
    target = preds[2] + g * (preds[3] - preds[2])
    m = (target - source).abs().mean([0, 1])
    R["diffedit_map"] = to_f32(m)
    swapped = ((preds[3] + g * (preds[2] - preds[3])) - (preds[1] + g * (preds[0] - preds[1]))).abs().mean([0, 1])
    assert torch.allclose(swapped, m * (g - 1) / g, atol=1e-5), "the swapped branches differ by more than the factor"
    clamp = m.mean() * DIFFEDIT_RATIO
    mirror = torch.where(m.clamp(0, clamp) / clamp <= 0.5, 0, 1).float()
    assert torch.equal(mirror, R["diffedit_mask"][0]), "the mirror disagrees with generate_mask"
    return R


# --------------------------------------------------------------------------------------------
# CLIP (vision + text towers with projections): the adherence scorer
# --------------------------------------------------------------------------------------------

CLIP_TEXTS = ["a red star above a blue circle", "a lighthouse at dusk, 35mm photo", "blurry, low quality"]
# (width, height): a landscape and a portrait picture scaled down, and a small one scaled up, so the
# shortest-edge resize, the antialiased bicubic and the centre crop all do something.
CLIP_IMAGES = [(80, 56), (40, 72), (24, 20)]
CLIP_SIDE = 32


def clip_model_config():
    from transformers import CLIPConfig

    text = dict(
        vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0, dropout=0.0,
        # openai/clip-vit-*'s legacy ids: eos_token_id 2 makes transformers pool at argmax(input_ids)
        bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=24,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_channels=3,
        image_size=CLIP_SIDE, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
        dropout=0.0, projection_dim=24,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=24, logit_scale_init_value=2.6592)


def clip_image(seed: int, w: int, h: int) -> torch.Tensor:
    """A deterministic 8-bit RGB picture [h, w, 3]: stripes, a disc and noise (detail for the resampler)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    disc = (((x - 0.4) ** 2 + (y - 0.55) ** 2) < 0.08).float()
    r = 0.5 + 0.4 * torch.sin(2 * math.pi * (4 * x + y))
    g_ = 0.3 + 0.5 * y * (1 - disc) + 0.6 * disc
    b = 0.5 + 0.45 * torch.sign(torch.sin(2 * math.pi * 5 * y))
    img = torch.stack([r, g_, b], dim=-1) + 0.08 * torch.randn(h, w, 3, generator=gen(seed))
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def save_clip_folder(model, d: Path) -> None:
    from transformers import CLIPImageProcessorPil

    if d.exists():
        shutil.rmtree(d)
    model.save_pretrained(str(d), safe_serialization=True)
    keys = load_file(str(d / "model.safetensors")).keys()
    assert all(k.split(".")[0] in ("text_model", "vision_model", "text_projection", "visual_projection", "logit_scale")
               for k in keys), sorted(keys)[:5]
    size = {"shortest_edge": CLIP_SIDE}
    crop = {"height": CLIP_SIDE, "width": CLIP_SIDE}
    CLIPImageProcessorPil(size=size, crop_size=crop).save_pretrained(str(d))
    make_tokenizer("<|endoftext|>").save_pretrained(str(d))
    gitify_tokenizer(d, "<|endoftext|>")


def build_clip() -> tuple[dict, dict]:
    """A tiny CLIPModel folder laid out like openai/clip-vit-large-patch14 (config.json, model.safetensors,
    preprocessor_config.json, tokenizer files) and its outputs on three pictures and three texts."""
    from transformers import CLIPImageProcessor, CLIPImageProcessorPil, CLIPModel
    from PIL import Image

    seed = ARCH_SEED["clip"]
    d = TINY / "clip"
    torch.manual_seed(seed + 1)
    model = CLIPModel(clip_model_config())
    perturb_(model, seed + 2)
    tok = make_tokenizer("<|endoftext|>")
    keep = set(range(512)) | {49406, 49407}
    for text in CLIP_TEXTS:
        keep.update(tok(text).input_ids)
    emb = model.text_model.embeddings.token_embedding.weight
    with torch.no_grad():
        emb[[i for i in range(emb.shape[0]) if i not in keep]] = 0.0
    save_clip_folder(model.eval(), d)

    model = CLIPModel.from_pretrained(str(d), torch_dtype=F32).eval()
    assert_all_f32(model, "clip")
    tok = CLIPTokenizer.from_pretrained(str(d))
    R, info = {}, {}
    pils = []
    for i, (w, h) in enumerate(CLIP_IMAGES):
        img = clip_image(seed + 10 + i, w, h)
        R[f"image_{i}"] = img.to(torch.int64)
        pils.append(Image.fromarray(img.numpy(), "RGB"))
    R["pixel_values"] = CLIPImageProcessorPil.from_pretrained(str(d))(images=pils, return_tensors="pt").pixel_values
    R["pixel_values_torchvision"] = CLIPImageProcessor.from_pretrained(str(d))(images=pils, return_tensors="pt").pixel_values
    R["input_ids"] = torch.cat([tokenize(tok, t) for t in CLIP_TEXTS])
    out = model(input_ids=R["input_ids"], pixel_values=R["pixel_values"])
    vis = model.vision_model(pixel_values=R["pixel_values"])
    R["vision_last_hidden"] = to_f32(vis.last_hidden_state)
    R["vision_pooled"] = to_f32(vis.pooler_output)
    R["image_embeds"] = to_f32(model.get_image_features(pixel_values=R["pixel_values"]).pooler_output)
    R["text_embeds"] = to_f32(model.get_text_features(input_ids=R["input_ids"]).pooler_output)
    R["logits_per_image"] = to_f32(out.logits_per_image)
    R["logit_scale"] = to_f32(model.logit_scale)
    R["cosine"] = to_f32(out.image_embeds @ out.text_embeds.T)
    info.update(clip_self_checks(model, tok, R))
    return R, info


def clip_self_checks(model, tok, R: dict) -> dict:
    info = {}
    # padding to 77 changes nothing: the causal mask keeps the pad tokens after the pooled end-of-text token
    short = [torch.tensor([tok(t).input_ids]) for t in CLIP_TEXTS]
    unpadded = torch.cat([model.get_text_features(input_ids=s).pooler_output for s in short])
    info["text_embeds_unpadded_vs_padded_maxdiff"] = maxdiff(unpadded, R["text_embeds"])
    assert info["text_embeds_unpadded_vs_padded_maxdiff"] < 1e-5
    cos = torch.nn.functional.normalize(R["image_embeds"], dim=-1) @ torch.nn.functional.normalize(R["text_embeds"], dim=-1).T
    assert maxdiff(cos, R["cosine"]) < 1e-6
    assert maxdiff(cos * R["logit_scale"].exp(), R["logits_per_image"]) < 1e-4
    info["pixel_values_pil_vs_torchvision_maxdiff"] = maxdiff(R["pixel_values"], R["pixel_values_torchvision"])
    tv = model(input_ids=R["input_ids"], pixel_values=R["pixel_values_torchvision"])
    info["cosine_pil_vs_torchvision_maxdiff"] = maxdiff(tv.image_embeds @ tv.text_embeds.T, R["cosine"])
    return info


# What crates/engine/tests/parity_clip.rs measured for plantain against the committed refs (copied into the README).
CLIP_PARITY = {
    "pixel_values": "0 (bit-identical floats)",
    "vision": "2.0e-6 / 4.8e-7",
    "image_embeds": "7.2e-7",
    "text_embeds": "6.0e-7",
    "cosine": "1.0e-7",
    "logits": "1.7e-6",
    "catmull_rom_levels": 6,
}


def clip_readme() -> list[str]:
    """The README section for the CLIP scorer fixture. The plantain figures are measured by
    crates/engine/tests/parity_clip.rs (run it with --nocapture to see them) and copied here."""
    w = ", ".join(f"{a}x{b}" for a, b in CLIP_IMAGES)
    return [
        "clip: `fixtures/tiny/clip/` is a transformers `CLIPModel` laid out like a local copy of",
        "openai/clip-vit-large-patch14 (`config.json`, `model.safetensors` with `text_model.*`, `vision_model.*`,",
        "`text_projection.weight`, `visual_projection.weight`, `logit_scale`; `preprocessor_config.json`; tokenizer files,",
        "`vocab.json`/`merges.txt` symlinked to the assets, padding with `<|endoftext|>`). fp32. Vision: ViT with",
        f"image_size {CLIP_SIDE}, patch 8 (16 patches + class token), hidden 32, 2 layers, 4 heads, mlp 64, quick_gelu. Text:",
        "hidden 16, 2 layers, 2 heads, mlp 32, quick_gelu, the openai configs' legacy ids (bos 0, eos 2, pad 1: transformers",
        "pools at argmax(input_ids)). projection_dim 24, logit_scale 2.6592 (exp = 14.29). Only the embedding rows of",
        "the texts' tokens (and ids < 512) are non-zero.",
        "",
        f"Inputs: three 8-bit pictures `image_0..2` ([H, W, 3] int64) of {w} (W x H): two shrunk, one enlarged",
        f"by the shortest-side resize to {CLIP_SIDE}, then centre-cropped; texts {CLIP_TEXTS!r} (`input_ids`,",
        "padded to 77). `pixel_values` from `CLIPImageProcessorPil` (Pillow), `pixel_values_torchvision` from",
        "`CLIPImageProcessor` (transformers 5's default, torchvision backend): identical here. `image_embeds` /",
        "`text_embeds` are `get_image_features` / `get_text_features` (projected, NOT normalised); `cosine` is",
        "normalised image x text; `logits_per_image` = exp(logit_scale) * cosine (CLIPModel.forward).",
        "",
        "plantain against these refs (`cargo test -p plantain-engine --test parity_clip -- --nocapture`), max abs diff:",
        "",
        "| what | max abs diff |",
        "|---|---|",
        "| pixel_values, 8-bit levels after resize + crop (Rust Pillow-bicubic vs PIL) | 0 (bit-exact) |",
        f"| pixel_values (PIL and torchvision backends) | {CLIP_PARITY['pixel_values']} |",
        f"| vision last_hidden_state / pooled | {CLIP_PARITY['vision']} |",
        f"| image_embeds (from the reference pixel_values) | {CLIP_PARITY['image_embeds']} |",
        f"| text_embeds (token ids equal) | {CLIP_PARITY['text_embeds']} |",
        f"| cosine, end to end from the pictures and texts | {CLIP_PARITY['cosine']} |",
        f"| logits_per_image | {CLIP_PARITY['logits']} |",
        "",
        "The Rust resize is Pillow's resampling reproduced (bicubic a=-0.5, support scaled when shrinking, 22-bit",
        "fixed-point weights, horizontal pass rounded to 8 bits, then vertical), so it does not differ from PIL on",
        "these pictures; the image crate's float Catmull-Rom instead moves levels by up to "
        f"{CLIP_PARITY['catmull_rom_levels']} (the test measures it).",
        "",
    ]


# --------------------------------------------------------------------------------------------
# FLUX.2 [klein]: tiny Qwen3 text encoder, Flux2Transformer2DModel, AutoencoderKLFlux2
# --------------------------------------------------------------------------------------------

KLEIN_SEQ = 512  # the pipeline's max_sequence_length (the real prompt length)
KLEIN_LAYERS = (9, 18, 27)  # hidden_states taken by Flux2KleinPipeline._get_qwen3_prompt_embeds
KLEIN_VOCAB = 1024
KLEIN_PAD = 3  # stands in for <|endoftext|> (151643 in the real tokenizer)
KLEIN_SCHEDULER = {  # FLUX.2's scheduler_config.json
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256, "base_shift": 0.5, "invert_sigmas": False, "max_image_seq_len": 4096,
    "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0, "shift_terminal": None,
    "stochastic_sampling": False, "time_shift_type": "exponential", "use_beta_sigmas": False,
    "use_dynamic_shifting": True, "use_exponential_sigmas": False, "use_karras_sigmas": False,
}


# Qwen3's chat template, reduced to what one user message with a generation prompt renders (the
# tail is verbatim from Qwen3's tokenizer_config.json).
KLEIN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)
KLEIN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
KLEIN_ADDED = ["<think>", "</think>"]
KLEIN_TEXTS = [PROMPT, "turn the star into a green square", "a lighthouse at dusk, 35mm photo", "Ünïcødé, 東京 & emoji 🌿!"]


def make_klein_tokenizer(d: Path) -> None:
    """A tiny byte-level BPE laid out like Qwen3's tokenizer.json (NFC, Qwen2's split regex, byte-level,
    the chat special tokens), trained on a few texts so that its ids stay below the tiny vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+")
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=KLEIN_SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(KLEIN_TEXTS * 4, trainer)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                              unk_token=None, bos_token=None, model_max_length=131072)
    fast.add_tokens(KLEIN_ADDED, special_tokens=False)
    fast.chat_template = KLEIN_CHAT_TEMPLATE
    fast.save_pretrained(str(d))
    assert max(fast.get_vocab().values()) < KLEIN_VOCAB


def klein_tokenize(tok, prompt: str):
    """Flux2KleinPipeline._get_qwen3_prompt_embeds's tokenisation."""
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True,
                                   enable_thinking=False)
    out = tok(text, return_tensors="pt", padding="max_length", truncation=True, max_length=KLEIN_SEQ)
    return text, out["input_ids"].to(torch.int64), out["attention_mask"].to(torch.int64)


def klein_qwen3_config():
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=KLEIN_VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=28,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, hidden_act="silu",
        max_position_embeddings=1024, rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=True, attention_bias=False, initializer_range=0.3, pad_token_id=KLEIN_PAD, bos_token_id=None, eos_token_id=2,
    )


def klein_transformer_config() -> dict:
    return dict(
        patch_size=1, in_channels=32, out_channels=None, num_layers=2, num_single_layers=2,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=256,
        mlp_ratio=3.0, axes_dims_rope=(4, 4, 4, 4), rope_theta=2000, eps=1e-6, guidance_embeds=False,
    )


def klein_vae_config() -> dict:
    return dict(
        in_channels=3, out_channels=3, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        latent_channels=8, norm_num_groups=4, sample_size=HW, batch_norm_eps=1e-4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def build_klein_folder(d: Path, seed: int) -> None:
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Qwen3ForCausalLM

    if d.exists():
        shutil.rmtree(d)
    torch.manual_seed(seed + 1)
    te = Qwen3ForCausalLM(klein_qwen3_config()).eval()
    perturb_(te, seed + 2)
    te.to(torch.bfloat16).save_pretrained(str(d / "text_encoder"), safe_serialization=True)
    torch.manual_seed(seed + 3)
    tr = Flux2Transformer2DModel(**klein_transformer_config()).eval()
    perturb_(tr, seed + 4)
    with torch.no_grad():  # q/k are RMS-normed, so sharpen attention through the norm scales instead
        for name, p in tr.named_parameters():
            if any(s in name for s in ("norm_q.", "norm_k.", "norm_added_q.", "norm_added_k.")):
                p.mul_(3.0)
    tr.to(torch.bfloat16).save_pretrained(str(d / "transformer"), safe_serialization=True)
    torch.manual_seed(seed + 5)
    vae = AutoencoderKLFlux2(**klein_vae_config()).eval()
    perturb_(vae, seed + 6)
    g = gen(seed + 7)
    with torch.no_grad():  # batch-norm statistics that are not the identity
        vae.bn.running_mean.copy_(0.3 * torch.randn(vae.bn.running_mean.shape, generator=g))
        vae.bn.running_var.copy_(0.5 + torch.rand(vae.bn.running_var.shape, generator=g))
    vae.save_pretrained(str(d / "vae"), safe_serialization=True)
    make_klein_tokenizer(d / "tokenizer")
    FlowMatchEulerDiscreteScheduler(**{k: v for k, v in KLEIN_SCHEDULER.items() if not k.startswith("_")}).save_pretrained(
        str(d / "scheduler"))
    index = {"_class_name": "Flux2KleinPipeline", "_diffusers_version": diffusers.__version__, "is_distilled": True,
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Qwen3ForCausalLM"],
             "tokenizer": ["transformers", "Qwen2TokenizerFast"], "transformer": ["diffusers", "Flux2Transformer2DModel"],
             "vae": ["diffusers", "AutoencoderKLFlux2"]}
    (d / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def load_klein_pipeline(d: Path):
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3ForCausalLM

    te = Qwen3ForCausalLM.from_pretrained(str(d / "text_encoder"), torch_dtype=F32).eval()
    tr = Flux2Transformer2DModel.from_pretrained(str(d / "transformer"), torch_dtype=F32).eval()
    vae = AutoencoderKLFlux2.from_pretrained(str(d / "vae"), torch_dtype=F32).eval()
    for m, what in ((te, "klein te"), (tr, "klein transformer"), (vae, "klein vae")):
        assert_all_f32(m, what)
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(str(d / "scheduler"))
    return Flux2KleinPipeline(scheduler=sched, vae=vae, text_encoder=te, tokenizer=None, transformer=tr, is_distilled=True)


def klein_ids(seed: int, n_real: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded prompt: `n_real` random token ids, then the pad id (as the tokenizer pads)."""
    ids = torch.full((1, KLEIN_SEQ), KLEIN_PAD, dtype=torch.int64)
    ids[0, :n_real] = torch.randint(4, KLEIN_VOCAB, (n_real,), generator=gen(seed))
    mask = torch.zeros((1, KLEIN_SEQ), dtype=torch.int64)
    mask[0, :n_real] = 1
    return ids, mask


def klein_prompt_embeds(te, ids, mask) -> torch.Tensor:
    """Flux2KleinPipeline._get_qwen3_prompt_embeds after tokenisation (same calls, same stacking)."""
    out = te(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    out = torch.stack([out.hidden_states[k] for k in KLEIN_LAYERS], dim=1)
    b, c, s, h = out.shape
    return out.permute(0, 2, 1, 3).reshape(b, s, c * h)


def klein_picture(seed: int, w: int, h: int):
    from PIL import Image

    img = torch.randint(0, 256, (h // 8, w // 8, 3), generator=gen(seed), dtype=torch.uint8)
    img = img.repeat_interleave(8, 0).repeat_interleave(8, 1)  # blocky, so the tiny VAE sees structure
    return Image.fromarray(img.numpy(), "RGB")


def klein_run(pipe, R: dict, name: str, embeds, latents, images=None) -> None:
    finals = []

    def cb(p, i, t, kw):
        finals.append(kw["latents"].clone())
        return {}

    out = pipe(image=images, prompt_embeds=embeds, height=HW, width=HW, num_inference_steps=STEPS, latents=latents,
               output_type="pt", callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["latents"])
    R[f"{name}_latents"] = to_f32(latents)
    R[f"{name}_final_latents"] = to_f32(finals[-1])
    R[f"{name}_image"] = to_f32(out.images)


def klein_refs_networks(pipe, R: dict, seed: int) -> None:
    tr = pipe.transformer
    ids, mask = klein_ids(seed + 10, 23)
    R["prompt_ids"], R["prompt_mask"] = ids, mask
    R["prompt_embeds"] = to_f32(klein_prompt_embeds(pipe.text_encoder, ids, mask))
    g = gen(seed + 11)
    x = torch.randn((1, 4 * 4 * 2, tr.config.in_channels), generator=g)  # 16 image + 16 reference tokens
    ctx = torch.randn((1, KLEIN_SEQ, tr.config.joint_attention_dim), generator=g)
    t = torch.tensor([0.7312])
    img_ids = torch.cat([pipe._prepare_latent_ids(torch.zeros(1, 1, 4, 4))[0],
                         pipe._prepare_image_ids([torch.zeros(1, 1, 4, 4)])[0]])[None]
    txt_ids = pipe._prepare_text_ids(ctx)
    R["dit_in_hidden"], R["dit_in_ctx"], R["dit_in_t"] = x, ctx, t
    R["dit_img_ids"], R["dit_txt_ids"] = img_ids.to(torch.int64), txt_ids.to(torch.int64)
    R["dit_out"] = to_f32(tr(hidden_states=x, encoder_hidden_states=ctx, timestep=t, img_ids=img_ids, txt_ids=txt_ids,
                             guidance=None, return_dict=False)[0])
    vae = pipe.vae
    R["vae_enc_in"] = synthetic_image(seed + 12) * 2 - 1
    post = vae.encode(R["vae_enc_in"]).latent_dist
    R["vae_enc_mean"], R["vae_enc_logvar"] = to_f32(post.mean), to_f32(post.logvar)
    R["vae_dec_in"] = torch.randn((1, vae.config.latent_channels, HW // 8, HW // 8), generator=gen(seed + 13))
    R["vae_dec_out"] = to_f32(vae.decode(R["vae_dec_in"]).sample)
    R["vae_enc_tokens"] = to_f32(pipe._pack_latents(pipe._encode_vae_image(R["vae_enc_in"], None)))


def build_klein() -> tuple[dict, dict]:
    seed = ARCH_SEED["klein"]
    d = TINY / "flux2-klein"
    build_klein_folder(d, seed)
    pipe = load_klein_pipeline(d)
    R: dict[str, torch.Tensor] = {}
    info: dict = {}
    klein_refs_networks(pipe, R, seed)
    from transformers import Qwen2TokenizerFast

    tok = Qwen2TokenizerFast.from_pretrained(str(d / "tokenizer"))
    for i, text in enumerate(KLEIN_TEXTS):
        chat, R[f"text{i}_ids"], R[f"text{i}_mask"] = klein_tokenize(tok, text)
        info[f"text{i}"] = repr(chat)
    long = " ".join([PROMPT] * 60)  # longer than 512 tokens: truncated
    _, R["text_long_ids"], R["text_long_mask"] = klein_tokenize(tok, long)
    info["text_long_real_tokens"] = int(R["text_long_mask"].sum())
    pipe.tokenizer = tok
    R["text0_embeds"] = to_f32(pipe.encode_prompt(PROMPT)[0])
    embeds = R["prompt_embeds"]
    c = pipe.transformer.config.in_channels
    noise = lambda s: torch.randn((1, c, HW // 16, HW // 16), generator=gen(s))  # noqa: E731
    klein_run(pipe, R, "t2i", embeds, noise(seed + 20))
    pics = [klein_picture(seed + 30, HW, HW), klein_picture(seed + 31, 80, 64)]
    for i, p in enumerate(pics):
        R[f"edit_ref{i}"] = torch.from_numpy(__import__("numpy").array(p)).to(torch.int64)
        pre = pipe.image_processor.preprocess(p, height=p.size[1], width=p.size[0], resize_mode="crop")
        info[f"ref{i}_preprocess_is_levels_over_127.5_minus_1_maxdiff"] = maxdiff(
            pre, R[f"edit_ref{i}"].permute(2, 0, 1)[None].float() / 127.5 - 1)
    klein_run(pipe, R, "edit1", embeds, noise(seed + 21), images=[pics[0]])
    klein_run(pipe, R, "edit2", embeds, noise(seed + 22), images=pics)
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    pipe.scheduler.set_timesteps(sigmas=list(__import__("numpy").linspace(1.0, 1 / STEPS, STEPS)),
                                 mu=compute_empirical_mu((HW // 16) ** 2, STEPS))
    R["t2i_sigmas"] = to_f32(pipe.scheduler.sigmas)
    R["t2i_timesteps"] = to_f32(pipe.scheduler.timesteps)
    info["mu"] = compute_empirical_mu((HW // 16) ** 2, STEPS)
    return R, info


def save_ref(name: str, R: dict) -> None:
    out = {}
    for k in sorted(R):
        v = R[k].detach().cpu()
        v = v.to(torch.int64) if not v.is_floating_point() else v.to(torch.float32)
        out[k] = v.contiguous()
    save_file(out, str(REF / f"{name}.safetensors"))


def describe(R: dict) -> list[str]:
    return [f"| `{k}` | {list(R[k].shape)} | {str(R[k].dtype).replace('torch.', '')} |" for k in sorted(R)]


def du(path: Path) -> int:
    tot = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            tot += p.stat().st_size
    return tot


def klein_readme() -> list[str]:
    """The README section for the FLUX.2 [klein] fixture. The plantain figures are measured by
    crates/engine/tests/parity_klein.rs (run it with --nocapture to see them) and copied here."""
    return [
        "klein: `fixtures/tiny/flux2-klein/` is a FLUX.2 [klein] diffusers folder (`Flux2KleinPipeline`, is_distilled):",
        "`text_encoder` Qwen3ForCausalLM (bf16; hidden 16, 28 layers, 4 heads / 2 KV heads of 8, mlp 32, rope_theta 1e6,",
        f"vocab {KLEIN_VOCAB}, initializer_range 0.3 so hidden states are O(1-30)), `transformer` Flux2Transformer2DModel (bf16;",
        "in_channels 32, 2 double + 2 single blocks, 2 heads of 16, axes_dims_rope (4,4,4,4), joint_attention_dim 48 =",
        "3 x 16, no guidance embedder; norm_q/k scales x3 after the usual perturbation, since q/k are RMS-normed),",
        "`vae` AutoencoderKLFlux2 (fp32; (8,8,16,16), 1 layer/block, groups 4, latent 8 -> 32 patchified channels,",
        "random batch-norm running mean/var), FLUX.2's `scheduler_config.json` (FlowMatchEuler, dynamic exponential",
        "shift), and `tokenizer/`: a tiny byte-level BPE (400 merges trained on the test texts) laid out like Qwen3's",
        "(NFC, Qwen2's split regex, `<|endoftext|>` pad, `<|im_start|>`/`<|im_end|>` special, `<think>`/`</think>` added)",
        "with Qwen3's chat template reduced to one user message (its generation-prompt tail verbatim).",
        "",
        f"Refs: `prompt_ids`/`prompt_mask` are random ids right-padded to {KLEIN_SEQ} with id {KLEIN_PAD};",
        "`prompt_embeds` is `_get_qwen3_prompt_embeds` after tokenisation (hidden_states 9/18/27 concatenated per",
        "token). `text{i}_ids/_mask` are the pipeline's tokenisation of the chat-formatted texts, `text_long_*` of a",
        "prompt truncated at 512, `text0_embeds` = `encode_prompt(PROMPT)` end to end. `dit_*`: one transformer call",
        "on 16 image + 16 reference tokens (ids from the pipeline's helpers, reference T = 10), t = 0.7312.",
        "`vae_enc_tokens` = `_pack_latents(_encode_vae_image(vae_enc_in))` (mode, patchify, batch-norm). `t2i_*`,",
        "`edit1_*`, `edit2_*`: the real pipeline, 64x64, 4 steps, `prompt_embeds` given, `latents=` the N(0,1) draw in",
        "the patchified shape [1, 32, 4, 4]; `*_final_latents` are the packed latents after the last step,",
        "`*_image` is `output_type=\"pt\"`. Edits use `edit_ref0` (64x64) and `edit_ref1` (80x64), 8-bit levels",
        "[H, W, 3] passed as PIL images (their preprocessing is exactly levels/127.5 - 1, asserted).",
        "",
        "plantain against these refs (`cargo test -p plantain-engine --test parity_klein -- --nocapture`), max abs diff:",
        "",
        "| what | max abs diff (scale) |",
        "|---|---|",
        "| tokenizer ids / masks (5 texts) | equal |",
        "| text encoder `prompt_embeds` (from the ids) | 5.8e-4 (33.4) |",
        "| `encode_prompt` from the text | 2.1e-4 (25.1) |",
        "| transformer (16 image + 16 reference tokens) | 4.8e-7 (2.0) |",
        "| VAE mean / logvar / decode | 7.3e-7 / 7.7e-7 / 4.5e-6 |",
        "| reference tokens (patchified, batch-norm normalised) | 8.9e-7 |",
        "| sigmas (4 steps, 16 tokens) | 0 |",
        "| t2i final latents / image | 7.7e-7 / 2.4e-6 |",
        "| edit, 1 reference: final latents / image | 5.4e-7 / 2.2e-6 |",
        "| edit, 2 references: final latents / image | 4.8e-7 / 1.9e-6 |",
        "",
    ]


def write_readme(all_refs: dict, infos: dict) -> None:
    lines = []
    A = lines.append
    A("# Reference tensors for numerical parity tests")
    A("")
    A("Generated by `scripts/make_fixtures.py` (do not edit by hand). Regenerate from the repository root with")
    A("")
    A("```")
    A("/path/to/venv/bin/python scripts/make_fixtures.py")
    A("```")
    A("")
    A("The venv needs torch, diffusers, transformers, safetensors (CPU only, ~20 s on 2 cores).")
    A("Rerunning with the same versions on the same kind of CPU gives byte-identical files (fixed seeds, 1 thread,")
    A("deterministic algorithms); on another CPU kind the float results may move in the last bits (a rerun on a")
    A("different machine moved sd1's `t2i_final_latents` by 1.5e-5 at most, far inside the tests' tolerances). To add")
    A("a fixture without touching the others, pass `--arch NAME` (the README is rewritten only by a full run).")
    A("")
    A("Versions used for the committed files:")
    A("")
    A(f"- torch {torch.__version__}")
    A(f"- diffusers {diffusers.__version__}")
    A(f"- transformers {transformers.__version__}")
    import safetensors

    A(f"- safetensors {safetensors.__version__}")
    A(f"- python {sys.version.split()[0]}")
    A("")
    A("## The tiny models (`fixtures/tiny/`)")
    A("")
    A("Random weights (fixed seeds), same code paths as the real models, small channel counts. Every 1-D")
    A("parameter (biases, norm weights) gets +0.1*N(0,1) on top of the default init and attention q/k weights are")
    A("doubled, so that norm weights are not 1, biases are not 0 and attention is not uniform.")
    A("")
    A("| arch | stored dtype | text encoder(s) | UNet | VAE | scheduler |")
    A("|---|---|---|---|---|---|")
    A("| sd1 | fp32 | CLIPTextModel, hidden 16, 2 layers, 2 heads, mlp 32, quick_gelu; cond = last_hidden_state (final LN) | "
      "down (CrossAttnDown, CrossAttnDown, Down), up (Up, CrossAttnUp, CrossAttnUp), channels (16,32,32), "
      "layers_per_block 2, groups 8, cross_attention_dim 16, attention_head_dim 2 (= heads), conv proj_in/proj_out | "
      "AutoencoderKL (8,8,16,16), 1 layer/block, groups 4, latent 4, scaling 0.18215 | "
      "EulerDiscrete, eps, scaled_linear 0.00085..0.012, spacing leading, steps_offset 1 |")
    A("| sd2 | fp16 | CLIPTextModel as sd1 but gelu; cond = last_hidden_state | as sd1 but use_linear_projection, "
      "attention_head_dim (2,4,4) (= heads per block, head dim 8), upcast_attention | as sd1 | "
      "DPMSolverMultistep dpmsolver++ order 2, v_prediction, Karras sigmas, spacing leading, steps_offset 1 |")
    A("| sdxl | bf16 | text_encoder CLIPTextModel (quick_gelu) + text_encoder_2 CLIPTextModelWithProjection (gelu, "
      "projection 16); cond = concat(te1.hidden_states[-2], te2.hidden_states[-2]) (C=32); pooled = te2.text_embeds | "
      "down (Down, CrossAttnDown, CrossAttnDown), up (CrossAttnUp, CrossAttnUp, Up), channels (16,32,32), "
      "transformer_layers_per_block (1,1,2), attention_head_dim (2,4,4), linear proj, cross_attention_dim 32, "
      "addition_embed_type text_time, addition_time_embed_dim 8, projection_class_embeddings_input_dim 64 | "
      "as sd1 but scaling 0.13025 | EulerDiscrete, eps, spacing trailing |")
    A("| taesd | fp32 | - | - | AutoencoderTiny, enc/dec channels (8,8,8,8), blocks (1,3,3,3)/(3,3,3,1) | - |")
    A("")
    A("Text encoders: vocab 49408, 77 positions, bos 49406, eos 49407 (pooling takes the first eos), pad_token_id 1.")
    A("Tokenizers (`tokenizer/`, `tokenizer_2/`) are symlinks to `assets/clip-tokenizer/{vocab.json,merges.txt}`;")
    A("sd1 and sdxl `tokenizer` pad with `<|endoftext|>` (49407), sd2 `tokenizer` and sdxl `tokenizer_2` pad with `!` (0),")
    A("as the real repos do.")
    A("")
    A("Single-file checkpoints `fixtures/tiny/{sd1,sd2,sdxl}.safetensors` hold the same tensors (same dtype) under the")
    A("original key names: `model.diffusion_model.*`, `first_stage_model.*` (VAE mid attention q/k/v/proj_out as")
    A("[C,C,1,1] conv weights), `cond_stage_model.transformer.text_model.*` (sd1),")
    A("`cond_stage_model.model.*` (sd2, OpenCLIP: fused `attn.in_proj_weight`, `ln_final`, `positional_embedding`,")
    A("`token_embedding`, `text_projection` [width, proj], `logit_scale`), `conditioner.embedders.0.transformer.*` and")
    A("`conditioner.embedders.1.model.*` (sdxl). `...embeddings.position_ids` is int64 [1,77] as in real files.")
    A("The sd2 file has ONE MORE OpenCLIP resblock (index 2, random) than the diffusers text_encoder, and a random")
    A("`text_projection` [16,16], like real SD2 checkpoints: a loader must drop the last resblock (SD2 uses the")
    A("penultimate layer followed by `ln_final`).")
    A("")
    A("## Inputs and conventions")
    A("")
    A(f"- prompt `{PROMPT}`, negative prompt `\"\"` (empty string), {HW}x{HW}, {STEPS} steps, guidance 7.5 (sd1/sd2), 5.0 (sdxl).")
    A("- Everything is computed in fp32 from the STORED weights (fp16/bf16 files reloaded with torch_dtype=float32).")
    A("- `cond`/`neg_cond` come from `pipe.encode_prompt(prompt, negative_prompt=\"\")`. For SDXL an explicit `\"\"`")
    A("  negative prompt IS encoded (non-zero); only `negative_prompt=None` with force_zeros_for_empty_prompt=True")
    A("  gives zero `neg_cond`/`neg_pooled`. `t2i_*` use `\"\"`; `t2i_negnone_*` (sdxl) use None, i.e. zeros.")
    A("- `unet_in_t` is float [999, 421] (different per batch item).")
    A("- `vae_dec_in` is the input to `vae.decode` (already divided by scaling_factor); `vae_enc_logvar` is after")
    A("  diffusers' clamp to [-30, 20].")
    A("- `t2i_latents` is the raw N(0,1) draw passed as `latents=`; the pipeline multiplies it by")
    A("  `scheduler.init_noise_sigma` (`t2i_init_noise_sigma`): for Euler that is sqrt(sigma_max^2+1) with")
    A("  `leading` spacing but sigma_max with `trailing`/`linspace`; 1.0 for DPM-Solver.")
    A("- `t2i_image` is `output_type=\"pt\"`: (x/2+0.5).clamp(0,1), before 8-bit quantisation. `t2i_final_latents` are")
    A("  the latents after the last scheduler step (before dividing by scaling_factor and decoding).")
    A("- `t2i_timesteps`/`t2i_sigmas` are the scheduler's after `set_timesteps(4)` (sigmas include the final 0).")
    A("- img2img: explicit loop mirroring StableDiffusion(XL)Img2ImgPipeline, but the VAE posterior is taken at its")
    A("  mode (mean) and the noise is `i2i_noise`. `i2i_image` [0,1] -> preprocess 2x-1 -> `vae.encode(...).latent_dist.mode()`")
    A("  * scaling_factor (`i2i_init_latents`) -> `scheduler.add_noise(init, i2i_noise, i2i_timesteps[0])`")
    A("  (`i2i_noised_latents`) -> CFG loop over `i2i_timesteps` (strength 0.6 of 4 steps: int(4*0.6)=2 steps, the last")
    A("  two of the 4-step schedule; `set_begin_index(2)`) -> decode -> (x/2+0.5).clamp(0,1). The script checks this")
    A("  against the real img2img pipeline fed with the same latents and noise.")
    A("- sdxl time ids: original_size=target_size=(64,64), crops (0,0) -> [64,64,0,0,64,64] for both CFG halves.")
    A("- taesd: `enc_in` in [-1,1] (AutoencoderTiny maps it to [0,1] internally) -> `enc_out` = `encode(x).latents` (raw,")
    A("  unscaled); `dec_out` = `decode(dec_in).sample` (internally tanh(x/3)*3 first, output mapped back to [-1,1]).")
    A("")
    A("Schedules actually used (from the refs):")
    A("")
    A("| arch | t2i timesteps | t2i sigmas | i2i timesteps |")
    A("|---|---|---|---|")
    for a in ("sd1", "sd2", "sdxl"):
        if a in all_refs:
            R = all_refs[a]
            fmt = lambda t: ", ".join(f"{x:g}" for x in t.tolist())  # noqa: E731
            sig = ", ".join(f"{x:.4f}" for x in R["t2i_sigmas"].tolist())
            A(f"| {a} | {fmt(R['t2i_timesteps'])} | {sig} | {fmt(R['i2i_timesteps'])} |")
    A("")
    A("sd2 (DPM-Solver++ with Karras sigmas): the UNet gets the ROUNDED timestep that `_sigma_to_t` maps each Karras")
    A("sigma to, but the update uses the Karras sigma itself (alpha_t = 1/sqrt(sigma^2+1), sigma_t = sigma*alpha_t);")
    A("the last step is first order (lower_order_final) and the final sigma is 0.")
    A("")
    A("Key layout notes: the diffusers-folder `text_encoder*/model.safetensors` use the hub layout `text_model.*`")
    A("(+ `text_projection.weight` for text_encoder_2). transformers >= 5.6 would save CLIPTextModel without the")
    A("`text_model.` prefix; the script rewrites the file so the fixtures look like real SD repos (transformers")
    A("loads both). `diffusers.from_single_file(ckpt, config=fixtures/tiny/<arch>)` loads sd1/sd2/sdxl offline and")
    A("gives identical tensors, except SDXL's text_encoder_2: diffusers tells the two SDXL text encoders apart by")
    A("width, and both are 16 wide here, so it fills text_encoder_2 from embedders.0; that component is checked with")
    A("diffusers' `convert_open_clip_checkpoint` directly instead.")
    A("")
    A("sd1-inpaint: `fixtures/tiny/sd1-inpaint/` is a StableDiffusionInpaintPipeline whose UNet (fp16) takes 9 input")
    A("channels (latents, mask, masked-image latents); its text encoder, tokenizer, VAE and scheduler are symlinks to")
    A("sd1's. The refs run the pipeline with strength 1 on `inpaint_latents` (N(0,1), scaled by init_noise_sigma),")
    A("`mask_image` = right half, whose latent-size nearest downsample is `inpaint_mask_latent`, and")
    A("`masked_image_latents` = `inpaint_masked_latents` given directly (random, so no VAE encode is involved).")
    A("")
    A("sd1-pix2pix: `fixtures/tiny/sd1-pix2pix/` is a StableDiffusionInstructPix2PixPipeline whose UNet (fp16) takes 8")
    A("input channels (latents, image latents); its other components are symlinks to sd1's. The refs run the pipeline")
    A(f"on `p2p_input` (8-bit levels in [0,1]) with the instruction {P2P_PROMPT!r}, `latents=p2p_latents`, {STEPS} steps,")
    A(f"guidance 7.5 and image guidance {P2P_IMAGE_GUIDANCE} (`p2p_*`) or 0.5 (`p2p_ig0_*`: below 1 diffusers turns all")
    A("guidance off). `p2p_image_latents` is the VAE posterior's mode of the input, UNSCALED, as the pipeline uses it.")
    A("")
    A("sd1-diffedit: `StableDiffusionDiffEditPipeline.generate_mask` on sd1 with a DDIMScheduler from sd1's config,")
    A(f"source {DIFFEDIT_SOURCE!r}, target {DIFFEDIT_TARGET!r}, negative prompts \"\", {DIFFEDIT_MAPS} maps,")
    A(f"encode strength {DIFFEDIT_STRENGTH}, {DIFFEDIT_STEPS} steps, threshold ratio {DIFFEDIT_RATIO}. The image is given as")
    A("scaled latents (`diffedit_image_latents`; the pipeline takes a 4-channel input as latents), the noise is the")
    A("generator's first draw (`diffedit_noise`). `diffedit_mask` is the pipeline's output; `diffedit_map` is the")
    A("paper's map (|target - source| averaged over maps and channels). generate_mask unpacks encode_prompt's")
    A("(prompt, negative) the other way round, so its guided branches are p + g(n - p); with the same negative prompt")
    A("on both sides its map is (g-1)/g of the paper's and its mask is the same (the script asserts both).")
    A("")
    lines.extend(clip_readme())
    lines.extend(klein_readme())
    A("## Files and tensors")
    for name, R in all_refs.items():
        A("")
        A(f"### `fixtures/ref/{name}.safetensors`")
        A("")
        A("| tensor | shape | dtype |")
        A("|---|---|---|")
        lines.extend(describe(R))
    A("")
    A("## Self-checks run by the script")
    A("")
    for name, info in infos.items():
        for k, v in info.items():
            A(f"- {name}: {k} = {v}")
    A("")
    (REF / "README.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="*", default=["sd1", "sd2", "sdxl", "sd1-inpaint", "sd1-pix2pix", "sd1-diffedit", "taesd", "clip", "klein"])
    ap.add_argument("--skip-single-file-check", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for f in ("vocab.json", "merges.txt"):
        assert (TOK_ASSETS / f).is_file(), f"missing {TOK_ASSETS / f}"
    TINY.mkdir(parents=True, exist_ok=True)
    REF.mkdir(parents=True, exist_ok=True)

    all_refs, infos = {}, {}
    with torch.no_grad():
        for arch in args.arch:
            print(f"== {arch}", flush=True)
            if arch == "sd1-inpaint":
                R = build_inpaint()
                save_ref("sd1-inpaint", R)
                all_refs[arch] = R
                continue
            if arch in ("sd1-pix2pix", "sd1-diffedit"):
                R = build_pix2pix() if arch == "sd1-pix2pix" else build_diffedit()
                save_ref(arch, R)
                all_refs[arch] = R
                continue
            if arch == "clip":
                R, infos["clip"] = build_clip()
                for k, v in infos["clip"].items():
                    print(f"   {k}: {v}", flush=True)
                save_ref("clip", R)
                all_refs["clip"] = R
                continue
            if arch == "klein":
                R, infos["klein"] = build_klein()
                for k, v in infos["klein"].items():
                    print(f"   {k}: {v}", flush=True)
                save_ref("klein", R)
                all_refs["klein"] = R
                continue
            if arch == "taesd":
                R = build_taesd()
                save_ref("taesd", R)
                all_refs["taesd"] = R
                continue
            d = TINY / arch
            build_pipeline(arch, d)
            check_stored_dtype(arch, d)
            ckpt = TINY / f"{arch}.safetensors"
            ck = write_single_file(arch, d, ckpt)
            info = {"own_mapping_check": own_roundtrip(arch, d, ck)}
            pipe = load_pipeline_f32(arch, d)
            seed = ARCH_SEED[arch]
            R: dict[str, torch.Tensor] = {}
            info.update(encode_refs(arch, pipe, R))
            unet_refs(arch, pipe, R, seed)
            vae_refs(pipe, R, seed)
            info.update(t2i_refs(arch, pipe, R, seed))
            info.update(i2i_refs(arch, pipe, R, seed))
            if not args.skip_single_file_check:
                info["from_single_file_roundtrip"] = roundtrip_single_file(arch, d, ckpt, pipe)
            save_ref(arch, R)
            all_refs[arch] = R
            infos[arch] = info
            for k, v in info.items():
                print(f"   {k}: {v}", flush=True)
    if set(args.arch) == set(ap.get_default("arch")):
        write_readme(all_refs, infos)
    print(f"fixtures/ total (regular files, symlinks not followed): {du(FIX) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
