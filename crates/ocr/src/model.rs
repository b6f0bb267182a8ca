//! One ONNX network on ONNX Runtime, opened the way `plantain-vision` opens ISNet.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::{Array4, ArrayD};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::{Tensor, TensorElementType, ValueType};

use crate::error::OcrError;

/// A network with one image input (N×3×H×W, f32) and one f32 output used; runs are serialised.
pub(crate) struct Model {
    session: Mutex<Session>,
    input: String,
    output: String,
    /// The output's shape as the model declares it (-1 where dynamic).
    output_shape: Vec<i64>,
    path: PathBuf,
    role: &'static str,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("role", &self.role).field("path", &self.path).finish()
    }
}

impl Model {
    /// Loads the `role` network ("detection", ...) from `path`.
    pub fn open(path: &Path, role: &'static str) -> Result<Model, OcrError> {
        if !path.is_file() {
            return Err(OcrError::NotInstalled(format!("the PP-OCR {role} model {} is missing", path.display())));
        }
        let env =
            plantain_engine::runtime::init().map_err(|e| OcrError::NotInstalled(format!("ONNX Runtime could not be loaded ({e})")))?;
        let started = std::time::Instant::now();
        let context = path.display().to_string();
        let session = Session::builder(env)
            .map_err(OcrError::runtime(&context))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| OcrError::runtime(&context)(e.into()))?
            .commit_from_file(path)
            .map_err(OcrError::runtime(&context))?;
        let bad = |reason: String| OcrError::BadModel { path: path.to_path_buf(), role, reason };
        let [input] = session.inputs() else {
            return Err(bad(format!("it has {} inputs, expected one image", session.inputs().len())));
        };
        check_image_input(input.dtype()).map_err(|r| bad(format!("input `{}`: {r}", input.name())))?;
        let Some(output) = session.outputs().first() else { return Err(bad("it has no outputs".into())) };
        let output_shape = f32_shape(output.dtype()).map_err(|r| bad(format!("output `{}`: {r}", output.name())))?;
        let (input, output) = (input.name().to_string(), output.name().to_string());
        tracing::debug!(model = %path.display(), secs = started.elapsed().as_secs_f32(), "PP-OCR {role} network ready");
        Ok(Model { session: Mutex::new(session), input, output, output_shape, path: path.to_path_buf(), role })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn output_shape(&self) -> &[i64] {
        &self.output_shape
    }

    /// A custom metadata entry of the model file.
    pub fn metadata(&self, key: &str) -> Result<Option<String>, OcrError> {
        let session = self.lock()?;
        let metadata = session.metadata().map_err(OcrError::runtime(self.role))?;
        Ok(metadata.custom(key))
    }

    pub fn run(&self, input: Array4<f32>) -> Result<ArrayD<f32>, OcrError> {
        let input = Tensor::from_array(input).map_err(OcrError::runtime("input tensor"))?;
        let options =
            RunOptions::new().map_err(OcrError::runtime("run options"))?.with_outputs(OutputSelector::no_default().with(&self.output));
        let mut session = self.lock()?;
        let outputs =
            session.run_with_options(ort::inputs![self.input.as_str() => input], &options).map_err(OcrError::runtime(self.role))?;
        let value =
            outputs.get(&self.output).ok_or_else(|| OcrError::Runtime(format!("the {} network gave no `{}`", self.role, self.output)))?;
        let array = value.try_extract_array::<f32>().map_err(OcrError::runtime(self.role))?;
        Ok(array.to_owned())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Session>, OcrError> {
        self.session.lock().map_err(|_| OcrError::Runtime(format!("{}: session poisoned by an earlier panic", self.path.display())))
    }
}

/// Accepts a 4-d f32 tensor with 3 channels (where fixed).
fn check_image_input(dtype: &ValueType) -> Result<(), String> {
    let shape = f32_shape(dtype)?;
    if shape.len() != 4 || !(shape[1] == 3 || shape[1] < 0) {
        return Err(format!("has shape {dtype}, expected N×3×H×W"));
    }
    Ok(())
}

/// The declared shape of an f32 tensor.
fn f32_shape(dtype: &ValueType) -> Result<Vec<i64>, String> {
    let ValueType::Tensor { ty, shape, .. } = dtype else { return Err(format!("is a {dtype}, not a tensor")) };
    if *ty != TensorElementType::Float32 {
        return Err(format!("is {ty}, expected f32"));
    }
    Ok(shape.iter().copied().collect())
}
