//! The installed ISNet model on real photographs. Needs `bash scripts/setup.sh` (ONNX Runtime, the
//! model in .models/isnet/, the photos in .assets/photos/): without them these tests fail, saying so.

use std::path::PathBuf;
use std::sync::OnceLock;

use image::{GrayImage, RgbImage};
use plantain_vision::{Segmenter, components};

fn segmenter() -> &'static Segmenter {
    static SEGMENTER: OnceLock<Segmenter> = OnceLock::new();
    SEGMENTER.get_or_init(|| Segmenter::open_installed().unwrap_or_else(|e| panic!("ISNet is not usable: {e}")))
}

fn photo(name: &str) -> RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.assets/photos").join(name);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `bash scripts/setup.sh` to fetch the sample photos", path.display()))
        .to_rgb8()
}

/// Mean of the mask over a rectangle given in fractions of the image, on 0..=255.
fn mean(mask: &GrayImage, (fx0, fy0, fx1, fy1): (f32, f32, f32, f32)) -> f32 {
    let (w, h) = (mask.width() as f32, mask.height() as f32);
    let (x0, y0, x1, y1) = ((fx0 * w) as u32, (fy0 * h) as u32, (fx1 * w) as u32, (fy1 * h) as u32);
    let mut sum = 0u64;
    for y in y0..y1 {
        for x in x0..x1 {
            sum += u64::from(mask.get_pixel(x, y)[0]);
        }
    }
    sum as f32 / ((x1 - x0) * (y1 - y0)) as f32
}

#[test]
fn finds_the_astronaut() {
    let image = photo("astronaut.png");
    let mask = segmenter().subject(&image).unwrap();
    assert_eq!(mask.dimensions(), image.dimensions());
    // Her face and the orange suit's chest are subject...
    let face = mean(&mask, (0.38, 0.08, 0.52, 0.28));
    let chest = mean(&mask, (0.30, 0.50, 0.55, 0.75));
    assert!(face > 220.0 && chest > 220.0, "face {face}, chest {chest}");
    // ...the wall behind her and the top corners (flag, shuttle) are not.
    let corners = [(0.0, 0.0, 0.08, 0.08), (0.92, 0.0, 1.0, 0.08), (0.75, 0.05, 0.95, 0.45)].map(|r| mean(&mask, r));
    assert!(corners.iter().all(|&c| c < 25.0), "background means {corners:?}");
    let overall = mean(&mask, (0.0, 0.0, 1.0, 1.0)) / 255.0;
    eprintln!("astronaut: face {face:.0}, chest {chest:.0}, background {corners:.0?}, mean {overall:.3}");
    assert!((0.3..0.75).contains(&overall), "mask mean {overall}");
    // One big object (her, with the helmet she holds), centred left of the middle, low.
    let regions = components(&mask, 128, 0.01);
    assert!(
        !regions.is_empty() && regions[0].area as f32 > 0.3 * 512.0 * 512.0,
        "{:?}",
        regions.iter().map(|r| r.area).collect::<Vec<_>>()
    );
    let (cx, cy) = regions[0].centroid;
    assert!((0.35..0.65).contains(&cx) && (0.45..0.75).contains(&cy), "centroid {cx} {cy}");
}

#[test]
fn no_subject_in_a_field_of_stars() {
    let mask = segmenter().subject(&photo("hubble_deep_field.jpg")).unwrap();
    let overall = mean(&mask, (0.0, 0.0, 1.0, 1.0)) / 255.0;
    eprintln!("hubble deep field: mean {overall:.4}");
    assert!(overall < 0.05, "mask mean {overall}");
}

#[test]
fn odd_sizes_keep_their_shape() {
    let astronaut = photo("astronaut.png");
    for (w, h) in [(1, 1), (1, 700), (3000, 2)] {
        let image = image::imageops::resize(&astronaut, w, h, image::imageops::FilterType::Triangle);
        let mask = segmenter().subject(&image).unwrap();
        assert_eq!(mask.dimensions(), (w, h));
    }
    assert_eq!(segmenter().subject(&RgbImage::new(0, 5)).unwrap().dimensions(), (0, 5));
}
