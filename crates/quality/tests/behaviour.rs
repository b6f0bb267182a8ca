//! What the score does with damaged, tiny and flat pictures, and with missing or broken model
//! files. The photographs are the crops in fixtures/quality/ (scikit-image's sample pictures).

use std::path::PathBuf;

use image::{GrayImage, Luma, RgbImage};
use plantain_quality::{Brisque, QualityError, features, features_of_luminance};

const PHOTOS: [&str; 3] = ["astronaut.png", "chelsea.png", "coffee.png"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/quality").join(name)
}

fn brisque() -> Brisque {
    Brisque::open_installed().unwrap_or_else(|e| panic!("{e}"))
}

fn photo(name: &str) -> RgbImage {
    image::open(fixture(name)).unwrap().to_rgb8()
}

/// A deterministic generator (xorshift) for the noise.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal sample (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn with_noise(img: &RgbImage, sigma: f64, seed: u64) -> RgbImage {
    let mut rng = Rng(seed);
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = (f64::from(*v) + sigma * rng.normal()).round().clamp(0.0, 255.0) as u8;
    }
    out
}

#[test]
fn blurred_photographs_score_worse() {
    let brisque = brisque();
    for name in PHOTOS {
        let clean = photo(name);
        let blurred = image::imageops::blur(&clean, 2.0);
        let (a, b) = (brisque.score(&clean).unwrap(), brisque.score(&blurred).unwrap());
        println!("{name}: clean {a:.2}, blurred {b:.2}");
        assert!(b > a + 10.0, "{name}: blurred {b} is not clearly worse than clean {a}");
    }
}

#[test]
fn noisy_photographs_score_worse() {
    let brisque = brisque();
    for (i, name) in PHOTOS.into_iter().enumerate() {
        let clean = photo(name);
        let noisy = with_noise(&clean, 25.0, 0x5eed + i as u64);
        let (a, b) = (brisque.score(&clean).unwrap(), brisque.score(&noisy).unwrap());
        println!("{name}: clean {a:.2}, noisy {b:.2}");
        assert!(b > a + 10.0, "{name}: noisy {b} is not clearly worse than clean {a}");
    }
}

#[test]
fn more_blur_scores_worse_on_a_photograph() {
    let brisque = brisque();
    let clean = photo("chelsea.png");
    let scores: Vec<f32> = [0.5f32, 1.5, 3.0].iter().map(|&s| brisque.score(&image::imageops::blur(&clean, s)).unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[1] > w[0]), "{scores:?}");
}

#[test]
fn pictures_under_two_pixels_are_too_small() {
    let brisque = brisque();
    for (w, h) in [(1, 1), (1, 50), (50, 1), (0, 0)] {
        let img = RgbImage::new(w, h);
        assert!(matches!(brisque.score(&img), Err(QualityError::TooSmall { .. })), "{w}x{h}");
        let grey = GrayImage::new(w, h);
        let err = features(&grey).unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }
}

#[test]
fn tiny_pictures_give_a_number_or_an_error() {
    let brisque = brisque();
    let mut rng = Rng(7);
    for (w, h) in [(2, 2), (3, 2), (2, 3), (3, 3), (4, 4), (7, 5), (9, 9), (16, 16)] {
        let img = GrayImage::from_fn(w, h, |_, _| Luma([(rng.uniform() * 255.0) as u8]));
        match brisque.score_gray(&img) {
            Ok(score) => assert!(score.is_finite() && (0.0..=100.0).contains(&score), "{w}x{h}: {score}"),
            Err(QualityError::Undefined(_)) => {}
            Err(e) => panic!("{w}x{h}: {e}"),
        }
    }
}

#[test]
fn flat_pictures_are_undefined_not_scored() {
    let brisque = brisque();
    for value in [0u8, 128, 255] {
        let img = RgbImage::from_pixel(64, 48, image::Rgb([value; 3]));
        let err = brisque.score(&img).unwrap_err();
        assert!(matches!(err, QualityError::Undefined(_)), "{value}: {err}");
        assert!(err.to_string().contains("flat"), "{err}");
    }
    // One bright pixel on a flat field still leaves most products zero; whatever comes out is a
    // number in range or an error, never NaN.
    let mut img = GrayImage::from_pixel(64, 64, Luma([100]));
    img.put_pixel(10, 10, Luma([200]));
    if let Ok(score) = brisque.score_gray(&img) {
        assert!(score.is_finite() && (0.0..=100.0).contains(&score), "{score}");
    }
}

#[test]
fn luminance_must_match_its_size() {
    assert!(features_of_luminance(4, 4, &[0.5; 15]).is_err());
    let ramp: Vec<f32> = (0..64 * 64).map(|i| ((i * 7919) % 251) as f32 / 251.0).collect();
    let f = features_of_luminance(64, 64, &ramp).unwrap();
    assert!(f.iter().all(|v| v.is_finite()));
}

#[test]
fn missing_model_files_name_the_setup_script() {
    let dir = std::env::temp_dir().join("plantain-quality-no-model");
    let err = Brisque::open(dir.join("brisque_model_live.yml"), dir.join("brisque_range_live.yml")).unwrap_err();
    assert!(matches!(err, QualityError::MissingModel { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("scripts/setup-quality.sh") && message.contains("brisque_model_live.yml"), "{message}");
}

#[test]
fn broken_model_files_are_refused() {
    let dir = std::env::temp_dir().join(format!("plantain-quality-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.yml");
    let range = dir.join("range.yml");
    std::fs::write(&model, "%YAML:1.0\n---\nopencv_ml_svm:\n   svmType: C_SVC\n").unwrap();
    std::fs::write(&range, "%YAML:1.0\n---\nrange: !!opencv-matrix\n   rows: 2\n   cols: 1\n   dt: f\n   data: [ 0., 1. ]\n").unwrap();
    let err = Brisque::open(&model, &range).unwrap_err();
    assert!(matches!(err, QualityError::BadModel { .. }), "{err}");
    assert!(err.to_string().contains("C_SVC"), "{err}");
    std::fs::write(&model, "opencv_ml_svm: [ unclosed\n").unwrap();
    assert!(matches!(Brisque::open(&model, &range), Err(QualityError::BadModel { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_installed_model_loads() {
    // The range file of a model with another feature count is refused by `open`; the installed
    // pair has 36 and scores a photograph as OpenCV does (see opencv_parity.rs).
    let brisque = brisque();
    let score = brisque.score(&photo("chelsea.png")).unwrap();
    assert!((0.0..=100.0).contains(&score));
}
