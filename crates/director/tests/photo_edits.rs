//! Edits of photograph-like pictures (textured, so the synthetic world does not explain them),
//! with a stand-in segmenter that returns known subject masks: the segmenter path, the
//! repaints it asks for, and the paste-back's promise whatever the painter returns.

use image::{GrayImage, Luma, Rgb, RgbImage};
use plantain_director::edit::{EditError, EditOptions, FoundBy, Painter, SubjectFinder, Work, plan};

/// Discs of the given centres and radius are the subject.
struct Discs(Vec<(f32, f32)>, f32);

impl SubjectFinder for Discs {
    fn subject(&self, image: &RgbImage) -> Result<GrayImage, EditError> {
        Ok(GrayImage::from_fn(image.width(), image.height(), |x, y| {
            let inside = self.0.iter().any(|&(cx, cy)| ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() <= self.1);
            Luma([if inside { 255 } else { 0 }])
        }))
    }
}

/// A textured picture (a hash pattern) with flat coloured discs where the subject is.
fn photo(w: u32, h: u32, discs: &Discs, color: [u8; 3]) -> RgbImage {
    let mask = discs.subject(&RgbImage::new(w, h)).unwrap();
    RgbImage::from_fn(w, h, |x, y| {
        if mask.get_pixel(x, y).0[0] > 0 {
            return Rgb(color);
        }
        let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)).wrapping_mul(2_246_822_519) >> 24;
        Rgb([(v & 0xff) as u8, ((v * 7) & 0xff) as u8, ((v * 13) & 0xff) as u8])
    })
}

fn noise(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 3) as u8, (y * 5) as u8, ((x + y) * 7) as u8]))
}

#[test]
fn segmenter_regions_drive_exact_edits_and_repaints() {
    let discs = Discs(vec![(100.0, 80.0)], 30.0);
    let img = photo(240, 160, &discs, [200, 30, 30]);
    let opts = EditOptions::default();

    // Recolour the subject: exact, found by the segmenter, the name unchecked (noted).
    let p = plan("make the red cup blue", std::slice::from_ref(&img), &opts, Some(&discs)).unwrap();
    assert_eq!(p.found_by, Some(FoundBy::Segmenter));
    assert!(p.notes.iter().any(|n| n.contains("\"cup\" was not checked")), "{:?}", p.notes);
    let out = p.finish(None).unwrap();
    assert_eq!(out.report.outside_changed, Some(0));
    let c = out.image.get_pixel(100, 80).0;
    assert!(c[2] > c[0], "the disc is not blue: {c:?}");
    assert_eq!(out.image.get_pixel(10, 10), img.get_pixel(10, 10));

    // Replace the background: a repaint of everything but the subject; whatever the painter
    // returns, the subject's pixels are the input's.
    let p = plan("replace the background with a beach", std::slice::from_ref(&img), &opts, Some(&discs)).unwrap();
    let req = p.paint_request().expect("a repaint");
    assert_eq!(req.prompt, "beach");
    assert_eq!(req.mask.as_ref().unwrap().get_pixel(100, 80).0[0], 0);
    let out = p.finish(Some(noise(240, 160))).unwrap();
    assert_eq!(out.report.outside_changed, Some(0));
    assert_eq!(out.image.get_pixel(100, 80), img.get_pixel(100, 80));

    // Remove: a repaint of the subject grown a little; the rest of the picture untouched.
    let p = plan("remove the red object", std::slice::from_ref(&img), &opts, Some(&discs)).unwrap();
    assert!(matches!(p.work, Work::Paint(_)));
    let out = p.finish(Some(noise(240, 160))).unwrap();
    assert_eq!(out.report.outside_changed, Some(0));
    assert_eq!(out.image.get_pixel(200, 20), img.get_pixel(200, 20));
    assert_ne!(out.image.get_pixel(100, 80), img.get_pixel(100, 80));

    // Without a segmenter a photograph's regions cannot be found: a clear error.
    assert!(matches!(plan("blur the background", std::slice::from_ref(&img), &opts, None), Err(EditError::NoSegmenter)));
}

#[test]
fn two_subjects_are_told_apart_by_place_or_refused() {
    let discs = Discs(vec![(50.0, 80.0), (190.0, 80.0)], 25.0);
    let img = photo(240, 160, &discs, [30, 160, 60]);
    let opts = EditOptions::default();
    let ambiguous = plan("remove the green thing", std::slice::from_ref(&img), &opts, Some(&discs));
    assert!(matches!(ambiguous, Err(EditError::Ambiguous(_))), "{:?}", ambiguous.err());
    let p = plan("remove the green thing on the right", std::slice::from_ref(&img), &opts, Some(&discs)).unwrap();
    let mask = p.paint_request().unwrap().mask.clone().unwrap();
    assert_eq!(mask.get_pixel(190, 80).0[0], 255);
    assert_eq!(mask.get_pixel(50, 80).0[0], 0);
}

#[test]
fn photo_fusion_keeps_the_subject_core_and_the_scene_outside_the_seam() {
    let discs = Discs(vec![(60.0, 60.0)], 35.0);
    let subject = photo(120, 120, &discs, [240, 200, 20]);
    let scene = noise(300, 200);
    struct Scene2<'a>(&'a Discs);
    impl SubjectFinder for Scene2<'_> {
        fn subject(&self, image: &RgbImage) -> Result<GrayImage, EditError> {
            // The scene (300 wide) has no subject of its own; the subject picture has the disc.
            if image.width() == 300 { Ok(GrayImage::new(300, 200)) } else { self.0.subject(image) }
        }
    }
    let finder = Scene2(&discs);
    let p = plan("put the subject of image 1 into image 2 on the right", &[subject, scene.clone()], &EditOptions::default(), Some(&finder))
        .unwrap();
    let req = p.paint_request().expect("the seam is repainted");
    assert!((req.strength - 0.35).abs() < 1e-6);
    let out = p.finish(Some(RgbImage::from_pixel(300, 200, Rgb([0, 0, 255])))).unwrap();
    assert_eq!(out.report.outside_changed, Some(0));
    // The left of the scene is untouched; the subject's core (on the right) is its own colour,
    // colour-matched towards the scene, not the painter's blue.
    assert_eq!(out.image.get_pixel(20, 100), scene.get_pixel(20, 100));
    let core = out.image.get_pixel(250, 100).0;
    assert!(core[0] > 120 && core[2] < 200, "{core:?}");
}

/// Discs as the subject, and things findable by name: each name a box (x0, y0, x1, y1), as a
/// DiffEdit lookup on a model that knows them would give.
/// (x0, y0, x1, y1), the ends exclusive.
type Box4 = (u32, u32, u32, u32);

struct Named(Discs, Vec<(&'static str, Box4)>);

impl SubjectFinder for Named {
    fn subject(&self, image: &RgbImage) -> Result<GrayImage, EditError> {
        self.0.subject(image)
    }
    fn named(&self, image: &RgbImage, noun: &str) -> Option<Result<GrayImage, EditError>> {
        if noun == "ghost" {
            // What a model that does not know the name gives: scattered cells.
            return Some(Ok(GrayImage::from_fn(image.width(), image.height(), |x, y| {
                Luma([if (x / 8 + y / 8) % 3 == 0 { 255 } else { 0 }])
            })));
        }
        let b = self.1.iter().find(|(n, _)| *n == noun).map(|(_, b)| *b).unwrap_or((0, 0, 0, 0));
        Some(Ok(GrayImage::from_fn(image.width(), image.height(), |x, y| {
            Luma([if x >= b.0 && x < b.2 && y >= b.1 && y < b.3 { 255 } else { 0 }])
        })))
    }
}

#[test]
fn names_found_by_the_model_choose_among_parts_or_add_a_region() {
    let discs = Discs(vec![(50.0, 80.0), (190.0, 80.0)], 25.0);
    let img = photo(240, 160, &discs, [30, 160, 60]);
    let opts = EditOptions::default();
    let finder = Named(Discs(discs.0.clone(), discs.1), vec![("cup", (160, 50, 225, 115)), ("lamp", (100, 10, 140, 40))]);
    // Without names "the cup" is one of two green parts: ambiguous.
    assert!(matches!(plan("remove the cup", std::slice::from_ref(&img), &opts, Some(&discs)), Err(EditError::Ambiguous(_))));
    // The name picks the part inside its mask.
    let p = plan("remove the cup", std::slice::from_ref(&img), &opts, Some(&finder)).unwrap();
    assert!(!p.names_unchecked && p.notes.iter().any(|n| n.contains("\"cup\" located by")), "{:?}", p.notes);
    let mask = p.paint_request().unwrap().mask.clone().unwrap();
    assert_eq!((mask.get_pixel(190, 80).0[0], mask.get_pixel(50, 80).0[0]), (255, 0));
    // A named thing the segmenter did not separate becomes a region of its own.
    let p = plan("remove the lamp", std::slice::from_ref(&img), &opts, Some(&finder)).unwrap();
    let mask = p.paint_request().unwrap().mask.clone().unwrap();
    assert_eq!((mask.get_pixel(120, 25).0[0], mask.get_pixel(190, 80).0[0], mask.get_pixel(50, 80).0[0]), (255, 0, 0));
    assert_eq!(p.finish(Some(noise(240, 160))).unwrap().report.outside_changed, Some(0));
    // A name the model does not find is an answer, not a guess.
    assert!(matches!(plan("remove the vase", std::slice::from_ref(&img), &opts, Some(&finder)), Err(EditError::NotFound(_))));
    // A scattered mask is not believed: the plan falls back to colour, place and size, and says so.
    let p = plan("remove the ghost on the left", std::slice::from_ref(&img), &opts, Some(&finder)).unwrap();
    assert!(p.notes.iter().any(|n| n.contains("scattered mask")), "{:?}", p.notes);
    assert!(p.notes.iter().any(|n| n.contains("\"ghost\" was not checked")), "{:?}", p.notes);
    // A finder that cannot look names up leaves the plan marked.
    let p = plan("remove the cup on the left", std::slice::from_ref(&img), &opts, Some(&discs)).unwrap();
    assert!(p.names_unchecked);
}

#[test]
fn an_instruction_model_edits_the_whole_picture_and_the_region_still_bounds_it() {
    let discs = Discs(vec![(100.0, 80.0)], 30.0);
    let img = photo(240, 160, &discs, [200, 30, 30]);
    let opts = EditOptions { painter: Painter::Instruct, ..Default::default() };
    let p = plan("in the style of a watercolour painting", std::slice::from_ref(&img), &opts, Some(&discs)).unwrap();
    let req = p.paint_request().unwrap();
    assert!(req.mask.is_none() && req.image_guidance.is_some());
    assert_eq!(req.prompt, "in the style of a watercolour painting", "the model reads the user's own words");
    assert!(p.method.contains("instruction-following model"), "{}", p.method);
    let out = p.finish(Some(noise(240, 160))).unwrap();
    assert!(out.image == noise(240, 160), "restyling keeps the model's whole picture");

    let p = plan("replace the background with a beach", std::slice::from_ref(&img), &opts, Some(&discs)).unwrap();
    let req = p.paint_request().unwrap();
    assert!(req.mask.is_none() && req.prompt == "replace the background with a beach");
    assert!(p.method.contains("inside the region"), "{}", p.method);
    let out = p.finish(Some(noise(240, 160))).unwrap();
    assert_eq!(out.report.outside_changed, Some(0));
    assert_eq!(out.image.get_pixel(100, 80), img.get_pixel(100, 80), "the subject is the input's");
}

#[test]
fn an_instruction_models_answer_is_kept_only_where_it_changed() {
    let discs = Discs(vec![(100.0, 80.0)], 30.0);
    let img = photo(240, 160, &discs, [200, 30, 30]);
    let opts = EditOptions { painter: Painter::Instruct, ..Default::default() };
    let p = plan("in the style of a watercolour painting", std::slice::from_ref(&img), &opts, Some(&discs)).unwrap();
    // The model's answer: every pixel moved a little (a VAE round trip), a 20x20 patch really.
    let answer = RgbImage::from_fn(240, 160, |x, y| {
        if (20..40).contains(&x) && (20..40).contains(&y) {
            return Rgb([0, 255, 0]);
        }
        Rgb(img.get_pixel(x, y).0.map(|v| v.saturating_add(9)))
    });
    let out = p.finish(Some(answer.clone())).unwrap();
    for (x, y, px) in out.image.enumerate_pixels() {
        let (dx, dy) = (x.abs_diff(30).saturating_sub(10), y.abs_diff(30).saturating_sub(10));
        if dx.max(dy) > 8 {
            assert_eq!(px, img.get_pixel(x, y), "({x}, {y}): the model left it alone, so it is the input's byte");
        }
    }
    assert_eq!(out.image.get_pixel(30, 30), answer.get_pixel(30, 30), "the change itself is kept");
    assert_eq!(out.report.outside_changed, Some(0));
}

#[test]
fn words_no_rule_reads_go_to_an_instruction_model_and_are_refused_otherwise() {
    let discs = Discs(vec![(100.0, 80.0)], 30.0);
    let img = photo(240, 160, &discs, [200, 30, 30]);
    let words = "make the person smile";
    let refused = plan(words, std::slice::from_ref(&img), &EditOptions::default(), Some(&discs)).unwrap_err();
    assert!(matches!(refused, EditError::Words(_)), "{refused}");
    let opts = EditOptions { painter: Painter::Instruct, ..Default::default() };
    let p = plan(words, std::slice::from_ref(&img), &opts, Some(&discs)).unwrap();
    assert_eq!(p.report().operation, "instruction");
    assert_eq!(p.paint_request().unwrap().prompt, words);
    assert_eq!(p.report().may_change, 240 * 160);
    // "make it night" is relit by an instruction model, exact maths for the others.
    let night = plan("make it night", std::slice::from_ref(&img), &opts, Some(&discs)).unwrap();
    assert!(night.paint_request().is_some() && night.notes.iter().any(|n| n.contains("relit")), "{:?}", night.notes);
    let exact = plan("make it night", std::slice::from_ref(&img), &EditOptions::default(), Some(&discs)).unwrap();
    assert!(exact.paint_request().is_none());
}
