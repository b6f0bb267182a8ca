//! Captions: a small grammar with real variety (word order, synonyms, articles, background and
//! sky/ground wording, sizes, absolute positions, relations, counts, lighting). Every caption
//! states everything the checker checks: the background, each object's colour and shape, and
//! each object's position, either absolutely ("in the top left") or through a relation to
//! another object ("left of a blue square"). [`caption_detailed`] says which.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::scene::{Background, ColorName, HPos, LightDir, Object, Relation, Scene, Shape, VPos};

/// What a caption pinned down about positions (colours, shapes and the background are always
/// stated).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stated {
    /// Per object: whether its grid cell was stated absolutely.
    pub absolute: Vec<bool>,
    /// Indices into `scene.relations` of the relations the caption states.
    pub relations: Vec<usize>,
}

impl Stated {
    /// Everything: every absolute position and every relation (what [`caption_plain`] states,
    /// since absolute positions imply the relations).
    pub fn everything(scene: &Scene) -> Stated {
        Stated { absolute: vec![true; scene.objects.len()], relations: (0..scene.relations.len()).collect() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Caption {
    pub text: String,
    pub stated: Stated,
}

/// A varied caption for the scene.
pub fn caption(scene: &Scene, rng: &mut impl Rng) -> String {
    caption_detailed(scene, rng).text
}

/// One canonical wording: every object with its absolute position, then the background, e.g.
/// "a red star in the top left and a blue circle at the bottom on a yellow background".
pub fn caption_plain(scene: &Scene) -> String {
    let objects: Vec<String> = scene
        .objects
        .iter()
        .map(|o| format!("{} {}", with_article(&format!("{} {}", o.color.word(), o.shape.word())), plain_position(o.h, o.v)))
        .collect();
    let background = match scene.background {
        Background::Solid(c) => format!("on a {} background", c.word()),
        Background::Split { sky, ground } => format!("under a {} sky above {} ground", sky.word(), ground.word()),
    };
    format!("{} {}", join_list(&objects, " and "), background)
}

/// The canonical position phrase of a cell.
pub fn plain_position(h: HPos, v: VPos) -> &'static str {
    position_phrases(h, v)[0]
}

/// Every phrase captions use for a cell; the first is the canonical one.
pub fn position_phrases(h: HPos, v: VPos) -> &'static [&'static str] {
    use HPos::*;
    use VPos::*;
    match (h, v) {
        (Left, Top) => &["in the top left", "in the top-left corner", "at the upper left", "in the upper left corner"],
        (Center, Top) => &["at the top", "at the top center", "in the top middle", "at the top centre"],
        (Right, Top) => &["in the top right", "in the top-right corner", "at the upper right", "in the upper right corner"],
        (Left, Middle) => &["on the left", "at the left", "on the left side", "in the middle left"],
        (Center, Middle) => &["in the center", "in the middle", "in the centre", "at the center"],
        (Right, Middle) => &["on the right", "at the right", "on the right side", "in the middle right"],
        (Left, Bottom) => &["in the bottom left", "in the bottom-left corner", "at the lower left", "in the lower left corner"],
        (Center, Bottom) => &["at the bottom", "at the bottom center", "in the bottom middle", "at the bottom centre"],
        (Right, Bottom) => &["in the bottom right", "in the bottom-right corner", "at the lower right", "in the lower right corner"],
    }
}

/// Every phrase captions use for a relation ("a LeftOf b" reads "a left of b").
pub fn relation_phrases(r: Relation) -> &'static [&'static str] {
    match r {
        Relation::LeftOf => &["left of", "to the left of", "on the left of"],
        Relation::RightOf => &["right of", "to the right of", "on the right of"],
        Relation::Above => &["above", "over"],
        Relation::Below => &["below", "under", "beneath"],
    }
}

fn pick<T: Copy>(rng: &mut impl Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn color_word(c: ColorName, rng: &mut impl Rng) -> &'static str {
    if rng.random_bool(0.65) { c.word() } else { pick(rng, c.synonyms()) }
}

fn shape_word(s: Shape, rng: &mut impl Rng) -> &'static str {
    if rng.random_bool(0.7) { s.word() } else { pick(rng, s.synonyms()) }
}

fn with_article(phrase: &str) -> String {
    let vowel = phrase.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {phrase}", if vowel { "an" } else { "a" })
}

fn join_list(items: &[String], last_sep: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{}{last_sep}{last}", init.join(", ")),
    }
}

/// "a small red star", "a star in crimson", "one big blue box" ...
fn object_phrase(o: &Object, rng: &mut impl Rng) -> String {
    let color = color_word(o.color, rng);
    let shape = shape_word(o.shape, rng);
    let size =
        if rng.random_bool(0.4) { Some(if rng.random_bool(0.6) { o.size.word() } else { pick(rng, o.size.synonyms()) }) } else { None };
    let size = size.map(|s| format!("{s} ")).unwrap_or_default();
    let body = if rng.random_bool(0.85) { format!("{size}{color} {shape}") } else { format!("{size}{shape} in {color}") };
    if rng.random_bool(0.05) { format!("one {body}") } else { with_article(&body) }
}

/// "the blue circle": a second mention of an object already introduced.
fn definite_phrase(o: &Object, rng: &mut impl Rng) -> String {
    format!("the {} {}", color_word(o.color, rng), shape_word(o.shape, rng))
}

fn background_phrase(background: Background, rng: &mut impl Rng) -> (String, bool) {
    // (text, whether it goes before the objects)
    match background {
        Background::Solid(c) => {
            let w = color_word(c, rng);
            match rng.random_range(0..6) {
                0 => (format!("on a {w} background"), false),
                1 => (format!("against a {w} backdrop"), false),
                2 => (format!("{w} background:"), true),
                3 => (format!("on a plain {w} background"), false),
                4 => (format!("in front of a {w} background"), false),
                _ => (format!("on {w}"), false),
            }
        }
        Background::Split { sky, ground } => {
            let (s, g) = (color_word(sky, rng), color_word(ground, rng));
            match rng.random_range(0..5) {
                0 => (format!("under a {s} sky above {g} ground"), false),
                1 => (format!("with a {s} sky over {g} ground"), false),
                2 => (format!("against a {s} sky and {g} ground"), false),
                3 => (format!("{s} sky, {g} ground:"), true),
                _ => (format!("{s} sky above {g} ground:"), true),
            }
        }
    }
}

fn lighting_phrase(scene: &Scene, rng: &mut impl Rng) -> Option<String> {
    let warmth = scene.lighting.warmth;
    let tone = if warmth > 0.3 {
        Some(pick(rng, &["warm", "soft warm"]))
    } else if warmth < -0.3 {
        Some(pick(rng, &["cool", "cold"]))
    } else {
        None
    };
    let from = scene.lighting.direction.map(|d| match d {
        LightDir::Left => "from the left",
        LightDir::Right => "from the right",
        LightDir::Top => "from above",
    });
    match (tone, from) {
        (None, None) => None,
        (Some(t), None) => Some(format!("{t} light")),
        (None, Some(f)) => Some(if rng.random_bool(0.5) { format!("lit {f}") } else { format!("light {f}") }),
        (Some(t), Some(f)) => Some(format!("{t} light {f}")),
    }
}

/// The index in `scene.relations` of a relation between `a` and `b` as seen from `a`, with
/// the relation as `scene.relations` stores it.
fn relation_index(scene: &Scene, a: usize, r: Relation, b: usize) -> Option<usize> {
    let (first, rel, second) = if a < b { (a, r, b) } else { (b, r.inverse(), a) };
    scene.relations.iter().position(|&x| x == (first, rel, second))
}

/// Relations that hold from `a` to `b` (as `a r b`).
fn relations_between(scene: &Scene, a: usize, b: usize) -> Vec<Relation> {
    let (ca, cb) = (scene.objects[a].cell(), scene.objects[b].cell());
    [Relation::LeftOf, Relation::RightOf, Relation::Above, Relation::Below].into_iter().filter(|r| r.holds(ca, cb)).collect()
}

/// A relation phrase from `a` to `b`, possibly combining the vertical and horizontal ones
/// ("above and to the left of"); pushes the stated relation indices.
fn relation_phrase(scene: &Scene, a: usize, b: usize, stated: &mut Vec<usize>, rng: &mut impl Rng) -> String {
    let relations = relations_between(scene, a, b);
    let chosen: Vec<Relation> = if relations.len() == 2 && rng.random_bool(0.3) {
        // Vertical first reads naturally: "above and to the left of".
        let mut both = relations.clone();
        both.sort_by_key(|r| matches!(r, Relation::LeftOf | Relation::RightOf));
        both
    } else {
        vec![pick(rng, &relations)]
    };
    let mut words = Vec::new();
    for (k, &r) in chosen.iter().enumerate() {
        let mut phrase = pick(rng, relation_phrases(r)).to_string();
        if k + 1 < chosen.len() {
            // "above and to the left of" rather than "above of and ...".
            phrase = phrase.trim_end_matches(" of").to_string();
        }
        words.push(phrase);
        stated.extend(relation_index(scene, a, r, b));
    }
    if words.len() == 2 {
        // "above and to the left of": only the last keeps "of"; the first never has one.
        format!("{} and {}", words[0], words[1])
    } else {
        words.remove(0)
    }
}

/// A varied caption and what it states about positions.
pub fn caption_detailed(scene: &Scene, rng: &mut impl Rng) -> Caption {
    let n = scene.objects.len();
    let mut absolute = vec![false; n];
    let mut relations_stated = Vec::new();
    let mut order: Vec<usize> = (0..n).collect();
    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), rng);

    let relational = n >= 2 && rng.random_bool(0.4);
    let body = if relational {
        let (a, b) = (order[0], order[1]);
        let first = object_phrase(&scene.objects[a], rng);
        let second = object_phrase(&scene.objects[b], rng);
        let rel = relation_phrase(scene, a, b, &mut relations_stated, rng);
        let mut text = format!("{first} {rel} {second}");
        if n == 3 {
            let c = order[2];
            let third = object_phrase(&scene.objects[c], rng);
            if rng.random_bool(0.5) {
                absolute[c] = true;
                let pos = pick(rng, position_phrases(scene.objects[c].h, scene.objects[c].v));
                text = format!("{text}, and {third} {pos}");
            } else {
                let anchor = if rng.random_bool(0.5) { a } else { b };
                let rel = relation_phrase(scene, c, anchor, &mut relations_stated, rng);
                let anchor_phrase = definite_phrase(&scene.objects[anchor], rng);
                text = format!("{text}, and {third} {rel} {anchor_phrase}");
            }
        }
        text
    } else {
        let parts: Vec<String> = order
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                absolute[i] = true;
                let o = &scene.objects[i];
                let phrase = object_phrase(o, rng);
                let pos = pick(rng, position_phrases(o.h, o.v));
                if n == 1 && k == 0 && rng.random_bool(0.25) { format!("{pos}, {phrase}") } else { format!("{phrase} {pos}") }
            })
            .collect();
        let last_sep = pick(rng, &[" and ", " and ", ", and ", "; "]);
        join_list(&parts, last_sep)
    };

    let count = if n >= 2 && rng.random_bool(0.25) {
        let number = if n == 2 { pick(rng, &["two", "2"]) } else { pick(rng, &["three", "3"]) };
        let noun = pick(rng, &["shapes", "objects"]);
        Some(format!("{number} {noun}:"))
    } else {
        None
    };
    let (background, background_first) = background_phrase(scene.background, rng);
    let lighting = if rng.random_bool(0.5) { lighting_phrase(scene, rng) } else { None };

    let mut text = String::new();
    if background_first {
        text.push_str(&background);
        text.push(' ');
    }
    if let Some(count) = count {
        text.push_str(&count);
        text.push(' ');
    }
    text.push_str(&body);
    if !background_first {
        text.push(' ');
        text.push_str(&background);
    }
    if let Some(lighting) = lighting {
        text.push_str(", ");
        text.push_str(&lighting);
    }
    relations_stated.sort_unstable();
    relations_stated.dedup();
    Caption { text, stated: Stated { absolute, relations: relations_stated } }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::sample::{Split, sample_scene};
    use crate::scene::{Lighting, Size};

    /// The words of a caption, lower case, split at anything that is not a letter or '-'.
    fn words(text: &str) -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphabetic() || c == '-')).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
    }

    fn contains_phrase(text: &str, phrase: &str) -> bool {
        let (t, p) = (words(text), words(phrase));
        t.windows(p.len()).any(|w| w == p.as_slice())
    }

    /// The colours a caption names, read back word by word.
    fn colours_named(text: &str) -> BTreeSet<ColorName> {
        let w = words(text);
        ColorName::ALL.into_iter().filter(|c| c.all_words().any(|cw| w.iter().any(|x| x == cw))).collect()
    }

    fn shapes_named(text: &str) -> BTreeSet<Shape> {
        Shape::ALL.into_iter().filter(|s| s.all_words().any(|sw| contains_phrase(text, sw))).collect()
    }

    #[test]
    fn captions_state_every_checked_attribute() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut texts = BTreeSet::new();
        for i in 0..3000 {
            let scene = sample_scene(&mut rng, if i % 4 == 0 { Split::HeldOut } else { Split::Train });
            let c = caption_detailed(&scene, &mut rng);
            let text = &c.text;
            // Colours: exactly the scene's (objects and background), read back from the words.
            let mut colours: BTreeSet<ColorName> = scene.objects.iter().map(|o| o.color).collect();
            colours.insert(scene.background.sky());
            colours.insert(scene.background.ground());
            assert_eq!(colours_named(text), colours, "{text}");
            let shapes: BTreeSet<Shape> = scene.objects.iter().map(|o| o.shape).collect();
            assert_eq!(shapes_named(text), shapes, "{text}");
            // Each object's colour and shape are named together ("red star", "star in red").
            for o in &scene.objects {
                let together = o.color.all_words().any(|cw| {
                    o.shape.all_words().any(|sw| {
                        contains_phrase(text, &format!("{cw} {sw}"))
                            || contains_phrase(text, &format!("{sw} in {cw}"))
                            || Size::ALL.iter().any(|s| {
                                s.synonyms().iter().chain([&s.word()]).any(|z| contains_phrase(text, &format!("{z} {sw} in {cw}")))
                            })
                    })
                });
                assert!(together, "{:?} {:?} not named together in: {text}", o.color, o.shape);
            }
            match scene.background {
                Background::Solid(_) => {
                    assert!(["background", "backdrop", "on"].iter().any(|w| words(text).contains(&w.to_string())), "{text}")
                }
                Background::Split { .. } => assert!(contains_phrase(text, "sky") && contains_phrase(text, "ground"), "{text}"),
            }
            // Every object's position is stated, absolutely or through a stated relation.
            for (k, o) in scene.objects.iter().enumerate() {
                if c.stated.absolute[k] {
                    assert!(position_phrases(o.h, o.v).iter().any(|p| contains_phrase(text, p)), "position of {k} missing: {text}");
                } else {
                    assert!(
                        c.stated.relations.iter().any(|&r| scene.relations[r].0 == k || scene.relations[r].2 == k),
                        "{k} unplaced: {text}"
                    );
                }
            }
            for &r in &c.stated.relations {
                let (a, rel, b) = scene.relations[r];
                let phrases: Vec<&str> = relation_phrases(rel).iter().chain(relation_phrases(rel.inverse())).copied().collect();
                let said = phrases.iter().any(|p| contains_phrase(text, p) || contains_phrase(text, p.trim_end_matches(" of")));
                assert!(said && a < b, "relation {r} not stated: {text}");
            }
            if scene.objects.len() == 1 {
                assert!(c.stated.absolute[0], "{text}");
            }
            texts.insert(text.clone());
        }
        // Real variety: nearly every caption is different.
        assert!(texts.len() > 2900, "{} distinct captions", texts.len());
    }

    #[test]
    fn captions_are_deterministic_for_a_seed() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let scene = sample_scene(&mut rng, Split::Train);
        let a = caption(&scene, &mut ChaCha8Rng::seed_from_u64(1));
        let b = caption(&scene, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(a, b);
    }

    #[test]
    fn plain_caption_is_canonical() {
        let objects = vec![
            Object { shape: Shape::Star, color: ColorName::Red, size: Size::Small, h: HPos::Center, v: VPos::Top, jitter: (0.0, 0.0) },
            Object {
                shape: Shape::Circle,
                color: ColorName::Blue,
                size: Size::Large,
                h: HPos::Center,
                v: VPos::Bottom,
                jitter: (0.0, 0.0),
            },
        ];
        let mut scene = Scene {
            background: Background::Solid(ColorName::Yellow),
            lighting: Lighting::NEUTRAL,
            relations: Scene::relations_from_cells(&objects),
            objects,
        };
        assert_eq!(caption_plain(&scene), "a red star at the top and a blue circle at the bottom on a yellow background");
        scene.background = Background::Split { sky: ColorName::White, ground: ColorName::Green };
        scene.objects[0].color = ColorName::Orange;
        assert_eq!(caption_plain(&scene), "an orange star at the top and a blue circle at the bottom under a white sky above green ground");
    }
}
