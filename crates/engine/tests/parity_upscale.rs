//! Real-ESRGAN in the engine against the ncnn runtime on the same files
//! (fixtures/upscale/realesrgan.safetensors, made by scripts/realesrgan_fixtures.py), tiling
//! against whole runs, and the refusals of files that are not what their names say. Needs the
//! models of scripts/setup-realesrgan.sh: without them each test says so and passes.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use ndarray::{Array4, ArrayD, Ix4};
use plantain_engine::EngineError;
use plantain_engine::runtime::RuntimeOptions;
use plantain_engine::upscale::{TileOptions, UpscaleModel, Upscaler};

fn fixture() -> HashMap<String, ArrayD<f32>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/upscale/realesrgan.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            let data: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (name, ArrayD::from_shape_vec(t.shape().to_vec(), data).unwrap())
        })
        .collect()
}

/// The installed files of `model` at `scale`, or `None` (with a note) when they are not installed.
fn files(model: UpscaleModel, scale: u32) -> Option<(PathBuf, PathBuf)> {
    match model.files(scale) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn load(model: UpscaleModel, scale: u32) -> Option<Upscaler> {
    files(model, scale)?;
    Some(Upscaler::load(model, scale, &RuntimeOptions::default()).unwrap())
}

/// (max, mean) absolute difference.
fn diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> (f32, f32) {
    assert_eq!(a.shape(), b.shape());
    let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    (d.iter().copied().fold(0.0, f32::max), d.iter().sum::<f32>() / d.len() as f32)
}

/// Every reference of the fixture `<photo>_<side>_<model>` whose model is `name`.
fn check_parity(name: &str, model: UpscaleModel, scale: u32, max_tol: f32) {
    let Some(up) = load(model, scale) else { return };
    let refs = fixture();
    let mut checked = 0;
    for (key, want) in &refs {
        let Some(input_key) = key.strip_suffix(&format!("_{name}")) else { continue };
        let x = refs[input_key].clone().into_dimensionality::<Ix4>().unwrap();
        let got = up.run(x).unwrap();
        let (max, mean) = diff(&got, want);
        eprintln!("{key}: max |engine - ncnn| = {max:.2e}, mean {mean:.2e} (in [0, 1] units)");
        assert!(max < max_tol && mean < max_tol / 20.0, "{key}: max {max}, mean {mean}");
        checked += 1;
    }
    assert!(checked > 0, "no reference for {name} in the fixture");
}

#[test]
fn animevideov3_x2_matches_ncnn() {
    check_parity("animevideov3_x2", UpscaleModel::AnimeVideoV3, 2, 1e-4);
}

#[test]
fn animevideov3_x3_matches_ncnn() {
    check_parity("animevideov3_x3", UpscaleModel::AnimeVideoV3, 3, 1e-4);
}

#[test]
fn animevideov3_x4_matches_ncnn() {
    check_parity("animevideov3_x4", UpscaleModel::AnimeVideoV3, 4, 1e-4);
}

#[test]
fn x4plus_anime_matches_ncnn() {
    check_parity("x4plus_anime", UpscaleModel::X4PlusAnime, 4, 1e-4);
}

#[test]
fn x4plus_matches_ncnn() {
    check_parity("x4plus", UpscaleModel::X4Plus, 4, 1e-4);
}

fn to_image(x: &ArrayD<f32>) -> image::RgbImage {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    image::RgbImage::from_fn(w as u32, h as u32, |c, r| {
        image::Rgb(std::array::from_fn(|k| (x[[0, k, r as usize, c as usize]] * 255.0).round() as u8))
    })
}

#[test]
fn tiles_blend_into_the_whole_picture() {
    let Some(mut up) = load(UpscaleModel::AnimeVideoV3, 4) else { return };
    let img = to_image(&fixture()["tile_source"]);
    let x = Array4::from_shape_fn((1, 3, 80, 80), |(_, c, y, x)| img.get_pixel(x as u32, y as u32)[c] as f32 / 255.0);
    let whole = to_image(&up.run(x).unwrap().mapv(|v| v.clamp(0.0, 1.0)));
    up.tiles = TileOptions { tile: 32, overlap: 12 };
    let mut calls = Vec::new();
    let tiled = up
        .upscale(&img, &mut |done, total| {
            calls.push((done, total));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(calls.len(), 16, "4x4 tiles of 32 sharing at least 12 over 80 pixels");
    assert_eq!(calls.last(), Some(&(16, 16)));
    let d: Vec<f32> = tiled.as_raw().iter().zip(whole.as_raw()).map(|(a, b)| (*a as f32 - *b as f32).abs()).collect();
    let (max, mean) = (d.iter().copied().fold(0.0, f32::max), d.iter().sum::<f32>() / d.len() as f32);
    eprintln!("tiled (32 px, overlap 12) vs whole, 8-bit levels: max {max}, mean {mean:.3}");
    assert!(mean < 0.5 && max <= 8.0, "max {max}, mean {mean}");
    let cancelled = up.upscale(&img, &mut |done, _| if done == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) });
    assert!(matches!(cancelled, Err(EngineError::Cancelled)));
}

#[test]
fn files_that_are_not_what_their_names_say_are_refused() {
    let (Some((p2, b2)), Some((p4, _)), Some((_, bplus))) =
        (files(UpscaleModel::AnimeVideoV3, 2), files(UpscaleModel::AnimeVideoV3, 4), files(UpscaleModel::X4Plus, 4))
    else {
        return;
    };
    let opts = RuntimeOptions::default();
    // The 2x network under a 4x name.
    let err = Upscaler::from_files(&p2, &b2, 4, "renamed", &opts).err().unwrap().to_string();
    assert!(err.contains("enlarges by 2x but its name says 4x"), "{err}");
    // The compact network's layers over RRDBNet's weights.
    let err = Upscaler::from_files(&p4, &bplus, 4, "mixed", &opts).err().unwrap().to_string();
    assert!(err.contains("another network"), "{err}");
    // A weights file given as the layer list.
    let err = Upscaler::from_files(&bplus, &b2, 4, "swapped", &opts).err().unwrap().to_string();
    assert!(err.contains("not an ncnn .param file"), "{err}");
}
