//! `UNet2DConditionModel` for SD 1.x, SD 2.x and SDXL (with its added time/text embeddings),
//! following diffusers' module tree so weights bind by their diffusers names.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value as Json;

use super::nn::{attention, conv, from_tokens, group_norm, layer_norm, linear, timestep_embedding, to_tokens};
use crate::error::{EngineError, Result};
use crate::graph::{DType, Dim, Graph, GraphBuilder, Value};
use crate::weights::{Params, TensorIndex};

/// The fields of a diffusers `unet/config.json` that change the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    /// One flag per down block: does it have cross-attention transformers?
    pub down_attention: Vec<bool>,
    /// One flag per up block (in up order).
    pub up_attention: Vec<bool>,
    pub layers_per_block: usize,
    pub cross_attention_dim: usize,
    /// Attention heads per down block.
    pub heads: Vec<usize>,
    pub transformer_layers: Vec<usize>,
    pub use_linear_projection: bool,
    pub norm_num_groups: usize,
    pub norm_eps: f32,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    /// SDXL's `text_time` additional embedding: (addition_time_embed_dim, projection input dim).
    pub text_time: Option<(usize, usize)>,
    /// diffusers' `text` additional embedding (`TextTimeEmbedding`): the prompt's hidden states,
    /// attention-pooled with this many heads, projected and added to the time embedding.
    pub text_pool_heads: Option<usize>,
    /// Latent side of the square the model was trained at (diffusers' `sample_size`).
    pub sample_size: Option<usize>,
}

#[derive(Deserialize)]
struct RawUNetConfig {
    #[serde(default = "four")]
    in_channels: usize,
    #[serde(default = "four")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    down_block_types: Vec<String>,
    up_block_types: Vec<String>,
    #[serde(default = "two")]
    layers_per_block: Json,
    cross_attention_dim: Json,
    #[serde(default)]
    attention_head_dim: Json,
    #[serde(default)]
    num_attention_heads: Json,
    #[serde(default)]
    transformer_layers_per_block: Json,
    #[serde(default)]
    use_linear_projection: bool,
    #[serde(default)]
    sample_size: Option<Json>,
    #[serde(default = "thirty_two")]
    norm_num_groups: usize,
    #[serde(default = "norm_eps")]
    norm_eps: f32,
    #[serde(default = "yes")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f32,
    #[serde(default)]
    addition_embed_type: Option<String>,
    #[serde(default)]
    addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default = "sixty_four")]
    addition_embed_type_num_heads: usize,
    #[serde(default)]
    encoder_hid_dim: Option<usize>,
    #[serde(default)]
    class_embed_type: Option<String>,
    #[serde(default)]
    resnet_time_scale_shift: Option<String>,
    #[serde(default)]
    only_cross_attention: Json,
    #[serde(default)]
    mid_block_type: Option<String>,
    #[serde(default)]
    time_embedding_type: Option<String>,
}

fn four() -> usize {
    4
}
fn two() -> Json {
    Json::from(2)
}
fn thirty_two() -> usize {
    32
}
fn sixty_four() -> usize {
    64
}
fn norm_eps() -> f32 {
    1e-5
}
fn yes() -> bool {
    true
}

/// An int applied to every block, or one value per block.
fn per_block(v: &Json, n: usize, default: Option<usize>, what: &str) -> std::result::Result<Vec<usize>, String> {
    match v {
        Json::Null => default.map(|d| vec![d; n]).ok_or_else(|| format!("`{what}` is missing")),
        Json::Number(x) => Ok(vec![x.as_u64().ok_or(format!("`{what}` must be a positive integer"))? as usize; n]),
        Json::Array(xs) => {
            let vals: Option<Vec<usize>> = xs.iter().map(|x| x.as_u64().map(|x| x as usize)).collect();
            let vals = vals.ok_or(format!("`{what}` must hold integers"))?;
            if vals.len() != n {
                return Err(format!("`{what}` has {} entries for {n} blocks", vals.len()));
            }
            Ok(vals)
        }
        _ => Err(format!("`{what}` must be an integer or a list")),
    }
}

impl UNetConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_json(&text).map_err(|e| EngineError::bad_config(path, e))
    }

    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let raw: RawUNetConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let n = raw.block_out_channels.len();
        if raw.down_block_types.len() != n || raw.up_block_types.len() != n {
            return Err("down/up block type lists must match block_out_channels".into());
        }
        if let Some(c) = &raw.class_embed_type {
            return Err(format!("class_embed_type `{c}` is not supported"));
        }
        if raw.resnet_time_scale_shift.as_deref().is_some_and(|s| s != "default") {
            return Err("resnet_time_scale_shift other than `default` is not supported".into());
        }
        if raw.only_cross_attention.as_bool() == Some(true) {
            return Err("only_cross_attention is not supported".into());
        }
        if raw.mid_block_type.as_deref().is_some_and(|s| s != "UNetMidBlock2DCrossAttn") {
            return Err(format!("mid block `{}` is not supported", raw.mid_block_type.unwrap_or_default()));
        }
        if raw.time_embedding_type.as_deref().is_some_and(|s| s != "positional") {
            return Err("only positional time embeddings are supported".into());
        }
        let attn_kind = |t: &String, down: bool| -> std::result::Result<bool, String> {
            match (t.as_str(), down) {
                ("CrossAttnDownBlock2D", true) | ("CrossAttnUpBlock2D", false) => Ok(true),
                ("DownBlock2D", true) | ("UpBlock2D", false) => Ok(false),
                _ => Err(format!("block type `{t}` is not supported")),
            }
        };
        let down_attention = raw.down_block_types.iter().map(|t| attn_kind(t, true)).collect::<std::result::Result<Vec<_>, _>>()?;
        let up_attention = raw.up_block_types.iter().map(|t| attn_kind(t, false)).collect::<std::result::Result<Vec<_>, _>>()?;
        let layers = per_block(&raw.layers_per_block, 1, Some(2), "layers_per_block")?[0];
        let cross = per_block(&raw.cross_attention_dim, 1, None, "cross_attention_dim")?[0];
        // diffusers' legacy naming: `attention_head_dim` is really the number of heads unless
        // `num_attention_heads` is given.
        let heads = if raw.num_attention_heads.is_null() {
            per_block(&raw.attention_head_dim, n, Some(8), "attention_head_dim")?
        } else {
            per_block(&raw.num_attention_heads, n, None, "num_attention_heads")?
        };
        let transformer_layers = per_block(&raw.transformer_layers_per_block, n, Some(1), "transformer_layers_per_block")?;
        let (mut text_time, mut text_pool_heads) = (None, None);
        match raw.addition_embed_type.as_deref() {
            None => {}
            Some("text_time") => {
                text_time = Some((
                    raw.addition_time_embed_dim.ok_or("text_time needs addition_time_embed_dim")?,
                    raw.projection_class_embeddings_input_dim.ok_or("text_time needs projection_class_embeddings_input_dim")?,
                ))
            }
            Some("text") => {
                let heads = raw.addition_embed_type_num_heads;
                if raw.encoder_hid_dim.is_some() {
                    return Err("addition_embed_type `text` with encoder_hid_dim is not supported".into());
                }
                if heads == 0 || cross % heads != 0 {
                    return Err(format!("addition_embed_type_num_heads {heads} does not divide cross_attention_dim {cross}"));
                }
                text_pool_heads = Some(heads);
            }
            Some(other) => return Err(format!("addition_embed_type `{other}` is not supported")),
        }
        for (i, (&c, &h)) in raw.block_out_channels.iter().zip(&heads).enumerate() {
            if c % h != 0 || c % raw.norm_num_groups != 0 {
                return Err(format!("block {i}: {c} channels do not divide into {h} heads / {} groups", raw.norm_num_groups));
            }
        }
        Ok(Self {
            sample_size: raw.sample_size.as_ref().and_then(|v| v.as_u64()).map(|v| v as usize),
            in_channels: raw.in_channels,
            out_channels: raw.out_channels,
            block_out_channels: raw.block_out_channels,
            down_attention,
            up_attention,
            layers_per_block: layers,
            cross_attention_dim: cross,
            heads,
            transformer_layers,
            use_linear_projection: raw.use_linear_projection,
            norm_num_groups: raw.norm_num_groups,
            norm_eps: raw.norm_eps,
            flip_sin_to_cos: raw.flip_sin_to_cos,
            freq_shift: raw.freq_shift,
            text_time,
            text_pool_heads,
        })
    }

    /// How much the UNet shrinks the latent: height and width must be multiples of this.
    pub fn spatial_multiple(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

struct Ctx<'a> {
    g: GraphBuilder,
    p: Params<'a>,
    cfg: &'a UNetConfig,
}

impl Ctx<'_> {
    fn resnet(&mut self, pre: &str, x: Value, temb: Value, inp: usize, out: usize) -> Result<Value> {
        let (groups, eps) = (self.cfg.norm_num_groups, self.cfg.norm_eps);
        let temb_dim = self.cfg.block_out_channels[0] * 4;
        let g = &mut self.g;
        let h = group_norm(g, &self.p, &format!("{pre}.norm1"), x, groups, inp, eps)?;
        let h = g.silu(h);
        let h = conv(g, &self.p, &format!("{pre}.conv1"), h, inp, out, 3, 1, 1, true)?;
        let t = g.silu(temb);
        let t = linear(g, &self.p, &format!("{pre}.time_emb_proj"), t, temb_dim, out, true)?;
        let t = g.unsqueeze(t, &[2, 3]);
        let h = g.add(h, t);
        let h = group_norm(g, &self.p, &format!("{pre}.norm2"), h, groups, out, eps)?;
        let h = g.silu(h);
        let h = conv(g, &self.p, &format!("{pre}.conv2"), h, out, out, 3, 1, 1, true)?;
        let skip = if inp != out { conv(g, &self.p, &format!("{pre}.conv_shortcut"), x, inp, out, 1, 1, 0, true)? } else { x };
        Ok(g.add(skip, h))
    }

    fn transformer(&mut self, pre: &str, x: Value, ctx: Value, channels: usize, heads: usize, depth: usize) -> Result<Value> {
        let (groups, cross, linear_proj) = (self.cfg.norm_num_groups, self.cfg.cross_attention_dim, self.cfg.use_linear_projection);
        let dim = channels / heads;
        let g = &mut self.g;
        let p = &self.p;
        let h = group_norm(g, p, &format!("{pre}.norm"), x, groups, channels, 1e-6)?;
        let mut t = if linear_proj {
            let t = to_tokens(g, h, channels);
            linear(g, p, &format!("{pre}.proj_in"), t, channels, channels, true)?
        } else {
            let h = conv(g, p, &format!("{pre}.proj_in"), h, channels, channels, 1, 1, 0, true)?;
            to_tokens(g, h, channels)
        };
        for d in 0..depth {
            let b = format!("{pre}.transformer_blocks.{d}");
            let n = layer_norm(g, p, &format!("{b}.norm1"), t, channels, 1e-5)?;
            let q = linear(g, p, &format!("{b}.attn1.to_q"), n, channels, channels, false)?;
            let k = linear(g, p, &format!("{b}.attn1.to_k"), n, channels, channels, false)?;
            let v = linear(g, p, &format!("{b}.attn1.to_v"), n, channels, channels, false)?;
            let a = attention(g, q, k, v, heads, dim, None);
            let a = linear(g, p, &format!("{b}.attn1.to_out.0"), a, channels, channels, true)?;
            t = g.add(t, a);
            let n = layer_norm(g, p, &format!("{b}.norm2"), t, channels, 1e-5)?;
            let q = linear(g, p, &format!("{b}.attn2.to_q"), n, channels, channels, false)?;
            let k = linear(g, p, &format!("{b}.attn2.to_k"), ctx, cross, channels, false)?;
            let v = linear(g, p, &format!("{b}.attn2.to_v"), ctx, cross, channels, false)?;
            let a = attention(g, q, k, v, heads, dim, None);
            let a = linear(g, p, &format!("{b}.attn2.to_out.0"), a, channels, channels, true)?;
            t = g.add(t, a);
            let n = layer_norm(g, p, &format!("{b}.norm3"), t, channels, 1e-5)?;
            let inner = channels * 4;
            let proj = linear(g, p, &format!("{b}.ff.net.0.proj"), n, channels, inner * 2, true)?;
            let hidden = g.slice(proj, -1, 0, inner as i64);
            let gate = g.slice(proj, -1, inner as i64, 2 * inner as i64);
            let gate = g.gelu(gate);
            let f = g.mul(hidden, gate);
            let f = linear(g, p, &format!("{b}.ff.net.2"), f, inner, channels, true)?;
            t = g.add(t, f);
        }
        let out = if linear_proj {
            let t = linear(g, p, &format!("{pre}.proj_out"), t, channels, channels, true)?;
            from_tokens(g, t, x)
        } else {
            let h = from_tokens(g, t, x);
            conv(g, p, &format!("{pre}.proj_out"), h, channels, channels, 1, 1, 0, true)?
        };
        Ok(g.add(out, x))
    }
}

/// diffusers' `TextTimeEmbedding`: layer norm, attention pooling (one query: the mean token plus
/// a learned offset, over that query and every token), projection, layer norm. `[B, T, D]` →
/// `[B, temb_dim]`.
fn text_pool_embedding(g: &mut GraphBuilder, p: &Params, ctx: Value, dim: usize, heads: usize, temb_dim: usize) -> Result<Value> {
    let pre = "add_embedding";
    let x = layer_norm(g, p, &format!("{pre}.norm1"), ctx, dim, 1e-5)?;
    let offset = p.get(g, &format!("{pre}.pool.positional_embedding"), &[1, dim])?;
    let mean = g.reduce_mean(x, 1);
    let query = g.add(mean, offset);
    let all = g.concat(&[query, x], 1);
    let q = linear(g, p, &format!("{pre}.pool.q_proj"), query, dim, dim, true)?;
    let k = linear(g, p, &format!("{pre}.pool.k_proj"), all, dim, dim, true)?;
    let v = linear(g, p, &format!("{pre}.pool.v_proj"), all, dim, dim, true)?;
    let pooled = attention(g, q, k, v, heads, dim / heads, None);
    let pooled = g.reshape_to(pooled, &[0, dim as i64]);
    let a = linear(g, p, &format!("{pre}.proj"), pooled, dim, temb_dim, true)?;
    layer_norm(g, p, &format!("{pre}.norm2"), a, temb_dim, 1e-5)
}

/// Builds the UNet graph. Inputs: `sample` `[B, C, H, W]`, `timestep` `[B]` (float),
/// `encoder_hidden_states` `[B, T, cross_dim]`, and for SDXL `text_embeds` `[B, P]` and
/// `time_ids` `[B, 6]`. Output: `out_sample`.
pub fn build(cfg: &UNetConfig, weights: &TensorIndex) -> Result<Graph> {
    let mut c = Ctx { g: GraphBuilder::new(), p: Params::new(weights, "unet"), cfg };
    let batch = Dim::Named("batch");
    let sample =
        c.g.input("sample", DType::F32, vec![batch.clone(), Dim::Fixed(cfg.in_channels as i64), Dim::Named("height"), Dim::Named("width")]);
    let timestep = c.g.input("timestep", DType::F32, vec![batch.clone()]);
    let ctx = c.g.input(
        "encoder_hidden_states",
        DType::F32,
        vec![batch.clone(), Dim::Named("tokens"), Dim::Fixed(cfg.cross_attention_dim as i64)],
    );

    let ch0 = cfg.block_out_channels[0];
    let temb_dim = ch0 * 4;
    let t = timestep_embedding(&mut c.g, timestep, ch0, cfg.flip_sin_to_cos, cfg.freq_shift);
    let t = linear(&mut c.g, &c.p, "time_embedding.linear_1", t, ch0, temb_dim, true)?;
    let t = c.g.silu(t);
    let mut temb = linear(&mut c.g, &c.p, "time_embedding.linear_2", t, temb_dim, temb_dim, true)?;

    let mut extra_inputs = Vec::new();
    if let Some((time_dim, proj_in)) = cfg.text_time {
        let text_embeds = c.g.input("text_embeds", DType::F32, vec![batch.clone(), Dim::Fixed((proj_in - 6 * time_dim) as i64)]);
        let time_ids = c.g.input("time_ids", DType::F32, vec![batch.clone(), Dim::Fixed(6)]);
        extra_inputs.push((text_embeds, time_ids));
        let flat = c.g.reshape_to(time_ids, &[-1]);
        let te = timestep_embedding(&mut c.g, flat, time_dim, cfg.flip_sin_to_cos, cfg.freq_shift);
        let te = c.g.reshape_to(te, &[-1, 6 * time_dim as i64]);
        let add = c.g.concat(&[text_embeds, te], -1);
        let a = linear(&mut c.g, &c.p, "add_embedding.linear_1", add, proj_in, temb_dim, true)?;
        let a = c.g.silu(a);
        let a = linear(&mut c.g, &c.p, "add_embedding.linear_2", a, temb_dim, temb_dim, true)?;
        temb = c.g.add(temb, a);
    }
    if let Some(heads) = cfg.text_pool_heads {
        let a = text_pool_embedding(&mut c.g, &c.p, ctx, cfg.cross_attention_dim, heads, temb_dim)?;
        temb = c.g.add(temb, a);
    }

    let mut x = conv(&mut c.g, &c.p, "conv_in", sample, cfg.in_channels, ch0, 3, 1, 1, true)?;
    let mut skips = vec![(x, ch0)];
    let n = cfg.block_out_channels.len();
    let mut ch = ch0;
    for i in 0..n {
        let out = cfg.block_out_channels[i];
        for j in 0..cfg.layers_per_block {
            x = c.resnet(&format!("down_blocks.{i}.resnets.{j}"), x, temb, ch, out)?;
            ch = out;
            if cfg.down_attention[i] {
                x = c.transformer(&format!("down_blocks.{i}.attentions.{j}"), x, ctx, ch, cfg.heads[i], cfg.transformer_layers[i])?;
            }
            skips.push((x, ch));
        }
        if i + 1 < n {
            x = conv(&mut c.g, &c.p, &format!("down_blocks.{i}.downsamplers.0.conv"), x, ch, ch, 3, 2, 1, true)?;
            skips.push((x, ch));
        }
    }

    x = c.resnet("mid_block.resnets.0", x, temb, ch, ch)?;
    x = c.transformer("mid_block.attentions.0", x, ctx, ch, cfg.heads[n - 1], cfg.transformer_layers[n - 1])?;
    x = c.resnet("mid_block.resnets.1", x, temb, ch, ch)?;

    for i in 0..n {
        let rev = n - 1 - i;
        let out = cfg.block_out_channels[rev];
        for j in 0..=cfg.layers_per_block {
            let (skip, skip_ch) = skips.pop().expect("one skip per down layer");
            x = c.g.concat(&[x, skip], 1);
            x = c.resnet(&format!("up_blocks.{i}.resnets.{j}"), x, temb, ch + skip_ch, out)?;
            ch = out;
            if cfg.up_attention[i] {
                x = c.transformer(&format!("up_blocks.{i}.attentions.{j}"), x, ctx, ch, cfg.heads[rev], cfg.transformer_layers[rev])?;
            }
        }
        if i + 1 < n {
            x = c.g.upsample_nearest2x(x);
            x = conv(&mut c.g, &c.p, &format!("up_blocks.{i}.upsamplers.0.conv"), x, ch, ch, 3, 1, 1, true)?;
        }
    }

    x = group_norm(&mut c.g, &c.p, "conv_norm_out", x, cfg.norm_num_groups, ch, cfg.norm_eps)?;
    x = c.g.silu(x);
    x = conv(&mut c.g, &c.p, "conv_out", x, ch, cfg.out_channels, 3, 1, 1, true)?;
    Ok(c.g.finish(&[("out_sample", x)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::presets::SD15_UNET;

    fn with(extra: &str) -> std::result::Result<UNetConfig, String> {
        UNetConfig::from_json(&SD15_UNET.replacen('{', &format!("{{{extra}, "), 1))
    }

    #[test]
    fn text_addition_embedding_is_read_and_checked() {
        assert_eq!(UNetConfig::from_json(SD15_UNET).unwrap().text_pool_heads, None);
        assert_eq!(with(r#""addition_embed_type": "text""#).unwrap().text_pool_heads, Some(64));
        assert_eq!(with(r#""addition_embed_type": "text", "addition_embed_type_num_heads": 8"#).unwrap().text_pool_heads, Some(8));
        let err = with(r#""addition_embed_type": "text", "addition_embed_type_num_heads": 5"#).unwrap_err();
        assert!(err.contains("does not divide"), "{err}");
        let err = with(r#""addition_embed_type": "text", "encoder_hid_dim": 1024"#).unwrap_err();
        assert!(err.contains("encoder_hid_dim"), "{err}");
        assert!(with(r#""addition_embed_type": "image""#).unwrap_err().contains("not supported"));
    }
}
