//! A small `UNet2DConditionModel` (diffusers names, SD 1.x layout) with per-sample timesteps.

use candle_core::{Result, Tensor};

use crate::config::UNetConfig;
use crate::nn::{Conv2d, GroupNorm, Init, LayerNorm, Linear, Store, attention, from_tokens, timestep_embedding, to_tokens};

struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    time: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Resnet {
    fn new(s: &mut Store, p: &str, cfg: &UNetConfig, inp: usize, out: usize) -> Result<Self> {
        let (g, eps) = (cfg.norm_num_groups, 1e-5);
        Ok(Self {
            norm1: GroupNorm::new(s, &format!("{p}.norm1"), g, inp, eps)?,
            conv1: Conv2d::new(s, &format!("{p}.conv1"), inp, out, 3, 1, 1)?,
            time: Linear::new(s, &format!("{p}.time_emb_proj"), cfg.time_embed_dim(), out, true)?,
            norm2: GroupNorm::new(s, &format!("{p}.norm2"), g, out, eps)?,
            conv2: Conv2d::new(s, &format!("{p}.conv2"), out, out, 3, 1, 1)?,
            shortcut: if inp != out { Some(Conv2d::new(s, &format!("{p}.conv_shortcut"), inp, out, 1, 1, 0)?) } else { None },
        })
    }

    fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let t = self.time.forward(&temb.silu()?)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = h.broadcast_add(&t)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        skip + h
    }
}

struct Block {
    norm1: LayerNorm,
    attn1: [Linear; 4],
    norm2: LayerNorm,
    attn2: [Linear; 4],
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

struct Transformer {
    norm: GroupNorm,
    proj_in: Conv2d,
    blocks: Vec<Block>,
    proj_out: Conv2d,
    heads: usize,
}

impl Transformer {
    fn new(s: &mut Store, p: &str, cfg: &UNetConfig, ch: usize) -> Result<Self> {
        let cross = cfg.cross_attention_dim;
        let attn = |s: &mut Store, name: &str, kv_in: usize| -> Result<[Linear; 4]> {
            Ok([
                Linear::new(s, &format!("{name}.to_q"), ch, ch, false)?,
                Linear::new(s, &format!("{name}.to_k"), kv_in, ch, false)?,
                Linear::new(s, &format!("{name}.to_v"), kv_in, ch, false)?,
                Linear::new(s, &format!("{name}.to_out.0"), ch, ch, true)?,
            ])
        };
        let b = format!("{p}.transformer_blocks.0");
        let block = Block {
            norm1: LayerNorm::new(s, &format!("{b}.norm1"), ch, 1e-5)?,
            attn1: attn(s, &format!("{b}.attn1"), ch)?,
            norm2: LayerNorm::new(s, &format!("{b}.norm2"), ch, 1e-5)?,
            attn2: attn(s, &format!("{b}.attn2"), cross)?,
            norm3: LayerNorm::new(s, &format!("{b}.norm3"), ch, 1e-5)?,
            ff_in: Linear::new(s, &format!("{b}.ff.net.0.proj"), ch, ch * 8, true)?,
            ff_out: Linear::new(s, &format!("{b}.ff.net.2"), ch * 4, ch, true)?,
        };
        Ok(Self {
            norm: GroupNorm::new(s, &format!("{p}.norm"), cfg.norm_num_groups, ch, 1e-6)?,
            proj_in: Conv2d::new(s, &format!("{p}.proj_in"), ch, ch, 1, 1, 0)?,
            blocks: vec![block],
            proj_out: Conv2d::new(s, &format!("{p}.proj_out"), ch, ch, 1, 1, 0)?,
            heads: cfg.heads,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let (_, ch, h, w) = x.dims4()?;
        let mut t = to_tokens(&self.proj_in.forward(&self.norm.forward(x)?)?)?;
        for b in &self.blocks {
            let n = b.norm1.forward(&t)?;
            let [q, k, v, o] = &b.attn1;
            let a = attention(&q.forward(&n)?, &k.forward(&n)?, &v.forward(&n)?, self.heads, None)?;
            t = (t + o.forward(&a)?)?;
            let n = b.norm2.forward(&t)?;
            let [q, k, v, o] = &b.attn2;
            let a = attention(&q.forward(&n)?, &k.forward(ctx)?, &v.forward(ctx)?, self.heads, None)?;
            t = (t + o.forward(&a)?)?;
            let n = b.norm3.forward(&t)?;
            let proj = b.ff_in.forward(&n)?;
            let inner = ch * 4;
            let f = (proj.narrow(2, 0, inner)? * proj.narrow(2, inner, inner)?.gelu_erf()?)?;
            t = (t + b.ff_out.forward(&f)?)?;
        }
        x + self.proj_out.forward(&from_tokens(&t, h, w)?)?
    }
}

/// diffusers' `TextTimeEmbedding` (`add_embedding`): the prompt's states attention-pooled by one
/// query (their mean plus a learned offset), projected to the time embedding's size.
struct TextPool {
    norm1: LayerNorm,
    offset: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    proj: Linear,
    norm2: LayerNorm,
    heads: usize,
}

impl TextPool {
    fn new(s: &mut Store, cfg: &UNetConfig, heads: usize) -> Result<Self> {
        let (d, p) = (cfg.cross_attention_dim, "add_embedding");
        // Starts small beside the time embedding, so the new path does not swamp it at first.
        s.preset(&format!("{p}.norm2.weight"), Tensor::full(0.2f32, cfg.time_embed_dim(), &candle_core::Device::Cpu)?)?;
        Ok(Self {
            norm1: LayerNorm::new(s, &format!("{p}.norm1"), d, 1e-5)?,
            offset: s.get(&format!("{p}.pool.positional_embedding"), &[1, d], Init::Normal((d as f32).powf(-0.5)))?,
            q: Linear::new(s, &format!("{p}.pool.q_proj"), d, d, true)?,
            k: Linear::new(s, &format!("{p}.pool.k_proj"), d, d, true)?,
            v: Linear::new(s, &format!("{p}.pool.v_proj"), d, d, true)?,
            proj: Linear::new(s, &format!("{p}.proj"), d, cfg.time_embed_dim(), true)?,
            norm2: LayerNorm::new(s, &format!("{p}.norm2"), cfg.time_embed_dim(), 1e-5)?,
            heads,
        })
    }

    /// `[B, T, D]` → `[B, time_embed_dim]`.
    fn forward(&self, ctx: &Tensor) -> Result<Tensor> {
        let (b, _, d) = ctx.dims3()?;
        let x = self.norm1.forward(ctx)?;
        let query = x.mean_keepdim(1)?.broadcast_add(&self.offset)?;
        let all = Tensor::cat(&[&query, &x], 1)?;
        let pooled = attention(&self.q.forward(&query)?, &self.k.forward(&all)?, &self.v.forward(&all)?, self.heads, None)?;
        self.norm2.forward(&self.proj.forward(&pooled.reshape((b, d))?)?)
    }
}

struct Layer {
    resnet: Resnet,
    attn: Option<Transformer>,
}

impl Layer {
    fn forward(&self, x: &Tensor, temb: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let x = self.resnet.forward(x, temb)?;
        match &self.attn {
            Some(a) => a.forward(&x, ctx),
            None => Ok(x),
        }
    }
}

pub struct UNet {
    cfg: UNetConfig,
    time1: Linear,
    time2: Linear,
    text_pool: Option<TextPool>,
    conv_in: Conv2d,
    down: Vec<(Vec<Layer>, Option<Conv2d>)>,
    mid: (Resnet, Transformer, Resnet),
    up: Vec<(Vec<Layer>, Option<Conv2d>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    pub fn new(s: &mut Store, cfg: &UNetConfig) -> Result<Self> {
        let chans = &cfg.block_out_channels;
        let n = chans.len();
        let ch0 = chans[0];
        let temb = cfg.time_embed_dim();
        let time1 = Linear::new(s, "time_embedding.linear_1", ch0, temb, true)?;
        let time2 = Linear::new(s, "time_embedding.linear_2", temb, temb, true)?;
        let text_pool = cfg.text_pool_heads.map(|h| TextPool::new(s, cfg, h)).transpose()?;
        let conv_in = Conv2d::new(s, "conv_in", cfg.in_channels, ch0, 3, 1, 1)?;
        let mut skips = vec![ch0];
        let mut ch = ch0;
        let mut down = Vec::new();
        for (i, &out) in chans.iter().enumerate() {
            let mut layers = Vec::new();
            for j in 0..cfg.layers_per_block {
                let resnet = Resnet::new(s, &format!("down_blocks.{i}.resnets.{j}"), cfg, ch, out)?;
                ch = out;
                let attn =
                    if cfg.attention[i] { Some(Transformer::new(s, &format!("down_blocks.{i}.attentions.{j}"), cfg, ch)?) } else { None };
                layers.push(Layer { resnet, attn });
                skips.push(ch);
            }
            let sampler =
                if i + 1 < n { Some(Conv2d::new(s, &format!("down_blocks.{i}.downsamplers.0.conv"), ch, ch, 3, 2, 1)?) } else { None };
            if sampler.is_some() {
                skips.push(ch);
            }
            down.push((layers, sampler));
        }
        let mid = (
            Resnet::new(s, "mid_block.resnets.0", cfg, ch, ch)?,
            Transformer::new(s, "mid_block.attentions.0", cfg, ch)?,
            Resnet::new(s, "mid_block.resnets.1", cfg, ch, ch)?,
        );
        let mut up = Vec::new();
        for i in 0..n {
            let rev = n - 1 - i;
            let out = chans[rev];
            let mut layers = Vec::new();
            for j in 0..=cfg.layers_per_block {
                let skip = skips.pop().expect("one skip per down layer");
                let resnet = Resnet::new(s, &format!("up_blocks.{i}.resnets.{j}"), cfg, ch + skip, out)?;
                ch = out;
                let attn =
                    if cfg.attention[rev] { Some(Transformer::new(s, &format!("up_blocks.{i}.attentions.{j}"), cfg, ch)?) } else { None };
                layers.push(Layer { resnet, attn });
            }
            let sampler =
                if i + 1 < n { Some(Conv2d::new(s, &format!("up_blocks.{i}.upsamplers.0.conv"), ch, ch, 3, 1, 1)?) } else { None };
            up.push((layers, sampler));
        }
        let norm_out = GroupNorm::new(s, "conv_norm_out", cfg.norm_num_groups, ch, 1e-5)?;
        let conv_out = Conv2d::new(s, "conv_out", ch, cfg.out_channels, 3, 1, 1)?;
        Ok(Self { cfg: cfg.clone(), time1, time2, text_pool, conv_in, down, mid, up, norm_out, conv_out })
    }

    /// Noise prediction for latents `x` `[B, C, h, w]` at per-sample `timesteps`, conditioned on
    /// text states `ctx` `[B, T, cross_dim]`.
    pub fn forward(&self, x: &Tensor, timesteps: &[f32], ctx: &Tensor) -> Result<Tensor> {
        let ch0 = self.cfg.block_out_channels[0];
        let t = timestep_embedding(timesteps, ch0, true, 0.0)?;
        let mut temb = self.time2.forward(&self.time1.forward(&t)?.silu()?)?;
        if let Some(pool) = &self.text_pool {
            temb = (temb + pool.forward(ctx)?)?;
        }
        let mut x = self.conv_in.forward(x)?;
        let mut skips = vec![x.clone()];
        for (layers, sampler) in &self.down {
            for l in layers {
                x = l.forward(&x, &temb, ctx)?;
                skips.push(x.clone());
            }
            if let Some(d) = sampler {
                x = d.forward(&x)?;
                skips.push(x.clone());
            }
        }
        x = self.mid.0.forward(&x, &temb)?;
        x = self.mid.1.forward(&x, ctx)?;
        x = self.mid.2.forward(&x, &temb)?;
        for (layers, sampler) in &self.up {
            for l in layers {
                let skip = skips.pop().expect("one skip per up layer");
                x = l.forward(&Tensor::cat(&[&x, &skip], 1)?, &temb, ctx)?;
            }
            if let Some(u) = sampler {
                x = u.forward(&crate::nn::upsample_nearest_2x(&x)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&x)?)
    }
}
