//! Looking at a model on disk without loading it: which layout it uses, which
//! components and weight variants are present, whether it is complete, and which
//! family it belongs to. Used by `resolve` (to refuse half-downloaded folders up
//! front instead of failing deep inside the engine) and by `list_cached`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{HubError, Result};
use plantain_core::KLEIN_CLASS;

use crate::known::{Defaults, Family, KLEIN_DEFAULTS, Prediction, family_defaults};

/// How the weights are laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// A diffusers folder: `model_index.json` plus one folder per component.
    Diffusers,
    /// One `.safetensors` checkpoint holding UNet, VAE and text encoder(s) (A1111/ComfyUI style).
    SingleFile,
    /// ONNX exports (an `onnx/` folder, or `*.onnx` component files) without safetensors weights.
    Onnx,
}

/// Components a loader can run without. Their absence does not make a model incomplete.
pub const OPTIONAL_COMPONENTS: &[&str] = &["safety_checker", "feature_extractor", "image_encoder"];

/// What a component folder needs, decided from its class name in `model_index.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ComponentKind {
    /// Has `config.json` and weights (UNet, VAE, text encoders, safety checker).
    Model,
    /// `scheduler_config.json` only.
    Scheduler,
    /// Vocabulary files.
    Tokenizer,
    /// `preprocessor_config.json` only (CLIP image processor).
    Processor,
}

impl ComponentKind {
    pub(crate) fn from_class(class: &str) -> Self {
        if class.contains("Scheduler") {
            ComponentKind::Scheduler
        } else if class.contains("Tokenizer") {
            ComponentKind::Tokenizer
        } else if class.contains("ImageProcessor") || class.contains("FeatureExtractor") {
            ComponentKind::Processor
        } else {
            ComponentKind::Model
        }
    }
}

/// One component of a diffusers pipeline as found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentInfo {
    /// Folder name: `unet`, `vae`, `text_encoder_2`, …
    pub name: String,
    /// Class from `model_index.json`, e.g. `UNet2DConditionModel`.
    pub class_name: Option<String>,
    pub kind: ComponentKind,
    /// Weight variants whose files are all present. `fp32` stands for the unsuffixed
    /// files (which are fp32 in the SD repos, but a repo may store other dtypes there).
    pub variants: Vec<String>,
    /// An ONNX export of this component is present.
    pub onnx: bool,
    /// Config/vocabulary files and (for models) at least one complete weight set are present.
    pub complete: bool,
    /// Whether a loader can do without it (see [`OPTIONAL_COMPONENTS`]).
    pub optional: bool,
    /// Bytes on disk (symlinks followed, each blob counted once).
    pub size_bytes: u64,
}

/// Result of inspecting a local model path.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub layout: Layout,
    pub components: Vec<ComponentInfo>,
    /// Human-readable names of what is missing for loading; empty when complete.
    pub missing: Vec<String>,
    pub family: Option<Family>,
    /// Defaults read from the configs (resolution from the UNet, prediction from the scheduler).
    pub config_defaults: Option<Defaults>,
    pub onnx: bool,
    pub size_bytes: u64,
    /// Notes worth showing the user (assumptions made, oddities found).
    pub notes: Vec<String>,
}

impl Inspection {
    /// Complete enough to load.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Extensions of pickle-based checkpoints, which are never opened.
pub(crate) const PICKLE_EXTS: &[&str] = &["ckpt", "pt", "pth", "bin", "pkl", "pickle"];

/// Inspect a file or folder. Errors for pickles, unknown files and non-model folders.
pub fn inspect_path(path: &Path) -> Result<Inspection> {
    let meta = fs::metadata(path).map_err(|e| HubError::io(path, e))?;
    if meta.is_file() {
        return inspect_file(path, meta.len());
    }
    inspect_dir(path)
}

fn ext_lower(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase())
}

fn inspect_file(path: &Path, len: u64) -> Result<Inspection> {
    match ext_lower(path).as_deref() {
        Some("safetensors") => {}
        Some(ext) if PICKLE_EXTS.contains(&ext) => {
            return Err(HubError::PickleRejected { path: path.to_path_buf(), ext: ext.to_string() });
        }
        _ => {
            return Err(HubError::UnsupportedFile { path: path.to_path_buf() });
        }
    }
    let keys = safetensors_keys(path)?;
    let mut notes = Vec::new();
    let family = family_from_checkpoint_keys(&keys);
    match family {
        None => notes.push("could not tell the architecture from the tensor names (not an SD 1.x/2.x/XL full checkpoint?)".into()),
        Some(Family::Sd2) => notes.push(
            "SD 2.x single files may be 768px v-prediction or 512px epsilon (\"base\"); assuming 768px \
             v-prediction - override the resolution/prediction if images come out wrong"
                .into(),
        ),
        _ => {}
    }
    Ok(Inspection {
        layout: Layout::SingleFile,
        components: Vec::new(),
        missing: Vec::new(),
        family,
        config_defaults: None,
        onnx: false,
        size_bytes: len,
        notes,
    })
}

/// Tensor names from a safetensors header, without reading the tensors.
pub(crate) fn safetensors_keys(path: &Path) -> Result<Vec<String>> {
    let bad = |detail: String| HubError::BadConfig { path: path.to_path_buf(), detail };
    let mut f = fs::File::open(path).map_err(|e| HubError::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| bad(format!("not a safetensors file (no 8-byte header length: {e})")))?;
    let n = u64::from_le_bytes(len);
    // The format caps headers at 100 MB; anything larger is corrupt or not safetensors.
    if n > 100_000_000 {
        return Err(bad(format!("not a safetensors file (header length {n} is implausible)")));
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf).map_err(|e| bad(format!("safetensors header is truncated ({e})")))?;
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&buf).map_err(|e| bad(format!("safetensors header is not valid JSON ({e})")))?;
    Ok(v.into_iter().map(|(k, _)| k).filter(|k| k != "__metadata__").collect())
}

/// Family of an original-layout (LDM) full checkpoint, from its text-encoder keys.
fn family_from_checkpoint_keys(keys: &[String]) -> Option<Family> {
    let has = |p: &str| keys.iter().any(|k| k.starts_with(p));
    if has("conditioner.embedders.1.") {
        Some(Family::Sdxl)
    } else if has("cond_stage_model.model.") {
        Some(Family::Sd2)
    } else if has("cond_stage_model.transformer.") {
        Some(Family::Sd1)
    } else {
        None
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = fs::read(path).map_err(|e| HubError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| HubError::BadConfig { path: path.to_path_buf(), detail: e.to_string() })
}

/// Parsed `model_index.json`: pipeline class and `component -> class` (null entries dropped).
pub(crate) struct ModelIndex {
    pub class_name: Option<String>,
    pub components: BTreeMap<String, String>,
}

pub(crate) fn parse_model_index(value: &serde_json::Value, path: &Path) -> Result<ModelIndex> {
    let obj = value
        .as_object()
        .ok_or_else(|| HubError::BadConfig { path: path.to_path_buf(), detail: "model_index.json is not a JSON object".into() })?;
    let mut components = BTreeMap::new();
    for (k, v) in obj {
        if k.starts_with('_') {
            continue;
        }
        // Components are `["library", "Class"]`; `[null, null]` means "not used".
        if let Some([lib, class]) = v.as_array().map(|a| a.as_slice())
            && !lib.is_null()
            && let Some(class) = class.as_str()
        {
            components.insert(k.clone(), class.to_string());
        }
    }
    Ok(ModelIndex { class_name: obj.get("_class_name").and_then(|v| v.as_str()).map(str::to_string), components })
}

/// Variant label of a weight file name, `None` when unsuffixed.
///
/// `diffusion_pytorch_model.fp16.safetensors` → `fp16`; shards
/// (`model.fp16-00001-of-00002.safetensors`) and plain files are handled alike.
pub(crate) fn weight_variant(file_name: &str) -> Option<Option<String>> {
    let stem = file_name.strip_suffix(".safetensors")?;
    let stem = strip_shard_suffix(stem);
    Some(stem.rsplit_once('.').map(|(_, v)| v.to_string()))
}

fn strip_shard_suffix(stem: &str) -> &str {
    // `-00001-of-00002`
    if let Some((head, tail)) = stem.rsplit_once("-of-")
        && tail.len() == 5
        && tail.bytes().all(|b| b.is_ascii_digit())
        && let Some((base, idx)) = head.rsplit_once('-')
        && idx.len() == 5
        && idx.bytes().all(|b| b.is_ascii_digit())
    {
        return base;
    }
    stem
}

/// Variant of a sharded-weights index: `x.safetensors.index.json` → None, `x.safetensors.index.fp16.json` → fp16.
pub(crate) fn index_variant(file_name: &str) -> Option<Option<String>> {
    let rest = file_name.split_once(".safetensors.index")?.1;
    match rest {
        ".json" => Some(None),
        _ => rest.strip_prefix('.')?.strip_suffix(".json").map(|v| Some(v.to_string())),
    }
}

/// Display label for a variant (unsuffixed files are called `fp32`).
pub(crate) fn variant_label(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "fp32".to_string())
}

/// Size of a file with symlinks followed; `None` for dangling links (a partial HF download).
fn file_size(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len())
}

/// Sum of file sizes under `dir`, symlinks followed, each target counted once.
pub(crate) fn dir_size(dir: &Path, seen: &mut HashSet<PathBuf>) -> u64 {
    let mut total = 0;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::metadata(&p) else { continue };
        if m.is_dir() {
            total += dir_size(&p, seen);
        } else if m.is_file() {
            let key = fs::canonicalize(&p).unwrap_or(p);
            if seen.insert(key) {
                total += m.len();
            }
        }
    }
    total
}

fn has_onnx(dir: &Path, depth: u32) -> bool {
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() { depth > 0 && has_onnx(&p, depth - 1) } else { ext_lower(&p).as_deref() == Some("onnx") }
    })
}

fn inspect_dir(path: &Path) -> Result<Inspection> {
    let index_path = path.join("model_index.json");
    let onnx_dir = path.join("onnx");
    let onnx = (onnx_dir.is_dir() && has_onnx(&onnx_dir, 3)) || has_onnx(path, 1);
    if !index_path.is_file() {
        if onnx {
            return Ok(onnx_only(path));
        }
        return Err(not_a_model(path));
    }
    let index = parse_model_index(&read_json(&index_path)?, &index_path)?;
    let mut components = Vec::new();
    let mut missing = Vec::new();
    let mut seen = HashSet::new();
    for (name, class) in &index.components {
        let c = inspect_component(path, name, class, &mut seen)?;
        if !c.complete && !c.optional {
            missing.push(describe_missing(path, &c));
        }
        components.push(c);
    }
    let any_safetensors = components.iter().any(|c| !c.variants.is_empty());
    let layout = if !any_safetensors && onnx { Layout::Onnx } else { Layout::Diffusers };
    if layout == Layout::Onnx {
        // ONNX exports carry weights inside the .onnx files; only presence is checked.
        missing.clear();
    }
    let (family, config_defaults, notes) = family_from_configs(path, index.class_name.as_deref());
    let size_bytes = dir_size(path, &mut HashSet::new());
    Ok(Inspection { layout, components, missing, family, config_defaults, onnx, size_bytes, notes })
}

fn not_a_model(path: &Path) -> HubError {
    // A common mistake is pointing at the HF cache repo folder instead of a snapshot.
    let hint = if path.join("snapshots").is_dir() {
        format!(" (this looks like a Hugging Face cache repo folder: use one of `{}/snapshots/<revision>`)", path.display())
    } else if fs::read_dir(path).is_ok_and(|rd| rd.flatten().any(|e| ext_lower(&e.path()).is_some_and(|x| x == "safetensors"))) {
        " (it contains .safetensors files: pass one of them directly for a single-file checkpoint)".to_string()
    } else {
        String::new()
    };
    HubError::NotAModelFolder { path: path.to_path_buf(), hint }
}

fn onnx_only(path: &Path) -> Inspection {
    let mut components = Vec::new();
    let base = if path.join("onnx").is_dir() { path.join("onnx") } else { path.to_path_buf() };
    if let Ok(rd) = fs::read_dir(&base) {
        let mut names: Vec<_> = rd.flatten().filter(|e| e.path().is_dir() && has_onnx(&e.path(), 0)).collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let mut seen = HashSet::new();
            components.push(ComponentInfo {
                name: e.file_name().to_string_lossy().into_owned(),
                class_name: None,
                kind: ComponentKind::Model,
                variants: Vec::new(),
                onnx: true,
                complete: true,
                optional: false,
                size_bytes: dir_size(&e.path(), &mut seen),
            });
        }
    }
    Inspection {
        layout: Layout::Onnx,
        components,
        missing: Vec::new(),
        family: None,
        config_defaults: None,
        onnx: true,
        size_bytes: dir_size(path, &mut HashSet::new()),
        notes: vec!["ONNX export without model_index.json: family and completeness were not checked".into()],
    }
}

fn describe_missing(root: &Path, c: &ComponentInfo) -> String {
    let dir = root.join(&c.name);
    if !dir.is_dir() {
        return format!("{}/ folder", c.name);
    }
    match c.kind {
        ComponentKind::Model if dir.join("config.json").is_file() => {
            format!("{} weights (.safetensors)", c.name)
        }
        ComponentKind::Model => format!("{}/config.json", c.name),
        ComponentKind::Scheduler => format!("{}/scheduler_config.json", c.name),
        ComponentKind::Tokenizer => format!("{} vocabulary files", c.name),
        ComponentKind::Processor => format!("{}/preprocessor_config.json", c.name),
    }
}

fn inspect_component(root: &Path, name: &str, class: &str, seen: &mut HashSet<PathBuf>) -> Result<ComponentInfo> {
    let kind = ComponentKind::from_class(class);
    let dir = root.join(name);
    let optional = OPTIONAL_COMPONENTS.contains(&name);
    let mut info = ComponentInfo {
        name: name.to_string(),
        class_name: Some(class.to_string()),
        kind,
        variants: Vec::new(),
        onnx: false,
        complete: false,
        optional,
        size_bytes: 0,
    };
    if !dir.is_dir() {
        return Ok(info);
    }
    info.size_bytes = dir_size(&dir, seen);
    let present = |f: &str| file_size(&dir.join(f)).is_some();
    info.onnx = has_onnx(&dir, 0);
    info.complete = match kind {
        ComponentKind::Scheduler => present("scheduler_config.json"),
        ComponentKind::Processor => present("preprocessor_config.json"),
        ComponentKind::Tokenizer => {
            (present("vocab.json") && present("merges.txt")) || present("tokenizer.json") || present("spiece.model")
        }
        ComponentKind::Model => {
            info.variants = complete_variants(&dir)?;
            present("config.json") && (!info.variants.is_empty() || info.onnx)
        }
    };
    Ok(info)
}

/// Variants whose weight files are all present in a model component folder.
fn complete_variants(dir: &Path) -> Result<Vec<String>> {
    let mut groups: BTreeMap<Option<String>, (bool, bool)> = BTreeMap::new(); // (has single file, has shards)
    let mut indexes: Vec<(Option<String>, PathBuf)> = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    for e in rd.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if let Some(v) = index_variant(&fname) {
            indexes.push((v, p));
        } else if let Some(v) = weight_variant(&fname) {
            if file_size(&p).is_none() {
                continue; // dangling symlink: download never finished
            }
            let stem = fname.trim_end_matches(".safetensors");
            let sharded = strip_shard_suffix(stem) != stem;
            let g = groups.entry(v).or_default();
            if sharded {
                g.1 = true;
            } else {
                g.0 = true;
            }
        }
    }
    let mut out = BTreeSet::new();
    for (v, (single, _)) in &groups {
        if *single {
            out.insert(variant_label(v));
        }
    }
    // A sharded set is complete only when every shard its index names is present.
    for (v, idx) in indexes {
        let Ok(json) = read_json(&idx) else { continue };
        let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
            continue;
        };
        let shards: BTreeSet<&str> = map.values().filter_map(|s| s.as_str()).collect();
        if !shards.is_empty() && shards.iter().all(|s| file_size(&dir.join(s)).is_some()) {
            out.insert(variant_label(&v));
        }
    }
    Ok(out.into_iter().collect())
}

fn json_at(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Family and config-derived defaults of a diffusers folder.
fn family_from_configs(root: &Path, class_name: Option<&str>) -> (Option<Family>, Option<Defaults>, Vec<String>) {
    let mut notes = Vec::new();
    let unet = json_at(&root.join("unet/config.json"));
    let cross = unet.as_ref().and_then(|u| u.get("cross_attention_dim")).and_then(|v| v.as_u64());
    let te = json_at(&root.join("text_encoder/config.json"));
    let te_hidden = te.as_ref().and_then(|t| t.get("hidden_size").and_then(|v| v.as_u64()));
    // Unusual widths (small custom models): OpenCLIP-trained encoders use gelu, OpenAI CLIP quick_gelu.
    let te_act = te.as_ref().and_then(|t| t.get("hidden_act").and_then(|v| v.as_str()).map(str::to_string));
    let is_sd_class = class_name.is_some_and(|c| c.starts_with("StableDiffusion"));
    let is_xl_class = class_name.is_some_and(|c| c.contains("XL"));
    let family = match (cross, te_hidden) {
        _ if is_xl_class => Some(Family::Sdxl),
        (Some(2048), _) => Some(Family::Sdxl),
        (Some(1024), _) | (None, Some(1024)) => Some(Family::Sd2),
        (Some(768), _) | (None, Some(768)) => Some(Family::Sd1),
        _ if is_sd_class && te_act.as_deref() == Some("gelu") => Some(Family::Sd2),
        _ if is_sd_class && te_act.as_deref() == Some("quick_gelu") => Some(Family::Sd1),
        _ => None,
    };
    if class_name == Some(KLEIN_CLASS) {
        notes.push(format!("pipeline {KLEIN_CLASS}: FLUX.2 [klein], not a Stable Diffusion family"));
        return (None, Some(KLEIN_DEFAULTS), notes);
    }
    let Some(family) = family else {
        notes.push(format!(
            "pipeline {} is not a Stable Diffusion 1.x/2.x/XL pipeline plantain recognises",
            class_name.unwrap_or("(unnamed)")
        ));
        return (None, None, notes);
    };
    let mut d = family_defaults(family);
    if let Some(size) = unet.as_ref().and_then(|u| u.get("sample_size")).and_then(|v| v.as_u64()) {
        // Latents are 1/8 of the image in every SD VAE; smaller VAEs (plantain-nano) say so
        // by their number of blocks.
        let vae = json_at(&root.join("vae/config.json"));
        let blocks = vae.as_ref().and_then(|v| v.get("block_out_channels")).and_then(|v| v.as_array()).map(|a| a.len()).unwrap_or(4);
        d.resolution = (size << blocks.saturating_sub(1).min(6)) as u32;
    }
    let sched = json_at(&root.join("scheduler/scheduler_config.json"));
    match sched.as_ref().and_then(|s| s.get("prediction_type")).and_then(|v| v.as_str()) {
        Some("v_prediction") => d.prediction = Prediction::VPrediction,
        Some("epsilon") => d.prediction = Prediction::Epsilon,
        Some(other) => notes.push(format!("scheduler prediction_type `{other}` is not supported by plantain")),
        None => {}
    }
    (Some(family), Some(d), notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flux2_klein_folder_is_complete_and_not_an_sd_family() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny/flux2-klein");
        let insp = inspect_path(&dir).unwrap();
        assert!(insp.complete(), "missing: {:?}", insp.missing);
        assert_eq!(insp.family, None);
        assert!(insp.notes.iter().any(|n| n.contains("Flux2KleinPipeline")), "{:?}", insp.notes);
        assert_eq!(insp.config_defaults, Some(crate::known::KLEIN_DEFAULTS), "a local klein folder gets klein's defaults");
    }

    #[test]
    fn variant_names() {
        assert_eq!(weight_variant("diffusion_pytorch_model.safetensors"), Some(None));
        assert_eq!(weight_variant("diffusion_pytorch_model.fp16.safetensors"), Some(Some("fp16".into())));
        assert_eq!(weight_variant("model.fp16-00001-of-00002.safetensors"), Some(Some("fp16".into())));
        assert_eq!(weight_variant("model-00001-of-00002.safetensors"), Some(None));
        assert_eq!(weight_variant("model.bin"), None);
        assert_eq!(index_variant("model.safetensors.index.json"), Some(None));
        assert_eq!(index_variant("model.safetensors.index.fp16.json"), Some(Some("fp16".into())));
        assert_eq!(index_variant("config.json"), None);
    }
}
