//! `plantain bench --only klein` (`klein:int8` for 8 bits): FLUX.2 [klein] 4B at full size with
//! random weights packed in memory-mapped scratch files as 4- or 8-bit codes (never f32 at full
//! size): text encode (512 tokens), one transformer step and VAE decode at `--size`, and the
//! whole 4-step image with each network's session created when needed and dropped after (how a
//! lean run holds memory), with the peak RSS after each.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::{ArrayD, IxDyn};
use plantain_engine::graph::Graph;
use plantain_engine::models::flux2::{self, Flux2Config};
use plantain_engine::models::presets::{FLUX2_KLEIN, FLUX2_KLEIN_4B_TEXT, FLUX2_KLEIN_4B_TRANSFORMER, FLUX2_VAE};
use plantain_engine::models::qwen3::{self, Qwen3Config};
use plantain_engine::models::vae::{self, VaeConfig};
use plantain_engine::runtime::{Input, Network, RuntimeOptions};
use plantain_engine::weights::TensorIndex;
use plantain_engine::weights::quant::{PackSource, Packer, QuantLayout, QuantSpec, WeightBits, scratch_dir};

use super::checkpoint::write_random_safetensors;
use super::{Bench, Row, peak_rss_gib, random};

/// An index for `build`'s weights: linear matrices as random packed codes when `packer` is
/// given, every other tensor (norms, embeddings, convolutions) random fp16 in `file`.
fn random_index(
    file: &Path,
    packer: Option<(&Arc<Packer>, QuantSpec)>,
    seed: u64,
    build: impl Fn(&TensorIndex) -> Result<()>,
) -> Result<TensorIndex> {
    let rec = TensorIndex::recording();
    build(&rec)?;
    let linears = if packer.is_some() { rec.recorded_linears() } else { Default::default() };
    let (packed, dense): (Vec<_>, Vec<_>) = rec.recorded().into_iter().partition(|(n, _)| linears.contains(n));
    write_random_safetensors(file, &dense, seed)?;
    let Some((packer, spec)) = packer else { return Ok(TensorIndex::open(file)?) };
    let mut index = TensorIndex::open(file)?.with_packer(packer.clone());
    for (i, (name, shape)) in packed.into_iter().enumerate() {
        index.insert_packed(name, PackSource::Random { n: shape[0], k: shape[1], spec, seed: seed * 1000 + i as u64 });
    }
    Ok(index)
}

/// Creates a session, logging how long it took.
fn session(graph: &Graph, label: &str, rt: &RuntimeOptions) -> Result<Network> {
    let t = Instant::now();
    let net = Network::new(graph, label, rt)?;
    eprintln!("  {label}: session in {:.1} s, peak RSS so far {:.2} GiB", t.elapsed().as_secs_f32(), peak_rss_gib());
    Ok(net)
}

/// The three graphs with random packed weights, and the transformer config.
struct Graphs {
    text: Graph,
    transformer: Graph,
    decoder: Graph,
    dit: Flux2Config,
}

fn graphs(root: &Path, rt: &RuntimeOptions, bits: WeightBits) -> Result<Graphs> {
    let spec = QuantSpec::for_bits(bits).context("klein bench runs 8- or 4-bit weights")?;
    std::fs::create_dir_all(root)?;
    let packer = Arc::new(Packer::new(&scratch_dir(&rt.cache_dir), Some(spec))?);
    let te_cfg = Qwen3Config::from_json(FLUX2_KLEIN_4B_TEXT).map_err(anyhow::Error::msg)?;
    let dit = Flux2Config::from_json(FLUX2_KLEIN_4B_TRANSFORMER).map_err(anyhow::Error::msg)?;
    let vae_cfg: VaeConfig = serde_json::from_str(FLUX2_VAE)?;
    let (len, layers) = (FLUX2_KLEIN.text_len, FLUX2_KLEIN.text_layers);
    let t = Instant::now();
    // Text encoders quantise in blocks whatever the denoiser's layout (`WeightOptions::text_spec`).
    let te_spec = QuantSpec { layout: QuantLayout::Blocks, ..spec };
    let te = random_index(&root.join("klein-text.safetensors"), Some((&packer, te_spec)), 11, |w| {
        Ok(qwen3::build(&te_cfg, w, len, &layers).map(drop)?)
    })?;
    let text = qwen3::build(&te_cfg, &te, len, &layers)?;
    let tr = random_index(&root.join("klein-dit.safetensors"), Some((&packer, spec)), 12, |w| Ok(flux2::build(&dit, w).map(drop)?))?;
    let transformer = flux2::build(&dit, &tr)?;
    let va = random_index(&root.join("klein-vae.safetensors"), None, 13, |w| Ok(vae::build_flux2_decoder(&vae_cfg, w).map(drop)?))?;
    let decoder = vae::build_flux2_decoder(&vae_cfg, &va)?;
    let packed = std::fs::metadata(packer.path()).map(|m| m.len()).unwrap_or(0);
    eprintln!("  random weights written in {:.1} s ({:.2} GB of packed codes)", t.elapsed().as_secs_f32(), packed as f64 / 1e9);
    Ok(Graphs { text, transformer, decoder, dit })
}

/// The transformer's inputs for one step: `tokens` image tokens, 512 text tokens.
fn step_inputs(dit: &Flux2Config, ctx: &ArrayD<f32>, tokens: (usize, usize)) -> Vec<(&'static str, Input)> {
    let (h, w) = tokens;
    let d = dit.attention_head_dim;
    let text_ids: Vec<[i64; 4]> = (0..ctx.shape()[1] as i64).map(|l| [0, 0, 0, l]).collect();
    let img_ids: Vec<[i64; 4]> = (0..h as i64).flat_map(|y| (0..w as i64).map(move |x| [0, y, x, 0])).collect();
    let table = |v: Vec<f32>| Input::F32(ArrayD::from_shape_vec(IxDyn(&[v.len() / d, d]), v).expect("rope table"));
    let (tc, ts) = flux2::rope_tables(&text_ids, dit);
    let (ic, is) = flux2::rope_tables(&img_ids, dit);
    vec![
        ("hidden_states", Input::F32(random(&[1, h * w, dit.in_channels], 4))),
        ("encoder_hidden_states", Input::F32(ctx.clone())),
        ("timestep", Input::F32(ArrayD::from_elem(IxDyn(&[1]), 1.0))),
        ("txt_cos", table(tc)),
        ("txt_sin", table(ts)),
        ("img_cos", table(ic)),
        ("img_sin", table(is)),
    ]
}

fn text_inputs() -> Vec<(&'static str, Input)> {
    let len = FLUX2_KLEIN.text_len;
    let ids = ArrayD::from_shape_fn(IxDyn(&[1, len]), |i| (i[1] as i64 * 7919) % 150_000);
    let mask = ArrayD::from_shape_fn(IxDyn(&[1, len]), |i| i64::from(i[1] < 40));
    vec![("input_ids", Input::I64(ids)), ("attention_mask", Input::I64(mask))]
}

pub fn klein(root: &Path, rt: &RuntimeOptions, b: &mut Bench, size: usize, bits: WeightBits) -> Result<()> {
    let tag = format!("klein_{bits:?}").to_lowercase();
    eprintln!("FLUX.2 [klein] 4B, {bits:?} weights (random), {size}x{size}");
    let g = graphs(&root.join("klein"), rt, bits)?;
    let tokens = (size / 16, size / 16);
    let latent = random(&[1, g.dit.in_channels, tokens.0, tokens.1], 5);

    let te = session(&g.text, "klein-text-encoder", rt)?;
    b.measure(&format!("{tag}_text_encode"), &format!("klein {bits:?} text encode (512 tokens)"), || {
        te.run(text_inputs())?;
        Ok(())
    })?;
    let ctx = te.run(text_inputs())?.remove("hidden").context("text encoder output")?;
    drop(te);

    let dit = session(&g.transformer, "klein-transformer", rt)?;
    b.measure(
        &format!("{tag}_step"),
        &format!("klein {bits:?} transformer step ({size}x{size}, {} image + 512 text tokens)", tokens.0 * tokens.1),
        || {
            dit.run(step_inputs(&g.dit, &ctx, tokens))?;
            Ok(())
        },
    )?;
    drop(dit);

    let dec = session(&g.decoder, "klein-vae-decoder", rt)?;
    b.measure(&format!("{tag}_vae_decode"), &format!("klein VAE decode (f32) -> {size}x{size}"), || {
        dec.run(vec![("latent", Input::F32(latent.clone()))])?;
        Ok(())
    })?;
    drop(dec);

    // The whole image, cold: each session created when needed, dropped when done.
    let t = Instant::now();
    let te = Network::new(&g.text, "klein-text-encoder", rt)?;
    let ctx = te.run(text_inputs())?.remove("hidden").context("text encoder output")?;
    drop(te);
    let dit = Network::new(&g.transformer, "klein-transformer", rt)?;
    for _ in 0..4 {
        dit.run(step_inputs(&g.dit, &ctx, tokens))?;
    }
    drop(dit);
    let dec = Network::new(&g.decoder, "klein-vae-decoder", rt)?;
    dec.run(vec![("latent", Input::F32(latent.clone()))])?;
    let secs = t.elapsed().as_secs_f64();
    let label =
        format!("klein {bits:?} 4-step {size}x{size} image from cold (sessions created and dropped in turn: text, 4 steps, decode)");
    eprintln!("  {label}: {secs:.1} s, peak RSS so far {:.2} GiB", peak_rss_gib());
    b.rows.push(Row { key: format!("{tag}_4step_total"), label, times: vec![secs], peak_rss_gib: peak_rss_gib() });
    Ok(())
}
