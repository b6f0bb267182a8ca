//! `plantain edit` and `plantain fuse`: an instruction on a picture (or several), planned by
//! the director, painted by the model when the plan needs one, pasted back pixel-exact.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plantain_core::{AspectRatio, ImageSize};
use std::sync::Arc;

use plantain_director::edit::{
    EditError, EditOptions, EditPlan, Edited, LazySegmenter, ModelFinder, Painter, SubjectFinder, painter_for, plan,
};
use plantain_director::generate::{Budget, Examined, Looper, Settings, asked_of, edit_checks};
use plantain_engine::pipeline::Pipeline;
use plantain_engine::runtime::RuntimeOptions;
use plantain_engine::upscale::UpscaleModel;
use plantain_provenance::{Action, Ingredient, ManifestInfo};

use crate::generate::{LoadSpec, LoopArgs, generate_with_bar, load_pipeline, resolve_model};
use crate::io;
use crate::provenance_cmd::{self, StampArgs};

/// What `edit` and `fuse` share.
#[derive(clap::Args)]
pub struct Common {
    /// The model that paints when the plan needs one (plantain-nano, bundled, by default).
    #[arg(long, short, default_value = "plantain-nano")]
    pub model: String,
    /// Output file (.png, .jpg/.jpeg or .webp).
    #[arg(long, short, default_value = "out.png")]
    pub output: PathBuf,
    /// Print the plan: the operation, the region, how it was found, how many pixels.
    #[arg(long)]
    pub explain: bool,
    /// Only plan (with --explain): nothing is painted or written.
    #[arg(long, requires = "explain")]
    pub dry_run: bool,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Denoising steps for a repaint (default: the model's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long)]
    pub cuda: bool,
    /// A LoRA file for the painting model (kohya or diffusers/PEFT naming), FILE or FILE:SCALE;
    /// several are applied in order.
    #[arg(long = "lora", value_name = "FILE[:SCALE]", value_parser = plantain_engine::pipeline::LoraSpec::parse)]
    pub loras: Vec<plantain_engine::pipeline::LoraSpec>,
    #[command(flatten)]
    pub weights: crate::generate::WeightArgs,
    /// The super-resolution model of an upscale edit ("upscale to 4K"): x4plus (photographs),
    /// anime (illustrations) or animevideov3 (illustrations, fast).
    #[arg(long, default_value = "x4plus", value_parser = UpscaleModel::parse)]
    pub upscaler: UpscaleModel,
    #[command(flatten)]
    pub checks: LoopArgs,
    #[command(flatten)]
    pub provenance: StampArgs,
}

#[derive(clap::Args)]
pub struct EditArgs {
    /// The picture to edit.
    pub image: PathBuf,
    /// What to change ("replace the background with a snowy mountain", "make it warmer",
    /// "remove the cup on the left", "extend the scene" with --aspect).
    pub instruction: String,
    /// Extend the picture to this aspect ratio (outpainting).
    #[arg(long)]
    pub aspect: Option<AspectRatio>,
    /// Repaint only this mask (white = change); the instruction is the prompt for it.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// The size of an upscale ("upscale it" with --size 4K; default 2K): 2K or 4K.
    #[arg(long)]
    pub size: Option<ImageSize>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct FuseArgs {
    /// Two to fourteen pictures, then the instruction ("put the subject of image 1 into the
    /// scene of image 2, on the left"). Without image numbers, the last picture is the scene
    /// and every other one a subject placed into it.
    #[arg(required = true, num_args = 3..=15)]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

pub fn run_edit(a: EditArgs) -> Result<()> {
    let mask = a.mask.as_deref().map(io::read_mask).transpose()?;
    let opts = EditOptions { aspect: a.aspect, mask, size: a.size, ..Default::default() };
    run(&[a.image], &a.instruction, opts, &a.common)
}

pub fn run_fuse(a: FuseArgs) -> Result<()> {
    let (instruction, paths) = a.inputs.split_last().context("give the pictures, then the instruction")?;
    if paths.len() < 2 {
        bail!("fusion takes two to fourteen pictures and an instruction");
    }
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    run(&paths, instruction, EditOptions::default(), &a.common)
}

fn run(paths: &[PathBuf], instruction: &str, opts: EditOptions, c: &Common) -> Result<()> {
    let format = provenance_cmd::output_format(&c.output)?;
    let images = paths.iter().map(|p| io::read_rgb(p)).collect::<Result<Vec<_>>>()?;
    let (plan, model) = plan_with_model(instruction, &images, opts, c)?;
    if c.explain {
        println!("{}", plan.explain());
    }
    if c.dry_run {
        return Ok(());
    }
    if plan.matte.is_some() && format == plantain_provenance::MediaFormat::Jpeg {
        bail!("{}: a transparent cut-out cannot be JPEG (no alpha channel); write .png or .webp", c.output.display());
    }
    let prov = provenance_cmd::load_for_stamping(&c.provenance)?;
    let (edited, seed, steps) = carry_out(&plan, model.as_ref(), c)?;
    let bytes = stamp(&prov, &plan, &edited, format, &c.model, paths, seed, steps)?;
    io::write_atomic(&bytes, &c.output)?;
    let r = &edited.report;
    let fidelity = r.fidelity_db.map(|db| format!("; shrunk back to {}x{}: {db:.1} dB PSNR against the input", r.input.0, r.input.1));
    println!(
        "{}: {}x{}, {} — {} pixels changed, {} outside the region{}",
        c.output.display(),
        r.output.0,
        r.output.1,
        r.operation,
        r.changed.unwrap_or(0),
        r.outside_changed.unwrap_or(0),
        fidelity.unwrap_or_default()
    );
    Ok(())
}

/// The loaded model and its defaults.
type Model = (Arc<Pipeline>, plantain_hub::ResolvedModel);

/// Plans without the model first (exact edits never load it); when the plan needs a painter,
/// or names an object only the model can find (DiffEdit), loads the model and plans again
/// with it: it finds things by name and, if it edits by instruction (InstructPix2Pix, FLUX.2
/// [klein]), paints by the user's own words. A model known to edit by instruction before it is
/// loaded (FLUX.2 [klein], by its folder) plans that way from the start, so that words only it
/// can carry out go to it, and a picture too large for it is refused before it loads.
fn plan_with_model(instruction: &str, images: &[image::RgbImage], opts: EditOptions, c: &Common) -> Result<(EditPlan, Option<Model>)> {
    let segmenter = Arc::new(Remembered::default());
    let known = plantain_hub::resolve(&c.model, &crate::hubcmd::resolve_options()).ok();
    let klein = known.as_ref().is_some_and(|r| r.defaults.prediction == plantain_hub::Prediction::FlowMatching);
    let guessed = if klein { Painter::References } else { opts.painter };
    let first = plan(instruction, images, &EditOptions { painter: guessed, ..opts.clone() }, Some(&segmenter))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if first.paint_request().is_none() && !first.names_unchecked {
        return Ok((first, None));
    }
    if let Some(r) = known.as_ref().filter(|_| klein) {
        check_reference_sizes(images, r.defaults.resolution)?;
    }
    let resolved = resolve_model(&c.model)?;
    let load = LoadSpec { loras: c.loras.clone(), threads: c.threads, cuda: c.cuda, weights: c.weights.options(), ..Default::default() };
    let pipeline = Arc::new(load_pipeline(&resolved, &load)?);
    let opts = EditOptions { painter: painter_for(&pipeline), ..opts };
    let finder = ModelFinder { subject: segmenter, pipeline: Some(pipeline.clone()), seed: c.seed.unwrap_or(0) };
    let again = plan(instruction, images, &opts, Some(&finder)).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((again, Some((pipeline, resolved))))
}

/// FLUX.2 [klein] reads each picture as a reference: one over the engine's limit for the
/// model's native size is refused here, before the model loads.
fn check_reference_sizes(images: &[image::RgbImage], native: u32) -> Result<()> {
    let max = plantain_engine::pipeline::max_reference_pixels(native);
    for (i, img) in images.iter().enumerate() {
        let (w, h) = img.dimensions();
        if u64::from(w) * u64::from(h) > max {
            bail!(
                "picture {} is {w}x{h} ({} pixels), over FLUX.2 [klein]'s limit of {max} pixels for a reference; scale it down first",
                i + 1,
                u64::from(w) * u64::from(h)
            );
        }
    }
    Ok(())
}

/// The segmenter with its answers kept, so that planning again with the model does not run
/// it again on the same pictures.
#[derive(Default)]
struct Remembered {
    inner: LazySegmenter,
    seen: std::sync::Mutex<Vec<(image::RgbImage, image::GrayImage)>>,
}

impl SubjectFinder for Remembered {
    fn subject(&self, image: &image::RgbImage) -> Result<image::GrayImage, EditError> {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, mask)) = seen.iter().find(|(i, _)| i == image) {
            return Ok(mask.clone());
        }
        let mask = self.inner.subject(image)?;
        seen.push((image.clone(), mask.clone()));
        Ok(mask)
    }
}

/// Carries the plan out through the loop: a model-painted edit is painted, pasted back and
/// checked (locality, the asked change, quality) up to the budget's attempts, each with a new
/// seed, the best kept; exact image maths is made once and checked. With --explain every
/// attempt's checks are printed.
fn carry_out(plan: &EditPlan, model: Option<&Model>, c: &Common) -> Result<(Edited, u64, usize)> {
    let asked = asked_of(plan);
    let installed = c.checks.installed()?;
    let painted = plan.paint_request().is_some() && model.is_some();
    let budget = if painted { c.checks.budget() } else { Budget { attempts: 1, ..c.checks.budget() } };
    let first = match model {
        Some((_, r)) => Settings {
            seed: c.seed.unwrap_or_else(rand::random),
            steps: c.steps.unwrap_or(r.defaults.steps as usize),
            guidance: r.defaults.guidance,
        },
        None => Settings { seed: 0, steps: 0, guidance: 0.0 },
    };
    let mut looper = Looper::new(&asked, first, budget);
    let mut made = Vec::new();
    while let Some(p) = looper.next_attempt() {
        let (edited, seed, steps) = paint_once(plan, model, &p.settings, c)?;
        let checks = edit_checks(plan, &asked, &edited.report, &edited.image, &installed.checkers(&asked));
        looper.record_examined(Examined { image: edited.image.clone(), drawn: edited.image.clone(), checks });
        made.push((edited, seed, steps));
    }
    let outcome = looper.finish().context("the loop made no attempt")?;
    if c.explain {
        println!("{}", outcome.report());
    } else {
        eprintln!("checked: {}", outcome.summary());
    }
    Ok(made.swap_remove(outcome.best))
}

/// Paints what the plan asks of the model with `s`, and pastes back.
fn paint_once(plan: &EditPlan, model: Option<&Model>, s: &Settings, c: &Common) -> Result<(Edited, u64, usize)> {
    if let Some(req) = plan.enlarge_request() {
        let rt = RuntimeOptions { threads: c.threads, cuda: c.cuda, ..Default::default() };
        return Ok((plan.finish(Some(crate::upscale::enlarge(req, c.upscaler, &rt)?))?, 0, 0));
    }
    let (Some(paint), Some((pipeline, _))) = (plan.paint_request(), model) else {
        return Ok((plan.finish(None)?, 0, 0));
    };
    let g = generate_with_bar(pipeline, &paint.engine_request(s.seed, s.steps, s.guidance))?;
    Ok((plan.finish(Some(g.image))?, g.seed, g.steps_run))
}

/// Watermark (inside the edit's region only), labels and signed C2PA recording the inputs as
/// ingredients (their hashes) and the plan.
#[allow(clippy::too_many_arguments)]
fn stamp(
    prov: &plantain_provenance::Provenance,
    plan: &EditPlan,
    edited: &Edited,
    format: plantain_provenance::MediaFormat,
    model: &str,
    inputs: &[PathBuf],
    seed: u64,
    steps: usize,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> =
        inputs.iter().map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display()))).collect::<Result<_>>()?;
    let mut info = ManifestInfo::created(model);
    info.action = if inputs.len() > 1 { Action::Placed } else { Action::Edited };
    info.ingredients = inputs.iter().zip(&bytes).map(|(p, b)| Ingredient { title: file_name(p), bytes: b }).collect();
    info.set_generation(seed, steps);
    info.parameters.insert("edit".into(), serde_json::json!({"operation": edited.report.operation, "method": edited.report.method}));
    let stamped = match &plan.matte {
        Some(matte) => prov.stamp_cut_out(&edited.image, &plan.alpha, matte, format, &info),
        None => prov.stamp_within(&edited.image, &plan.alpha, format, &info),
    }
    .context("stamping the output (watermark, C2PA)")?;
    let wm = if stamped.payload.is_some() { "watermark inside the edited region" } else { "watermark OFF" };
    eprintln!("provenance: {wm}; C2PA {}", if prov.identity.is_some() { "signed" } else { "OFF" });
    Ok(stamped.bytes)
}

pub fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into())
}
