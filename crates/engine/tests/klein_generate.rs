//! FLUX.2 [klein] through [`Pipeline`], the type every caller runs: a request's task is klein's
//! own steps (the same pixels as running them by hand), previews end at the final image, and
//! what klein cannot do is refused before any network runs.

mod common;

use std::ops::ControlFlow;
use std::time::Instant;

use common::{runtime, tiny};
use image::{GrayImage, Luma, Rgb, RgbImage};
use plantain_engine::EngineError;
use plantain_engine::pipeline::{
    Decoder, GenerateRequest, LoadOptions, ModelSource, Pipeline, gaussian, images, max_reference_pixels, reference_size,
};
use plantain_schedulers::SchedulerKind;
use rand::SeedableRng;

fn klein() -> Pipeline {
    Pipeline::load(&ModelSource::Diffusers(tiny("flux2-klein")), &LoadOptions { runtime: runtime(), ..Default::default() }).unwrap()
}

fn request(seed: u64) -> GenerateRequest {
    let mut r = GenerateRequest::new("a red star above a blue circle", 64, 48);
    (r.seed, r.steps, r.guidance) = (seed, 4, 1.0);
    r
}

fn run(p: &Pipeline, r: &GenerateRequest) -> plantain_engine::pipeline::Generated {
    p.generate(r, &mut |_| ControlFlow::Continue(())).unwrap()
}

/// The input of the edit tests: a picture with structure (the tiny model's output is noise).
fn input(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, if (x / 8 + y / 8) % 2 == 0 { 200 } else { 30 }]))
}

/// Klein's steps run by hand: seeded noise in the patchified shape, prompt, references (each
/// at its own aspect ratio, about the canvas's area), 4 steps, decode.
fn by_hand(p: &Pipeline, r: &GenerateRequest, references: &[RgbImage]) -> RgbImage {
    let k = p.klein().unwrap();
    let (w, h) = p.canvas_for(r.width, r.height);
    let (gh, gw, c) = (h as usize / 16, w as usize / 16, k.latent_channels());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(r.seed);
    let noise = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, c, gh, gw]), gaussian(&mut rng, c * gh * gw)).unwrap();
    let context = k.encode_prompt(&r.prompt).unwrap();
    let refs: Vec<_> = references
        .iter()
        .map(|i| {
            let (rw, rh) = reference_size(i.dimensions(), (w, h), 16);
            k.encode_reference(images::to_tensor(&images::resize_exact(i.clone(), rw, rh)).into_dyn()).unwrap()
        })
        .collect();
    let latents = k.denoise(&context, &noise, &refs, r.steps, &mut |_, _| {}).unwrap();
    images::from_tensor(&k.decode(latents).unwrap())
}

#[test]
fn text_to_image_is_klein_run_by_hand_at_the_canvas_and_repeats_for_a_seed() {
    let p = klein();
    let r = request(7);
    let g = run(&p, &r);
    assert_eq!((g.canvas, g.image.dimensions(), g.requested), ((64, 48), (64, 48), (64, 48)));
    assert_eq!((g.steps_run, g.scheduler, g.guidance), (4, SchedulerKind::FlowMatchEuler, 1.0));
    assert_eq!(g.image, by_hand(&p, &r, &[]), "Pipeline runs klein's own steps");
    assert_eq!(run(&p, &r).image, g.image, "the same seed, the same picture");
    assert_ne!(run(&p, &request(8)).image, g.image, "another seed, another picture");
    // Off the 16 px grid: drawn on the nearest grid canvas (the caller resizes).
    let mut odd = request(7);
    (odd.width, odd.height) = (70, 50);
    assert_eq!(run(&p, &odd).canvas, p.canvas_for(70, 50));
    assert_eq!(p.canvas_for(70, 50).0 % 16, 0);
}

#[test]
fn an_image_is_an_instruction_edit_with_it_as_the_reference() {
    let p = klein();
    let mut r = request(3);
    r.prompt = "make it night".into();
    r.init_image = Some(input(64, 48));
    let g = run(&p, &r);
    assert_eq!(g.image, by_hand(&p, &r, &[input(64, 48)]));
    assert_ne!(g.image, run(&p, &request(3)).image, "the reference changes the picture");
}

/// A second picture, of another shape and colours, for fusion.
fn other(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([if (x / 5) % 2 == 0 { 240 } else { 10 }, (x * y) as u8, 90]))
}

#[test]
fn several_pictures_are_references_read_in_order_each_at_its_own_shape() {
    // A reference keeps its aspect ratio at about the canvas's area, on the 16 px grid; a
    // picture of the canvas's shape is encoded at the canvas.
    assert_eq!(reference_size((64, 48), (64, 48), 16), (64, 48));
    assert_eq!(reference_size((640, 480), (64, 48), 16), (64, 48));
    assert_eq!(reference_size((40, 60), (64, 48), 16), (48, 64));
    assert_eq!(reference_size((1000, 10), (64, 48), 16), (560, 16), "a sliver keeps one token of height");
    let p = klein();
    let mut r = request(4);
    r.prompt = "the stripes of image 2 on the squares of image 1".into();
    r.init_image = Some(input(64, 48));
    r.references = vec![other(40, 60)];
    let fused = run(&p, &r);
    assert_eq!(fused.image.dimensions(), (64, 48), "drawn at the request's canvas");
    assert_eq!(fused.image, by_hand(&p, &r, &[input(64, 48), other(40, 60)]), "both pictures are klein's references, in order");
    let mut one = r.clone();
    one.references.clear();
    assert_ne!(run(&p, &one).image, fused.image, "the second picture changes the answer");
    let mut swapped = r.clone();
    (swapped.init_image, swapped.references) = (Some(other(40, 60)), vec![input(64, 48)]);
    assert_ne!(run(&p, &swapped).image, fused.image, "the order is the words' numbering: it matters");
    // Further pictures need a first one; each is held to the size limit, and named by its place.
    let mut bare = request(4);
    bare.references = vec![other(40, 60)];
    assert!(
        matches!(p.generate(&bare, &mut |_| ControlFlow::Continue(())), Err(EngineError::InvalidRequest(m)) if m.contains("first one"))
    );
    let mut huge = r.clone();
    huge.references.push(RgbImage::new(4100, 4100));
    let e = p.generate(&huge, &mut |_| ControlFlow::Continue(())).unwrap_err().to_string();
    assert!(e.contains("reference picture 3 is 4100x4100"), "{e}");
}

#[test]
fn a_stable_diffusion_model_refuses_further_references() {
    let sd = Pipeline::load(&ModelSource::Diffusers(tiny("sd1")), &LoadOptions { runtime: runtime(), ..Default::default() }).unwrap();
    let mut r = request(1);
    r.init_image = Some(input(64, 48));
    r.references = vec![other(40, 60)];
    let e = sd.generate(&r, &mut |_| ControlFlow::Continue(())).unwrap_err();
    assert!(matches!(&e, EngineError::Unsupported(m) if m.contains("multi-reference")), "{e}");
    assert!(!sd.reads_references() && klein().reads_references());
}

#[test]
fn a_mask_keeps_the_input_outside_it() {
    let p = klein();
    let mut r = request(5);
    r.init_image = Some(input(64, 48));
    r.mask = Some(GrayImage::from_fn(64, 48, |x, _| Luma([if x < 32 { 255 } else { 0 }])));
    let g = run(&p, &r);
    let (edit, kept) = (by_hand(&p, &r, &[input(64, 48)]), input(64, 48));
    for (x, y, px) in g.image.enumerate_pixels() {
        let want = if x < 32 { edit.get_pixel(x, y) } else { kept.get_pixel(x, y) };
        assert_eq!(px, want, "({x}, {y})");
    }
}

#[test]
fn previews_end_at_the_final_image() {
    let p = klein();
    let r = request(11);
    let mut last = None;
    let mut steps = Vec::new();
    let g = p
        .generate_with(&r, &mut |pr, st| {
            steps.push((pr.step, pr.total));
            assert_eq!(st.latent_size(), (3, 4));
            last = Some(p.preview(st).unwrap());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(steps, [(1, 4), (2, 4), (3, 4), (4, 4)]);
    // The last step ends at sigma 0: its estimate is the final latents.
    assert_eq!(last.unwrap(), g.image);
    let cancelled = p.generate_with(&r, &mut |_, _| ControlFlow::Break(()));
    assert!(matches!(cancelled, Err(EngineError::Cancelled)));
}

#[test]
fn what_klein_cannot_do_is_refused_before_any_work() {
    let p = klein();
    let refused = |r: &GenerateRequest| {
        let t = Instant::now();
        let e = p.generate(r, &mut |_| ControlFlow::Continue(())).unwrap_err();
        assert!(t.elapsed().as_secs_f32() < 0.5, "refused at once, not after running: {e}");
        e
    };
    let mut r = request(1);
    r.scheduler = Some(SchedulerKind::Euler);
    assert!(matches!(refused(&r), EngineError::Unsupported(m) if m.contains("flow-matching")));
    let mut r = request(1);
    r.decoder = Decoder::Tiny;
    assert!(matches!(refused(&r), EngineError::Unsupported(m) if m.contains("tiny decoder")));
    // A reference over 16 native areas (16.8 MP at klein's 1024²).
    assert_eq!(max_reference_pixels(p.native_resolution()), 16 * 1024 * 1024);
    let mut r = request(1);
    r.init_image = Some(RgbImage::new(4100, 4100));
    let e = refused(&r).to_string();
    assert!(e.contains("4100x4100") && e.contains("16777216"), "{e}");
    let e = p.diffedit_mask(&input(64, 48), "a cup", "", None, &Default::default()).unwrap_err();
    assert!(matches!(e, EngineError::Unsupported(_)), "{e}");
}
