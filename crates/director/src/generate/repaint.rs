//! The loop's local correction: when a picture of the synthetic world is right but for some of
//! its objects, the next attempt repaints only where those objects belong (and where the wrong
//! ones were drawn), keeping every other pixel of the best picture so far.
//!
//! The region is, per failing object, a box around its planned place (its size class, 1.4x) and
//! a box around the component the checker matched to it, if it was drawn elsewhere or wrong;
//! boxes around components matched to no object (extra blobs) are added when too many were
//! drawn. Objects that are right are cut out of the region (their box grown by 2 px), so a
//! repaint never touches them. The model paints the region after a caption of the failing
//! objects alone on the planned background; the loop pastes its answer back over a feather
//! band, so outside the region and band the picture is the earlier attempt's own bytes.

use image::{GrayImage, Luma, RgbImage};
use plantain_engine::pipeline::GenerateRequest;
use plantain_imageio::composite;
use plantain_world::{CheckReport, Component, Object, Scene, caption_plain, check};
use serde::{Deserialize, Serialize};

use super::plan::Plan;

/// What a repaint attempt asks of the painter: `image` with the white part of `mask` redrawn
/// after `prompt` (inpainting, strength 1). The loop pastes the answer back itself.
#[derive(Clone, Debug)]
pub struct RepaintRequest {
    /// The attempt (from 0) whose drawing this repaints.
    pub from: usize,
    pub image: RgbImage,
    pub mask: GrayImage,
    pub prompt: String,
}

impl RepaintRequest {
    /// Nothing for a model to paint (only extra blobs were erased): the picture is the answer.
    pub fn exact(&self) -> bool {
        composite::area(&self.mask) == 0
    }

    /// Makes `r` this repaint: the picture's region redrawn after the prompt (inpainting).
    pub fn apply(&self, r: &mut GenerateRequest) {
        r.prompt = self.prompt.clone();
        r.init_image = Some(self.image.clone());
        r.mask = Some(self.mask.clone());
        r.strength = 1.0;
    }
}

/// A repaint, as recorded with its attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepaintRecord {
    /// The attempt (from 1) whose picture was repainted.
    pub from_attempt: usize,
    /// The objects repainted ("red circle").
    pub objects: Vec<String>,
    pub prompt: String,
    /// Pixels in the region (the feather band not counted).
    pub pixels: u64,
    /// Extra blobs (drawn, matched to no object) erased exactly first: filled with the
    /// background measured around them, no model.
    #[serde(default)]
    pub erased: usize,
}

impl RepaintRecord {
    /// "red circle repainted (812 px), 2 extra blobs erased".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.objects.is_empty() {
            parts.push(format!("{} repainted ({} px)", self.objects.join(", "), self.pixels));
        }
        if self.erased > 0 {
            parts.push(format!("{} extra blob{} erased", self.erased, if self.erased == 1 { "" } else { "s" }));
        }
        parts.join(", ")
    }
}

/// A planned repaint: the request and its record.
#[derive(Clone, Debug)]
pub struct Repaint {
    pub request: RepaintRequest,
    pub record: RepaintRecord,
    /// Paste weights: the region feathered.
    pub alpha: GrayImage,
}

impl Repaint {
    /// The painter's answer pasted back into the repainted picture (resized to it first if the
    /// painter answered at another size).
    pub fn paste(&self, painted: &RgbImage) -> RgbImage {
        let base = &self.request.image;
        let painted = if painted.dimensions() == base.dimensions() {
            painted.clone()
        } else {
            image::imageops::resize(painted, base.width(), base.height(), image::imageops::FilterType::Lanczos3)
        };
        composite::paste_back(base, &painted, &self.alpha).unwrap_or(painted)
    }
}

/// How far a box around a planned object reaches past its size class.
const PLANNED_BOX: f32 = 1.4;
/// How far a box around a drawn component reaches past the square of its area.
const DRAWN_BOX: f32 = 1.8;

/// The repaint that would fix `picture` (the model's drawing of attempt `from`, before any text
/// was set), or None when the plan is not a world scene, the picture is already right, or what
/// is wrong is not local (the background).
pub fn plan_repaint(plan: &Plan, picture: &RgbImage, from: usize) -> Option<Repaint> {
    let world = plan.world.as_ref()?;
    let report = check(&world.scene, picture);
    if !report.background || report.satisfies(&world.stated) {
        return None;
    }
    let failing = failing_objects(&world.scene, &world.stated, &report);
    let extra = report.components.len() > world.scene.objects.len();
    if failing.is_empty() && !extra {
        return None;
    }
    let (w, h) = picture.dimensions();
    let mut region = GrayImage::new(w, h);
    for &i in &failing {
        fill_box(&mut region, planned_box(&world.scene.objects[i], w, h));
        if let Some(j) = report.assignment[i] {
            fill_box(&mut region, drawn_box(&report.components[j], w, h));
        }
    }
    let assigned: Vec<usize> = report.assignment.iter().flatten().copied().collect();
    let unassigned: Vec<usize> = (0..report.components.len()).filter(|j| !assigned.contains(j)).collect();
    let (base, erased) = if extra { erase(picture, &report, &unassigned) } else { (picture.clone(), 0) };
    if extra && erased == 0 {
        // The blobs could not be told apart exactly: the model repaints their boxes instead.
        for &j in &unassigned {
            fill_box(&mut region, drawn_box(&report.components[j], w, h));
        }
    }
    for (i, j) in report.assignment.iter().enumerate() {
        if let (false, Some(j)) = (failing.contains(&i), j) {
            let mut kept = GrayImage::new(w, h);
            fill_box(&mut kept, drawn_box(&report.components[*j], w, h));
            region = composite::subtract(&region, &composite::dilate(&kept, 2.0));
        }
    }
    let pixels = composite::area(&region);
    if pixels == 0 && erased == 0 {
        return None;
    }
    let objects: Vec<Object> = failing.iter().map(|&i| world.scene.objects[i]).collect();
    let alone = Scene { background: world.scene.background, lighting: world.scene.lighting, objects: objects.clone(), relations: vec![] };
    let prompt = caption_plain(&alone);
    let alpha = composite::feathered(&region, composite::default_feather(w, h));
    let names = objects.iter().map(|o| format!("{} {}", o.color.word(), o.shape.word())).collect();
    let record = RepaintRecord { from_attempt: from + 1, objects: names, prompt: prompt.clone(), pixels, erased };
    Some(Repaint { request: RepaintRequest { from, image: base, mask: region, prompt }, record, alpha })
}

/// `picture` with the components `which` (drawn, matched to no object) erased exactly: their
/// pixels (grown by 2 px) replaced by the background as it would be without any object (the
/// world's plate). The count erased; 0 when the world's analysis does not explain the picture.
fn erase(picture: &RgbImage, report: &CheckReport, which: &[usize]) -> (RgbImage, usize) {
    let located = plantain_world::check::locate(picture);
    if located.analysis.components != report.components {
        return (picture.clone(), 0);
    }
    let mut out = picture.clone();
    for &j in which {
        let mask = composite::dilate(&composite::threshold(&located.coverage[j], 1), 2.0);
        for (x, y, m) in mask.enumerate_pixels() {
            if m.0[0] > 0 {
                out.put_pixel(x, y, *located.plate.get_pixel(x, y));
            }
        }
    }
    (out, which.len())
}

/// The objects whose stated attributes the picture gets wrong: not found, wrong colour or
/// shape, or in the wrong cell where the place was stated or a stated relation with it fails.
fn failing_objects(scene: &Scene, stated: &plantain_world::Stated, report: &CheckReport) -> Vec<usize> {
    let in_failed_relation = |i: usize| {
        stated.relations.iter().any(|&r| {
            let (a, _, b) = scene.relations[r];
            (a == i || b == i) && !report.relations.get(r).copied().unwrap_or(false)
        })
    };
    report
        .objects
        .iter()
        .enumerate()
        .filter(|(i, o)| {
            let place_matters = stated.absolute.get(*i).copied().unwrap_or(true) || in_failed_relation(*i);
            !o.found || !o.color || !o.shape || (place_matters && !o.position)
        })
        .map(|(i, _)| i)
        .collect()
}

/// A box as (x0, y0, x1, y1) in pixels, not clipped.
type PxBox = (f32, f32, f32, f32);

fn planned_box(o: &Object, w: u32, h: u32) -> PxBox {
    let (cx, cy) = o.center_px(w, h);
    let half = o.extent_px(w, h) * PLANNED_BOX / 2.0;
    (cx - half, cy - half, cx + half, cy + half)
}

fn drawn_box(c: &Component, w: u32, h: u32) -> PxBox {
    let (cx, cy) = (c.centroid.0 * w as f32, c.centroid.1 * h as f32);
    let half = c.area.max(0.0).sqrt() * w.min(h) as f32 * DRAWN_BOX / 2.0;
    (cx - half, cy - half, cx + half, cy + half)
}

fn fill_box(mask: &mut GrayImage, (x0, y0, x1, y1): PxBox) {
    let (w, h) = mask.dimensions();
    let clip = |v: f32, max: u32| v.round().clamp(0.0, max as f32) as u32;
    for y in clip(y0, h)..clip(y1, h) {
        for x in clip(x0, w)..clip(x1, w) {
            mask.put_pixel(x, y, Luma([255]));
        }
    }
}

#[cfg(test)]
mod tests {
    use plantain_world::{Background, ColorName, HPos, Lighting, Shape, Size, VPos, render};

    use super::*;

    fn object(color: ColorName, shape: Shape, h: HPos, v: VPos) -> Object {
        Object { shape, color, size: Size::Medium, h, v, jitter: (0.0, 0.0) }
    }

    fn picture(objects: Vec<Object>) -> RgbImage {
        let scene = Scene { background: Background::Solid(ColorName::White), lighting: Lighting::NEUTRAL, objects, relations: vec![] };
        render(&scene, 192, 192)
    }

    const PROMPT: &str = "a red circle in the top left and a blue square in the bottom right on a white background";

    #[test]
    fn a_wrong_object_is_repainted_and_the_right_one_kept() {
        let plan = Plan::new(PROMPT, None, 192, 192);
        let drawn = picture(vec![
            object(ColorName::Red, Shape::Circle, HPos::Left, VPos::Top),
            object(ColorName::Green, Shape::Square, HPos::Right, VPos::Bottom),
        ]);
        let r = plan_repaint(&plan, &drawn, 0).expect("the green square is wrong");
        assert_eq!(r.record.objects, vec!["blue square"]);
        assert!(r.record.prompt.contains("blue square"), "{}", r.record.prompt);
        assert!(!r.record.prompt.contains("red"), "only the failing object is asked for: {}", r.record.prompt);
        assert_eq!(r.request.mask.get_pixel(160, 160).0[0], 255, "the wrong square's place is repainted");
        assert_eq!(r.request.mask.get_pixel(32, 32).0[0], 0, "the right circle is kept");
        // The answer is pasted back: outside the region and its band, the drawing's own bytes.
        let painted = RgbImage::from_pixel(192, 192, image::Rgb([1, 2, 3]));
        let out = r.paste(&painted);
        assert_eq!(composite::changed_outside(&drawn, &out, &r.alpha), 0);
        assert_eq!(out.get_pixel(160, 160).0, [1, 2, 3]);
    }

    #[test]
    fn a_missing_object_gets_its_planned_box_and_a_right_picture_none() {
        let plan = Plan::new(PROMPT, None, 192, 192);
        let missing = picture(vec![object(ColorName::Red, Shape::Circle, HPos::Left, VPos::Top)]);
        let r = plan_repaint(&plan, &missing, 2).expect("the blue square is missing");
        assert_eq!((r.record.from_attempt, r.record.objects.clone()), (3, vec!["blue square".to_string()]));
        assert_eq!(r.request.mask.get_pixel(160, 160).0[0], 255);
        let right = picture(vec![
            object(ColorName::Red, Shape::Circle, HPos::Left, VPos::Top),
            object(ColorName::Blue, Shape::Square, HPos::Right, VPos::Bottom),
        ]);
        assert!(plan_repaint(&plan, &right, 0).is_none());
        assert!(plan_repaint(&Plan::new("a photo of a cat", None, 192, 192), &right, 0).is_none(), "not a world prompt");
    }

    #[test]
    fn an_extra_blob_is_erased_exactly_and_nothing_is_left_to_paint() {
        let plan = Plan::new(PROMPT, None, 192, 192);
        let right = [
            object(ColorName::Red, Shape::Circle, HPos::Left, VPos::Top),
            object(ColorName::Blue, Shape::Square, HPos::Right, VPos::Bottom),
        ];
        let mut objects = right.to_vec();
        objects.push(object(ColorName::Green, Shape::Triangle, HPos::Right, VPos::Top));
        let drawn = picture(objects);
        let r = plan_repaint(&plan, &drawn, 0).expect("one blob too many");
        assert_eq!((r.record.erased, r.record.objects.len()), (1, 0), "{:?}", r.record);
        assert!(r.request.exact(), "nothing for a model to paint");
        assert_eq!(r.record.describe(), "1 extra blob erased");
        let out = r.paste(&RgbImage::from_pixel(192, 192, image::Rgb([1, 2, 3])));
        let world = plan.world.as_ref().unwrap();
        assert!(check(&world.scene, &out).satisfies(&world.stated), "{:?}", check(&world.scene, &out));
        // The right objects' pixels are the drawing's own.
        assert_eq!(out.get_pixel(32, 32), drawn.get_pixel(32, 32));
        assert_eq!(out.get_pixel(160, 160), drawn.get_pixel(160, 160));
    }

    #[test]
    fn a_wrong_background_is_not_local() {
        let plan = Plan::new(PROMPT, None, 192, 192);
        let scene = Scene {
            background: Background::Solid(ColorName::Yellow),
            lighting: Lighting::NEUTRAL,
            objects: vec![object(ColorName::Red, Shape::Circle, HPos::Left, VPos::Top)],
            relations: vec![],
        };
        assert!(plan_repaint(&plan, &render(&scene, 192, 192), 0).is_none());
    }
}
