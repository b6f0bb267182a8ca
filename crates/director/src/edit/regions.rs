//! Finding what an instruction points at: the picture's candidate objects, its subject and its
//! background, each as a soft weight map at the picture's own size.
//!
//! Two finders, chosen per picture: the synthetic world's own analysis when it explains the
//! picture (flat backgrounds with lighting ramps and coloured shapes: exact coverage and the
//! background plate, which makes removal exact maths), otherwise a salient-subject segmenter
//! (ISNet) whose mask's connected parts are the candidates.

use image::{GrayImage, Luma, RgbImage};
use plantain_world::check::{Located, locate};
use plantain_world::{ColorName, Shape};
use serde::Serialize;

use super::EditError;
use super::words::{Extreme, Position, Selector};

/// A model that finds the salient subject of a photograph, and perhaps things by name.
pub trait SubjectFinder: Send + Sync {
    /// Soft mask at the image's size, 255 = subject.
    fn subject(&self, image: &RgbImage) -> Result<GrayImage, EditError>;

    /// Where the picture shows `noun` ("cup"), as a mask at the image's size (255 = there), for
    /// finders that can look things up by name (DiffEdit on the loaded diffusion model, see
    /// [`super::named::ModelFinder`]); None when this finder cannot.
    fn named(&self, _image: &RgbImage, _noun: &str) -> Option<Result<GrayImage, EditError>> {
        None
    }

    /// How [`SubjectFinder::named`] finds things, in words.
    fn named_by(&self) -> &'static str {
        "nothing"
    }
}

impl<T: SubjectFinder + ?Sized> SubjectFinder for std::sync::Arc<T> {
    fn subject(&self, image: &RgbImage) -> Result<GrayImage, EditError> {
        (**self).subject(image)
    }
    fn named(&self, image: &RgbImage, noun: &str) -> Option<Result<GrayImage, EditError>> {
        (**self).named(image, noun)
    }
    fn named_by(&self) -> &'static str {
        (**self).named_by()
    }
}

impl SubjectFinder for plantain_vision::Segmenter {
    fn subject(&self, image: &RgbImage) -> Result<GrayImage, EditError> {
        plantain_vision::Segmenter::subject(self, image).map_err(|e| EditError::Region(e.to_string()))
    }
}

/// The installed segmenter, loaded on first use (a picture of the synthetic world never
/// needs it); when it cannot be loaded, photographs get [`EditError::NoSegmenter`].
#[derive(Default)]
pub struct LazySegmenter(std::sync::OnceLock<Option<plantain_vision::Segmenter>>);

impl SubjectFinder for LazySegmenter {
    fn subject(&self, image: &RgbImage) -> Result<GrayImage, EditError> {
        let loaded = self.0.get_or_init(|| {
            plantain_vision::Segmenter::open_installed()
                .inspect_err(|e| tracing::warn!(error = %e, "no segmentation model: edits of photographs are refused"))
                .ok()
        });
        SubjectFinder::subject(loaded.as_ref().ok_or(EditError::NoSegmenter)?, image)
    }
}

/// How the regions of a picture were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// The synthetic world's analysis (background model and components).
    World,
    /// A salient-subject segmenter and the connected parts of its mask.
    Segmenter,
    /// The mask the request carried.
    UserMask,
}

impl FoundBy {
    pub fn describe(self) -> &'static str {
        match self {
            FoundBy::World => "the synthetic world's analysis of the picture (background model and its objects)",
            FoundBy::Segmenter => "salient-subject segmentation (ISNet) and the connected parts of its mask",
            FoundBy::UserMask => "the mask given with the request",
        }
    }
}

/// One object the instruction may point at.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// "red circle at the top left".
    pub label: String,
    pub color: ColorName,
    /// Known only in the synthetic world.
    pub shape: Option<Shape>,
    /// How much of each pixel is this object (0–255), the picture's size.
    pub weight: GrayImage,
    /// Centroid as fractions of width and height.
    pub centroid: (f32, f32),
    /// Share of the picture's area.
    pub area: f32,
    /// Mean colour of its core pixels.
    pub rgb: [f32; 3],
    /// Names a finder placed here ([`Picture::find_named`]).
    pub names: Vec<String>,
}

impl Candidate {
    fn position(&self) -> Position {
        let third = |v: f32| ((v * 3.0).floor().clamp(0.0, 2.0)) as u8;
        Position { column: Some(third(self.centroid.0)), row: Some(third(self.centroid.1)) }
    }
}

/// A picture with its regions found.
pub struct Picture {
    pub image: RgbImage,
    pub found_by: FoundBy,
    pub candidates: Vec<Candidate>,
    /// Union of every candidate's weight: the subject.
    pub subject: GrayImage,
    /// The world's analysis (None for photographs).
    pub world: Option<Located>,
}

/// The world explains a picture when at least this share of the pixels outside the objects it
/// found lie near its background plate (and the objects cover at most [`MAX_OBJECT_SHARE`]).
const WORLD_EXPLAINS: f32 = 0.7;
/// Objects of the synthetic world never cover more than this share of the picture.
const MAX_OBJECT_SHARE: f32 = 0.5;
/// Distance (RGB) from the plate that still counts as background.
const PLATE_TOLERANCE: f32 = 24.0;

impl Picture {
    /// Finds the regions of `image`: the world's analysis when it explains the picture, else
    /// `finder` (an error naming what to install when there is none).
    pub fn analyse(image: RgbImage, finder: Option<&dyn SubjectFinder>) -> Result<Picture, EditError> {
        if let Some(located) = world_located(&image) {
            return Ok(Picture::from_world(image, located));
        }
        let Some(finder) = finder else {
            return Err(EditError::NoSegmenter);
        };
        let mask = finder.subject(&image)?;
        Ok(Picture::from_subject_mask(image, &mask, FoundBy::Segmenter))
    }

    pub fn from_world(image: RgbImage, located: Located) -> Picture {
        let (w, h) = image.dimensions();
        let total = (w as f32) * (h as f32);
        let candidates: Vec<Candidate> = located
            .analysis
            .components
            .iter()
            .zip(&located.coverage)
            .map(|(c, weight)| {
                let area = weight.pixels().map(|p| f32::from(p.0[0]) / 255.0).sum::<f32>() / total;
                let mut cand = Candidate {
                    label: String::new(),
                    color: c.color,
                    shape: Some(c.shape),
                    weight: weight.clone(),
                    centroid: c.centroid,
                    area,
                    rgb: c.rgb.map(f32::from),
                    names: vec![],
                };
                cand.label = format!("{} {} at the {}", c.color.word(), c.shape.word(), cand.position().describe());
                cand
            })
            .collect();
        let subject = union_of(&candidates, w, h);
        Picture { image, found_by: FoundBy::World, candidates, subject, world: Some(located) }
    }

    /// Candidates from a soft subject mask: its connected parts (at least 0.5% of the picture).
    pub fn from_subject_mask(image: RgbImage, mask: &GrayImage, found_by: FoundBy) -> Picture {
        let (w, h) = image.dimensions();
        let total = (w as f32) * (h as f32);
        let candidates: Vec<Candidate> = plantain_vision::components(mask, 128, 0.005)
            .into_iter()
            .enumerate()
            .map(|(i, region)| {
                // The soft mask within the part's grown box: its anti-aliased edge included.
                let weight = soft_within(mask, &region.mask);
                let rgb = super::adjust::mean_color(&image, Some(&region.mask));
                let color = ColorName::nearest(rgb);
                let mut cand = Candidate {
                    label: String::new(),
                    color,
                    shape: None,
                    weight,
                    centroid: region.centroid,
                    area: region.area as f32 / total,
                    rgb,
                    names: vec![],
                };
                cand.label = format!("subject part {} (mostly {}) at the {}", i + 1, color.word(), cand.position().describe());
                cand
            })
            .collect();
        let subject = mask.clone();
        Picture { image, found_by, candidates, subject, world: None }
    }

    /// Looks `noun` up with `finder` (a photograph only; the world's pictures have no names):
    /// the subject parts that lie mostly inside the found mask take the name; when none does,
    /// the mask itself becomes a candidate (something the segmenter did not isolate). Returns
    /// a note for the plan, or None when the finder cannot look things up by name.
    pub fn find_named(&mut self, noun: &str, finder: &dyn SubjectFinder) -> Result<Option<String>, EditError> {
        if self.found_by == FoundBy::World || self.candidates.iter().any(|c| c.names.iter().any(|n| n == noun)) {
            return Ok(None);
        }
        let Some(found) = finder.named(&self.image, noun) else {
            return Ok(None);
        };
        let found = found?;
        let by = finder.named_by();
        let pieces = plantain_vision::components(&found, 128, 0.0);
        let total: u64 = pieces.iter().map(|r| r.area).sum();
        if let Some(largest) = pieces.first()
            && (largest.area as f32) < COHERENT_SHARE * total as f32
        {
            // A model that knows the thing gives one blob; scattered cells mean it does not.
            return Ok(Some(format!(
                "{by} gave a scattered mask for \"{noun}\" ({} pieces, the largest {:.0}% of it): the model does not know where it is",
                pieces.len(),
                100.0 * largest.area as f32 / total as f32
            )));
        }
        let mut hits = 0;
        for c in &mut self.candidates {
            if inside_share(&c.weight, &found) >= NAMED_OVERLAP {
                c.names.push(noun.to_string());
                hits += 1;
            }
        }
        if hits > 0 {
            return Ok(Some(format!("\"{noun}\" located by {by}: it covers {hits} of the segmented parts")));
        }
        let region = plantain_imageio::composite::threshold(&found, 128);
        let (w, h) = region.dimensions();
        let area = plantain_imageio::composite::area(&region) as f32 / (w as f32 * h as f32);
        if area < MIN_NAMED_AREA {
            return Err(EditError::NotFound(format!("{by} finds no \"{noun}\" in the picture (it shows: {})", self.inventory())));
        }
        let rgb = super::adjust::mean_color(&self.image, Some(&region));
        let mut cand = Candidate {
            label: String::new(),
            color: ColorName::nearest(rgb),
            shape: None,
            weight: found.clone(),
            centroid: centroid(&region),
            area,
            rgb,
            names: vec![noun.to_string()],
        };
        cand.label = format!("the {noun} (found by name) at the {}", cand.position().describe());
        self.candidates.push(cand);
        Ok(Some(format!("\"{noun}\" located by {by}, a region the segmenter had not separated")))
    }

    /// The background's weight map (255 = background).
    pub fn background(&self) -> GrayImage {
        plantain_imageio::composite::invert(&self.subject)
    }

    /// What the picture shows, for messages.
    pub fn inventory(&self) -> String {
        if self.candidates.is_empty() {
            return "no separate objects".into();
        }
        self.candidates.iter().map(|c| c.label.as_str()).collect::<Vec<_>>().join("; ")
    }

    /// The one candidate `sel` points at, with notes on words that could not be checked.
    pub fn select(&self, sel: &Selector) -> Result<(usize, Vec<String>), EditError> {
        let mut notes = Vec::new();
        let world = self.found_by == FoundBy::World;
        if world && let Some(noun) = &sel.noun {
            return Err(EditError::NotFound(format!(
                "the picture has no \"{noun}\" that can be found (it shows: {}); name an object by its colour, shape or place",
                self.inventory()
            )));
        }
        if !world {
            if let Some(shape) = sel.shape {
                notes.push(format!("the shape word \"{}\" was not checked: segmentation finds objects, not their kinds", shape.word()));
            }
            if let Some(noun) = &sel.noun
                && !self.candidates.iter().any(|c| c.names.contains(noun))
            {
                notes.push(format!(
                    "the word \"{noun}\" was not checked: no model here located it; the subject part was chosen by colour, place and size"
                ));
            }
        }
        let named = |c: &Candidate| match &sel.noun {
            Some(noun) if !world && self.candidates.iter().any(|c| c.names.contains(noun)) => c.names.contains(noun),
            _ => true,
        };
        let mut pool: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| {
                let c = &self.candidates[i];
                named(c)
                    && sel.color.is_none_or(|col| c.color == col)
                    && (!world || sel.shape.is_none_or(|s| c.shape == Some(s)))
                    && sel.position.is_none_or(|p| {
                        let here = c.position();
                        p.column.is_none_or(|col| here.column == Some(col)) && p.row.is_none_or(|r| here.row == Some(r))
                    })
            })
            .collect();
        if pool.len() > 1
            && let Some(e) = sel.extreme
        {
            pool.sort_by(|&a, &b| self.candidates[a].area.total_cmp(&self.candidates[b].area));
            pool = vec![if e == Extreme::Largest { pool[pool.len() - 1] } else { pool[0] }];
        }
        match pool.as_slice() {
            [one] => Ok((*one, notes)),
            [] => Err(EditError::NotFound(format!("nothing in the picture matches \"{}\" (it shows: {})", sel.words, self.inventory()))),
            many => Err(EditError::Ambiguous(format!(
                "\"{}\" matches {} objects ({}); say which by colour, place or size",
                sel.words,
                many.len(),
                many.iter().map(|&i| self.candidates[i].label.as_str()).collect::<Vec<_>>().join("; ")
            ))),
        }
    }
}

/// The world's analysis of `image` when it explains the picture (None for photographs).
pub fn world_located(image: &RgbImage) -> Option<Located> {
    let located = locate(image);
    world_explains(image, &located).then_some(located)
}

fn world_explains(image: &RgbImage, located: &Located) -> bool {
    let (mut free, mut near, mut covered) = (0u64, 0u64, 0u64);
    for (x, y, p) in image.enumerate_pixels() {
        if located.coverage.iter().any(|m| m.get_pixel(x, y).0[0] > 0) {
            covered += 1;
            continue;
        }
        free += 1;
        let q = located.plate.get_pixel(x, y).0;
        let d = (0..3).map(|c| (f32::from(p.0[c]) - f32::from(q[c])).powi(2)).sum::<f32>().sqrt();
        near += u64::from(d <= PLATE_TOLERANCE);
    }
    let total = (free + covered).max(1) as f32;
    let (plain, objects) = (near as f32 / free.max(1) as f32, covered as f32 / total);
    tracing::debug!(plain, objects, "how far the synthetic world's analysis explains the picture");
    plain >= WORLD_EXPLAINS && objects <= MAX_OBJECT_SHARE
}

fn union_of(candidates: &[Candidate], w: u32, h: u32) -> GrayImage {
    candidates.iter().fold(GrayImage::new(w, h), |acc, c| plantain_imageio::composite::union(&acc, &c.weight))
}

/// A subject part takes a name when at least this share of its weight lies inside the mask a
/// finder gave for the name.
const NAMED_OVERLAP: f32 = 0.5;
/// A found-by-name mask is believed when its largest piece holds at least this share of it.
const COHERENT_SHARE: f32 = 0.5;
/// A found-by-name mask smaller than this share of the picture finds nothing.
const MIN_NAMED_AREA: f32 = 0.002;

/// Share of `weight` inside `mask` (both 0-255).
fn inside_share(weight: &GrayImage, mask: &GrayImage) -> f32 {
    let (mut all, mut inside) = (0f64, 0f64);
    for (w, m) in weight.pixels().zip(mask.pixels()) {
        let w = f64::from(w.0[0]);
        all += w;
        inside += w * f64::from(m.0[0]) / 255.0;
    }
    if all == 0.0 { 0.0 } else { (inside / all) as f32 }
}

/// Centroid of a binary mask as fractions of width and height.
fn centroid(mask: &GrayImage) -> (f32, f32) {
    let (mut n, mut sx, mut sy) = (0f64, 0f64, 0f64);
    for (x, y, p) in mask.enumerate_pixels() {
        if p.0[0] > 0 {
            n += 1.0;
            sx += f64::from(x) + 0.5;
            sy += f64::from(y) + 0.5;
        }
    }
    let n = n.max(1.0);
    ((sx / n) as f32 / mask.width() as f32, (sy / n) as f32 / mask.height() as f32)
}

/// The soft mask's values near one part (within 3 px of it), zero elsewhere.
fn soft_within(soft: &GrayImage, part: &GrayImage) -> GrayImage {
    let near = plantain_imageio::composite::dilate(part, 3.0);
    GrayImage::from_fn(soft.width(), soft.height(), |x, y| {
        Luma([if near.get_pixel(x, y).0[0] > 0 { soft.get_pixel(x, y).0[0] } else { 0 }])
    })
}
