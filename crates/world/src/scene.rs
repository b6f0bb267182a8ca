//! The scene description: what is in a picture, exactly. Scenes serialise to a readable JSON
//! "scene spec" (`serde_json::to_string_pretty(&scene)`).

use serde::{Deserialize, Serialize};

/// The eleven palette colours. Their RGB values are far apart (at least ~98 in RGB distance),
/// so that the nearest-colour rule still separates them under the renderer's lighting (a few %
/// brightness and a small red/blue shift).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ColorName {
    Red,
    Orange,
    Yellow,
    Green,
    Blue,
    Purple,
    Pink,
    Brown,
    Black,
    White,
    Gray,
}

impl ColorName {
    pub const ALL: [ColorName; 11] = [
        ColorName::Red,
        ColorName::Orange,
        ColorName::Yellow,
        ColorName::Green,
        ColorName::Blue,
        ColorName::Purple,
        ColorName::Pink,
        ColorName::Brown,
        ColorName::Black,
        ColorName::White,
        ColorName::Gray,
    ];

    pub fn rgb(self) -> [u8; 3] {
        match self {
            ColorName::Red => [210, 30, 35],
            ColorName::Orange => [245, 130, 15],
            ColorName::Yellow => [245, 225, 40],
            ColorName::Green => [40, 160, 60],
            ColorName::Blue => [35, 85, 215],
            ColorName::Purple => [125, 45, 180],
            ColorName::Pink => [250, 135, 205],
            ColorName::Brown => [115, 65, 30],
            ColorName::Black => [25, 25, 25],
            ColorName::White => [245, 245, 245],
            ColorName::Gray => [140, 140, 140],
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            ColorName::Red => "red",
            ColorName::Orange => "orange",
            ColorName::Yellow => "yellow",
            ColorName::Green => "green",
            ColorName::Blue => "blue",
            ColorName::Purple => "purple",
            ColorName::Pink => "pink",
            ColorName::Brown => "brown",
            ColorName::Black => "black",
            ColorName::White => "white",
            ColorName::Gray => "gray",
        }
    }

    /// Other words a caption may use for this colour (never the canonical word itself).
    pub fn synonyms(self) -> &'static [&'static str] {
        match self {
            ColorName::Red => &["crimson", "scarlet"],
            ColorName::Orange => &["tangerine", "amber"],
            ColorName::Yellow => &["golden", "lemon"],
            ColorName::Green => &["emerald", "lime"],
            ColorName::Blue => &["azure", "cobalt"],
            ColorName::Purple => &["violet", "lavender"],
            ColorName::Pink => &["rose", "magenta"],
            ColorName::Brown => &["chocolate", "tan"],
            ColorName::Black => &["ebony", "jet"],
            ColorName::White => &["ivory", "snow"],
            ColorName::Gray => &["grey", "silver"],
        }
    }

    /// The canonical word and its synonyms.
    pub fn all_words(self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.word()).chain(self.synonyms().iter().copied())
    }

    /// Euclidean distance of the two palette RGB values.
    pub fn distance(self, other: ColorName) -> f32 {
        rgb_distance(self.rgb(), other.rgb())
    }

    /// True when an object of colour `self` would be hard to tell from a background of colour
    /// `other` (the same colour, or too close in RGB).
    pub fn confusable_with(self, other: ColorName) -> bool {
        self == other || self.distance(other) < CONFUSABLE_DISTANCE
    }

    /// The palette colour nearest to an RGB value.
    pub fn nearest(rgb: [f32; 3]) -> ColorName {
        let mut best = (f32::INFINITY, ColorName::Gray);
        for c in ColorName::ALL {
            let p = c.rgb();
            let d: f32 = (0..3).map(|i| (rgb[i] - p[i] as f32).powi(2)).sum();
            if d < best.0 {
                best = (d, c);
            }
        }
        best.1
    }
}

/// Palette colours closer than this count as confusable (none of the eleven are today; the
/// closest pair, orange/yellow, is ~98 apart).
pub const CONFUSABLE_DISTANCE: f32 = 90.0;

pub(crate) fn rgb_distance(a: [u8; 3], b: [u8; 3]) -> f32 {
    (0..3).map(|i| (a[i] as f32 - b[i] as f32).powi(2)).sum::<f32>().sqrt()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Heart,
    Ring,
    Cross,
    Diamond,
}

impl Shape {
    pub const ALL: [Shape; 8] =
        [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Star, Shape::Heart, Shape::Ring, Shape::Cross, Shape::Diamond];

    pub fn word(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Heart => "heart",
            Shape::Ring => "ring",
            Shape::Cross => "cross",
            Shape::Diamond => "diamond",
        }
    }

    /// Other nouns a caption may use for this shape (never the canonical word itself).
    pub fn synonyms(self) -> &'static [&'static str] {
        match self {
            Shape::Circle => &["disc", "dot"],
            Shape::Square => &["box", "block"],
            Shape::Triangle => &["pyramid shape"],
            Shape::Star => &["five-pointed star"],
            Shape::Heart => &["love heart"],
            Shape::Ring => &["donut", "hoop"],
            Shape::Cross => &["plus", "plus sign"],
            Shape::Diamond => &["rhombus", "lozenge"],
        }
    }

    pub fn all_words(self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.word()).chain(self.synonyms().iter().copied())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    pub const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    pub fn word(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }

    pub fn synonyms(self) -> &'static [&'static str] {
        match self {
            Size::Small => &["little", "tiny"],
            Size::Medium => &["medium-sized", "mid-sized"],
            Size::Large => &["big", "huge"],
        }
    }

    /// The object's extent (width of its bounding box) as a fraction of the canvas's short side.
    /// Chosen so that a small shape is still ~10 px at a 64 px short side and two large shapes in
    /// neighbouring cells (1/3 of the short side apart) keep a clear gap.
    pub fn extent(self) -> f32 {
        match self {
            Size::Small => 0.16,
            Size::Medium => 0.21,
            Size::Large => 0.26,
        }
    }
}

/// Column of the 3x3 grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum HPos {
    Left,
    Center,
    Right,
}

impl HPos {
    pub const ALL: [HPos; 3] = [HPos::Left, HPos::Center, HPos::Right];

    /// 0, 1, 2 from left to right.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> HPos {
        HPos::ALL[i.min(2)]
    }
}

/// Row of the 3x3 grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum VPos {
    Top,
    Middle,
    Bottom,
}

impl VPos {
    pub const ALL: [VPos; 3] = [VPos::Top, VPos::Middle, VPos::Bottom];

    /// 0, 1, 2 from top to bottom.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> VPos {
        VPos::ALL[i.min(2)]
    }
}

/// A solid colour, or a two-tone horizontal split: `sky` above the horizon (half the height),
/// `ground` below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Background {
    Solid(ColorName),
    Split { sky: ColorName, ground: ColorName },
}

impl Background {
    /// The horizon of a split background, as a fraction of the height from the top.
    pub const HORIZON: f32 = 0.5;

    pub fn sky(self) -> ColorName {
        match self {
            Background::Solid(c) => c,
            Background::Split { sky, .. } => sky,
        }
    }

    pub fn ground(self) -> ColorName {
        match self {
            Background::Solid(c) => c,
            Background::Split { ground, .. } => ground,
        }
    }

    /// The background colours an object in row `v` stands in front of (for the top and bottom
    /// rows of a split background only one; the middle row straddles the horizon).
    pub fn colors_behind(self, v: VPos) -> Vec<ColorName> {
        match (self, v) {
            (Background::Solid(c), _) => vec![c],
            (Background::Split { sky, .. }, VPos::Top) => vec![sky],
            (Background::Split { ground, .. }, VPos::Bottom) => vec![ground],
            (Background::Split { sky, ground }, VPos::Middle) => vec![sky, ground],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LightDir {
    Left,
    Right,
    Top,
}

/// Subtle global lighting: a brightness gradient of a few % (brighter towards `direction`) and
/// a warmth tint (`warmth` in [-1, 1], cool..warm: a small shift of red up and blue down).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lighting {
    pub direction: Option<LightDir>,
    pub warmth: f32,
}

impl Lighting {
    pub const NEUTRAL: Lighting = Lighting { direction: None, warmth: 0.0 };
}

impl Default for Lighting {
    fn default() -> Self {
        Lighting::NEUTRAL
    }
}

/// One shape in a cell of the 3x3 grid. `jitter` moves it off the cell centre, in units of the
/// canvas's short side (|jitter| <= [`MAX_JITTER`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    pub color: ColorName,
    pub size: Size,
    pub h: HPos,
    pub v: VPos,
    pub jitter: (f32, f32),
}

/// Largest jitter per axis, in units of the canvas's short side.
pub const MAX_JITTER: f32 = 0.03;

impl Object {
    pub fn cell(&self) -> (HPos, VPos) {
        (self.h, self.v)
    }
}

/// `(a, LeftOf, b)`: object a is left of object b (a's column < b's column); `Above`: a's row
/// < b's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    LeftOf,
    RightOf,
    Above,
    Below,
}

impl Relation {
    /// Whether the relation holds between objects in cells `a` and `b`.
    pub fn holds(self, a: (HPos, VPos), b: (HPos, VPos)) -> bool {
        match self {
            Relation::LeftOf => a.0.index() < b.0.index(),
            Relation::RightOf => a.0.index() > b.0.index(),
            Relation::Above => a.1.index() < b.1.index(),
            Relation::Below => a.1.index() > b.1.index(),
        }
    }

    /// The same fact seen from the other object: `a LeftOf b` == `b RightOf a`.
    pub fn inverse(self) -> Relation {
        match self {
            Relation::LeftOf => Relation::RightOf,
            Relation::RightOf => Relation::LeftOf,
            Relation::Above => Relation::Below,
            Relation::Below => Relation::Above,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub background: Background,
    pub lighting: Lighting,
    pub objects: Vec<Object>,
    /// Every relation that holds between two objects, for each pair `(a, b)` with `a < b`: a
    /// horizontal one when their columns differ and a vertical one when their rows differ.
    pub relations: Vec<(usize, Relation, usize)>,
}

impl Scene {
    /// The relations implied by the objects' cells (what [`Scene::relations`] must equal).
    pub fn relations_from_cells(objects: &[Object]) -> Vec<(usize, Relation, usize)> {
        let mut relations = Vec::new();
        for a in 0..objects.len() {
            for b in a + 1..objects.len() {
                let (ca, cb) = (objects[a].cell(), objects[b].cell());
                for r in [Relation::LeftOf, Relation::RightOf, Relation::Above, Relation::Below] {
                    if r.holds(ca, cb) {
                        relations.push((a, r, b));
                    }
                }
            }
        }
        relations
    }

    /// The readable JSON scene spec.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a scene always serialises")
    }

    pub fn from_json(text: &str) -> Result<Scene, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl Object {
    /// The object's centre in pixels on a `width` x `height` canvas: its grid cell's centre plus
    /// the jitter (in units of the short side).
    pub fn center_px(&self, width: u32, height: u32) -> (f32, f32) {
        let short = width.min(height) as f32;
        let x = (self.h.index() as f32 + 0.5) * width as f32 / 3.0 + self.jitter.0 * short;
        let y = (self.v.index() as f32 + 0.5) * height as f32 / 3.0 + self.jitter.1 * short;
        (x, y)
    }

    /// The side of the square box the shape is drawn in, in pixels.
    pub fn extent_px(&self, width: u32, height: u32) -> f32 {
        self.size.extent() * width.min(height) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{LIGHT_GRADIENT, WARMTH_SHIFT};

    #[test]
    fn palette_colours_stay_nearest_to_themselves_under_the_strongest_lighting() {
        for a in ColorName::ALL {
            for b in ColorName::ALL {
                if a != b {
                    assert!(a.distance(b) >= 95.0, "{a:?} and {b:?} are only {} apart", a.distance(b));
                }
            }
            for gain in [1.0 - LIGHT_GRADIENT, 1.0, 1.0 + LIGHT_GRADIENT] {
                for warmth in [-1.0, 0.0, 1.0] {
                    let [r, g, bl] = a.rgb().map(|c| c as f32 * gain);
                    let lit = [r + WARMTH_SHIFT * warmth, g, bl - WARMTH_SHIFT * warmth].map(|c| c.clamp(0.0, 255.0));
                    assert_eq!(ColorName::nearest(lit), a, "{a:?} at gain {gain} warmth {warmth}");
                }
            }
        }
    }

    #[test]
    fn every_word_names_exactly_one_colour_and_one_shape() {
        let colour_words: Vec<&str> = ColorName::ALL.iter().flat_map(|c| c.all_words()).collect();
        let shape_words: Vec<&str> = Shape::ALL.iter().flat_map(|s| s.all_words()).collect();
        for (i, w) in colour_words.iter().enumerate() {
            assert!(!colour_words[i + 1..].contains(w), "colour word {w} is used twice");
            assert!(!shape_words.iter().any(|s| s.split(' ').any(|part| part == *w)), "colour word {w} is also in a shape word");
        }
        for (i, w) in shape_words.iter().enumerate() {
            assert!(!shape_words[i + 1..].contains(w), "shape word {w} is used twice");
        }
    }

    #[test]
    fn scenes_round_trip_through_readable_json() {
        let objects = vec![
            Object { shape: Shape::Star, color: ColorName::Red, size: Size::Large, h: HPos::Left, v: VPos::Top, jitter: (0.01, -0.02) },
            Object { shape: Shape::Ring, color: ColorName::Blue, size: Size::Small, h: HPos::Right, v: VPos::Bottom, jitter: (0.0, 0.0) },
        ];
        let scene = Scene {
            background: Background::Split { sky: ColorName::White, ground: ColorName::Green },
            lighting: Lighting { direction: Some(LightDir::Left), warmth: 0.5 },
            relations: Scene::relations_from_cells(&objects),
            objects,
        };
        let json = scene.to_json();
        for word in ["\"star\"", "\"red\"", "\"split\"", "\"sky\": \"white\"", "\"left_of\"", "\"above\""] {
            assert!(json.contains(word), "{word} missing from {json}");
        }
        assert_eq!(Scene::from_json(&json).unwrap(), scene);
    }

    #[test]
    fn relations_follow_the_cells() {
        let at = |h, v| Object { shape: Shape::Circle, color: ColorName::Red, size: Size::Small, h, v, jitter: (0.0, 0.0) };
        let objects = [at(HPos::Left, VPos::Bottom), at(HPos::Right, VPos::Bottom), at(HPos::Center, VPos::Top)];
        assert_eq!(
            Scene::relations_from_cells(&objects),
            vec![
                (0, Relation::LeftOf, 1),
                (0, Relation::LeftOf, 2),
                (0, Relation::Below, 2),
                (1, Relation::RightOf, 2),
                (1, Relation::Below, 2)
            ]
        );
    }
}
