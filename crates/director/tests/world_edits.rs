//! Edits on rendered scenes of the synthetic world, judged by the world's own checker: the
//! asked change happened, every other object is unchanged, and no pixel outside the plan's
//! region moved.

use plantain_director::edit::{EditError, EditOptions, Operation, Painter, Work, plan};
use plantain_world::{Background, ColorName, HPos, Lighting, Object, Scene, Shape, Size, VPos, check, render};

fn obj(shape: Shape, color: ColorName, h: HPos, v: VPos) -> Object {
    Object { shape, color, size: Size::Medium, h, v, jitter: (0.0, 0.0) }
}

fn scene(background: Background, lighting: Lighting, objects: Vec<Object>) -> Scene {
    let relations = Scene::relations_from_cells(&objects);
    Scene { background, lighting, objects, relations }
}

fn two_objects(background: Background) -> Scene {
    let lighting = Lighting { direction: Some(plantain_world::LightDir::Left), warmth: 0.3 };
    scene(
        background,
        lighting,
        vec![obj(Shape::Circle, ColorName::Red, HPos::Left, VPos::Middle), obj(Shape::Square, ColorName::Blue, HPos::Right, VPos::Bottom)],
    )
}

fn exact(text: &str, image: &image::RgbImage) -> plantain_director::edit::Edited {
    let p = plan(text, std::slice::from_ref(image), &EditOptions::default(), None).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert!(matches!(p.work, Work::Done(_)), "{text}: expected exact work, got {}", p.method);
    let edited = p.finish(None).unwrap();
    assert_eq!(edited.report.outside_changed, Some(0));
    edited
}

#[test]
fn recolour_changes_that_object_only() {
    let s = two_objects(Background::Solid(ColorName::White));
    let image = render(&s, 384, 256);
    let out = exact("make the red circle green", &image);
    let mut want = s.clone();
    want.objects[0].color = ColorName::Green;
    let report = check(&want, &out.image);
    assert!(report.all_correct(), "{report:?}");
    assert!(out.report.changed.unwrap() > 1000);
}

#[test]
fn remove_leaves_the_background() {
    for bg in [Background::Solid(ColorName::Yellow), Background::Split { sky: ColorName::Blue, ground: ColorName::Green }] {
        let s = two_objects(bg);
        let image = render(&s, 320, 320);
        let out = exact("please remove the square on the right", &image);
        let mut want = s.clone();
        want.objects.remove(1);
        want.relations = Scene::relations_from_cells(&want.objects);
        let report = check(&want, &out.image);
        assert!(report.all_correct(), "{bg:?}: {report:?}");
        // The removed object's place now looks like the empty scene.
        let empty = render(&scene(bg, s.lighting, vec![s.objects[0]]), 320, 320);
        let off = out.image.pixels().zip(empty.pixels()).filter(|(a, b)| (0..3).any(|c| a.0[c].abs_diff(b.0[c]) > 6)).count();
        assert!(off < 100, "{off} pixels differ from the scene without the square");
    }
}

#[test]
fn background_recolour_keeps_objects() {
    let s = two_objects(Background::Split { sky: ColorName::White, ground: ColorName::Gray });
    let image = render(&s, 400, 300);
    let out = exact("make the background pink", &image);
    let mut want = s.clone();
    want.background = Background::Solid(ColorName::Pink);
    let report = check(&want, &out.image);
    assert!(report.all_correct(), "{report:?}");
}

#[test]
fn light_protection_and_refusals() {
    let s = two_objects(Background::Solid(ColorName::White));
    let image = render(&s, 300, 300);
    let warm = exact("make the lighting warmer", &image);
    let mean_rb = |img: &image::RgbImage| img.pixels().map(|p| f64::from(p.0[0]) - f64::from(p.0[2])).sum::<f64>() / 90000.0;
    assert!(mean_rb(&warm.image) > mean_rb(&image) + 10.0);
    assert!(check(&s, &warm.image).objects.iter().all(|o| o.found && o.color && o.shape && o.position));

    // "keep X unchanged": X's pixels are the input's.
    let bw = exact("make it black and white but keep the red circle unchanged", &image);
    let (cx, cy) = s.objects[0].center_px(300, 300);
    assert_eq!(bw.image.get_pixel(cx as u32, cy as u32), image.get_pixel(cx as u32, cy as u32));
    let (qx, qy) = s.objects[1].center_px(300, 300);
    let q = bw.image.get_pixel(qx as u32, qy as u32).0;
    assert!(q[0] == q[1] && q[1] == q[2], "the square went grey: {q:?}");

    let missing = plan("remove the green star", std::slice::from_ref(&image), &EditOptions::default(), None);
    assert!(matches!(missing, Err(EditError::NotFound(_))), "{:?}", missing.err());
    let two_reds = render(
        &scene(
            Background::Solid(ColorName::White),
            Lighting::NEUTRAL,
            vec![obj(Shape::Circle, ColorName::Red, HPos::Left, VPos::Top), obj(Shape::Star, ColorName::Red, HPos::Right, VPos::Bottom)],
        ),
        300,
        300,
    );
    let ambiguous = plan("remove the red one", std::slice::from_ref(&two_reds), &EditOptions::default(), None);
    assert!(matches!(ambiguous, Err(EditError::Ambiguous(_))), "{:?}", ambiguous.err());
    assert!(plan("remove the red one on the left", &[two_reds], &EditOptions::default(), None).is_ok());
}

/// An orange star in the middle of a white 256² picture: the subject of the fusion tests.
fn star_picture() -> image::RgbImage {
    render(
        &scene(
            Background::Solid(ColorName::White),
            Lighting::NEUTRAL,
            vec![obj(Shape::Star, ColorName::Orange, HPos::Center, VPos::Middle)],
        ),
        256,
        256,
    )
}

#[test]
fn fusion_places_the_other_pictures_object() {
    let a = star_picture();
    let b_scene =
        scene(Background::Solid(ColorName::Blue), Lighting::NEUTRAL, vec![obj(Shape::Heart, ColorName::Pink, HPos::Right, VPos::Middle)]);
    let b = render(&b_scene, 384, 256);
    let p =
        plan("put the subject of image 1 into the scene of image 2, on the left", &[a, b.clone()], &EditOptions::default(), None).unwrap();
    let out = p.finish(None).unwrap();
    assert_eq!(out.report.outside_changed, Some(0));
    let mut want = b_scene.clone();
    want.objects.push(obj(Shape::Star, ColorName::Orange, HPos::Left, VPos::Middle));
    want.relations = Scene::relations_from_cells(&want.objects);
    let report = check(&want, &out.image);
    assert!(report.all_correct(), "{report:?}");
}

#[test]
fn a_multi_reference_model_fuses_every_picture_in_one_pass_kept_where_it_changed() {
    let star = star_picture();
    let room = render(&two_objects(Background::Solid(ColorName::White)), 384, 256);
    let images = [star.clone(), room.clone()];
    let klein = EditOptions { painter: Painter::References, ..Default::default() };
    // Words the rules read: drawn on the picture they put things into, every picture read in
    // the order the words count them.
    let p = plan("put the subject of image 1 into the scene of image 2, on the left", &images, &klein, None).unwrap();
    assert!(matches!(p.instruction.operation, Operation::Fuse { into: 1, .. }));
    let req = p.paint_request().expect("the model paints");
    assert_eq!((req.image.dimensions(), req.references.len(), req.mask.is_none()), ((384, 256), 2, true));
    assert_eq!((&req.references[0], &req.references[1]), (&star, &room));
    let engine = req.engine_request(7, 4, 1.0);
    assert_eq!(
        (engine.width, engine.height, engine.init_image.as_ref(), engine.references.as_slice()),
        (384, 256, Some(&star), &images[1..])
    );
    assert!(p.method.contains("multi-reference"), "{}", p.method);
    // The answer is kept only where it changed from image 2: a painted box is the only change.
    let mut painted = room.clone();
    for (x, y, px) in painted.enumerate_pixels_mut() {
        if (20..80).contains(&x) && (100..160).contains(&y) {
            *px = image::Rgb([250, 140, 0]);
        }
    }
    let out = p.finish(Some(painted)).unwrap();
    assert_eq!(out.report.outside_changed, Some(0));
    for (x, y, px) in out.image.enumerate_pixels() {
        if !(10..90).contains(&x) || !(90..170).contains(&y) {
            assert_eq!(px, room.get_pixel(x, y), "({x}, {y}) is far from what the model changed");
        }
    }
    // Words no rule reads: the model's own, drawn on image 1; no words at all: refused.
    let p = plan("a poster with both of these", &images, &klein, None).unwrap();
    assert!(matches!(p.instruction.operation, Operation::Instruct));
    assert_eq!(p.paint_request().unwrap().image.dimensions(), (256, 256));
    assert!(plan("  ", &images, &klein, None).is_err());
    // A model that reads one picture cannot: the rules' cut-out fusion, or a clear refusal.
    let pix2pix = EditOptions { painter: Painter::Instruct, ..Default::default() };
    assert!(plan("a poster with both of these", &images, &pix2pix, None).is_err());
}

#[test]
fn generative_operations_ask_for_a_repaint_inside_their_region() {
    let s = two_objects(Background::Solid(ColorName::White));
    let image = render(&s, 320, 240);
    let add = plan("add a green star at the top right", std::slice::from_ref(&image), &EditOptions::default(), None).unwrap();
    let req = add.paint_request().expect("adding needs a model");
    assert!(req.prompt.contains("green star"), "{}", req.prompt);
    assert!(matches!(add.finish(None), Err(EditError::NeedsPainter(_))));
    // Whatever the model paints, only the region and its band can change.
    let scribble = image::RgbImage::from_pixel(320, 240, image::Rgb([0, 255, 0]));
    let out = add.finish(Some(scribble)).unwrap();
    assert_eq!(out.report.outside_changed, Some(0));
    assert!(out.report.changed.unwrap() < 320 * 240 / 4);

    let opts = EditOptions { aspect: Some(plantain_core::AspectRatio::R16x9), ..Default::default() };
    let wide = plan("extend the scene", std::slice::from_ref(&image), &opts, None).unwrap();
    let req = wide.paint_request().unwrap();
    assert_eq!(req.image.dimensions(), (427, 240));
    let out = wide.finish(Some(image::RgbImage::new(427, 240))).unwrap();
    for (x, y, p) in image.enumerate_pixels() {
        assert_eq!(out.image.get_pixel(x + wide.offset.0, y + wide.offset.1), p);
    }
    assert!(matches!(plan("extend the scene", std::slice::from_ref(&image), &EditOptions::default(), None), Err(EditError::Invalid(_))));
}

#[test]
fn removing_the_background_makes_a_transparent_cut_out() {
    let s = two_objects(Background::Solid(ColorName::Yellow));
    let image = render(&s, 320, 240);
    let p = plan("remove the background", std::slice::from_ref(&image), &EditOptions::default(), None).unwrap();
    let matte = p.matte.clone().expect("a cut-out carries its alpha channel");
    let out = exact("remove the background", &image).image;
    // The objects' cores are opaque and the input's own; the far corner is transparent and cleared.
    for o in &s.objects {
        let (cx, cy) = o.center_px(320, 240);
        let (x, y) = (cx.round() as u32, cy.round() as u32);
        assert!(matte.get_pixel(x, y).0[0] > 200, "({x}, {y}) is the centre of an object: alpha {}", matte.get_pixel(x, y).0[0]);
        assert_eq!(out.get_pixel(x, y), image.get_pixel(x, y));
    }
    assert_eq!(matte.get_pixel(5, 5).0[0], 0);
    assert_eq!(out.get_pixel(5, 5).0, [0, 0, 0]);
    // Every pixel the matte keeps at all is the input's.
    assert!(out.enumerate_pixels().all(|(x, y, px)| matte.get_pixel(x, y).0[0] == 0 || px == image.get_pixel(x, y)));
    // Nothing to keep: said so, not an empty file.
    let bare = render(&scene(Background::Solid(ColorName::Yellow), Lighting::NEUTRAL, vec![]), 160, 120);
    let e = plan("make the background transparent", &[bare], &EditOptions::default(), None).unwrap_err();
    assert!(matches!(e, EditError::NotFound(_)), "{e}");
}
