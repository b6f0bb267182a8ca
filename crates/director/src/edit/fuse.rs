//! Fusion: the subjects of some pictures placed into the scene of another. Each subject is cut
//! out by its region (the world's largest object, or the segmenter's subject), scaled, placed
//! by the words (one subject: at the named place; several: side by side across the named
//! row), colour-matched to the scene (photographs), and composited with its soft edge. In a
//! photograph the seam band is then repainted by the model at low strength, while the
//! subject's core and every untouched pixel of the scene stay exact.
//!
//! A model that reads several references (FLUX.2 [klein]) fuses by itself instead
//! ([`plan_references`]): one pass over every picture after the user's own words.

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma, Rgb, RgbImage};
use plantain_imageio::composite;

use super::EditError;
use super::plan::{Builder, EditPlan, PaintRequest, Work};
use super::regions::{Picture, SubjectFinder, world_located};
use super::words::{self, Instruction, Operation, Position, WordsError};

/// Share of the scene's height a photograph's subject takes (small, normal, large).
const PHOTO_HEIGHT: [f32; 3] = [0.28, 0.45, 0.65];
/// How far a photograph's subject moves towards the scene's mean colour.
const COLOR_MATCH: f32 = 0.3;
/// Strength of the seam repaint.
const SEAM_STRENGTH: f32 = 0.35;

/// One subject, cut out: its pixels and weights, cropped to its box.
struct Cutout {
    rgb: RgbImage,
    weight: GrayImage,
    label: String,
    /// Found by the world's analysis (no colour matching or seam repaint needed).
    world: bool,
}

/// Fusion by a model that reads every picture as a reference (FLUX.2 [klein]): one pass after the
/// user's own words over all the pictures in their order ("image 1" is the first), drawn at the
/// size of the picture the words put things into (the first when they name none, or when no rule
/// reads them), and kept only where the answer changed from that picture.
pub(super) fn plan_references(text: &str, images: &[RgbImage]) -> Result<EditPlan, EditError> {
    let n = images.len();
    let (instruction, into) = match words::read(text, n) {
        Ok(i @ Instruction { operation: Operation::Fuse { into, .. }, .. }) => (i, into),
        Ok(_) | Err(WordsError::Unsupported(_) | WordsError::Incomplete { .. }) => {
            (Instruction { operation: Operation::Instruct, keep: vec![], text: text.trim().into() }, 0)
        }
        Err(e) => return Err(e.into()),
    };
    if instruction.text.is_empty() {
        return Err(EditError::Invalid("fusion needs words saying what to make of the pictures".into()));
    }
    let Some(base) = images.get(into) else {
        return Err(EditError::Invalid(format!("the instruction names image {}, but {n} images were given", into + 1)));
    };
    let (w, h) = base.dimensions();
    let mut b = Builder::new(instruction, base.clone());
    b.alpha = GrayImage::from_pixel(w, h, Luma([255]));
    b.only_changed = true;
    b.target = Some(format!("{n} pictures read together, drawn on image {}", into + 1));
    let req = PaintRequest {
        image: base.clone(),
        mask: None,
        prompt: b.instruction.text.clone(),
        negative: None,
        strength: 1.0,
        image_guidance: Some(plantain_core::DEFAULT_IMAGE_GUIDANCE),
        references: images.to_vec(),
    };
    b.notes.push(format!(
        "the model reads all {n} pictures as references, in the order given; image {}'s pixels are kept wherever its answer left them alone",
        into + 1
    ));
    let method = format!(
        "the {n} pictures fused in one pass by the multi-reference model after the words, kept only where it changed image {}",
        into + 1
    );
    b.work = Some((Work::Paint(req), method));
    Ok(b.build())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn plan_fuse(
    instruction: Instruction,
    images: &[RgbImage],
    subjects: &[usize],
    into: usize,
    position: Position,
    large: Option<bool>,
    finder: Option<&dyn SubjectFinder>,
) -> Result<EditPlan, EditError> {
    let n = images.len();
    if let Some(&bad) = subjects.iter().chain([&into]).find(|&&k| k >= n) {
        return Err(EditError::Invalid(format!("the instruction names image {}, but {n} images were given", bad + 1)));
    }
    let scene = &images[into];
    let scene_is_world = world_located(scene).is_some();
    let mut cutouts = Vec::new();
    for &k in subjects {
        cutouts.push(cut_out(&images[k], k, finder)?);
    }
    let all_world = scene_is_world && cutouts.iter().all(|c| c.world);
    let (w, h) = scene.dimensions();
    let mut composite_img = scene.clone();
    let mut placed = GrayImage::new(w, h);
    let count = cutouts.len();
    let mut labels = Vec::new();
    for (j, cut) in cutouts.into_iter().enumerate() {
        let source = &images[subjects[j]];
        let factor = if all_world {
            w.min(h) as f32 / source.width().min(source.height()) as f32
        } else {
            let share = PHOTO_HEIGHT[match large {
                Some(false) => 0,
                None => 1,
                Some(true) => 2,
            }];
            (share * h as f32 / cut.rgb.height() as f32).min(0.9 * w as f32 / count as f32 / cut.rgb.width() as f32)
        };
        let (cw, ch) =
            (((cut.rgb.width() as f32 * factor).round() as u32).max(1), ((cut.rgb.height() as f32 * factor).round() as u32).max(1));
        let mut rgb = imageops::resize(&cut.rgb, cw, ch, FilterType::Lanczos3);
        let weight = imageops::resize(&cut.weight, cw, ch, FilterType::Triangle);
        if !all_world {
            match_colors(&mut rgb, &weight, scene);
        }
        let column = position.column.unwrap_or(1);
        let cx = if count == 1 { (f32::from(column) + 0.5) / 3.0 * w as f32 } else { (j as f32 + 0.5) / count as f32 * w as f32 };
        let cy = (f32::from(position.row.unwrap_or(1)) + 0.5) / 3.0 * h as f32;
        let left = (cx - cw as f32 / 2.0).round().clamp(0.0, w.saturating_sub(cw) as f32) as i64;
        let top = (cy - ch as f32 / 2.0).round().clamp(0.0, h.saturating_sub(ch) as f32) as i64;
        over(&mut composite_img, &mut placed, &rgb, &weight, left, top);
        labels.push(format!("{} at ({left}, {top}), {cw}x{ch}", cut.label));
    }
    let mut b = Builder::new(instruction, scene.clone());
    b.target = Some(labels.join("; "));
    if all_world {
        b.found_by = Some(super::regions::FoundBy::World);
        b.exact(composite_img, &placed, "cut out by the world's analysis, scaled, alpha-composited with its soft edge (no model)");
        return Ok(b.build());
    }
    b.found_by = Some(super::regions::FoundBy::Segmenter);
    seam_repaint(&mut b, composite_img, &placed);
    Ok(b.build())
}

/// The seam band (around the placed subjects, not their core) repainted at low strength; the
/// core pasted back exact over the painted picture.
fn seam_repaint(b: &mut Builder, composite_img: RgbImage, placed: &GrayImage) {
    let (w, h) = placed.dimensions();
    let band = composite::default_feather(w, h);
    let support = composite::threshold(placed, 1);
    let core = composite::threshold(placed, 250);
    let ring = composite::subtract(&composite::dilate(&support, band as f32), &core);
    b.feather = band;
    b.alpha = composite::feathered(&support, band);
    let prompt = b.instruction.text.clone();
    let req = PaintRequest {
        image: composite_img.clone(),
        mask: Some(ring),
        prompt,
        negative: None,
        strength: SEAM_STRENGTH,
        image_guidance: None,
        references: Vec::new(),
    };
    b.core = Some((composite_img, core));
    b.notes.push(format!("colour-matched {:.0}% towards the scene; seam band repainted at strength {SEAM_STRENGTH}", COLOR_MATCH * 100.0));
    b.work =
        Some((Work::Paint(req), "subjects cut out by segmentation, placed and composited; the seam band repainted by the model".into()));
}

/// The subject of image `k` (0-based), cropped to its box.
fn cut_out(image: &RgbImage, k: usize, finder: Option<&dyn SubjectFinder>) -> Result<Cutout, EditError> {
    let picture = Picture::analyse(image.clone(), finder)?;
    let (weight, label) = match (&picture.world, picture.candidates.first()) {
        (Some(_), Some(c)) => (c.weight.clone(), format!("image {}'s object ({})", k + 1, c.label)),
        (Some(_), None) => return Err(EditError::NotFound(format!("image {} shows no object to take", k + 1))),
        (None, _) => (picture.subject.clone(), format!("image {}'s subject", k + 1)),
    };
    let Some((x0, y0, x1, y1)) = bbox(&weight) else {
        return Err(EditError::NotFound(format!("image {} has no subject that segmentation can find", k + 1)));
    };
    let rgb = imageops::crop_imm(image, x0, y0, x1 - x0, y1 - y0).to_image();
    let weight = imageops::crop_imm(&weight, x0, y0, x1 - x0, y1 - y0).to_image();
    Ok(Cutout { rgb, weight, label, world: picture.world.is_some() })
}

/// The box (x0, y0, x1, y1 exclusive) of the non-zero pixels.
fn bbox(mask: &GrayImage) -> Option<(u32, u32, u32, u32)> {
    let mut b: Option<(u32, u32, u32, u32)> = None;
    for (x, y, p) in mask.enumerate_pixels() {
        if p.0[0] > 0 {
            b = Some(match b {
                None => (x, y, x + 1, y + 1),
                Some((a, c, d, e)) => (a.min(x), c.min(y), d.max(x + 1), e.max(y + 1)),
            });
        }
    }
    b
}

/// Moves the subject's mean colour part of the way to the scene's.
fn match_colors(rgb: &mut RgbImage, weight: &GrayImage, scene: &RgbImage) {
    let (sm, cm) = (super::adjust::mean_color(scene, None), super::adjust::mean_color(rgb, Some(weight)));
    for p in rgb.pixels_mut() {
        *p = Rgb(std::array::from_fn(|c| (f32::from(p.0[c]) + COLOR_MATCH * (sm[c] - cm[c])).round().clamp(0.0, 255.0) as u8));
    }
}

/// Alpha-composites `rgb` (weights `weight`) onto `dst` at (left, top); records the weights.
fn over(dst: &mut RgbImage, placed: &mut GrayImage, rgb: &RgbImage, weight: &GrayImage, left: i64, top: i64) {
    for (x, y, p) in rgb.enumerate_pixels() {
        let (dx, dy) = (left + i64::from(x), top + i64::from(y));
        if dx < 0 || dy < 0 || dx >= i64::from(dst.width()) || dy >= i64::from(dst.height()) {
            continue;
        }
        let a = weight.get_pixel(x, y).0[0];
        if a == 0 {
            continue;
        }
        let (dx, dy) = (dx as u32, dy as u32);
        let t = f32::from(a) / 255.0;
        let d = dst.get_pixel(dx, dy).0;
        dst.put_pixel(dx, dy, Rgb(std::array::from_fn(|c| (f32::from(d[c]) * (1.0 - t) + f32::from(p.0[c]) * t).round() as u8)));
        let prev = placed.get_pixel(dx, dy).0[0];
        placed.put_pixel(dx, dy, Luma([prev.max(a)]));
    }
}
