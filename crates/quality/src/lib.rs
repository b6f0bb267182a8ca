//! plantain's no-reference image quality score: BRISQUE (Mittal, Moorthy and Bovik, "No-Reference
//! Image Quality Assessment in the Spatial Domain", 2012) computed as OpenCV's contrib `quality`
//! module computes it (`cv::quality::QualityBRISQUE`), with the LIVE model that OpenCV ships
//! (Debian's `opencv-data`, installed by `scripts/setup-quality.sh`).
//!
//! ```no_run
//! let brisque = plantain_quality::Brisque::open_installed()?;
//! let picture = image::open("out.png").unwrap().to_rgb8();
//! let score = brisque.score(&picture)?; // lower is better, 0..=100
//! # Ok::<(), plantain_quality::QualityError>(())
//! ```

mod features;
mod model;
mod plane;
pub mod storage;

use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};

pub use features::FEATURE_COUNT;
pub use plane::luma;

use model::{FeatureRange, Svr};
use plane::Plane;

/// Where Debian's `opencv-data` puts the BRISQUE files.
pub const INSTALLED_DIR: &str = "/usr/share/opencv4/quality";
/// The environment variable that, when set, names another directory holding the two files.
pub const DIR_ENV: &str = "PLANTAIN_BRISQUE_DIR";
/// The SVM trained on the LIVE database.
pub const MODEL_FILE: &str = "brisque_model_live.yml";
/// The feature ranges the SVM was trained with.
pub const RANGE_FILE: &str = "brisque_range_live.yml";
/// The script that installs and checks the two files.
pub const SETUP_SCRIPT: &str = "scripts/setup-quality.sh";

/// What can go wrong opening a model or scoring a picture.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("BRISQUE model file {} is missing: run {SETUP_SCRIPT} (it installs Debian's opencv-data), or set {DIR_ENV} to a directory holding {MODEL_FILE} and {RANGE_FILE}", path.display())]
    MissingModel { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not a BRISQUE model OpenCV can load: {message}", path.display())]
    BadModel { path: PathBuf, message: String },
    #[error("a {width}x{height} picture is too small for BRISQUE, which needs at least 2x2 pixels")]
    TooSmall { width: u32, height: u32 },
    #[error("BRISQUE is undefined for this picture: {0}")]
    Undefined(String),
}

/// The BRISQUE model: the SVM and the feature ranges it was trained with.
#[derive(Debug, Clone)]
pub struct Brisque {
    svr: Svr,
    range: FeatureRange,
}

impl Brisque {
    /// The LIVE model from `$PLANTAIN_BRISQUE_DIR`, or else from [`INSTALLED_DIR`].
    pub fn open_installed() -> Result<Brisque, QualityError> {
        let dir = std::env::var_os(DIR_ENV).map_or_else(|| PathBuf::from(INSTALLED_DIR), PathBuf::from);
        Brisque::open(dir.join(MODEL_FILE), dir.join(RANGE_FILE))
    }

    /// A model from OpenCV's two files: the SVM (`cv::ml::SVM::save`) and the range matrix.
    pub fn open(model_yml: impl AsRef<Path>, range_yml: impl AsRef<Path>) -> Result<Brisque, QualityError> {
        let (model_yml, range_yml) = (model_yml.as_ref(), range_yml.as_ref());
        let svr = read_document(model_yml, Svr::from_document)?;
        let range = read_document(range_yml, FeatureRange::from_document)?;
        if svr.var_count() != FEATURE_COUNT || range.feature_count() != FEATURE_COUNT {
            let message = format!(
                "the SVM takes {} features and the range has {}; BRISQUE has {FEATURE_COUNT}",
                svr.var_count(),
                range.feature_count()
            );
            return Err(QualityError::BadModel { path: model_yml.to_path_buf(), message });
        }
        tracing::debug!(model = %model_yml.display(), support_vectors = svr.support_vector_count(), "BRISQUE model loaded");
        Ok(Brisque { svr, range })
    }

    /// The score of a colour picture: lower is better, clamped to 0..=100 as OpenCV does.
    /// The picture is made grey as OpenCV's `cvtColor(BGR2GRAY)` makes the same picture read
    /// by `imread` (which gives B, G, R).
    pub fn score(&self, img: &RgbImage) -> Result<f32, QualityError> {
        self.score_gray(&luma(img))
    }

    /// The score of a grey picture (OpenCV's one-channel path: no conversion).
    pub fn score_gray(&self, img: &GrayImage) -> Result<f32, QualityError> {
        self.score_features(&features(img)?)
    }

    /// The score of a feature vector from [`features`]: scaled by the range file, then the SVM,
    /// clamped to 0..=100.
    pub fn score_features(&self, features: &[f32; FEATURE_COUNT]) -> Result<f32, QualityError> {
        Ok(self.unclamped(features)?.clamp(0.0, 100.0))
    }

    /// The SVM's value before the clamp to 0..=100 (below 0 for pictures cleaner than most of
    /// LIVE's, above 100 for some synthetic ones).
    pub fn unclamped(&self, features: &[f32; FEATURE_COUNT]) -> Result<f32, QualityError> {
        check_finite(features)?;
        let raw = self.svr.predict(&self.range.scale(features));
        if raw.is_finite() { Ok(raw) } else { Err(QualityError::Undefined(format!("the SVM gave {raw}"))) }
    }
}

fn read_document<T>(path: &Path, read: impl Fn(&storage::Node) -> Result<T, String>) -> Result<T, QualityError> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => QualityError::MissingModel { path: path.to_path_buf() },
        _ => QualityError::Io { path: path.to_path_buf(), source },
    })?;
    let bad = |message: String| QualityError::BadModel { path: path.to_path_buf(), message };
    let doc = storage::parse(&text).map_err(|e| bad(e.to_string()))?;
    read(&doc).map_err(bad)
}

/// The 36 BRISQUE features of a grey picture, as `QualityBRISQUE::computeFeatures` gives them.
/// NaN features (a flat picture has no contrast to fit) are an error, not a value.
pub fn features(img: &GrayImage) -> Result<[f32; FEATURE_COUNT], QualityError> {
    features_of_plane(plane::unit(img))
}

/// The features of a luminance already scaled to [0, 1] (`width * height` samples, row by row):
/// what OpenCV computes on a `CV_32F` grey picture after its conversion.
pub fn features_of_luminance(width: usize, height: usize, luminance: &[f32]) -> Result<[f32; FEATURE_COUNT], QualityError> {
    if luminance.len() != width * height {
        return Err(QualityError::Undefined(format!("{} samples for a {width}x{height} picture", luminance.len())));
    }
    features_of_plane(Plane::new(width, height, luminance.to_vec()))
}

fn features_of_plane(plane: Plane) -> Result<[f32; FEATURE_COUNT], QualityError> {
    if plane.width < 2 || plane.height < 2 {
        return Err(QualityError::TooSmall { width: plane.width as u32, height: plane.height as u32 });
    }
    let out = features::compute(&plane);
    check_finite(&out)?;
    Ok(out)
}

fn check_finite(features: &[f32; FEATURE_COUNT]) -> Result<(), QualityError> {
    match features.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(QualityError::Undefined(format!(
            "feature {i} (scale {}) is {}: the picture has too little local contrast to fit (flat or nearly flat)",
            i / 18 + 1,
            features[i]
        ))),
    }
}
