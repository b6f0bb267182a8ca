//! The checker on rendered ground truth (sharp and blurred + noisy) and on deliberately wrong
//! pictures. Accuracies are printed (`cargo test -p plantain-world -- --nocapture`).

use plantain_world::testing::{Degradation, Mutation, Tally, evaluate_ground_truth, evaluate_mutations, mutate};
use plantain_world::{Background, ColorName, HPos, Lighting, Object, Scene, Shape, Size, Split, VPos, check, render, sample_scene};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn assert_accurate(tally: &Tally, label: &str) {
    println!("{label}: {tally}");
    for failure in tally.failures.iter().take(5) {
        println!("    {failure}");
    }
    for (attribute, accuracy) in tally.accuracies() {
        assert!(accuracy >= 0.98, "{label}: {attribute} {:.1}% < 98%", 100.0 * accuracy);
    }
}

#[test]
fn ground_truth_at_64x64() {
    for degradation in [Degradation::None, Degradation::BlurNoise] {
        assert_accurate(&evaluate_ground_truth(200, 64, 64, degradation, 101), &format!("64x64 {degradation:?}"));
    }
}

#[test]
fn ground_truth_at_96x48_and_48x96() {
    for (w, h) in [(96, 48), (48, 96)] {
        for degradation in [Degradation::None, Degradation::BlurNoise] {
            assert_accurate(&evaluate_ground_truth(150, w, h, degradation, 202), &format!("{w}x{h} {degradation:?}"));
        }
    }
}

#[test]
fn ground_truth_at_256x256() {
    for degradation in [Degradation::None, Degradation::BlurNoise] {
        assert_accurate(&evaluate_ground_truth(60, 256, 256, degradation, 303), &format!("256x256 {degradation:?}"));
    }
}

#[test]
fn wrong_pictures_are_flagged_where_they_are_wrong() {
    for (w, h) in [(64, 64), (128, 128)] {
        let tally = evaluate_mutations(180, w, h, Degradation::BlurNoise, 404);
        println!("mutations {w}x{h}: {tally}");
        for failure in tally.failures.iter().take(5) {
            println!("    {failure}");
        }
        assert_eq!(tally.kinds.len(), 6, "every kind of mutation was tried");
        for (kind, flagged, total) in &tally.kinds {
            assert!(*flagged as f64 >= 0.95 * *total as f64, "{w}x{h}: {kind:?} flagged {flagged}/{total}");
        }
    }
}

/// Each mutation flags its own attribute and, in a plain case, nothing else.
#[test]
fn a_single_wrong_attribute_is_reported_alone() {
    let star = Object { shape: Shape::Star, color: ColorName::Red, size: Size::Medium, h: HPos::Left, v: VPos::Top, jitter: (0.0, 0.0) };
    let circle =
        Object { shape: Shape::Circle, color: ColorName::Blue, size: Size::Large, h: HPos::Right, v: VPos::Bottom, jitter: (0.0, 0.0) };
    let objects = vec![star, circle];
    let scene = Scene {
        background: Background::Solid(ColorName::Yellow),
        lighting: Lighting::NEUTRAL,
        relations: Scene::relations_from_cells(&objects),
        objects,
    };
    let report = check(&scene, &render(&scene, 64, 64));
    assert!(report.all_correct(), "{report:?}");

    let mut wrong_shape = scene.clone();
    wrong_shape.objects[0].shape = Shape::Heart;
    let report = check(&scene, &render(&wrong_shape, 64, 64));
    assert!(
        !report.objects[0].shape && report.objects[0].color && report.objects[0].position && report.background && report.count,
        "{report:?}"
    );
    assert!(report.objects[1].shape && report.relations.iter().all(|&r| r));

    let mut moved = scene.clone();
    moved.objects[1].h = HPos::Center;
    moved.relations = Scene::relations_from_cells(&moved.objects);
    let report = check(&scene, &render(&moved, 64, 64));
    assert!(!report.objects[1].position && report.objects[1].shape && report.objects[1].color, "{report:?}");
    // Still right of and below the star: the relations hold.
    assert!(report.relations.iter().all(|&r| r), "{report:?}");

    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let removed = mutate(&scene, Mutation::Remove(0), &mut rng).expect("a scene without the star");
    let report = check(&scene, &render(&removed, 64, 64));
    assert!(!report.count && !report.objects[0].found && report.objects[1].found && report.relations.iter().all(|&r| !r), "{report:?}");

    let grey_sky = Scene { background: Background::Split { sky: ColorName::Gray, ground: ColorName::Yellow }, ..scene.clone() };
    let report = check(&scene, &render(&grey_sky, 64, 64));
    assert!(!report.background && report.detected_background == grey_sky.background, "{report:?}");
}

#[test]
fn blank_and_noise_images_find_nothing() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let scene = sample_scene(&mut rng, Split::Train);
    let blank = Scene { objects: vec![], relations: vec![], ..scene.clone() };
    let image = plantain_world::testing::degrade(&render(&blank, 64, 64), Degradation::BlurNoise, 1);
    let report = check(&scene, &image);
    assert!(report.components.is_empty() && report.background && !report.count, "{report:?}");
}
