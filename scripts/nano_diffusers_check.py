#!/usr/bin/env python3
"""Loads plantain-nano (or any folder plantain exports) with diffusers, as proof that the layout
is standard (missing or unexpected weights make from_pretrained fail), and optionally generates.

    /work/pyvenv/bin/python scripts/nano_diffusers_check.py models/plantain-nano --out /tmp/nano-diffusers.png

With --io FILE (written by `cargo run --release -p plantain-nano --example unet_io -- MODEL FILE`)
it also runs diffusers' UNet on the trainer's inputs and compares with the trainer's output.

"""
import argparse
import sys

import torch
from diffusers import StableDiffusionPipeline


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt", default="a red star above a blue circle on a yellow background")
    ap.add_argument("--out", default=None, help="write a 64px diffusers generation here")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--io", default=None, help="unet_io example's safetensors: compare diffusers' UNet output with it")
    args = ap.parse_args()

    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, torch_dtype=torch.float32)
    # from_pretrained raises on missing weights; report the loaded sizes so a human sees it.
    for name in ("text_encoder", "unet", "vae"):
        m = getattr(pipe, name)
        print(f"{name}: {type(m).__name__}, {sum(p.numel() for p in m.parameters()):,} parameters")
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    print(f"native resolution {side}px (unet sample_size {pipe.unet.config.sample_size} x vae factor {pipe.vae_scale_factor})")
    if args.io:
        from safetensors.torch import load_file

        io = load_file(args.io)
        with torch.no_grad():
            got = pipe.unet(io["sample"], io["timestep"], encoder_hidden_states=io["encoder_hidden_states"]).sample
        want = io["out_sample"]
        err = (got - want).abs().max().item()
        scale = want.abs().max().item()
        # The export stores fp16 weights; the trainer's output was computed with the same ones.
        ok = err <= 1e-3 * max(scale, 1.0)
        print(f"unet vs trainer: max error {err:.3g} (output scale {scale:.3g}) {'OK' if ok else 'MISMATCH'}")
        if not ok:
            return 1
    if args.out:
        g = torch.Generator().manual_seed(0)
        img = pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, height=side, width=side, generator=g).images[0]
        img.save(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
