//! The generative edit path at 1K on full-size SD-Turbo weights. They are random (no real
//! weights can be fetched here), so the repaint is noise: the time and memory are real, the
//! picture is not. ISNet finds the photograph's subject, the background is repainted by
//! SD-Turbo (one step at its 512x512 canvas, resized to 1024x1024), then pasted back. A name
//! lookup (DiffEdit) on the same model is timed too: the mask is noise, its cost is real.

use std::path::Path;

use anyhow::{Context, Result, bail};
use image::imageops::FilterType;
use std::sync::Arc;

use plantain_director::edit::{EditOptions, ModelFinder, SubjectFinder, plan};
use plantain_engine::pipeline::{GenerateRequest, LoadOptions, ModelSource, Pipeline};
use plantain_engine::resize::Lanczos3;
use plantain_engine::runtime::RuntimeOptions;

use super::Bench;

const INSTRUCTION: &str = "replace the background with a snowy mountain";

pub fn turbo_edit(dir: &Path, rt: &RuntimeOptions, b: &mut Bench, photo: &Path) -> Result<()> {
    let img = image::open(photo).with_context(|| format!("{} (run `bash scripts/setup.sh`)", photo.display()))?.to_rgb8();
    let img = image::imageops::resize(&img, 1024, 1024, FilterType::Lanczos3);
    let segmenter = plantain_vision::Segmenter::open_installed()?;
    let p = Pipeline::load(&ModelSource::Diffusers(dir.to_path_buf()), &LoadOptions { runtime: rt.clone(), ..Default::default() })?;
    eprintln!("SD-Turbo edit at 1K");
    let mut outside = 0;
    b.measure(
        "turbo_edit_background_1k",
        &format!("\"{INSTRUCTION}\" on a 1024x1024 photograph: ISNet + SD-Turbo 1-step repaint + paste-back"),
        || {
            let plan = plan(INSTRUCTION, std::slice::from_ref(&img), &EditOptions::default(), Some(&segmenter))?;
            let Some(paint) = plan.paint_request() else { bail!("the plan asked for no repaint") };
            let (w, h) = paint.image.dimensions();
            let mut req = GenerateRequest::new(paint.prompt.clone(), w, h);
            req.steps = 1;
            req.guidance = 0.0;
            req.strength = paint.strength;
            req.init_image = Some(paint.image.clone());
            req.mask = paint.mask.clone();
            let g = p.generate(&req, &mut |_| std::ops::ControlFlow::Continue(()))?.resized(&Lanczos3)?;
            outside += plan.finish(Some(g.image))?.report.outside_changed.unwrap_or(u64::MAX);
            Ok(())
        },
    )?;
    eprintln!("  pixels changed outside the region, all runs: {outside}");
    let finder = ModelFinder { subject: segmenter, pipeline: Some(Arc::new(p)), seed: 0 };
    b.measure(
        "turbo_diffedit_lookup_1k",
        "\"the astronaut\" looked up by name on a 1024x1024 photograph: DiffEdit mask, 4 noises x 4 branches of the SD-Turbo UNet at its 512x512 canvas",
        || {
            let found = finder.named(&img, "astronaut").context("the model cannot look names up")??;
            anyhow::ensure!(found.dimensions() == img.dimensions(), "the mask is not the picture's size");
            Ok(())
        },
    )
}
