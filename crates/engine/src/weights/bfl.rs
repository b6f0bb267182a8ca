//! Black Forest Labs' (and ComfyUI's, stable-diffusion.cpp's) tensor names of the FLUX.2
//! transformer, mapped to the diffusers names the graph builder uses, as diffusers'
//! `convert_flux2_transformer_checkpoint_to_diffusers` does: fused `qkv` weights of the
//! double-stream blocks are split in three along the output axis, and the final layer's
//! modulation is stored (shift, scale) where diffusers has (scale, shift).

use std::ops::Range;

/// Which rows of a BFL tensor (of `rows` rows along its output axis) a diffusers weight is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowSel {
    All,
    /// Chunk `i` of 3.
    Third(usize),
    /// Both halves, swapped.
    SwapHalves,
}

impl RowSel {
    /// The row ranges, in order, of a tensor with `rows` rows.
    pub fn ranges(self, rows: usize) -> Vec<Range<usize>> {
        match self {
            RowSel::All => std::iter::once(0..rows).collect(),
            RowSel::Third(i) => std::iter::once(i * rows / 3..(i + 1) * rows / 3).collect(),
            RowSel::SwapHalves => vec![rows / 2..rows, 0..rows / 2],
        }
    }
}

/// Prefixes single-file checkpoints put before the transformer's names.
const PREFIXES: &[&str] = &["model.diffusion_model.", "diffusion_model."];

/// One name mapping: (BFL, diffusers, rows).
type Entry = (&'static str, &'static str, RowSel);

/// Top-level tensors.
const TOP: &[Entry] = &[
    ("img_in.weight", "x_embedder.weight", RowSel::All),
    ("txt_in.weight", "context_embedder.weight", RowSel::All),
    ("time_in.in_layer.weight", "time_guidance_embed.timestep_embedder.linear_1.weight", RowSel::All),
    ("time_in.out_layer.weight", "time_guidance_embed.timestep_embedder.linear_2.weight", RowSel::All),
    ("double_stream_modulation_img.lin.weight", "double_stream_modulation_img.linear.weight", RowSel::All),
    ("double_stream_modulation_txt.lin.weight", "double_stream_modulation_txt.linear.weight", RowSel::All),
    ("single_stream_modulation.lin.weight", "single_stream_modulation.linear.weight", RowSel::All),
    ("final_layer.linear.weight", "proj_out.weight", RowSel::All),
    ("final_layer.adaLN_modulation.1.weight", "norm_out.linear.weight", RowSel::SwapHalves),
];

/// Inside `double_blocks.N.` → `transformer_blocks.N.`.
const DOUBLE: &[Entry] = &[
    ("img_attn.qkv.weight", "attn.to_q.weight", RowSel::Third(0)),
    ("img_attn.qkv.weight", "attn.to_k.weight", RowSel::Third(1)),
    ("img_attn.qkv.weight", "attn.to_v.weight", RowSel::Third(2)),
    ("txt_attn.qkv.weight", "attn.add_q_proj.weight", RowSel::Third(0)),
    ("txt_attn.qkv.weight", "attn.add_k_proj.weight", RowSel::Third(1)),
    ("txt_attn.qkv.weight", "attn.add_v_proj.weight", RowSel::Third(2)),
    ("img_attn.norm.query_norm.scale", "attn.norm_q.weight", RowSel::All),
    ("img_attn.norm.key_norm.scale", "attn.norm_k.weight", RowSel::All),
    ("img_attn.proj.weight", "attn.to_out.0.weight", RowSel::All),
    ("img_mlp.0.weight", "ff.linear_in.weight", RowSel::All),
    ("img_mlp.2.weight", "ff.linear_out.weight", RowSel::All),
    ("txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight", RowSel::All),
    ("txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight", RowSel::All),
    ("txt_attn.proj.weight", "attn.to_add_out.weight", RowSel::All),
    ("txt_mlp.0.weight", "ff_context.linear_in.weight", RowSel::All),
    ("txt_mlp.2.weight", "ff_context.linear_out.weight", RowSel::All),
];

/// Inside `single_blocks.N.` → `single_transformer_blocks.N.`.
const SINGLE: &[Entry] = &[
    ("linear1.weight", "attn.to_qkv_mlp_proj.weight", RowSel::All),
    ("linear2.weight", "attn.to_out.weight", RowSel::All),
    ("norm.query_norm.scale", "attn.norm_q.weight", RowSel::All),
    ("norm.key_norm.scale", "attn.norm_k.weight", RowSel::All),
];

/// Block tables: (BFL prefix, diffusers prefix, entries).
const BLOCKS: &[(&str, &str, &[Entry])] =
    &[("double_blocks.", "transformer_blocks.", DOUBLE), ("single_blocks.", "single_transformer_blocks.", SINGLE)];

/// A name without the single-file prefixes.
pub fn strip_prefix(name: &str) -> &str {
    PREFIXES.iter().find_map(|p| name.strip_prefix(p)).unwrap_or(name)
}

/// The diffusers weights a BFL tensor (prefix already stripped) holds, with their rows; empty
/// for a name FLUX.2 [klein] does not use.
pub fn to_diffusers(bfl: &str) -> Vec<(String, RowSel)> {
    if let Some((_, d, sel)) = TOP.iter().find(|(b, _, _)| *b == bfl) {
        return vec![(d.to_string(), *sel)];
    }
    for (bp, dp, table) in BLOCKS {
        if let Some((n, rest)) = bfl.strip_prefix(bp).and_then(|r| r.split_once('.'))
            && n.parse::<usize>().is_ok()
        {
            return table.iter().filter(|(b, _, _)| *b == rest).map(|(_, d, sel)| (format!("{dp}{n}.{d}"), *sel)).collect();
        }
    }
    Vec::new()
}

/// The BFL name a diffusers weight is read from (for error messages).
pub fn from_diffusers(diffusers: &str) -> Option<String> {
    if let Some((b, _, _)) = TOP.iter().find(|(_, d, _)| *d == diffusers) {
        return Some(b.to_string());
    }
    BLOCKS.iter().find_map(|(bp, dp, table)| {
        let (n, rest) = diffusers.strip_prefix(dp)?.split_once('.')?;
        n.parse::<usize>().ok()?;
        table.iter().find(|(_, d, _)| *d == rest).map(|(b, _, _)| format!("{bp}{n}.{b}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_and_swapped_tensors_map_both_ways() {
        let qkv = to_diffusers("double_blocks.3.txt_attn.qkv.weight");
        let names: Vec<&str> = qkv.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "transformer_blocks.3.attn.add_q_proj.weight",
                "transformer_blocks.3.attn.add_k_proj.weight",
                "transformer_blocks.3.attn.add_v_proj.weight"
            ]
        );
        assert_eq!(qkv[1].1.ranges(9), vec![3..6]);
        assert_eq!(to_diffusers("final_layer.adaLN_modulation.1.weight")[0].1.ranges(4), vec![2..4, 0..2]);
        assert_eq!(
            to_diffusers(strip_prefix("model.diffusion_model.single_blocks.19.norm.key_norm.scale"))[0].0,
            "single_transformer_blocks.19.attn.norm_k.weight"
        );
        assert_eq!(from_diffusers("transformer_blocks.0.attn.to_v.weight").unwrap(), "double_blocks.0.img_attn.qkv.weight");
        assert_eq!(from_diffusers("norm_out.linear.weight").unwrap(), "final_layer.adaLN_modulation.1.weight");
        assert!(to_diffusers("double_blocks.0.img_mod.lin.weight").is_empty());
        assert!(from_diffusers("transformer_blocks.x.attn.to_q.weight").is_none());
    }
}
