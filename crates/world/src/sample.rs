//! Sampling scenes, the train / held-out split and the invariants every scene keeps.

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::scene::{Background, ColorName, HPos, LightDir, Lighting, MAX_JITTER, Object, Scene, Shape, Size, VPos};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Scenes with no held-out combination.
    Train,
    /// Scenes with at least one held-out combination (to measure compositional generalisation).
    HeldOut,
}

/// (colour, shape) pairs that never occur in [`Split::Train`]: 11 of the 88. Every colour is
/// held out with exactly one shape and every shape with at most two colours, so each colour and
/// each shape is still seen in training with most partners.
pub const HELD_OUT_COLOR_SHAPE: [(ColorName, Shape); 11] = [
    (ColorName::Red, Shape::Star),
    (ColorName::Orange, Shape::Heart),
    (ColorName::Yellow, Shape::Ring),
    (ColorName::Green, Shape::Cross),
    (ColorName::Blue, Shape::Triangle),
    (ColorName::Purple, Shape::Diamond),
    (ColorName::Pink, Shape::Square),
    (ColorName::Brown, Shape::Circle),
    (ColorName::Black, Shape::Diamond),
    (ColorName::White, Shape::Triangle),
    (ColorName::Gray, Shape::Ring),
];

/// (shape, cell) pairs that never occur in [`Split::Train`]: 4 of the 72.
pub const HELD_OUT_SHAPE_CELL: [(Shape, (HPos, VPos)); 4] = [
    (Shape::Heart, (HPos::Left, VPos::Top)),
    (Shape::Circle, (HPos::Right, VPos::Bottom)),
    (Shape::Square, (HPos::Center, VPos::Middle)),
    (Shape::Star, (HPos::Right, VPos::Top)),
];

/// Whether one object is a held-out combination.
pub fn is_held_out_object(object: &Object) -> bool {
    HELD_OUT_COLOR_SHAPE.contains(&(object.color, object.shape)) || HELD_OUT_SHAPE_CELL.contains(&(object.shape, object.cell()))
}

/// Whether the scene contains at least one held-out combination.
pub fn is_held_out(scene: &Scene) -> bool {
    scene.objects.iter().any(is_held_out_object)
}

/// Smallest gap between two objects' boxes, in units of the canvas's short side. The worst
/// case over all aspect ratios is the square canvas (cells are further apart along a long side),
/// so checking there holds at any size: 0.05 is ~3 px at a 64 px short side.
pub const MIN_GAP: f32 = 0.05;
/// Smallest gap between an object's box and the canvas border, in units of the short side.
pub const MIN_BORDER_GAP: f32 = 0.02;
/// A middle-row object on a split background must be at least this far (RGB) from every blend
/// of sky and ground, so the blurred horizon never looks like part of it.
pub const MIN_HORIZON_BLEND_DISTANCE: f32 = 60.0;

/// Samples a scene. Deterministic for a seeded `rng`: 1–3 objects (45/35/20 %) in distinct
/// cells, never overlapping, never confusable with the background behind them, with the
/// relations their cells imply. [`Split::Train`] scenes never contain a held-out combination,
/// [`Split::HeldOut`] scenes always contain at least one.
pub fn sample_scene(rng: &mut impl Rng, split: Split) -> Scene {
    loop {
        let scene = sample_any_scene(rng);
        if is_held_out(&scene) == (split == Split::HeldOut) {
            return scene;
        }
    }
}

/// A scene from the whole world, ignoring the split.
pub fn sample_any_scene(rng: &mut impl Rng) -> Scene {
    let count = match rng.random_range(0..100) {
        0..45 => 1,
        45..80 => 2,
        _ => 3,
    };
    let background = sample_background(rng);
    let lighting = sample_lighting(rng);
    let mut cells: Vec<(HPos, VPos)> = HPos::ALL.iter().flat_map(|&h| VPos::ALL.iter().map(move |&v| (h, v))).collect();
    cells.shuffle(rng);
    let mut objects: Vec<Object> = Vec::with_capacity(count);
    for &(h, v) in &cells[..count] {
        let color = loop {
            let c = ColorName::ALL[rng.random_range(0..ColorName::ALL.len())];
            if color_fits_background(c, background, v) {
                break c;
            }
        };
        let shape = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
        let size = Size::ALL[rng.random_range(0..Size::ALL.len())];
        let mut object = Object { shape, color, size, h, v, jitter: (0.0, 0.0) };
        // Jitter that would break a gap is redrawn a few times, then dropped.
        for _ in 0..16 {
            let jitter = (round3(rng.random_range(-MAX_JITTER..=MAX_JITTER)), round3(rng.random_range(-MAX_JITTER..=MAX_JITTER)));
            let candidate = Object { jitter, ..object };
            if fits_border(&candidate) && objects.iter().all(|o| gap(o, &candidate) >= MIN_GAP) {
                object = candidate;
                break;
            }
        }
        objects.push(object);
    }
    // A neighbour's jitter can leave too small a gap even for an unjittered object: then none
    // is jittered (the cells alone always keep the gaps).
    let gaps_kept = objects.iter().enumerate().all(|(i, a)| objects[i + 1..].iter().all(|b| gap(a, b) >= MIN_GAP));
    if !gaps_kept {
        for o in &mut objects {
            o.jitter = (0.0, 0.0);
        }
    }
    let relations = Scene::relations_from_cells(&objects);
    Scene { background, lighting, objects, relations }
}

fn sample_background(rng: &mut impl Rng) -> Background {
    let pick = |rng: &mut _| ColorName::ALL[Rng::random_range(rng, 0..ColorName::ALL.len())];
    if rng.random_bool(0.7) {
        Background::Solid(pick(rng))
    } else {
        loop {
            let (sky, ground) = (pick(rng), pick(rng));
            if !sky.confusable_with(ground) {
                return Background::Split { sky, ground };
            }
        }
    }
}

fn sample_lighting(rng: &mut impl Rng) -> Lighting {
    let direction = match rng.random_range(0..10) {
        0..4 => None,
        4..6 => Some(LightDir::Left),
        6..8 => Some(LightDir::Right),
        _ => Some(LightDir::Top),
    };
    let warmth = if rng.random_bool(0.4) { 0.0 } else { round3(rng.random_range(-1.0..=1.0f32)) };
    Lighting { direction, warmth }
}

fn round3(x: f32) -> f32 {
    (x * 1000.0).round() / 1000.0
}

/// Whether an object of colour `color` in row `v` stands out from every background colour
/// behind it (and, on the horizon, from every sky/ground blend).
pub fn color_fits_background(color: ColorName, background: Background, v: VPos) -> bool {
    if background.colors_behind(v).iter().any(|&b| color.confusable_with(b)) {
        return false;
    }
    match (background, v) {
        (Background::Split { sky, ground }, VPos::Middle) => {
            segment_distance(color.rgb(), sky.rgb(), ground.rgb()) >= MIN_HORIZON_BLEND_DISTANCE
        }
        _ => true,
    }
}

fn segment_distance(c: [u8; 3], a: [u8; 3], b: [u8; 3]) -> f32 {
    let f = |x: [u8; 3]| x.map(|v| v as f32);
    let (c, a, b) = (f(c), f(a), f(b));
    let ab: Vec<f32> = (0..3).map(|i| b[i] - a[i]).collect();
    let ac: Vec<f32> = (0..3).map(|i| c[i] - a[i]).collect();
    let len2: f32 = ab.iter().map(|v| v * v).sum();
    let t = if len2 > 0.0 { ((0..3).map(|i| ab[i] * ac[i]).sum::<f32>() / len2).clamp(0.0, 1.0) } else { 0.0 };
    (0..3).map(|i| (c[i] - (a[i] + t * ab[i])).powi(2)).sum::<f32>().sqrt()
}

/// The object's box on a square canvas of side 1: (x0, y0, x1, y1).
pub fn unit_box(o: &Object) -> (f32, f32, f32, f32) {
    let (cx, cy) = o.center_px(1, 1);
    let half = o.size.extent() / 2.0;
    (cx - half, cy - half, cx + half, cy + half)
}

fn fits_border(o: &Object) -> bool {
    let (x0, y0, x1, y1) = unit_box(o);
    x0 >= MIN_BORDER_GAP && y0 >= MIN_BORDER_GAP && x1 <= 1.0 - MIN_BORDER_GAP && y1 <= 1.0 - MIN_BORDER_GAP
}

/// The gap between two objects' boxes on the unit square (the largest of the horizontal and
/// vertical gaps; negative when they overlap).
pub fn gap(a: &Object, b: &Object) -> f32 {
    let (a0, a1, a2, a3) = unit_box(a);
    let (b0, b1, b2, b3) = unit_box(b);
    let horizontal = (b0 - a2).max(a0 - b2);
    let vertical = (b1 - a3).max(a1 - b3);
    horizontal.max(vertical)
}

/// Every invariant a scene from [`sample_scene`] keeps; the first broken one as text.
pub fn validate(scene: &Scene) -> Result<(), String> {
    let n = scene.objects.len();
    if !(1..=3).contains(&n) {
        return Err(format!("{n} objects"));
    }
    if let Background::Split { sky, ground } = scene.background
        && sky.confusable_with(ground)
    {
        return Err(format!("sky {sky:?} and ground {ground:?} are confusable"));
    }
    if !(-1.0..=1.0).contains(&scene.lighting.warmth) {
        return Err(format!("warmth {}", scene.lighting.warmth));
    }
    for (i, o) in scene.objects.iter().enumerate() {
        if o.jitter.0.abs() > MAX_JITTER + 1e-6 || o.jitter.1.abs() > MAX_JITTER + 1e-6 {
            return Err(format!("object {i} jitter {:?}", o.jitter));
        }
        if !fits_border(o) {
            return Err(format!("object {i} too close to the border"));
        }
        if !color_fits_background(o.color, scene.background, o.v) {
            return Err(format!("object {i} colour {:?} is confusable with the background {:?}", o.color, scene.background));
        }
        for (j, p) in scene.objects.iter().enumerate().skip(i + 1) {
            if o.cell() == p.cell() {
                return Err(format!("objects {i} and {j} share a cell"));
            }
            if gap(o, p) < MIN_GAP - 1e-6 {
                return Err(format!("objects {i} and {j} are {} apart", gap(o, p)));
            }
        }
    }
    if scene.relations != Scene::relations_from_cells(&scene.objects) {
        return Err("relations do not match the cells".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::scene::Relation;

    #[test]
    fn sampling_is_deterministic_for_a_seed() {
        for split in [Split::Train, Split::HeldOut] {
            let draw = |seed| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                (0..50).map(|_| sample_scene(&mut rng, split)).collect::<Vec<_>>()
            };
            assert_eq!(draw(3), draw(3));
            assert_ne!(draw(3), draw(4));
        }
    }

    #[test]
    fn splits_keep_their_invariants_over_thousands_of_scenes() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 4];
        let mut train_pairs = HashSet::new();
        for i in 0..6000 {
            let split = if i % 3 == 0 { Split::HeldOut } else { Split::Train };
            let scene = sample_scene(&mut rng, split);
            validate(&scene).unwrap_or_else(|e| panic!("{e}: {}", scene.to_json()));
            assert_eq!(is_held_out(&scene), split == Split::HeldOut, "{}", scene.to_json());
            counts[scene.objects.len()] += 1;
            for (a, r, b) in &scene.relations {
                let (ca, cb) = (scene.objects[*a].cell(), scene.objects[*b].cell());
                let expected = match r {
                    Relation::LeftOf => ca.0.index() < cb.0.index(),
                    Relation::RightOf => ca.0.index() > cb.0.index(),
                    Relation::Above => ca.1.index() < cb.1.index(),
                    Relation::Below => ca.1.index() > cb.1.index(),
                };
                assert!(expected && a < b);
            }
            if split == Split::Train {
                train_pairs.extend(scene.objects.iter().map(|o| (o.color, o.shape)));
            }
        }
        // Every combination that is not held out is seen in training.
        assert_eq!(train_pairs.len(), 88 - HELD_OUT_COLOR_SHAPE.len());
        // 45 / 35 / 20 % of scenes have 1 / 2 / 3 objects (the held-out split shifts this a bit).
        let total = 6000.0;
        assert!((counts[1] as f64 / total - 0.45).abs() < 0.06, "{counts:?}");
        assert!((counts[2] as f64 / total - 0.35).abs() < 0.06, "{counts:?}");
        assert!((counts[3] as f64 / total - 0.20).abs() < 0.06, "{counts:?}");
    }

    #[test]
    fn held_out_set_is_small_and_spread_over_colours_and_shapes() {
        let colours: HashSet<_> = HELD_OUT_COLOR_SHAPE.iter().map(|p| p.0).collect();
        assert_eq!(colours.len(), 11, "each colour is held out with one shape");
        for shape in Shape::ALL {
            assert!(HELD_OUT_COLOR_SHAPE.iter().filter(|p| p.1 == shape).count() <= 2);
        }
    }

    #[test]
    fn validate_catches_overlaps_shared_cells_and_hidden_objects() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let scene = loop {
            let s = sample_scene(&mut rng, Split::Train);
            if s.objects.len() == 2 {
                break s;
            }
        };
        let mut shared = scene.clone();
        shared.objects[1].h = shared.objects[0].h;
        shared.objects[1].v = shared.objects[0].v;
        shared.relations = Scene::relations_from_cells(&shared.objects);
        assert!(validate(&shared).is_err());
        let mut hidden = scene.clone();
        hidden.background = Background::Solid(hidden.objects[0].color);
        assert!(validate(&hidden).is_err());
        let mut wrong_relations = scene.clone();
        wrong_relations.relations.clear();
        assert!(validate(&wrong_relations).is_err());
        let mut near = scene.clone();
        near.objects = vec![
            Object { shape: Shape::Square, color: ColorName::Red, size: Size::Large, h: HPos::Left, v: VPos::Top, jitter: (0.03, 0.0) },
            Object { shape: Shape::Square, color: ColorName::Blue, size: Size::Large, h: HPos::Center, v: VPos::Top, jitter: (-0.03, 0.0) },
        ];
        near.background = Background::Solid(ColorName::White);
        near.relations = Scene::relations_from_cells(&near.objects);
        assert!(validate(&near).unwrap_err().contains("apart"));
    }
}
