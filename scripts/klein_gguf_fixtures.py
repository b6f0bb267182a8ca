#!/usr/bin/env python3
"""Single-file FLUX.2 transformers from the tiny klein fixture, in BFL/ComfyUI naming, as
stable-diffusion.cpp and ComfyUI users have them: fixtures/tiny/flux2-klein-single/

- bfl.safetensors   f32, `model.diffusion_model.` prefix (a BFL/ComfyUI single file)
- q8_0.gguf, q4_0.gguf  linear weights with rows of whole 32-value blocks quantised by the
  `gguf` package's reference quantiser (ggml's rounding), `txt_in` stored F16, the rest F32
- q5_k.gguf          as q4_0 but `time_in.in_layer.weight` in Q5_K (plantain must refuse it)
- no_linear2.gguf    as q8_0 without `single_blocks.1.linear2.weight` (a wrong architecture)

The diffusers → BFL mapping is the inverse of diffusers'
`convert_flux2_transformer_checkpoint_to_diffusers`: q, k and v concatenated into `qkv`, and
the final modulation's (scale, shift) halves swapped back to (shift, scale).

Needs: torch, numpy, safetensors, and gguf==0.19.0 (`pip install gguf==0.19.0`).
Run: python3 scripts/klein_gguf_fixtures.py
"""
import pathlib

import gguf
import numpy as np
from safetensors.numpy import save_file
from safetensors.torch import load_file


ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "fixtures/tiny/flux2-klein/transformer/diffusion_pytorch_model.safetensors"
OUT = ROOT / "fixtures/tiny/flux2-klein-single"

TOP = {
    "x_embedder.weight": "img_in.weight",
    "context_embedder.weight": "txt_in.weight",
    "time_guidance_embed.timestep_embedder.linear_1.weight": "time_in.in_layer.weight",
    "time_guidance_embed.timestep_embedder.linear_2.weight": "time_in.out_layer.weight",
    "double_stream_modulation_img.linear.weight": "double_stream_modulation_img.lin.weight",
    "double_stream_modulation_txt.linear.weight": "double_stream_modulation_txt.lin.weight",
    "single_stream_modulation.linear.weight": "single_stream_modulation.lin.weight",
    "proj_out.weight": "final_layer.linear.weight",
}
DOUBLE = {
    "attn.norm_q.weight": "img_attn.norm.query_norm.scale",
    "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
    "attn.to_out.0.weight": "img_attn.proj.weight",
    "ff.linear_in.weight": "img_mlp.0.weight",
    "ff.linear_out.weight": "img_mlp.2.weight",
    "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
    "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
    "attn.to_add_out.weight": "txt_attn.proj.weight",
    "ff_context.linear_in.weight": "txt_mlp.0.weight",
    "ff_context.linear_out.weight": "txt_mlp.2.weight",
}
SINGLE = {
    "attn.to_qkv_mlp_proj.weight": "linear1.weight",
    "attn.to_out.weight": "linear2.weight",
    "attn.norm_q.weight": "norm.query_norm.scale",
    "attn.norm_k.weight": "norm.key_norm.scale",
}


def to_bfl(sd):
    out = {}
    for k, v in sd.items():
        if k in TOP:
            out[TOP[k]] = v
        elif k == "norm_out.linear.weight":
            scale, shift = np.split(v, 2, axis=0)
            out["final_layer.adaLN_modulation.1.weight"] = np.concatenate([shift, scale], axis=0)
        elif k.startswith("transformer_blocks."):
            n, rest = k.split(".", 2)[1:]
            if rest in DOUBLE:
                out[f"double_blocks.{n}.{DOUBLE[rest]}"] = v
        elif k.startswith("single_transformer_blocks."):
            n, rest = k.split(".", 2)[1:]
            out[f"single_blocks.{n}.{SINGLE[rest]}"] = v
        else:
            raise SystemExit(f"unmapped tensor {k}")
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")})
    for n in blocks:
        for stream, names in (("img", ("to_q", "to_k", "to_v")), ("txt", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            parts = [sd[f"transformer_blocks.{n}.attn.{p}.weight"] for p in names]
            out[f"double_blocks.{n}.{stream}_attn.qkv.weight"] = np.concatenate(parts, axis=0)
    return out


def write_gguf(path, sd, qtype, special=None, drop=()):
    w = gguf.GGUFWriter(str(path), arch="flux")
    for name, v in sd.items():
        if name in drop:
            continue
        v = v.astype(np.float32)
        if special and name in special:
            rows, k = v.shape
            t = special[name]
            block, size = gguf.GGML_QUANT_SIZES[t]
            raw = np.random.default_rng(0).integers(0, 256, size=(rows, k // block * size), dtype=np.uint8)
            w.add_tensor(name, raw, raw_dtype=t)
        elif name == "txt_in.weight":
            w.add_tensor(name, v.astype(np.float16))
        elif v.ndim == 2 and v.shape[1] % 32 == 0:
            w.add_tensor(name, gguf.quants.quantize(v, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    sd = {k: v.float().numpy() for k, v in load_file(SRC).items()}
    bfl = to_bfl(sd)
    save_file({f"model.diffusion_model.{k}": v for k, v in bfl.items()}, OUT / "bfl.safetensors")
    Q = gguf.GGMLQuantizationType
    write_gguf(OUT / "q8_0.gguf", bfl, Q.Q8_0)
    write_gguf(OUT / "q4_0.gguf", bfl, Q.Q4_0)
    write_gguf(OUT / "q5_k.gguf", bfl, Q.Q4_0, special={"time_in.in_layer.weight": Q.Q5_K})
    write_gguf(OUT / "no_linear2.gguf", bfl, Q.Q8_0, drop=("single_blocks.1.linear2.weight",))
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
