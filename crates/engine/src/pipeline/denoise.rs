//! The denoising loop every task pipeline shares: where the schedule starts, one guided UNet
//! prediction per step, the scheduler step, and (latent-blend inpainting) keeping the unmasked
//! part on the init image's trajectory.

use std::ops::ControlFlow;
use std::time::Instant;

use ndarray::ArrayD;
use plantain_schedulers::{Scheduler, SchedulerError};
use rand_chacha::ChaCha8Rng;

use super::encode::Conditioning;
use super::{Progress, SdPipeline, gaussian, shaped};
use crate::error::{EngineError, Result};
use crate::runtime::Input;

/// The denoising loop's inputs besides the conditioning.
pub struct DenoiseInput<'a> {
    /// Canvas size in latent cells.
    pub latent_size: (usize, usize),
    pub steps: usize,
    pub guidance: f32,
    /// See [`super::GenerateRequest::guidance_rescale`].
    pub guidance_rescale: f32,
    pub scheduler: Box<dyn Scheduler>,
    /// N(0, 1) noise of the latent's size: the starting point (txt2img) or what the init latents
    /// are noised with (img2img).
    pub noise: Vec<f32>,
    /// Scaled latents of the init image (img2img / inpainting).
    pub init_latents: Option<Vec<f32>>,
    pub strength: f32,
    /// Latent-resolution repaint mask (1 = repaint).
    pub mask: Option<Vec<f32>>,
    /// Scaled latents of the masked image, for 9-channel inpainting UNets.
    pub masked_image_latents: Option<Vec<f32>>,
    /// InstructPix2Pix (8-channel UNets): the input picture's latents and the image guidance.
    pub instruct: Option<InstructInput>,
    /// Draws the fresh noise ancestral samplers need.
    pub rng: &'a mut ChaCha8Rng,
}

/// What an InstructPix2Pix UNet reads besides the latents.
#[derive(Clone, Debug)]
pub struct InstructInput {
    /// The input picture's latents, UNSCALED (the VAE posterior's mode, as diffusers'
    /// `prepare_image_latents` passes them; see [`Pipeline::encode_image_unscaled`]).
    pub image_latents: Vec<f32>,
    /// diffusers' `image_guidance_scale`: guidance by the picture is on at 1 or more (and text
    /// guidance above 1), as there.
    pub image_guidance: f32,
}

/// The denoising loop's state after a step, for callers that want more than the step count
/// (see [`Pipeline::generate_with`](super::Pipeline::generate_with)). Borrowed from the loop:
/// nothing is copied unless asked for, so a callback that ignores it costs nothing.
pub struct StepLatents<'a> {
    estimate: Estimate<'a>,
    /// The latents after the step.
    latents: &'a [f32],
    latent_size: (usize, usize),
}

/// Where a step's estimate of the finished latents comes from.
enum Estimate<'a> {
    /// An SD scheduler's `pred_original_sample` of this step's model output and the latents it
    /// was computed on; for latent-blend inpainting (mask, init latents) outside the mask.
    Scheduler {
        scheduler: &'a dyn Scheduler,
        step_index: usize,
        model_output: &'a [f32],
        sample: &'a [f32],
        keep: Option<(&'a [f32], &'a [f32])>,
    },
    /// Computed by the loop already (flow matching: `x - sigma * velocity`).
    Ready(&'a [f32]),
}

impl<'a> StepLatents<'a> {
    /// A flow-matching step's state: the latents after it and the estimate of the finished
    /// latents, both `[C, h, w]` in latent cells of `latent_size` (h, w).
    pub(crate) fn flow(latents: &'a [f32], denoised: &'a [f32], latent_size: (usize, usize)) -> Self {
        StepLatents { estimate: Estimate::Ready(denoised), latents, latent_size }
    }

    /// Latent height and width.
    pub fn latent_size(&self) -> (usize, usize) {
        self.latent_size
    }

    /// The latents after this step (still noisy until the last one).
    pub fn latents(&self) -> &'a [f32] {
        self.latents
    }

    /// The model's current estimate of the finished latents ("x0", diffusers'
    /// `pred_original_sample`), computed on each call: what a preview of the running
    /// generation is decoded from ([`Pipeline::preview`](super::Pipeline::preview)). For
    /// latent-blend inpainting the part outside the mask is the init image's.
    pub fn denoised(&self) -> Result<Vec<f32>> {
        let (scheduler, step_index, model_output, sample, keep) = match &self.estimate {
            Estimate::Ready(x0) => return Ok(x0.to_vec()),
            Estimate::Scheduler { scheduler, step_index, model_output, sample, keep } => {
                (scheduler, step_index, model_output, sample, keep)
            }
        };
        let mut x0 = scheduler.pred_original_sample(model_output, *step_index, sample).map_err(sched_err)?;
        if let Some((mask, init)) = keep {
            for ((x, i), m) in x0.iter_mut().zip(*init).zip(mask.iter().cycle()) {
                *x = (1.0 - m) * i + m * *x;
            }
        }
        Ok(x0)
    }
}

impl std::fmt::Debug for StepLatents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepLatents").field("latent_size", &self.latent_size).finish_non_exhaustive()
    }
}

/// diffusers' `rescale_noise_cfg`: the guided prediction scaled to the prompt branch's
/// standard deviation (unbiased, over the whole latent as diffusers takes it per sample),
/// mixed `phi` : `1 - phi` with the unscaled one.
pub fn rescale_guided(pos: &[f32], guided: Vec<f32>, phi: f32) -> Vec<f32> {
    if phi <= 0.0 || pos.len() < 2 {
        return guided;
    }
    let std = |v: &[f32]| {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    let (sp, sg) = (std(pos), std(&guided));
    if sg == 0.0 {
        return guided;
    }
    let factor = (sp / sg) as f32;
    guided.into_iter().map(|g| phi * g * factor + (1.0 - phi) * g).collect()
}

fn sched_err(e: SchedulerError) -> EngineError {
    EngineError::Scheduler(e.to_string())
}

/// What the UNet reads besides the step's latents and timestep: the same at every step.
struct UnetInputs {
    /// Text conditioning (and SDXL's pooled embeddings and size ids), already batched.
    fixed: Vec<(&'static str, ArrayD<f32>)>,
    /// Channels appended to each batch row's latents: one entry per row (9-channel inpainting:
    /// mask and masked-image latents; InstructPix2Pix: the image latents, zeros in the
    /// unconditional row), or none.
    extra: Vec<Vec<f32>>,
    /// `[batch, in_channels, h, w]` of the `sample` input.
    sample_shape: [usize; 4],
    /// Values in one latent (`c * h * w`): one branch of the UNet's output.
    latent_len: usize,
    combine: Combine,
}

/// How the guided prediction is made from the UNet's branches.
#[derive(Clone, Copy)]
enum Combine {
    /// One branch, taken as it is.
    Single,
    /// Rows (negative, prompt): classifier-free guidance, optionally rescaled.
    Cfg { scale: f32, rescale: f32 },
    /// Rows (prompt + image, negative + image, negative + no image): InstructPix2Pix's
    /// `uncond + text * (prompt - image) + image * (image - uncond)`.
    Instruct { text: f32, image: f32 },
}

impl SdPipeline {
    /// The denoising loop. Returns the final scaled latents.
    pub fn denoise(
        &self,
        cond: &Conditioning,
        input: DenoiseInput,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Vec<f32>> {
        self.denoise_with(cond, input, &mut |p, _| progress(p))
    }

    /// [`Pipeline::denoise`] with a callback that also sees the step's latents
    /// ([`StepLatents`]), e.g. to make previews.
    pub fn denoise_with(
        &self,
        cond: &Conditioning,
        input: DenoiseInput,
        on_step: &mut dyn FnMut(&Progress, &StepLatents<'_>) -> ControlFlow<()>,
    ) -> Result<Vec<f32>> {
        let DenoiseInput {
            latent_size,
            steps,
            guidance,
            guidance_rescale,
            mut scheduler,
            noise,
            init_latents,
            strength,
            mask,
            masked_image_latents,
            instruct,
            rng,
        } = input;
        self.check_denoise_input(latent_size, &noise, init_latents.as_deref(), mask.is_some() && masked_image_latents.is_some())?;
        let extra = self.extra_channels(mask.as_deref(), masked_image_latents.as_deref(), instruct.as_ref(), noise.len())?;
        let (begin, mut latents) = start(scheduler.as_mut(), steps, strength, init_latents.as_deref(), &noise)?;
        let unet_in = self.unet_inputs(cond, latent_size, extra, (guidance, guidance_rescale))?;
        // Latent-blend inpainting for ordinary checkpoints: keep the unmasked part on the init
        // image's trajectory.
        let keep = match (&mask, &init_latents) {
            (Some(m), Some(init)) if !self.is_inpainting_model() => Some((m.as_slice(), init.as_slice())),
            _ => None,
        };
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len() - begin;
        let started = Instant::now();
        for (k, i) in (begin..timesteps.len()).enumerate() {
            let t = timesteps[i];
            let model_out = self.predict(&unet_in, scheduler.as_ref(), &latents, i, t)?;
            let step_noise = if scheduler.needs_noise(i) { Some(gaussian(rng, unet_in.latent_len)) } else { None };
            let mut next = scheduler.step(&model_out, i, &latents, step_noise.as_deref()).map_err(sched_err)?;
            if let Some((m, init)) = keep {
                let proper =
                    if i + 1 < timesteps.len() { scheduler.add_noise(init, &noise, i + 1).map_err(sched_err)? } else { init.to_vec() };
                blend(&mut next, &proper, m);
            }
            let progress = Progress { step: k + 1, total, timestep: t, elapsed: started.elapsed() };
            let estimate =
                Estimate::Scheduler { scheduler: scheduler.as_ref(), step_index: i, model_output: &model_out, sample: &latents, keep };
            let state = StepLatents { estimate, latents: &next, latent_size };
            if on_step(&progress, &state).is_break() {
                return Err(EngineError::Cancelled);
            }
            latents = next;
        }
        Ok(latents)
    }

    /// Latent sizes agree with the model, and a 9-channel inpainting UNet has what it reads.
    fn check_denoise_input(&self, (h, w): (usize, usize), noise: &[f32], init: Option<&[f32]>, has_inpaint_inputs: bool) -> Result<()> {
        let c = self.vae_cfg.latent_channels;
        let n = c * h * w;
        if noise.len() != n || init.is_some_and(|l| l.len() != n) {
            return Err(EngineError::InvalidRequest(format!("latents must have {n} values ({c}x{h}x{w})")));
        }
        if self.is_inpainting_model() && !has_inpaint_inputs {
            return Err(EngineError::InvalidRequest("this is an inpainting model: give an image and a mask".into()));
        }
        Ok(())
    }

    /// What the UNet reads beside the latents, before batching: the inpainting inputs, or the
    /// InstructPix2Pix image latents (checked for size here).
    fn extra_channels(&self, mask: Option<&[f32]>, masked: Option<&[f32]>, instruct: Option<&InstructInput>, n: usize) -> Result<Extra> {
        if self.is_instruct_model() {
            let ins =
                instruct.ok_or_else(|| EngineError::InvalidRequest("this is an InstructPix2Pix model: give the image to edit".into()))?;
            if ins.image_latents.len() != n {
                return Err(EngineError::InvalidRequest(format!("image latents must have {n} values, got {}", ins.image_latents.len())));
            }
            return Ok(Extra::Instruct(ins.image_latents.clone(), ins.image_guidance));
        }
        Ok(match (mask, masked) {
            (Some(m), Some(ml)) if self.is_inpainting_model() => Extra::Same(m.iter().chain(ml).copied().collect()),
            _ => Extra::None,
        })
    }

    /// The UNet inputs that do not change between steps.
    fn unet_inputs(&self, cond: &Conditioning, (h, w): (usize, usize), extra: Extra, (scale, rescale): (f32, f32)) -> Result<UnetInputs> {
        let conditioning_rows = if cond.guided { 2 } else { 1 };
        if cond.hidden.shape()[0] != conditioning_rows {
            return Err(EngineError::InvalidRequest(
                "conditioning and guidance disagree (encode the prompt with the same guidance)".into(),
            ));
        }
        let (hidden, extra, combine) = batch_rows(cond, extra, scale, rescale)?;
        let batch = hidden.shape()[0];
        let mut fixed: Vec<(&'static str, ArrayD<f32>)> = vec![("encoder_hidden_states", hidden)];
        if self.unet_cfg.text_time.is_some() {
            let pooled = cond.pooled.as_ref().ok_or_else(|| EngineError::InvalidRequest("SDXL needs pooled text embeddings".into()))?;
            fixed.push(("text_embeds", pooled.clone().into_dyn()));
            let (ph, pw) = ((h * self.vae_scale() as usize) as f32, (w * self.vae_scale() as usize) as f32);
            // original size, crop top-left, target size: an uncropped picture of the canvas size.
            let ids: Vec<f32> = (0..batch).flat_map(|_| [ph, pw, 0.0, 0.0, ph, pw]).collect();
            fixed.push(("time_ids", shaped(&[batch, 6], ids)?));
        }
        Ok(UnetInputs {
            fixed,
            extra,
            sample_shape: [batch, self.unet_cfg.in_channels, h, w],
            latent_len: self.vae_cfg.latent_channels * h * w,
            combine,
        })
    }

    /// One UNet call on step `i`'s latents, combined into the guided model output. The last
    /// step of a loop gives the UNet's activation memory back before the VAE decodes.
    fn predict(&self, u: &UnetInputs, scheduler: &dyn Scheduler, latents: &[f32], i: usize, t: f32) -> Result<Vec<f32>> {
        let batch = u.sample_shape[0];
        let one = scheduler.scale_model_input(latents, i).map_err(sched_err)?;
        let mut sample = Vec::with_capacity(u.sample_shape.iter().product());
        for b in 0..batch {
            sample.extend_from_slice(&one);
            sample.extend_from_slice(u.extra.get(b).map(Vec::as_slice).unwrap_or(&[]));
        }
        let mut inputs =
            vec![("sample", Input::F32(shaped(&u.sample_shape, sample)?)), ("timestep", Input::F32(shaped(&[batch], vec![t; batch])?))];
        for (name, v) in &u.fixed {
            inputs.push((*name, Input::F32(v.clone())));
        }
        let last = i + 1 == scheduler.timesteps().len();
        let out = if last { self.unet.run_releasing(inputs)? } else { self.unet.run(inputs)? };
        let pred = out.get("out_sample").ok_or_else(|| EngineError::Runtime("UNet gave no output".into()))?;
        let pred = pred.as_slice().ok_or_else(|| EngineError::Runtime("UNet output not contiguous".into()))?;
        let n = u.latent_len;
        Ok(match u.combine {
            Combine::Single => pred[..n].to_vec(),
            Combine::Cfg { scale, rescale } => {
                let (neg, pos) = pred.split_at(n);
                let guided: Vec<f32> = neg.iter().zip(pos).map(|(u, c)| u + scale * (c - u)).collect();
                rescale_guided(&pos[..n], guided, rescale)
            }
            Combine::Instruct { text, image } => {
                let (p, rest) = pred.split_at(n);
                let (im, un) = rest.split_at(n);
                p.iter().zip(im).zip(un).map(|((p, im), un)| un + text * (p - im) + image * (im - un)).collect()
            }
        })
    }
}

/// Channels appended to the latents, before batching.
enum Extra {
    None,
    /// The same for every batch row (inpainting).
    Same(Vec<f32>),
    /// InstructPix2Pix: the image latents and the image guidance scale.
    Instruct(Vec<f32>, f32),
}

/// The batch the UNet runs: hidden-state rows, the extra channels of each row and how the rows'
/// predictions combine. `cond` holds (negative, prompt) when guided, else the prompt alone.
fn batch_rows(cond: &Conditioning, extra: Extra, scale: f32, rescale: f32) -> Result<(ArrayD<f32>, Vec<Vec<f32>>, Combine)> {
    let hidden = cond.hidden.clone().into_dyn();
    let rows = hidden.shape()[0];
    let prompt_row = || hidden.slice_axis(ndarray::Axis(0), ndarray::Slice::from(rows - 1..rows)).to_owned();
    Ok(match extra {
        Extra::None if cond.guided => (hidden, vec![], Combine::Cfg { scale, rescale }),
        Extra::None => (hidden, vec![], Combine::Single),
        Extra::Same(e) => {
            let combine = if cond.guided { Combine::Cfg { scale, rescale } } else { Combine::Single };
            (hidden, vec![e; rows], combine)
        }
        // diffusers guides an InstructPix2Pix model only when both scales ask for it.
        Extra::Instruct(image, image_scale) if cond.guided && image_scale >= 1.0 => {
            let neg = hidden.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..1)).to_owned();
            let zeros = vec![0.0; image.len()];
            let h = ndarray::concatenate(ndarray::Axis(0), &[prompt_row().view(), neg.view(), neg.view()])
                .map_err(|e| EngineError::Runtime(e.to_string()))?;
            (h, vec![image.clone(), image, zeros], Combine::Instruct { text: scale, image: image_scale })
        }
        Extra::Instruct(image, _) => (prompt_row(), vec![image], Combine::Single),
    })
}

/// Sets the scheduler's timesteps and returns the first step to run and the latents it starts
/// from: the init latents noised to the start of the shortened schedule (img2img, strength < 1)
/// or the noise scaled to the scheduler's initial sigma.
fn start(scheduler: &mut dyn Scheduler, steps: usize, strength: f32, init: Option<&[f32]>, noise: &[f32]) -> Result<(usize, Vec<f32>)> {
    match init {
        Some(init) if strength < 1.0 => {
            let begin = scheduler.set_timesteps_img2img(steps, strength as f64).map_err(sched_err)?;
            if begin >= scheduler.timesteps().len() {
                return Err(EngineError::InvalidRequest(format!(
                    "strength {strength} with {steps} steps leaves no step to run; raise one of them"
                )));
            }
            Ok((begin, scheduler.add_noise(init, noise, begin).map_err(sched_err)?))
        }
        _ => {
            scheduler.set_timesteps(steps).map_err(sched_err)?;
            let s = scheduler.init_noise_sigma();
            Ok((0, noise.iter().map(|v| v * s).collect()))
        }
    }
}

/// `latents = (1 - mask) * keep + mask * latents`, the mask repeated over the channels.
fn blend(latents: &mut [f32], keep: &[f32], mask: &[f32]) {
    for ((l, p), mv) in latents.iter_mut().zip(keep).zip(mask.iter().cycle()) {
        *l = (1.0 - mv) * p + mv * *l;
    }
}

#[cfg(test)]
mod tests {
    use super::rescale_guided;

    fn std(v: &[f32]) -> f64 {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    }

    #[test]
    fn guidance_rescale_matches_the_prompt_branch_spread() {
        let pos: Vec<f32> = (0..64).map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.1).collect();
        let guided: Vec<f32> = pos.iter().enumerate().map(|(i, p)| 3.0 * p + 0.05 * (i % 5) as f32).collect();
        assert_eq!(rescale_guided(&pos, guided.clone(), 0.0), guided, "0 is plain guidance");
        let full = rescale_guided(&pos, guided.clone(), 1.0);
        assert!((std(&full) - std(&pos)).abs() < 1e-5, "{} vs {}", std(&full), std(&pos));
        let ratio = full[3] / guided[3];
        assert!(full.iter().zip(&guided).all(|(f, g)| (f - g * ratio).abs() < 1e-5), "a pure rescale of the guided prediction");
        let half = rescale_guided(&pos, guided.clone(), 0.7);
        for ((h, f), g) in half.iter().zip(&full).zip(&guided) {
            assert!((h - (0.7 * f + 0.3 * g)).abs() < 1e-5);
        }
    }
}
