//! The public `generate` path: determinism, progress, cancellation, sizes, inpainting, bad input.

mod common;

use std::ops::ControlFlow;

use common::{runtime, tiny};
use plantain_engine::EngineError;
use plantain_engine::pipeline::{GenerateRequest, LoadOptions, ModelSource, SdPipeline as Pipeline};
use plantain_engine::resize::{Lanczos3, Resizer};

fn load(arch: &str) -> Pipeline {
    let opts = LoadOptions { runtime: runtime(), tiny_autoencoder: Some(tiny("taesd")), ..Default::default() };
    Pipeline::load(&ModelSource::Diffusers(tiny(arch)), &opts).unwrap()
}

fn request(seed: u64) -> GenerateRequest {
    let mut r = GenerateRequest::new("a lighthouse at dusk, 35mm photo", 64, 64);
    r.steps = 3;
    r.seed = seed;
    r
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A gradient input and an inpainting request over it with an all-black mask (nothing to
/// repaint).
fn unmasked_inpainting() -> (image::RgbImage, GenerateRequest) {
    let src = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 100]));
    let mut r = request(5);
    r.init_image = Some(src.clone());
    r.strength = 1.0;
    r.mask = Some(image::GrayImage::new(64, 64));
    (src, r)
}

/// A generation resized to the request's pixels, as the CLI and the server make it.
fn go(p: &Pipeline, r: &GenerateRequest) -> plantain_engine::pipeline::Generated {
    p.generate(r, &mut |_| ControlFlow::Continue(())).unwrap().resized(&Lanczos3).unwrap()
}

#[test]
fn same_seed_gives_identical_png_and_another_seed_does_not() {
    let p = load("sd1");
    let a = go(&p, &request(7));
    let b = go(&p, &request(7));
    let c = go(&p, &request(8));
    assert_eq!(a.seed, 7);
    assert_eq!(png(&a.image), png(&b.image));
    assert_ne!(png(&a.image), png(&c.image));
}

#[test]
fn ancestral_sampler_is_deterministic_too() {
    let p = load("sd1");
    let mut r = request(3);
    r.scheduler = Some("euler-a".parse().unwrap());
    assert_eq!(png(&go(&p, &r).image), png(&go(&p, &r).image));
}

#[test]
fn progress_is_reported_each_step_and_cancel_stops() {
    let p = load("sd1");
    let mut seen = Vec::new();
    p.generate(&request(1), &mut |pr| {
        seen.push((pr.step, pr.total));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, vec![(1, 3), (2, 3), (3, 3)]);
    let mut calls = 0;
    let err = p
        .generate(&request(1), &mut |_| {
            calls += 1;
            ControlFlow::Break(())
        })
        .unwrap_err();
    assert!(matches!(err, EngineError::Cancelled));
    assert_eq!(calls, 1);
}

#[test]
fn output_has_exactly_the_requested_pixels() {
    let p = load("sd1");
    // 16:9 at 512: not a multiple of the model's grid, so drawn on a canvas then resized.
    let mut r = request(2);
    r.width = 688;
    r.height = 384;
    let native = p.generate(&r, &mut |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(native.requested, (688, 384));
    // The engine returns the picture as drawn; resizing is the caller's separate step.
    assert_eq!(native.image.dimensions(), native.canvas);
    let g = native.clone().resized(&Lanczos3).unwrap();
    assert_eq!(g.image.dimensions(), (688, 384));
    assert_eq!(g.image, image::imageops::resize(&native.image, 688, 384, image::imageops::FilterType::Lanczos3));
    assert_eq!(g.canvas, native.canvas);
    let (cw, ch) = g.canvas;
    assert_ne!((cw, ch), (688, 384), "688 is off the grid");
    assert_eq!((cw % p.pixel_multiple(), ch % p.pixel_multiple()), (0, 0));
    assert!(((cw as f64 / ch as f64) / (688.0 / 384.0) - 1.0).abs() < 0.1, "canvas {cw}x{ch}");
}

#[test]
fn canvas_keeps_grid_sizes_and_maps_others_near_the_native_area() {
    let p = load("sd1");
    let m = p.pixel_multiple();
    assert_eq!(p.canvas_for(8 * m, 4 * m), (8 * m, 4 * m));
    let (w, h) = p.canvas_for(4096, 4096);
    assert_eq!(w, h);
    assert_eq!(w % m, 0);
    assert!((w as i64 - 512).abs() <= m as i64, "{w}");
}

#[test]
fn img2img_with_low_strength_stays_close_to_the_input() {
    let p = load("sd1");
    let src = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 128]));
    let mut r = request(5);
    r.init_image = Some(src.clone());
    r.strength = 0.34; // 1 of 3 steps
    let g = go(&p, &r);
    assert_eq!(g.steps_run, 1);
    assert_eq!(g.image.dimensions(), (64, 64));
}

#[test]
fn latent_blend_inpainting_keeps_the_unmasked_latents() {
    // With an all-black mask nothing may change: the result is the VAE round trip of the input.
    let p = load("sd1");
    let (src, r) = unmasked_inpainting();
    let g = go(&p, &r);
    let round_trip = p.decode(&p.encode_image(&src).unwrap(), (8, 8), Default::default()).unwrap();
    assert_eq!(g.image, round_trip);
    // And with the right half masked, the left half still round-trips while the right changes.
    let mut r2 = r.clone();
    r2.mask = Some(image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x >= 32 { 255 } else { 0 }])));
    let g2 = go(&p, &r2);
    assert_ne!(g2.image, round_trip);
}

#[test]
fn tiny_decoder_gives_an_image_of_the_same_size() {
    let p = load("sd1");
    let mut r = request(4);
    r.decoder = plantain_engine::pipeline::Decoder::Tiny;
    let g = go(&p, &r);
    assert_eq!(g.image.dimensions(), (64, 64));
}

#[test]
fn bad_requests_are_clear_errors() {
    let p = load("sd1");
    let check = |r: GenerateRequest, needle: &str| {
        let e = p.generate(&r, &mut |_| ControlFlow::Continue(())).unwrap_err().to_string();
        assert!(e.contains(needle), "`{e}` should mention `{needle}`");
    };
    let mut r = request(1);
    r.steps = 0;
    check(r, "steps");
    let mut r = request(1);
    r.width = 100_000;
    check(r, "size");
    let mut r = request(1);
    r.guidance = f32::NAN;
    check(r, "guidance");
    let mut r = request(1);
    r.mask = Some(image::GrayImage::new(64, 64));
    check(r, "mask needs an image");
    let mut r = request(1);
    r.init_image = Some(image::RgbImage::new(64, 64));
    r.strength = 0.0;
    check(r, "strength");
}

#[test]
fn sdxl_generates_at_a_non_square_size() {
    let p = load("sdxl");
    let mut r = request(9);
    r.width = 96;
    r.height = 64;
    r.guidance = 5.0;
    let g = go(&p, &r);
    assert_eq!(g.image.dimensions(), (96, 64));
}

#[test]
fn inpainting_model_generates_with_a_mask_and_refuses_without() {
    let p = load("sd1-inpaint");
    let mut r = request(6);
    r.init_image = Some(image::RgbImage::from_fn(64, 64, |x, _| image::Rgb([(x * 4) as u8, 90, 200])));
    r.strength = 1.0;
    r.mask = Some(image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x >= 32 { 255 } else { 0 }])));
    assert_eq!(go(&p, &r).image.dimensions(), (64, 64));
    r.mask = None;
    let e = p.generate(&r, &mut |_| ControlFlow::Continue(())).unwrap_err().to_string();
    assert!(e.contains("inpainting model"), "{e}");
}

/// Mean absolute difference per channel value, in 8-bit levels.
fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / a.as_raw().len() as f64
}

#[test]
fn previews_come_at_the_asked_steps_with_the_output_size_and_end_at_the_final_image() {
    use plantain_engine::pipeline::Decoder;
    let without_taesd =
        Pipeline::load(&ModelSource::Diffusers(tiny("sd1")), &LoadOptions { runtime: runtime(), ..Default::default() }).unwrap();
    for (p, decoder) in [(load("sd1"), Decoder::Tiny), (without_taesd, Decoder::Full)] {
        assert_eq!(p.preview_decoder(), decoder);
        let mut r = request(11);
        r.steps = 4;
        // Not a multiple of the grid: drawn on a canvas and resized, previews too.
        (r.width, r.height) = (80, 48);
        // The final image decoded like the previews, so that the last one can be compared.
        r.decoder = decoder;
        let (mut previews, mut estimates, mut final_latents) = (Vec::new(), Vec::new(), Vec::new());
        let g = p
            .generate_with(&r, &mut |pr, st| {
                assert_eq!(st.latents().len(), 4 * st.latent_size().0 * st.latent_size().1);
                if [1, 3, 4].contains(&pr.step) {
                    let preview = p.preview(st).unwrap();
                    previews.push((pr.step, Lanczos3.resize(preview, r.width, r.height).unwrap()));
                    estimates.push(st.denoised().unwrap());
                }
                final_latents = st.latents().to_vec();
                ControlFlow::Continue(())
            })
            .unwrap()
            .resized(&Lanczos3)
            .unwrap();
        assert_eq!(previews.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 3, 4], "{decoder:?}");
        for (s, img) in &previews {
            assert_eq!(img.dimensions(), (80, 48), "{decoder:?} step {s}");
        }
        // Asking for previews does not change the result.
        assert_eq!(g.image, go(&p, &r).image, "{decoder:?}");
        // The last step's estimate is the final latents (the schedule ends at zero noise), so
        // the last preview is the final image up to rounding; the first step's estimate is not.
        let gap = |a: &[f32]| a.iter().zip(&final_latents).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let scale = final_latents.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let (first_l, last_l) = (gap(&estimates[0]), gap(&estimates[2]));
        let last = mean_abs_diff(&previews[2].1, &g.image);
        let first = mean_abs_diff(&previews[0].1, &g.image);
        eprintln!(
            "{decoder:?}: to the final latents (scale {scale:.2}): first estimate {first_l:.3e}, last {last_l:.3e}; \
             to the final image: first preview {first:.3}, last {last:.3} levels"
        );
        assert!(last_l <= 1e-4 * scale, "{decoder:?}: last estimate is {last_l} from the final latents");
        assert!(first_l > 0.1 * scale, "{decoder:?}: first estimate is only {first_l} from the final latents");
        assert!(last < 0.5, "{decoder:?}: last preview differs from the final image by {last} levels on average");
    }
}

#[test]
fn previews_of_latent_blend_inpainting_keep_the_unmasked_part() {
    // With an all-black mask nothing is repainted: every preview is the input's round trip.
    let p = load("sd1");
    let (src, mut r) = unmasked_inpainting();
    r.decoder = plantain_engine::pipeline::Decoder::Tiny;
    let round_trip = p.decode(&p.encode_image(&src).unwrap(), (8, 8), p.preview_decoder()).unwrap();
    let mut n = 0;
    p.generate_with(&r, &mut |_, st| {
        assert_eq!(p.preview(st).unwrap(), round_trip);
        n += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn instruct_model_edits_an_image_and_refuses_other_tasks() {
    let p = load("sd1-pix2pix");
    let src = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 100]));
    let mut r = request(3);
    r.prompt = "make it snow".into();
    r.init_image = Some(src.clone());
    let a = go(&p, &r);
    assert_eq!((a.image.dimensions(), a.steps_run), ((64, 64), 3), "the whole schedule runs");
    assert_eq!(png(&a.image), png(&go(&p, &r).image), "deterministic");
    r.image_guidance = 1.0;
    assert_ne!(png(&a.image), png(&go(&p, &r).image), "image guidance changes the result");
    for (bad, what) in [(None, "no image"), (Some(image::GrayImage::new(64, 64)), "a mask")] {
        let mut b = r.clone();
        if bad.is_none() {
            b.init_image = None;
        }
        b.mask = bad;
        let e = p.generate(&b, &mut |_| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(e, EngineError::InvalidRequest(ref m) if m.contains("InstructPix2Pix")), "{what}: {e}");
    }
    r.image_guidance = f32::NAN;
    assert!(matches!(p.generate(&r, &mut |_| ControlFlow::Continue(())), Err(EngineError::InvalidRequest(_))));
}

#[test]
fn diffedit_masks_are_seeded_and_refused_where_undefined() {
    use plantain_engine::pipeline::DiffEditOptions;
    let p = load("sd1");
    let img = image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 4) as u8, 60]));
    let opts = DiffEditOptions { maps: 2, steps: 10, ..Default::default() };
    let m = p.diffedit_mask(&img, "a red star", "a blue circle", None, &opts).unwrap();
    assert_eq!(m.latent_size, (8, 12));
    assert_eq!(m.map.len(), 96);
    let again = p.diffedit_mask(&img, "a red star", "a blue circle", None, &opts).unwrap();
    assert_eq!(m.map, again.map, "seeded");
    let other = p.diffedit_mask(&img, "a red star", "a blue circle", None, &DiffEditOptions { seed: 1, ..opts }).unwrap();
    assert_ne!(m.map, other.map, "another seed draws other noise");
    assert_eq!(m.to_image(96, 64).dimensions(), (96, 64));
    let bad = DiffEditOptions { maps: 0, ..opts };
    assert!(matches!(p.diffedit_mask(&img, "a", "b", None, &bad), Err(EngineError::InvalidRequest(_))));
    let e = load("sd1-inpaint").diffedit_mask(&img, "a", "b", None, &opts).unwrap_err();
    assert!(matches!(e, EngineError::Unsupported(_)), "{e}");
}
