#!/usr/bin/env python3
"""Peer benchmark: diffusers/torch on CPU with full-size, randomly initialised SD 1.5 and SD-Turbo models.

Timing does not depend on the weights, so nothing is downloaded: the models are built from their real
configurations (written inline below) with random init. fp32, batch 1, torch.no_grad(), 2 threads by default.

    /path/to/venv/bin/python scripts/bench_diffusers.py --repeats 3 --json bench.json

Each measurement: one warm-up call, then the median of --repeats timed calls. The UNet step is batch 1, i.e.
WITHOUT classifier-free guidance (a CFG step would run the UNet on a batch of 2). Needs ~10 GB RAM.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

# ---- real configurations -------------------------------------------------------------------------

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    mid_block_scale_factor=1,
    use_linear_projection=False,
)

# SD 2.1 / SD-Turbo UNet: same topology, 1024-d cross attention, 64-d heads, linear proj_in/proj_out
SD21_UNET = dict(
    SD15_UNET,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    upcast_attention=False,  # SD-Turbo's config (SD 2.1 768-v sets True; no effect in fp32)
)

SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

CLIP_L_TEXT = dict(  # openai/clip-vit-large-patch14 text tower (SD 1.x)
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)

OPENCLIP_H_TEXT = dict(  # OpenCLIP ViT-H/14 text tower as diffusers keeps it for SD 2.x (23 of 24 layers)
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
)


# ---- helpers -------------------------------------------------------------------------------------


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)  # KiB -> GiB


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def bench(fn, repeats: int) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "times_s": times}


def token_ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49406, (1, 77), generator=g)
    ids[0, 0] = 49406
    ids[0, 20:] = 49407
    return ids


def build(what: str):
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if what == "clip_l":
        m = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT))
    elif what == "openclip_h":
        m = CLIPTextModel(CLIPTextConfig(**OPENCLIP_H_TEXT))
    elif what == "unet15":
        m = UNet2DConditionModel(**SD15_UNET)
    elif what == "unet21":
        m = UNet2DConditionModel(**SD21_UNET)
    elif what == "vae":
        m = AutoencoderKL(**SD_VAE)
    else:
        raise ValueError(what)
    m = m.to(torch.float32).eval()
    print(f"  built {what}: {n_params(m) / 1e6:.1f} M params in {time.perf_counter() - t0:.1f} s", flush=True)
    return m


# ---- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description="diffusers CPU peer benchmark (random full-size weights)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=512, help="image side in pixels (latent side = size/8)")
    ap.add_argument("--json", type=str, default=None, help="write results as JSON to this path")
    ap.add_argument("--only", nargs="*", default=["sd15", "turbo"], choices=["sd15", "turbo"])
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    H = args.size
    h = H // 8
    rows: list[dict] = []
    res: dict = {
        "tool": "diffusers (PyTorch CPU)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "batch": 1,
        "size": H,
        "repeats": args.repeats,
        "warmup": 1,
        "attention": "diffusers default (AttnProcessor2_0 / torch SDPA)",
        "results": {},
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    res["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def record(key: str, label: str, r: dict) -> None:
        r["peak_rss_gb_so_far"] = peak_rss_gb()
        res["results"][key] = r
        rows.append({"label": label, **r})
        ts = ", ".join(f"{t:.2f}" for t in r["times_s"])
        print(f"  {label}: median {r['median_s']:.3f} s  [{ts}]  peak RSS so far {r['peak_rss_gb_so_far']:.2f} GiB",
              flush=True)

    ids = token_ids()
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 4, h, h, generator=g)
    image = torch.rand(1, 3, H, H, generator=g) * 2 - 1
    t = torch.tensor([999.0])

    if "sd15" in args.only:
        print("SD 1.5", flush=True)
        te = build("clip_l")
        record("sd15_text_encode", "SD 1.5 text encode (CLIP ViT-L/14, 77 tokens)",
               bench(lambda: te(ids).last_hidden_state, args.repeats))
        ctx = te(ids).last_hidden_state
        del te
        gc.collect()
        unet = build("unet15")
        record("sd15_unet_step", f"SD 1.5 UNet step ({H}x{H}, batch 1, no CFG)",
               bench(lambda: unet(latent, t, encoder_hidden_states=ctx).sample, args.repeats))
        del unet
        gc.collect()
        vae = build("vae")
        record("sd15_vae_decode", f"SD VAE decode [1,4,{h},{h}] -> {H}x{H}",
               bench(lambda: vae.decode(latent).sample, args.repeats))
        record("sd15_vae_encode", f"SD VAE encode [1,3,{H},{H}] (posterior mean)",
               bench(lambda: vae.encode(image).latent_dist.mean, args.repeats))
        del vae
        gc.collect()

    if "turbo" in args.only:
        print("SD-Turbo (SD 2.1 shapes)", flush=True)
        te = build("openclip_h")
        unet = build("unet21")
        vae = build("vae")
        parts = {}

        def text():
            return te(ids).last_hidden_state

        ctx = text()

        def step():
            return unet(latent, t, encoder_hidden_states=ctx).sample

        def dec():
            return vae.decode(latent).sample

        def one_step():
            c = te(ids).last_hidden_state
            eps = unet(latent, t, encoder_hidden_states=c).sample
            x0 = latent - eps  # stand-in for the scheduler step (negligible cost)
            return vae.decode(x0 / SD_VAE["scaling_factor"]).sample

        parts["turbo_text_encode"] = ("SD-Turbo text encode (OpenCLIP ViT-H/14, 23 layers, 77 tokens)", text)
        parts["turbo_unet_step"] = (f"SD-Turbo UNet step ({H}x{H}, batch 1, no CFG)", step)
        parts["turbo_vae_decode"] = (f"SD-Turbo VAE decode [1,4,{h},{h}]", dec)
        for key, (label, fn) in parts.items():
            record(key, label, bench(fn, args.repeats))
        record("turbo_1step_total", f"SD-Turbo 1 step end-to-end (text + UNet + VAE decode, {H}x{H})",
               bench(one_step, args.repeats))
        del te, unet, vae
        gc.collect()

    res["peak_rss_gb"] = peak_rss_gb()
    print()
    print(f"diffusers {diffusers.__version__}, torch {torch.__version__}, {res['threads']} threads, fp32, "
          f"batch 1, {res['cpu']}; median of {args.repeats} after 1 warm-up")
    print()
    print("| measurement | median (s) | runs (s) | peak RSS so far (GiB) |")
    print("|---|---|---|---|")
    for r in rows:
        ts = ", ".join(f"{x:.2f}" for x in r["times_s"])
        print(f"| {r['label']} | {r['median_s']:.2f} | {ts} | {r['peak_rss_gb_so_far']:.2f} |")
    print()
    print(f"peak RSS: {res['peak_rss_gb']:.2f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
