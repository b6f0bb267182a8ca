//! What attention at the UNet's 16x16 level would cost per training step, by kind: the
//! self-attention over its 256 cells that diffusers' transformer block has, against attending
//! to the caption's 77 states only (diffusers' `only_cross_attention`). Forward + backward of
//! `nn::attention` alone, at the shapes a batch of 16 gives (32 channels, 4 heads), alternated.
//!
//!     cargo run --release -p plantain-nano --example attention_cost [rounds]
use std::time::Instant;

use candle_core::{Device, Tensor, Var};

fn time(q: &Var, k: &Var, v: &Var) -> plantain_nano::Result<f64> {
    let start = Instant::now();
    let a = plantain_nano::nn::attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), 4, None)?;
    let _grads = a.sqr()?.mean_all()?.backward()?;
    Ok(start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> plantain_nano::Result<()> {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(9);
    let (batch, cells, words, ch) = (16, 256, 77, 32);
    let var = |n: usize| Var::from_tensor(&Tensor::randn(0f32, 1.0, (batch, n, ch), &Device::Cpu)?);
    let (q, k_self, v_self, k_text, v_text) = (var(cells)?, var(cells)?, var(cells)?, var(words)?, var(words)?);
    let (mut own, mut text) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        own.push(time(&q, &k_self, &v_self)?);
        text.push(time(&q, &k_text, &v_text)?);
    }
    let (own, text) = (median(own), median(text));
    println!("16x16 attention, batch {batch}, {ch} channels, 4 heads, forward + backward, median of {rounds}:");
    println!("| keys | time |");
    println!("|---|---:|");
    println!("| 256 cells (self-attention) | {:.1} ms |", own * 1e3);
    println!("| 77 caption states (cross-attention) | {:.1} ms |", text * 1e3);
    Ok(())
}
