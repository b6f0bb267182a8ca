//! From an instruction and its pictures to a plan: the region, how it was found, and the work
//! (done at once as exact maths, or a repaint for a model), then the paste-back.

use image::{GrayImage, Luma, RgbImage};
use plantain_core::{AspectRatio, ImageSize};
use plantain_imageio::composite;
use plantain_world::{Background, ColorName, Scene, Size};
use serde::Serialize;

use super::EditError;
use super::adjust;
use super::regions::{FoundBy, Picture, SubjectFinder};
use super::retext::{self, TextEdit};
use super::words::{self, BackgroundPart, Instruction, Operation, Position, Scope, Selector};

/// Settings an edit takes besides its words.
#[derive(Clone, Debug, Default)]
pub struct EditOptions {
    /// Outpainting: the aspect ratio of the new canvas.
    pub aspect: Option<AspectRatio>,
    /// The user's mask (white = may change): it is the region, and the words are the prompt.
    pub mask: Option<GrayImage>,
    /// What kind of model paints when the plan needs one.
    pub painter: Painter,
    /// The size the request asked for: an upscale without a size in its words goes to it.
    pub size: Option<ImageSize>,
}

/// What kind of model carries out a plan's [`PaintRequest`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Painter {
    /// A text-to-image model: inpainting inside the region, img2img for the whole picture.
    #[default]
    Generative,
    /// An instruction-following model (InstructPix2Pix): the whole picture edited after the
    /// user's own words; the region then limits what is kept of it.
    Instruct,
    /// An instruction-following model that also reads several pictures as the references of
    /// one edit (FLUX.2 [klein]): as [`Painter::Instruct`] for one picture, and fusion of
    /// several is one pass of the model over all of them after the user's words.
    References,
}

impl Painter {
    /// The model edits by the user's own words ([`Painter::Instruct`], [`Painter::References`]).
    pub fn follows_instructions(self) -> bool {
        matches!(self, Painter::Instruct | Painter::References)
    }
}

/// What a model must paint: `image` with the white part of `mask` redrawn after `prompt`
/// (`mask` None: the whole picture, img2img at `strength`). The answer must be `image`'s size.
#[derive(Clone, Debug)]
pub struct PaintRequest {
    pub image: RgbImage,
    pub mask: Option<GrayImage>,
    pub prompt: String,
    pub negative: Option<String>,
    pub strength: f32,
    /// Some for an instruction-following model: `prompt` is the instruction, `mask` is None,
    /// and this is the image guidance (see [`Painter::Instruct`]).
    pub image_guidance: Option<f32>,
    /// Fusion by a [`Painter::References`] model: every picture in the order the words count
    /// them, which the model reads instead of `image` (still the answer's size and base).
    pub references: Vec<RgbImage>,
}

impl PaintRequest {
    /// The engine's request for this repaint, drawn with `seed`, `steps` and `guidance`: at
    /// `image`'s size, from `image` (or, for fusion, from every reference in order).
    pub fn engine_request(&self, seed: u64, steps: usize, guidance: f32) -> plantain_engine::pipeline::GenerateRequest {
        let (w, h) = self.image.dimensions();
        let mut r = plantain_engine::pipeline::GenerateRequest::new(self.prompt.clone(), w, h);
        r.negative_prompt = self.negative.clone();
        (r.seed, r.steps, r.guidance) = (seed, steps, guidance);
        r.strength = self.strength;
        r.mask = self.mask.clone();
        if let Some(g) = self.image_guidance {
            r.image_guidance = g;
        }
        match self.references.split_first() {
            Some((first, more)) => (r.init_image, r.references) = (Some(first.clone()), more.to_vec()),
            None => r.init_image = Some(self.image.clone()),
        }
        r
    }
}

/// What a super-resolution model must make: `image` enlarged to exactly `width`x`height`.
#[derive(Clone, Debug)]
pub struct EnlargeRequest {
    pub image: RgbImage,
    pub width: u32,
    pub height: u32,
}

/// The work a plan holds.
#[derive(Clone, Debug)]
pub enum Work {
    /// Done already (exact image maths): the picture before paste-back.
    Done(RgbImage),
    /// For a model.
    Paint(PaintRequest),
    /// For a super-resolution model (an upscale: every pixel is new).
    Enlarge(EnlargeRequest),
}

/// An edit, planned.
#[derive(Clone, Debug)]
pub struct EditPlan {
    pub instruction: Instruction,
    pub found_by: Option<FoundBy>,
    /// The object the words pointed at, as found.
    pub target: Option<String>,
    /// How the work is done, in words.
    pub method: String,
    /// Words that could not be checked, choices made.
    pub notes: Vec<String>,
    pub work: Work,
    /// Paste weights over `base`: where they are 0 the output is `base`'s own byte.
    pub alpha: GrayImage,
    /// The feather band (pixels) around the region.
    pub feather: u32,
    /// What the output starts from: the input, or the extended canvas of an outpainting.
    base: RgbImage,
    /// Pixels put back exactly over a model's answer before the paste-back (a fused subject's
    /// core under its repainted seam).
    core: Option<(RgbImage, GrayImage)>,
    pub input_size: (u32, u32),
    /// Where the input sits in the output (outpainting), else (0, 0).
    pub offset: (u32, u32),
    /// The words named an object by a noun the finder could not look up (planning again with
    /// a finder that can, [`super::ModelFinder`], may pick another part).
    pub names_unchecked: bool,
    /// A text edit: where the text was found, how the new one was set and read back.
    pub text: Option<TextEdit>,
    /// A transparent cut-out: the output's alpha channel (255 = opaque), the subject's mask.
    pub matte: Option<GrayImage>,
    /// An instruction model's answer: kept only where it differs from the base
    /// ([`actually_changed`]), inside `alpha`.
    only_changed: bool,
}

/// Levels (0-255, any channel) by which an instruction model's answer must differ from the
/// picture for a pixel to count as changed: above what its VAE's round trip moves.
const CHANGED_LEVELS: u8 = 24;

/// Where `edited` differs from `base` by more than [`CHANGED_LEVELS`], grown by 1% of the short
/// side (at least 2 px) and feathered: an instruction model redraws the whole picture, and its
/// round trip through the VAE moves every pixel a little while its edit moves only some.
fn actually_changed(base: &RgbImage, edited: &RgbImage) -> GrayImage {
    let (w, h) = base.dimensions();
    let moved = GrayImage::from_fn(w, h, |x, y| {
        let (a, b) = (base.get_pixel(x, y), edited.get_pixel(x, y));
        Luma([if (0..3).any(|c| a[c].abs_diff(b[c]) > CHANGED_LEVELS) { 255 } else { 0 }])
    });
    let grown = composite::dilate(&moved, (w.min(h) as f32 * 0.01).max(2.0));
    composite::feathered(&grown, composite::default_feather(w, h))
}

/// What a plan says it did, for logs, ledgers and answers.
#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    pub operation: &'static str,
    pub instruction: Instruction,
    pub found_by: Option<FoundBy>,
    pub target: Option<String>,
    pub method: String,
    pub notes: Vec<String>,
    pub input: (u32, u32),
    pub output: (u32, u32),
    /// Pixels the plan allowed to change (region and feather band).
    pub may_change: u64,
    pub feather: u32,
    /// Pixels that did change (after the work).
    pub changed: Option<u64>,
    /// Pixels that changed outside what the plan allowed (0, checked byte for byte).
    pub outside_changed: Option<u64>,
    /// A text edit's occurrences and read-backs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TextEdit>,
    /// An upscale's fidelity: PSNR (dB) of the output shrunk back to the input's size
    /// (Lanczos3) against the input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fidelity_db: Option<f64>,
}

/// An edit, made.
#[derive(Clone, Debug)]
pub struct Edited {
    pub image: RgbImage,
    pub report: PlanReport,
}

impl EditPlan {
    /// The plan for an instruction-following model (InstructPix2Pix, FLUX.2 [klein]): its repaint
    /// becomes the whole picture edited after the user's own words (the model reads no mask),
    /// pasted back inside the same region.
    fn for_instruct_model(mut self) -> EditPlan {
        let Work::Paint(req) = &mut self.work else {
            return self;
        };
        req.mask = None;
        req.prompt = self.instruction.text.clone();
        req.negative = None;
        req.strength = 1.0;
        req.image_guidance = Some(plantain_core::DEFAULT_IMAGE_GUIDANCE);
        let whole = composite::area(&self.alpha) == u64::from(self.alpha.width()) * u64::from(self.alpha.height());
        let kept = if whole { "" } else { " inside the region" };
        self.method =
            format!("the picture edited after the instruction by the instruction-following model, kept only where it changed{kept}");
        self.only_changed = true;
        self
    }

    /// The repaint a model must do, if any.
    pub fn paint_request(&self) -> Option<&PaintRequest> {
        match &self.work {
            Work::Paint(r) => Some(r),
            Work::Done(_) | Work::Enlarge(_) => None,
        }
    }

    /// The enlargement a super-resolution model must make, if any.
    pub fn enlarge_request(&self) -> Option<&EnlargeRequest> {
        match &self.work {
            Work::Enlarge(r) => Some(r),
            Work::Done(_) | Work::Paint(_) => None,
        }
    }

    /// The picture's size after the edit.
    pub fn output_size(&self) -> (u32, u32) {
        self.base.dimensions()
    }

    pub fn report(&self) -> PlanReport {
        PlanReport {
            operation: self.instruction.operation.name(),
            instruction: self.instruction.clone(),
            found_by: self.found_by,
            target: self.target.clone(),
            method: self.method.clone(),
            notes: self.notes.clone(),
            input: self.input_size,
            output: self.base.dimensions(),
            may_change: composite::area(&self.alpha),
            feather: self.feather,
            changed: None,
            outside_changed: None,
            text: self.text.clone(),
            fidelity_db: None,
        }
    }

    /// The plan in words (`--explain`, text parts).
    pub fn explain(&self) -> String {
        explain(&self.report())
    }

    /// Pastes the work back: `painted` is the model's answer to [`EditPlan::paint_request`]
    /// (resized to the base if it is not its size). Outside `alpha` the output is the base.
    pub fn finish(&self, painted: Option<RgbImage>) -> Result<Edited, EditError> {
        if let Work::Enlarge(req) = &self.work {
            return self.finish_enlarged(req, painted);
        }
        let edited = match (&self.work, painted) {
            (Work::Done(img), _) => img.clone(),
            (Work::Enlarge(_), _) => unreachable!("finished above"),
            (Work::Paint(_), Some(p)) if p.dimensions() == self.base.dimensions() => p,
            (Work::Paint(_), Some(p)) => {
                image::imageops::resize(&p, self.base.width(), self.base.height(), image::imageops::FilterType::Lanczos3)
            }
            (Work::Paint(_), None) => {
                return Err(EditError::NeedsPainter(format!("\"{}\" needs a model to paint: {}", self.instruction.text, self.method)));
            }
        };
        let edited = match &self.core {
            Some((exact, weight)) => composite::paste_back(&edited, exact, weight)?,
            None => edited,
        };
        let image = if self.only_changed {
            let changed = actually_changed(&self.base, &edited);
            let alpha = GrayImage::from_fn(changed.width(), changed.height(), |x, y| {
                Luma([changed.get_pixel(x, y)[0].min(self.alpha.get_pixel(x, y)[0])])
            });
            composite::paste_back(&self.base, &edited, &alpha)?
        } else {
            composite::paste_back(&self.base, &edited, &self.alpha)?
        };
        let mut report = self.report();
        report.changed = Some(composite::changed(&self.base, &image));
        report.outside_changed = Some(composite::changed_outside(&self.base, &image, &self.alpha));
        Ok(Edited { image, report })
    }
}

impl EditPlan {
    /// An upscale's answer: the enlarged picture at the plan's exact size (Lanczos3 closes a
    /// model's fixed factor onto it), every pixel new; its fidelity, the picture shrunk back to
    /// the input's size against the input, goes into the report.
    fn finish_enlarged(&self, req: &EnlargeRequest, enlarged: Option<RgbImage>) -> Result<Edited, EditError> {
        use image::imageops::{FilterType, resize};
        let Some(big) = enlarged else {
            return Err(EditError::NeedsPainter(format!("\"{}\" needs a super-resolution model: {}", self.instruction.text, self.method)));
        };
        let image =
            if big.dimensions() == (req.width, req.height) { big } else { resize(&big, req.width, req.height, FilterType::Lanczos3) };
        let (w, h) = req.image.dimensions();
        let back = resize(&image, w, h, FilterType::Lanczos3);
        let mut report = self.report();
        report.changed = Some(u64::from(req.width) * u64::from(req.height));
        report.outside_changed = Some(0);
        report.fidelity_db = Some(composite::psnr(&back, &req.image));
        Ok(Edited { image, report })
    }
}

/// The report in words.
pub fn explain(r: &PlanReport) -> String {
    let total = u64::from(r.output.0) * u64::from(r.output.1);
    let mut lines = vec![format!("operation: {} (\"{}\")", r.operation, r.instruction.text)];
    if let Some(t) = &r.target {
        lines.push(format!("target: {t}"));
    }
    if let Some(f) = r.found_by {
        lines.push(format!("found by: {}", f.describe()));
    }
    lines.push(format!(
        "region: {} of {} pixels may change ({:.1}%, feather band {} px); every other pixel is the input's own",
        r.may_change,
        total,
        100.0 * r.may_change as f64 / total.max(1) as f64,
        r.feather
    ));
    lines.push(format!("done by: {}", r.method));
    if r.output != r.input {
        lines.push(format!("canvas: {}x{} → {}x{}", r.input.0, r.input.1, r.output.0, r.output.1));
    }
    if let (Some(c), Some(o)) = (r.changed, r.outside_changed) {
        lines.push(format!("changed: {c} pixels; outside the region: {o}"));
    }
    if let Some(db) = r.fidelity_db {
        lines.push(format!("fidelity: shrunk back to {}x{}, {db:.1} dB PSNR against the input", r.input.0, r.input.1));
    }
    lines.extend(r.notes.iter().map(|n| format!("note: {n}")));
    lines.join("\n")
}

/// Plans an edit of `images[0]` (fusion: of several images) after `text`.
/// A [`Painter::References`] model fuses several pictures itself ([`super::fuse::plan_references`]).
pub fn plan(text: &str, images: &[RgbImage], opts: &EditOptions, finder: Option<&dyn SubjectFinder>) -> Result<EditPlan, EditError> {
    if opts.painter == Painter::References && images.len() > 1 && opts.mask.is_none() {
        return super::fuse::plan_references(text, images);
    }
    let plan = plan_for_painter(text, images, opts, finder)?;
    Ok(match opts.painter {
        Painter::Generative => plan,
        Painter::Instruct | Painter::References => plan.for_instruct_model(),
    })
}

fn plan_for_painter(
    text: &str,
    images: &[RgbImage],
    opts: &EditOptions,
    finder: Option<&dyn SubjectFinder>,
) -> Result<EditPlan, EditError> {
    let Some(first) = images.first() else {
        return Err(EditError::Invalid("an edit needs a picture to edit".into()));
    };
    if let Some(mask) = &opts.mask {
        return plan_masked(text, first, mask);
    }
    let instruction = match words::read(text, images.len()) {
        // An instruction-following model reads what the rules cannot.
        Err(words::WordsError::Unsupported(_)) if opts.painter.follows_instructions() && images.len() == 1 => {
            Instruction { operation: Operation::Instruct, keep: vec![], text: text.trim().into() }
        }
        read => read?,
    };
    let mut b = Builder::new(instruction.clone(), first.clone());
    match &instruction.operation {
        Operation::Fuse { subjects, into, position, large } => {
            return super::fuse::plan_fuse(instruction.clone(), images, subjects, *into, *position, *large, finder);
        }
        Operation::Outpaint => return plan_outpaint(instruction.clone(), first, opts.aspect),
        Operation::Upscale { size } => return plan_upscale(instruction.clone(), first, size.or(opts.size)),
        Operation::ReplaceText { .. } | Operation::RemoveText { .. } => {
            return retext::plan_text(instruction.clone(), first, retext::installed_tools()?);
        }
        Operation::Instruct => b.instruct_whole("the words as given (no rule reads them)"),
        // Day for night relights a scene: an instruction model does it, exact maths only darkens.
        Operation::Adjust { adjustment: words::Adjustment::Night, scope: Scope::Whole } if opts.painter.follows_instructions() => {
            b.instruct_whole("day for night, relit by the model rather than darkened by exact maths")
        }
        Operation::Adjust { adjustment, scope: Scope::Whole } => {
            let all = GrayImage::from_pixel(first.width(), first.height(), Luma([255]));
            b.exact(adjust::apply(first, *adjustment, None), &all, "exact image maths on the whole picture (no model)");
        }
        Operation::Restyle { style } => b.restyle(style),
        _ => {
            let mut picture = Picture::analyse(first.clone(), finder)?;
            b.found_by = Some(picture.found_by);
            look_up_names(&mut picture, &instruction, finder, &mut b)?;
            b.on_regions(&picture)?;
            b.protect(&picture)?;
            return Ok(b.build());
        }
    }
    if !instruction.keep.is_empty() {
        let mut picture = Picture::analyse(first.clone(), finder)?;
        b.found_by = Some(picture.found_by);
        look_up_names(&mut picture, &instruction, finder, &mut b)?;
        b.protect(&picture)?;
    }
    Ok(b.build())
}

/// Looks up, by name, the nouns the instruction's selectors use ("remove the cup") when the
/// finder can (DiffEdit on the loaded model), so that selection can use them.
/// Sets `unchecked` when a noun could not be looked up (the finder cannot find by name).
fn look_up_names(picture: &mut Picture, ins: &Instruction, finder: Option<&dyn SubjectFinder>, b: &mut Builder) -> Result<(), EditError> {
    let Some(finder) = finder else {
        return Ok(());
    };
    let target = match &ins.operation {
        Operation::Remove { target } | Operation::Recolor { target, .. } | Operation::Replace { target, .. } => Some(target),
        _ => None,
    };
    for sel in target.into_iter().chain(&ins.keep) {
        let Some(noun) = &sel.noun else { continue };
        match picture.find_named(noun, finder)? {
            Some(note) => b.notes.push(note),
            None => b.names_unchecked |= picture.found_by != FoundBy::World,
        }
    }
    Ok(())
}

/// The user gave a mask: it is the region; the words say what to paint there.
fn plan_masked(text: &str, image: &RgbImage, mask: &GrayImage) -> Result<EditPlan, EditError> {
    if mask.dimensions() != image.dimensions() {
        let (w, h) = image.dimensions();
        return Err(EditError::Invalid(format!(
            "the mask is {}x{}; the picture is {w}x{h}: they must be the same size",
            mask.width(),
            mask.height()
        )));
    }
    let region = composite::threshold(mask, 128);
    if composite::area(&region) == 0 {
        return Err(EditError::Invalid("the mask marks no pixel to change (white = change)".into()));
    }
    let instruction = Instruction {
        operation: Operation::Replace {
            target: Selector { words: "the masked area".into(), ..Selector::default() },
            prompt: text.trim().into(),
        },
        keep: vec![],
        text: text.trim().into(),
    };
    let mut b = Builder::new(instruction, image.clone());
    b.found_by = Some(FoundBy::UserMask);
    b.target = Some(format!("the masked area ({} pixels)", composite::area(&region)));
    b.paint(&region, text.trim(), None, 1.0, "repainted by the model inside the mask (inpainting), pasted back");
    Ok(b.build())
}

/// Collects a plan's parts.
pub(super) struct Builder {
    pub instruction: Instruction,
    pub image: RgbImage,
    pub found_by: Option<FoundBy>,
    pub target: Option<String>,
    pub notes: Vec<String>,
    pub work: Option<(Work, String)>,
    pub alpha: GrayImage,
    pub feather: u32,
    pub offset: (u32, u32),
    pub input_size: (u32, u32),
    pub core: Option<(RgbImage, GrayImage)>,
    pub names_unchecked: bool,
    pub matte: Option<GrayImage>,
    /// A model's answer is kept only where it changed from the input ([`actually_changed`]).
    pub only_changed: bool,
}

impl Builder {
    pub fn new(instruction: Instruction, image: RgbImage) -> Builder {
        let (w, h) = image.dimensions();
        Builder {
            instruction,
            found_by: None,
            target: None,
            notes: vec![],
            work: None,
            alpha: GrayImage::new(w, h),
            feather: 0,
            offset: (0, 0),
            input_size: (w, h),
            core: None,
            names_unchecked: false,
            matte: None,
            only_changed: false,
            image,
        }
    }

    /// Exact work: `edited` differs from the input only where `weight` is not 0.
    pub fn exact(&mut self, edited: RgbImage, weight: &GrayImage, method: &str) {
        self.alpha = composite::threshold(weight, 1);
        self.work = Some((Work::Done(edited), method.into()));
    }

    /// A repaint of `region` (binary), pasted back over a feather band.
    pub fn paint(&mut self, region: &GrayImage, prompt: &str, negative: Option<String>, strength: f32, method: &str) {
        let (w, h) = region.dimensions();
        self.feather = composite::default_feather(w, h);
        self.alpha = composite::feathered(region, self.feather);
        let req = PaintRequest {
            image: self.image.clone(),
            mask: Some(region.clone()),
            prompt: prompt.into(),
            negative,
            strength,
            image_guidance: None,
            references: Vec::new(),
        };
        self.work = Some((Work::Paint(req), method.into()));
    }

    /// A transparent cut-out: the subject's mask becomes the alpha channel; the pixels it makes
    /// fully transparent are cleared (black), so the background is gone from the file too, and
    /// every other pixel is the input's own.
    fn cut_out(&mut self, picture: &Picture) -> Result<(), EditError> {
        let matte = picture.subject.clone();
        let kept = matte.pixels().filter(|p| p.0[0] > 0).count();
        if kept == 0 {
            return Err(EditError::NotFound(format!("no subject to keep was found ({})", picture.inventory())));
        }
        let gone = GrayImage::from_fn(matte.width(), matte.height(), |x, y| Luma([if matte.get_pixel(x, y).0[0] == 0 { 255 } else { 0 }]));
        let mut out = picture.image.clone();
        for (x, y, p) in out.enumerate_pixels_mut() {
            if matte.get_pixel(x, y).0[0] == 0 {
                *p = image::Rgb([0, 0, 0]);
            }
        }
        let total = u64::from(matte.width()) * u64::from(matte.height());
        self.target = Some(format!("the subject ({kept} of {total} pixels kept, the rest transparent)"));
        self.notes.push("the output has an alpha channel: PNG or WebP (JPEG cannot hold transparency)".into());
        self.matte = Some(matte);
        self.exact(out, &gone, "the subject's mask as the alpha channel, the background's pixels cleared (no model)");
        Ok(())
    }

    /// The whole picture for an instruction-following model, after the user's words
    /// ([`EditPlan::for_instruct_model`] makes the request); `why` says what it is asked.
    fn instruct_whole(&mut self, why: &str) {
        let (w, h) = self.image.dimensions();
        self.alpha = GrayImage::from_pixel(w, h, Luma([255]));
        let prompt = self.instruction.text.clone();
        let req = PaintRequest {
            image: self.image.clone(),
            mask: None,
            prompt,
            negative: None,
            strength: 1.0,
            image_guidance: None,
            references: Vec::new(),
        };
        self.work = Some((Work::Paint(req), "the whole picture edited by the model".into()));
        self.notes.push(format!("{why}: the whole picture is the model's to change; what it leaves alone is kept byte for byte"));
    }

    fn restyle(&mut self, style: &str) {
        let (w, h) = self.image.dimensions();
        self.alpha = GrayImage::from_pixel(w, h, Luma([255]));
        let req = PaintRequest {
            image: self.image.clone(),
            mask: None,
            prompt: style.into(),
            negative: None,
            strength: 0.6,
            image_guidance: None,
            references: Vec::new(),
        };
        self.notes.push("restyling is the one edit that changes every pixel".into());
        self.work = Some((Work::Paint(req), "the whole picture redrawn by the model (img2img at strength 0.6)".into()));
    }

    /// The operations that need the picture's regions.
    fn on_regions(&mut self, picture: &Picture) -> Result<(), EditError> {
        let image = picture.image.clone();
        match self.instruction.operation.clone() {
            Operation::Adjust { adjustment, scope } => {
                let weight = if scope == Scope::Subject { picture.subject.clone() } else { picture.background() };
                self.exact(
                    adjust::apply(&image, adjustment, Some(&weight)),
                    &weight,
                    "exact image maths, weighted by the region (no model)",
                );
            }
            Operation::BlurBackground => {
                let weight = picture.background();
                self.exact(adjust::blur_where(&image, &weight), &weight, "Gaussian blur of the background, the subject kept (no model)");
            }
            Operation::Recolor { target, color } => self.recolor(picture, &target, color)?,
            Operation::RecolorBackground { part, color } => self.recolor_background(picture, part, color),
            Operation::ReplaceBackground { prompt } => {
                let region = background_region(picture);
                self.paint(&region, &prompt, None, 1.0, "the background repainted by the model (inpainting), the subject kept");
            }
            Operation::Remove { target } => self.remove(picture, &target)?,
            Operation::Add { prompt, color, shape, position, large } => self.add(picture, &prompt, color, shape, position, large),
            Operation::Replace { target, prompt } => self.replace(picture, &target, &prompt)?,
            Operation::CutOut => self.cut_out(picture)?,
            Operation::Restyle { .. }
            | Operation::Outpaint
            | Operation::Upscale { .. }
            | Operation::Fuse { .. }
            | Operation::ReplaceText { .. }
            | Operation::RemoveText { .. }
            | Operation::Instruct => unreachable!("planned before regions"),
        }
        Ok(())
    }

    fn recolor(&mut self, picture: &Picture, target: &Selector, color: ColorName) -> Result<(), EditError> {
        let (i, notes) = picture.select(target)?;
        self.notes.extend(notes);
        let c = &picture.candidates[i];
        self.target = Some(c.label.clone());
        let lit = lit_color(color, c.rgb, c.color);
        let edited = adjust::shift_color(&picture.image, &c.weight, c.rgb, lit);
        self.exact(edited, &c.weight, "colour shifted in proportion to the object's coverage, shading and edges kept (no model)");
        Ok(())
    }

    fn recolor_background(&mut self, picture: &Picture, part: BackgroundPart, color: ColorName) {
        let Some(world) = &picture.world else {
            let region = background_region(picture);
            let prompt = format!("a plain {} background", color.word());
            self.paint(&region, &prompt, None, 1.0, "the background repainted by the model (inpainting), the subject kept");
            return;
        };
        let (w, h) = picture.image.dimensions();
        let bg = picture.background();
        let horizon = world.horizon;
        let mut edited = picture.image.clone();
        let mut weight = GrayImage::new(w, h);
        let parts: Vec<(bool, ColorName)> = match (world.analysis.background, part) {
            (Background::Solid(c), _) => vec![(true, c)],
            (Background::Split { sky, ground }, BackgroundPart::All) => vec![(true, sky), (false, ground)],
            (Background::Split { sky, .. }, BackgroundPart::Sky) => vec![(true, sky)],
            (Background::Split { ground, .. }, BackgroundPart::Ground) => vec![(false, ground)],
        };
        for (is_sky, old) in parts {
            let solid = matches!(world.analysis.background, Background::Solid(_));
            let part_weight =
                GrayImage::from_fn(w, h, |x, y| if solid || (y < horizon) == is_sky { *bg.get_pixel(x, y) } else { Luma([0]) });
            let from = adjust::mean_color(&world.plate, Some(&part_weight));
            edited = adjust::shift_color(&edited, &part_weight, from, lit_color(color, from, old));
            weight = composite::union(&weight, &part_weight);
        }
        self.target = Some(format!("the background ({})", describe_background(world.analysis.background)));
        self.exact(edited, &weight, "background colour shifted where the picture is background, lighting ramp kept (no model)");
    }

    fn remove(&mut self, picture: &Picture, target: &Selector) -> Result<(), EditError> {
        let (i, notes) = picture.select(target)?;
        self.notes.extend(notes);
        let c = &picture.candidates[i];
        self.target = Some(c.label.clone());
        let (w, h) = picture.image.dimensions();
        let region = composite::dilate(&composite::threshold(&c.weight, 1), grow(w, h));
        if let Some(world) = &picture.world {
            self.alpha = region.clone();
            self.work = Some((Work::Done(world.plate.clone()), "filled with the background measured around it (exact, no model)".into()));
            return Ok(());
        }
        let negative = Some(target.words.clone());
        self.paint(&region, "empty background, nothing there", negative, 1.0, "the object's region repainted by the model (inpainting)");
        Ok(())
    }

    fn add(
        &mut self,
        picture: &Picture,
        prompt: &str,
        color: Option<ColorName>,
        shape: Option<plantain_world::Shape>,
        at: Position,
        large: Option<bool>,
    ) {
        let (w, h) = picture.image.dimensions();
        let size = match large {
            Some(true) => Size::Large,
            Some(false) => Size::Small,
            None => Size::Medium,
        };
        let side = size.extent() * w.min(h) as f32 * 1.3;
        let cx = (f32::from(at.column.unwrap_or(1)) + 0.5) / 3.0 * w as f32;
        let cy = (f32::from(at.row.unwrap_or(1)) + 0.5) / 3.0 * h as f32;
        let region = GrayImage::from_fn(w, h, |x, y| {
            let inside = (x as f32 + 0.5 - cx).abs() <= side / 2.0 && (y as f32 + 0.5 - cy).abs() <= side / 2.0;
            Luma([if inside { 255 } else { 0 }])
        });
        let full_prompt = match (&picture.world, color, shape) {
            // The new object alone: the box holds nothing else for the model to draw.
            (Some(world), Some(c), Some(s)) => world_caption_alone(world, (c, s, at)),
            _ => prompt.to_string(),
        };
        self.target = Some(format!("a new {prompt} at the {}", at.describe()));
        self.paint(&region, &full_prompt, None, 1.0, "painted by the model into a box at the named place (inpainting)");
    }

    fn replace(&mut self, picture: &Picture, target: &Selector, prompt: &str) -> Result<(), EditError> {
        let (i, notes) = picture.select(target)?;
        self.notes.extend(notes);
        let c = &picture.candidates[i];
        self.target = Some(c.label.clone());
        let (w, h) = picture.image.dimensions();
        let region = composite::dilate(&composite::threshold(&c.weight, 1), grow(w, h) * 2.0);
        self.paint(
            &region,
            prompt,
            Some(target.words.clone()),
            1.0,
            "the object's region repainted by the model after the new words (inpainting)",
        );
        Ok(())
    }

    /// "keep X unchanged": X's pixels leave the region.
    fn protect(&mut self, picture: &Picture) -> Result<(), EditError> {
        for sel in self.instruction.keep.clone() {
            let (i, notes) = picture.select(&sel)?;
            self.notes.extend(notes);
            let c = &picture.candidates[i];
            let kept = composite::dilate(&composite::threshold(&c.weight, 1), 2.0);
            self.alpha = composite::subtract(&self.alpha, &kept);
            if let Some((Work::Paint(req), _)) = &mut self.work
                && let Some(m) = &req.mask
            {
                req.mask = Some(composite::subtract(m, &kept));
            }
            self.notes.push(format!("kept unchanged: {} ({} px protected)", c.label, composite::area(&kept)));
        }
        Ok(())
    }

    pub fn build(self) -> EditPlan {
        let (work, method) = self.work.unwrap_or_else(|| (Work::Done(self.image.clone()), "nothing to do".into()));
        EditPlan {
            instruction: self.instruction,
            found_by: self.found_by,
            target: self.target,
            method,
            notes: self.notes,
            work,
            alpha: self.alpha,
            feather: self.feather,
            base: self.image,
            core: self.core,
            input_size: self.input_size,
            offset: self.offset,
            names_unchecked: self.names_unchecked,
            text: None,
            matte: self.matte,
            only_changed: self.only_changed,
        }
    }
}

/// How far an object's region grows past its coverage (soft edges, blur): 0.5% of the short
/// side, at least 2 px.
fn grow(w: u32, h: u32) -> f32 {
    (w.min(h) as f32 * 0.005).max(2.0)
}

/// `new`'s palette colour, carried by the light that turned `old`'s palette colour into `seen`.
fn lit_color(new: ColorName, seen: [f32; 3], old: ColorName) -> [f32; 3] {
    let (n, o) = (new.rgb().map(f32::from), old.rgb().map(f32::from));
    std::array::from_fn(|c| (n[c] + seen[c] - o[c]).clamp(0.0, 255.0))
}

/// The background as a region to repaint: everything but the subject grown by 2 px.
fn background_region(picture: &Picture) -> GrayImage {
    composite::invert(&composite::dilate(&composite::threshold(&picture.subject, 128), 2.0))
}

fn describe_background(b: Background) -> String {
    match b {
        Background::Solid(c) => format!("{} background", c.word()),
        Background::Split { sky, ground } => format!("{} sky above {} ground", sky.word(), ground.word()),
    }
}

/// How far the model may move the edge-filled new area of an outpainting from its start.
const OUTPAINT_STRENGTH: f32 = 0.7;

/// The world's plain caption of one new object on the picture's background.
fn world_caption_alone(world: &plantain_world::check::Located, (color, shape, at): (ColorName, plantain_world::Shape, Position)) -> String {
    let h = plantain_world::HPos::from_index(usize::from(at.column.unwrap_or(1)));
    let v = plantain_world::VPos::from_index(usize::from(at.row.unwrap_or(1)));
    let objects = vec![plantain_world::Object { shape, color, size: Size::Medium, h, v, jitter: (0.0, 0.0) }];
    let scene = Scene { background: world.analysis.background, lighting: Default::default(), objects, relations: vec![] };
    plantain_world::caption_plain(&scene)
}

/// Outpainting: the input kept byte for byte in the middle of a canvas of the new aspect
/// ratio; the new area painted by the model.
fn plan_outpaint(instruction: Instruction, image: &RgbImage, aspect: Option<AspectRatio>) -> Result<EditPlan, EditError> {
    let Some(aspect) = aspect else {
        return Err(EditError::Invalid(format!(
            "extending a picture needs the new aspect ratio (--aspect, or the request's aspect ratio): one of {}",
            plantain_core::ACCEPTED_RATIOS
        )));
    };
    let (w, h) = image.dimensions();
    let (a, b) = aspect.terms();
    let (nw, nh) = if u64::from(a) * u64::from(h) > u64::from(b) * u64::from(w) {
        ((f64::from(h) * f64::from(a) / f64::from(b)).round() as u32, h)
    } else {
        (w, (f64::from(w) * f64::from(b) / f64::from(a)).round() as u32)
    };
    if (nw, nh) == (w, h) {
        return Err(EditError::Invalid(format!("the picture is already {}", aspect.as_str())));
    }
    let (left, top) = ((nw - w) / 2, (nh - h) / 2);
    let (canvas, new_area) = composite::extend(image, nw, nh, left, top)?;
    // In the synthetic world the prompt is the background as analysed (the objects stay where
    // they are); elsewhere the words.
    let prompt = match super::regions::world_located(image) {
        Some(located) => describe_background(located.analysis.background),
        None => instruction.text.clone(),
    };
    let mut b = Builder::new(instruction, canvas.clone());
    b.input_size = (w, h);
    b.offset = (left, top);
    b.target = Some(format!("the new area of the {} canvas ({}x{})", aspect.as_str(), nw, nh));
    b.alpha = new_area.clone();
    let req = PaintRequest {
        image: canvas,
        mask: Some(new_area),
        prompt,
        negative: None,
        strength: OUTPAINT_STRENGTH,
        image_guidance: None,
        references: Vec::new(),
    };
    let method = format!(
        "the new area filled from the picture's edges, then repainted by the model at strength {OUTPAINT_STRENGTH} (inpainting); the picture kept byte for byte"
    );
    b.work = Some((Work::Paint(req), method));
    Ok(b.build())
}

/// An upscale: the whole picture enlarged by a super-resolution model to the size table's
/// pixels for its aspect ratio at `size` (2K when none was asked), or, for a picture whose
/// proportions are not the table's, to the same area with its own proportions kept.
fn plan_upscale(instruction: Instruction, image: &RgbImage, size: Option<ImageSize>) -> Result<EditPlan, EditError> {
    let size = match size {
        None | Some(ImageSize::S512 | ImageSize::S1K) => ImageSize::S2K,
        Some(s) => s,
    };
    let (w, h) = image.dimensions();
    let (width, height) = upscaled_size(w, h, size);
    if u64::from(width) * u64::from(height) <= u64::from(w) * u64::from(h) {
        return Err(EditError::Invalid(format!(
            "the picture is {w}x{h}, already at least {} ({width}x{height}): nothing to upscale",
            size.as_str()
        )));
    }
    let mut b = Builder::new(instruction, RgbImage::new(width, height));
    b.input_size = (w, h);
    b.alpha = GrayImage::from_pixel(width, height, Luma([255]));
    b.target = Some(format!("the whole picture, {w}x{h} → {width}x{height} ({})", size.as_str()));
    b.notes.push("an upscale is the one edit after which no pixel is the input's own: every pixel is new".into());
    let method = "enlarged by the super-resolution model, tile by tile, then resized to the exact pixels (Lanczos3)".to_string();
    b.work = Some((Work::Enlarge(EnlargeRequest { image: image.clone(), width, height }), method));
    Ok(b.build())
}

/// The pixels of `w`x`h` at `size`: the table's for its aspect ratio when the picture is one of
/// the table's sizes or has its proportions (within 1%), else the same area with the picture's
/// own proportions.
pub fn upscaled_size(w: u32, h: u32, size: ImageSize) -> (u32, u32) {
    let ratio = AspectRatio::nearest(w, h);
    let (tw, th) = plantain_core::output_pixels(ratio, size);
    let in_table = ImageSize::ALL.iter().any(|&s| plantain_core::output_pixels(ratio, s) == (w, h));
    let aspect = |a: u32, b: u32| f64::from(a) / f64::from(b);
    if in_table || (aspect(tw, th) / aspect(w, h) - 1.0).abs() <= 0.01 {
        return (tw, th);
    }
    let f = (f64::from(tw) * f64::from(th) / (f64::from(w) * f64::from(h))).sqrt();
    ((f64::from(w) * f).round().max(1.0) as u32, (f64::from(h) * f).round().max(1.0) as u32)
}

#[cfg(test)]
mod upscale_tests {
    use super::*;
    use image::imageops::{FilterType, resize};

    fn picture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x + y) / 8) as u8]))
    }

    #[test]
    fn an_upscale_goes_to_the_tables_pixels_and_reports_its_fidelity() {
        let input = picture(1024, 1024);
        let opts = EditOptions { size: Some(ImageSize::S4K), ..Default::default() };
        let p = plan("upscale it", std::slice::from_ref(&input), &opts, None).unwrap();
        let req = p.enlarge_request().expect("an upscale is for a super-resolution model");
        let want = plantain_core::output_pixels(AspectRatio::R1x1, ImageSize::S4K);
        assert_eq!((req.width, req.height), want);
        assert_eq!(p.output_size(), want);
        assert!(p.paint_request().is_none());
        // Without the model's answer there is nothing to finish.
        assert!(matches!(p.finish(None), Err(EditError::NeedsPainter(_))));
        // A faithful enlargement (here Lanczos3, at another size: it is closed onto the exact pixels).
        let big = resize(&input, want.0 / 2 * 2 + 8, want.1 + 8, FilterType::Lanczos3);
        let done = p.finish(Some(big)).unwrap();
        assert_eq!(done.image.dimensions(), want);
        assert!(done.report.fidelity_db.unwrap() > 30.0, "{:?}", done.report.fidelity_db);
        assert_eq!(done.report.changed, Some(u64::from(want.0) * u64::from(want.1)));
        // An unfaithful one is reported as such.
        let grey = RgbImage::from_pixel(want.0, want.1, image::Rgb([128, 128, 128]));
        assert!(p.finish(Some(grey)).unwrap().report.fidelity_db.unwrap() < 20.0);
    }

    #[test]
    fn the_words_size_wins_and_a_picture_already_that_large_is_refused() {
        let input = picture(1024, 1024);
        let opts = EditOptions { size: Some(ImageSize::S4K), ..Default::default() };
        let p = plan("upscale to 2K", std::slice::from_ref(&input), &opts, None).unwrap();
        assert_eq!(p.output_size(), plantain_core::output_pixels(AspectRatio::R1x1, ImageSize::S2K));
        let big = picture(2048, 2048);
        let e = plan("upscale to 2K", &[big], &EditOptions::default(), None).unwrap_err();
        assert!(e.to_string().contains("nothing to upscale"), "{e}");
    }

    #[test]
    fn proportions_off_the_table_are_kept() {
        // 1000x600 is 5:3, not a ratio of the table: the same area as 2K 16:9 or 3:2, its own shape.
        let (w, h) = upscaled_size(1000, 600, ImageSize::S2K);
        assert!(((f64::from(w) / f64::from(h)) - 1000.0 / 600.0).abs() < 0.01, "{w}x{h}");
        let table = plantain_core::output_pixels(AspectRatio::nearest(1000, 600), ImageSize::S2K);
        let area = |(a, b): (u32, u32)| f64::from(a) * f64::from(b);
        assert!((area((w, h)) / area(table) - 1.0).abs() < 0.01);
        // A table size maps onto the table.
        let one_k = plantain_core::output_pixels(AspectRatio::R16x9, ImageSize::S1K);
        assert_eq!(upscaled_size(one_k.0, one_k.1, ImageSize::S4K), plantain_core::output_pixels(AspectRatio::R16x9, ImageSize::S4K));
    }
}
