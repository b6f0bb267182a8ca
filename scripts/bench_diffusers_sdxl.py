#!/usr/bin/env python3
"""diffusers + torch peer of `plantain bench --only sdxl`: SDXL at full size with random f32
weights (both text encoders, the 2.6-billion-parameter UNet, the VAE), on the CPU.

Measures what plantain measures, the same way (one warm-up, then the median of --repeats):
the two text encoders on 77 tokens, the UNet step at 512x512 and 1024x1024 (batch 1, no
classifier-free guidance), the VAE decode of a 128x128 latent, and one step end to end at
1024x1024 (text encoders + UNet + VAE decode) with every network resident; peak RSS.

    PYTHON=/path/to/venv/bin/python; $PYTHON scripts/bench_diffusers_sdxl.py --threads 2 --repeats 1
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

# The configs of stabilityai/stable-diffusion-xl-base-1.0 (as crates/engine/src/models/presets.rs).
SDXL_UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], center_input_sample=False,
    cross_attention_dim=2048, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4,
    projection_class_embeddings_input_dim=2816, sample_size=128, transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], use_linear_projection=True,
)
SDXL_VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, in_channels=3, latent_channels=4, layers_per_block=2,
    norm_num_groups=32, out_channels=3, sample_size=1024, scaling_factor=0.13025,
    up_block_types=["UpDecoderBlock2D"] * 4,
)
CLIP_L = dict(hidden_act="quick_gelu", hidden_size=768, intermediate_size=3072, max_position_embeddings=77,
              num_attention_heads=12, num_hidden_layers=12, vocab_size=49408, projection_dim=768)
CLIP_BIGG = dict(hidden_act="gelu", hidden_size=1280, intermediate_size=5120, max_position_embeddings=77,
                 num_attention_heads=20, num_hidden_layers=32, projection_dim=1280, vocab_size=49408)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)


def bench(fn, repeats: int) -> dict:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "times_s": times, "peak_rss_gb_so_far": peak_rss_gb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    results: dict = {}

    def record(key: str, label: str, r: dict) -> None:
        results[key] = {"label": label, **r}
        runs = ", ".join(f"{t:.2f}" for t in r["times_s"])
        print(f"  {label}: median {r['median_s']:.2f} s [{runs}] peak RSS so far {r['peak_rss_gb_so_far']:.2f} GiB", flush=True)

    ids = torch.randint(0, 49406, (1, 77))
    te1 = CLIPTextModel(CLIPTextConfig(**CLIP_L)).eval()
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)).eval()

    def text():
        h1 = te1(ids, output_hidden_states=True).hidden_states[-2]
        out2 = te2(ids, output_hidden_states=True)
        return torch.cat([h1, out2.hidden_states[-2]], dim=-1), out2.text_embeds

    record("sdxl_text_encode", "SDXL text encode (CLIP ViT-L/14 + OpenCLIP bigG/14, 77 tokens)", bench(text, args.repeats))
    ctx, pooled = text()
    unet = UNet2DConditionModel(**SDXL_UNET).eval()
    t = torch.tensor([999.0])
    for side in (512, 1024):
        latent = torch.randn(1, 4, side // 8, side // 8)
        cond = {"text_embeds": pooled, "time_ids": torch.tensor([[side, side, 0, 0, side, side]], dtype=torch.float32)}
        record(f"sdxl_unet_step_{side}", f"SDXL UNet step ({side}x{side}, batch 1, no CFG)",
               bench(lambda: unet(latent, t, encoder_hidden_states=ctx, added_cond_kwargs=cond).sample, args.repeats))
    vae = AutoencoderKL(**SDXL_VAE).eval()
    latent = torch.randn(1, 4, 128, 128)
    record("sdxl_vae_decode", "SDXL VAE decode [1,4,128,128] -> 1024x1024", bench(lambda: vae.decode(latent).sample, args.repeats))
    cond = {"text_embeds": pooled, "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024]], dtype=torch.float32)}

    def one_step():
        c, p = text()
        eps = unet(latent, t, encoder_hidden_states=c, added_cond_kwargs={"text_embeds": p, "time_ids": cond["time_ids"]}).sample
        return vae.decode((latent - eps) / SDXL_VAE["scaling_factor"]).sample

    record("sdxl_1step_total", "SDXL 1 step end-to-end (text + UNet + VAE decode, 1024x1024)", bench(one_step, args.repeats))
    del te1, te2, unet, vae
    gc.collect()
    doc = {"tool": "diffusers", "threads": args.threads, "results": results, "peak_rss_gb": peak_rss_gb()}
    print(f"peak RSS: {doc['peak_rss_gb']:.2f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
