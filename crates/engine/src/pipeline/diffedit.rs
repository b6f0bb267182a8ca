//! DiffEdit's mask (Couairon et al. 2022; diffusers' `StableDiffusionDiffEditPipeline.
//! generate_mask`): where a picture must change to go from one text to another, read off the
//! model itself. The picture's latents are noised part of the way (`encode_strength`) with a few
//! independent noises; the UNet predicts the noise under the source text and under the target
//! text (each with classifier-free guidance), and the mean absolute difference of the two
//! predictions, clamped at `threshold_ratio` times its mean and halved, is the mask. Works on
//! any model the text-to-image pipeline runs (SD 1.x / 2.x; not SDXL, inpainting or
//! InstructPix2Pix UNets, whose extra inputs the method does not define).

use image::imageops::FilterType;
use image::{GrayImage, RgbImage};
use ndarray::{Axis, concatenate};
use plantain_schedulers::SchedulerKind;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Conditioning, SdPipeline, gaussian, images, shaped};
use crate::error::{EngineError, Result};
use crate::runtime::Input;

/// The settings of a DiffEdit mask; the defaults are diffusers'.
#[derive(Clone, Copy, Debug)]
pub struct DiffEditOptions {
    /// Independent noises averaged over (`num_maps_per_mask`).
    pub maps: usize,
    /// How far into the schedule the picture is noised (`mask_encode_strength`).
    pub encode_strength: f32,
    /// The map is clamped at this many times its mean (`mask_thresholding_ratio`).
    pub threshold_ratio: f32,
    /// The DDIM schedule the noise level is taken from (`num_inference_steps`).
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
}

impl Default for DiffEditOptions {
    fn default() -> Self {
        Self { maps: 10, encode_strength: 0.5, threshold_ratio: 3.0, steps: 50, guidance: 7.5, seed: 0 }
    }
}

/// A DiffEdit mask at latent resolution.
#[derive(Clone, Debug)]
pub struct DiffEditMask {
    /// (height, width) in latent cells.
    pub latent_size: (usize, usize),
    /// The mean absolute difference of the two noise predictions per cell.
    pub map: Vec<f32>,
    /// 1 where the map, clamped at `threshold_ratio` x its mean and divided by that, is over
    /// one half; else 0 (diffusers' `semantic_mask_image`).
    pub mask: Vec<f32>,
    /// The timestep the picture was noised to.
    pub timestep: f32,
}

impl DiffEditMask {
    /// The binary mask as a picture of `width` x `height` (255 = change), smoothed by the
    /// upscaling from latent cells.
    pub fn to_image(&self, width: u32, height: u32) -> GrayImage {
        let (h, w) = self.latent_size;
        let small = GrayImage::from_fn(w as u32, h as u32, |x, y| image::Luma([(self.mask[y as usize * w + x as usize] * 255.0) as u8]));
        image::imageops::resize(&small, width, height, FilterType::Triangle)
    }

    /// Share of the cells in the mask.
    pub fn coverage(&self) -> f32 {
        self.mask.iter().sum::<f32>() / self.mask.len().max(1) as f32
    }
}

impl SdPipeline {
    /// DiffEdit's mask for changing `image` from `source` to `target` text (either may be
    /// empty), at the canvas the model would draw the picture at; `negative` is both branches'
    /// negative prompt. Noise comes from `opts.seed`.
    pub fn diffedit_mask(
        &self,
        image: &RgbImage,
        source: &str,
        target: &str,
        negative: Option<&str>,
        opts: &DiffEditOptions,
    ) -> Result<DiffEditMask> {
        self.check_diffedit(opts)?;
        let (cw, ch) = self.canvas_for(image.width(), image.height());
        let latents = self.encode_image(&images::resize_exact(image.clone(), cw, ch))?;
        let vs = self.vae_scale();
        let latent_size = ((ch / vs) as usize, (cw / vs) as usize);
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let noise = gaussian(&mut rng, opts.maps * latents.len());
        let neg = Some(negative.unwrap_or(""));
        let src = self.encode_prompt(source, neg, opts.guidance)?;
        let tgt = self.encode_prompt(target, neg, opts.guidance)?;
        self.diffedit_map(&src, &tgt, &latents, &noise, latent_size, opts)
    }

    /// The mask from given parts, for callers (and parity tests) that hold them: the scaled
    /// latents of the picture, `opts.maps` noises of their size one after the other, and the
    /// two texts' conditioning (each with its negative branch when guided).
    pub fn diffedit_map(
        &self,
        source: &Conditioning,
        target: &Conditioning,
        latents: &[f32],
        noise: &[f32],
        (h, w): (usize, usize),
        opts: &DiffEditOptions,
    ) -> Result<DiffEditMask> {
        self.check_diffedit(opts)?;
        let c = self.vae_cfg.latent_channels;
        let n = c * h * w;
        if latents.len() != n || noise.len() != n * opts.maps {
            return Err(EngineError::InvalidRequest(format!("DiffEdit needs {n} latent values and {} noise values", n * opts.maps)));
        }
        if source.guided != target.guided || source.pooled.is_some() {
            return Err(EngineError::InvalidRequest("DiffEdit needs both texts encoded alike, without pooled embeddings".into()));
        }
        let mut sched = self.scheduler_for(Some(SchedulerKind::Ddim))?.0;
        let begin =
            sched.set_timesteps_img2img(opts.steps, opts.encode_strength as f64).map_err(|e| EngineError::Scheduler(e.to_string()))?;
        let t = *sched.timesteps().get(begin).ok_or_else(|| EngineError::InvalidRequest("encode_strength leaves no timestep".into()))?;
        let rows = concatenate(Axis(0), &[source.hidden.view(), target.hidden.view()]).map_err(|e| EngineError::Runtime(e.to_string()))?;
        let mut map = vec![0.0f32; h * w];
        for k in 0..opts.maps {
            let noisy = sched.add_noise(latents, &noise[k * n..(k + 1) * n], begin).map_err(|e| EngineError::Scheduler(e.to_string()))?;
            let x = sched.scale_model_input(&noisy, begin).map_err(|e| EngineError::Scheduler(e.to_string()))?;
            let (src, tgt) = self.diffedit_predictions(&rows, &x, t, (c, h, w), source.guided, opts.guidance)?;
            for (i, (s, g)) in src.iter().zip(&tgt).enumerate() {
                map[i % (h * w)] += (g - s).abs() / (c * opts.maps) as f32;
            }
        }
        let clamp = map.iter().sum::<f32>() / map.len() as f32 * opts.threshold_ratio;
        let mask = map.iter().map(|&v| if v.clamp(0.0, clamp) / clamp <= 0.5 { 0.0 } else { 1.0 }).collect();
        Ok(DiffEditMask { latent_size: (h, w), map, mask, timestep: t })
    }

    /// The guided source and target noise predictions for one noisy latent.
    fn diffedit_predictions(
        &self,
        rows: &ndarray::Array3<f32>,
        x: &[f32],
        t: f32,
        (c, h, w): (usize, usize, usize),
        guided: bool,
        guidance: f32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let batch = rows.shape()[0];
        let sample: Vec<f32> = (0..batch).flat_map(|_| x.iter().copied()).collect();
        let out = self.unet.run(vec![
            ("sample", Input::F32(shaped(&[batch, c, h, w], sample)?)),
            ("timestep", Input::F32(shaped(&[batch], vec![t; batch])?)),
            ("encoder_hidden_states", Input::F32(rows.clone().into_dyn())),
        ])?;
        let pred = out.get("out_sample").ok_or_else(|| EngineError::Runtime("UNet gave no output".into()))?;
        let pred = pred.as_slice().ok_or_else(|| EngineError::Runtime("UNet output not contiguous".into()))?;
        let n = c * h * w;
        let row = |i: usize| &pred[i * n..(i + 1) * n];
        let guide = |neg: &[f32], pos: &[f32]| neg.iter().zip(pos).map(|(u, p)| u + guidance * (p - u)).collect::<Vec<f32>>();
        Ok(if guided { (guide(row(0), row(1)), guide(row(2), row(3))) } else { (row(0).to_vec(), row(1).to_vec()) })
    }

    fn check_diffedit(&self, opts: &DiffEditOptions) -> Result<()> {
        if self.te2.is_some() || self.unet_cfg.in_channels != self.vae_cfg.latent_channels {
            return Err(EngineError::Unsupported(
                "DiffEdit masks need a plain SD 1.x/2.x model (not SDXL, an inpainting or an InstructPix2Pix model)".into(),
            ));
        }
        if opts.maps == 0 || opts.maps > 64 {
            return Err(EngineError::InvalidRequest(format!("DiffEdit maps must be 1..=64, got {}", opts.maps)));
        }
        let ratio_ok = opts.threshold_ratio.is_finite() && opts.threshold_ratio > 0.0;
        let strength_ok = opts.encode_strength > 0.0 && opts.encode_strength <= 1.0;
        if !(ratio_ok && strength_ok) {
            return Err(EngineError::InvalidRequest("DiffEdit needs a positive threshold ratio and an encode strength in (0, 1]".into()));
        }
        Ok(())
    }
}
