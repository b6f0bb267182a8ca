//! Running graphs on ONNX Runtime (loaded dynamically from `libonnxruntime.so`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ndarray::ArrayD;
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::value::Tensor;

use crate::error::{EngineError, Result};
use crate::graph::{Graph, onnx};

/// How networks are run.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Intra-op threads; 0 lets ONNX Runtime use every core.
    pub threads: usize,
    /// Where exported graphs (small: weights stay in the checkpoint) are cached.
    pub cache_dir: PathBuf,
    /// Use ONNX Runtime's CUDA provider (needs the `onnxruntime-gpu` library).
    pub cuda: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self { threads: 0, cache_dir: default_cache_dir(), cuda: false }
    }
}

/// `$PLANTAIN_CACHE`, else `$XDG_CACHE_HOME/plantain`, else `~/.cache/plantain`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PLANTAIN_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("plantain");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/plantain"))
        .unwrap_or_else(|| std::env::temp_dir().join("plantain-cache"))
}

const LIB_HELP: &str = "set ORT_DYLIB_PATH to libonnxruntime.so.1.31.1 (it ships in the PyPI wheel: \
`pip download --no-deps onnxruntime==1.31.1` and unzip `onnxruntime/capi/`), or run `bash scripts/setup.sh`";

/// Loads ONNX Runtime once per process and returns its environment.
pub fn init() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = find_library().ok_or_else(|| format!("ONNX Runtime library not found: {LIB_HELP}"))?;
        let builder = ort::init_from(&path).map_err(|e| format!("could not load ONNX Runtime from {}: {e}; {LIB_HELP}", path.display()))?;
        let env = builder.with_name("plantain").build().map_err(|e| format!("could not start ONNX Runtime: {e}"))?;
        tracing::debug!(library = %path.display(), "ONNX Runtime loaded");
        Ok(env)
    })
    .as_ref()
    .map_err(|e| EngineError::Runtime(e.clone()))
}

fn find_library() -> Option<PathBuf> {
    const LIBRARY: &str = "libonnxruntime.so.1.31.1";
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    // Next to the executable, or in the repo-local folder that scripts/setup.sh fills.
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join(LIBRARY)));
    beside.filter(|p| p.exists()).or_else(|| find_installed(&Path::new(".ort").join(LIBRARY), Path::exists).ok())
}

/// Where installed files are looked for: the executable's folder, then the current directory.
pub fn search_roots() -> Vec<PathBuf> {
    let exe = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    exe.into_iter().chain(std::env::current_dir().ok()).collect()
}

/// The first `ancestor/relative` for which `found` holds, over the ancestors of each of
/// [`search_roots`] in turn (how `scripts/setup.sh`'s repo-local `.ort/` and `.models/` are
/// found from a binary or a test anywhere in the checkout). Else the roots searched, for the
/// error message ("/a/b or /c").
pub fn find_installed(relative: &Path, found: impl Fn(&Path) -> bool) -> std::result::Result<PathBuf, String> {
    let roots = search_roots();
    roots
        .iter()
        .flat_map(|r| r.ancestors())
        .map(|a| a.join(relative))
        .find(|p| found(p))
        .ok_or_else(|| roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(" or "))
}

/// An input tensor.
pub enum Input {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

/// One network, compiled by ONNX Runtime and ready to run.
pub struct Network {
    label: String,
    session: Mutex<Session>,
    /// Give the memory of a run's activations back after each run (see [`Network::releasing`]).
    release: bool,
}

impl Network {
    /// Builds the ONNX model for `graph` (weights stay in the checkpoint files, read in place)
    /// and creates a session. `label` names the network in logs.
    pub fn new(graph: &Graph, label: &str, opts: &RuntimeOptions) -> Result<Self> {
        let env = init()?;
        let bytes = onnx::model_bytes(graph).map_err(|e| EngineError::Runtime(format!("{label}: reading weights: {e}")))?;
        let started = std::time::Instant::now();
        let mut builder = Session::builder(env)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(ort::Error::from)?
            .with_config_entry("session.model_external_initializers_file_folder_path", "/")
            .map_err(ort::Error::from)?;
        if opts.threads > 0 {
            builder = builder.with_intra_threads(opts.threads).map_err(ort::Error::from)?;
        }
        if opts.cuda {
            builder = with_cuda(builder)?;
        }
        let session = builder.commit_from_memory(&bytes)?;
        tracing::info!(network = label, secs = started.elapsed().as_secs_f32(), "network ready");
        Ok(Self { label: label.to_string(), session: Mutex::new(session), release: false })
    }

    /// This network gives the memory of its activations back after each run (ONNX Runtime's
    /// arena shrinkage), instead of holding the largest run's worth for the next one: for
    /// networks run once per picture (text encoders, VAE), whose arenas would otherwise stay
    /// allocated beside the UNet's for nothing, and for every network of a lean model. The
    /// cost is the page faults of allocating that memory again on the next run.
    pub fn releasing(mut self) -> Self {
        self.release = true;
        self
    }

    /// Runs the network; returns every output as f32.
    pub fn run(&self, inputs: Vec<(&str, Input)>) -> Result<HashMap<String, ArrayD<f32>>> {
        self.run_inner(inputs, self.release)
    }

    /// [`Network::run`], then gives the activation memory back whatever this network usually
    /// does: for the last step of a loop, so that what the next network (the VAE) needs is not
    /// added to what this one holds for its next call.
    pub fn run_releasing(&self, inputs: Vec<(&str, Input)>) -> Result<HashMap<String, ArrayD<f32>>> {
        self.run_inner(inputs, true)
    }

    fn run_inner(&self, inputs: Vec<(&str, Input)>, release: bool) -> Result<HashMap<String, ArrayD<f32>>> {
        let mut values: Vec<(String, ort::value::DynValue)> = Vec::with_capacity(inputs.len());
        for (name, input) in inputs {
            let v = match input {
                Input::F32(a) => Tensor::from_array(a)?.into_dyn(),
                Input::I64(a) => Tensor::from_array(a)?.into_dyn(),
            };
            values.push((name.to_string(), v));
        }
        let mut session =
            self.session.lock().map_err(|_| EngineError::Runtime(format!("{}: session poisoned by an earlier panic", self.label)))?;
        let options = if release {
            let mut o = RunOptions::new()?;
            o.set("memory.enable_memory_arena_shrinkage", "cpu:0")?;
            Some(o)
        } else {
            None
        };
        let outputs = match &options {
            Some(o) => session.run_with_options(values, o)?,
            None => session.run(values)?,
        };
        let mut out = HashMap::new();
        for (name, value) in outputs.iter() {
            let arr = value.try_extract_array::<f32>()?;
            out.insert(name.to_string(), arr.to_owned());
        }
        Ok(out)
    }
}

/// A network whose session is either kept loaded (giving its activation memory back after each
/// run), or, lean, created from its graph for each run and dropped with the memory its weights
/// take: for text encoders, run once per prompt.
pub enum Resident {
    Loaded(Network),
    PerRun { graph: Graph, label: String, runtime: RuntimeOptions },
}

impl Resident {
    pub fn new(graph: Graph, label: &str, runtime: &RuntimeOptions, lean: bool) -> Result<Self> {
        Ok(if lean {
            Resident::PerRun { graph, label: label.to_string(), runtime: runtime.clone() }
        } else {
            Resident::Loaded(Network::new(&graph, label, runtime)?.releasing())
        })
    }

    pub fn run(&self, inputs: Vec<(&str, Input)>) -> Result<HashMap<String, ArrayD<f32>>> {
        match self {
            Resident::Loaded(net) => net.run(inputs),
            Resident::PerRun { graph, label, runtime } => Network::new(graph, label, runtime)?.run(inputs),
        }
    }
}

#[cfg(feature = "cuda")]
fn with_cuda(builder: ort::session::builder::SessionBuilder) -> Result<ort::session::builder::SessionBuilder> {
    Ok(builder.with_execution_providers([ort::ep::CUDA::default().build()]).map_err(ort::Error::from)?)
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(_: ort::session::builder::SessionBuilder) -> Result<ort::session::builder::SessionBuilder> {
    Err(EngineError::Unsupported("this build has no GPU support: rebuild with `--features cuda` and the onnxruntime-gpu library".into()))
}
