#!/usr/bin/env python3
"""diffusers + torch CPU peer of `plantain bench --only klein`: FLUX.2 [klein] 4B at full size
with random weights (no checkpoint can be fetched here), the networks diffusers'
Flux2KleinPipeline runs: the Qwen3-4B text encoder (transformers' Qwen3ForCausalLM, all 36
layers, as the pipeline runs it to read the hidden states of layers 9, 18 and 27; plantain builds
only the 27 it needs), the Flux2Transformer2DModel for one step, and the AutoencoderKLFlux2
decoder. The 4B networks are bf16 (their f32 weights, 16 GB each, do not fit beside each other in
24 GB; the issue allows bf16 where f32 does not fit), the VAE f32. Each network is built, timed
and freed in turn; peak RSS after each.

    /tmp/venv/bin/python scripts/bench_diffusers_klein.py --size 512 --threads 2 [--repeats 1]

Needs torch, diffusers 0.42.1 and transformers in the Python that runs it.
"""

import argparse
import gc
import json
import resource
import statistics
import time

import torch
from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
from transformers import Qwen3Config, Qwen3ForCausalLM

TRANSFORMER = dict(attention_head_dim=128, axes_dims_rope=(32, 32, 32, 32), eps=1e-6, guidance_embeds=False, in_channels=128,
                   joint_attention_dim=7680, mlp_ratio=3.0, num_attention_heads=24, num_layers=5, num_single_layers=20,
                   out_channels=None, patch_size=1, rope_theta=2000, timestep_guidance_channels=256)
TEXT = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
            num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000, hidden_act="silu",
            max_position_embeddings=40960, tie_word_embeddings=True)
TEXT_LEN = 512


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(fn, repeats):
    fn()  # warm
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "times": ts, "peak_rss_gib": peak_rss_gib()}


def built_timed_freed(label, seed, build, make_run, repeats):
    """Builds a network (random weights from `seed`), times `make_run(net)`, then frees it."""
    torch.manual_seed(seed)
    t = time.perf_counter()
    net = build()
    print(f"  {label} built in {time.perf_counter() - t:.1f} s, peak RSS {peak_rss_gib():.2f} GiB", flush=True)
    r = timed(make_run(net), repeats)
    del net
    gc.collect()
    return r


def text_encoder(repeats):
    ids = (torch.arange(TEXT_LEN) * 7919 % 150000).unsqueeze(0)
    mask = (torch.arange(TEXT_LEN) < 40).long().unsqueeze(0)

    def make_run(model):
        def run():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
            return torch.cat([out.hidden_states[k] for k in (9, 18, 27)], dim=-1)
        return run

    build = lambda: Qwen3ForCausalLM(Qwen3Config(**TEXT, torch_dtype=torch.bfloat16)).to(torch.bfloat16).eval()  # noqa: E731
    return built_timed_freed("text encoder", 11, build, make_run, repeats)


def transformer_step(size, repeats):
    h = w = size // 16
    x = torch.randn(1, h * w, 128, dtype=torch.bfloat16)
    ctx = torch.randn(1, TEXT_LEN, TRANSFORMER["joint_attention_dim"], dtype=torch.bfloat16)
    img_ids = torch.tensor([[0, y, xx, 0] for y in range(h) for xx in range(w)]).unsqueeze(0)
    txt_ids = torch.tensor([[0, 0, 0, k] for k in range(TEXT_LEN)]).unsqueeze(0)
    step = torch.tensor([1.0], dtype=torch.bfloat16)

    def make_run(model):
        return lambda: model(hidden_states=x, encoder_hidden_states=ctx, timestep=step, img_ids=img_ids, txt_ids=txt_ids,
                             return_dict=False)

    build = lambda: Flux2Transformer2DModel(**TRANSFORMER).to(torch.bfloat16).eval()  # noqa: E731
    return built_timed_freed("transformer", 12, build, make_run, repeats)


def vae_decode(size, repeats):
    z = torch.randn(1, 32, size // 8, size // 8)
    return built_timed_freed("VAE", 13, lambda: AutoencoderKLFlux2().eval(), lambda vae: lambda: vae.decode(z).sample, repeats)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"diffusers + torch {torch.__version__} CPU peer, FLUX.2 [klein] 4B random weights (bf16), {a.size}x{a.size}, {a.threads} threads",
          flush=True)
    rows = {}
    with torch.inference_mode():
        rows["text_encode"] = text_encoder(a.repeats)
        print(f"  text encode (512 tokens, 36 layers): {rows['text_encode']['median_s']:.1f} s", flush=True)
        rows["step"] = transformer_step(a.size, a.repeats)
        print(f"  transformer step: {rows['step']['median_s']:.1f} s", flush=True)
        rows["vae_decode"] = vae_decode(a.size, a.repeats)
        print(f"  VAE decode (f32): {rows['vae_decode']['median_s']:.1f} s", flush=True)
    total = rows["text_encode"]["median_s"] + 4 * rows["step"]["median_s"] + rows["vae_decode"]["median_s"]
    print(f"  4-step image, sum of the parts (text + 4 steps + decode; loading not counted): {total:.1f} s; peak RSS {peak_rss_gib():.2f} GiB")
    if a.json:
        json.dump({"size": a.size, "rows": rows, "four_step_sum_s": total}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
