//! LoRA adapters applied to a model's weights when its graphs are built.
//!
//! A LoRA file holds, per adapted module, a low-rank pair `down` (`[r, in, …]`) and `up`
//! (`[out, r, …]`) and optionally `alpha`; the adapted weight is
//! `W + scale · alpha / r · up @ down`. The sum is a graph node over the checkpoint's and the
//! LoRA file's tensors, both read in place, which ONNX Runtime folds once when the session is
//! created: the base checkpoint is never copied or rewritten.
//!
//! Key naming, as people have the files:
//! - kohya (`lora_unet_…`, `lora_te_…`, SDXL `lora_te1_…`/`lora_te2_…`, with `.lora_down.weight`,
//!   `.lora_up.weight`, `.alpha`): module paths with `.` written as `_`; SDXL UNet modules by the
//!   original checkpoint's block names (`lora_unet_input_blocks_4_1_…`);
//! - diffusers/PEFT (`unet.…`, `text_encoder.…`, `text_encoder_2.…` with `.lora_A.weight` /
//!   `.lora_B.weight`, or the older `.lora.down.weight` / `.lora.up.weight`): module paths as
//!   diffusers names them; without an `alpha` the scale is 1, as diffusers loads them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::TensorIndex;
use super::single_file::unet_name_from_ldm;
use crate::error::{EngineError, Result};
use crate::graph::StoredTensor;

/// One LoRA file and the strength it is applied at (`FILE[:SCALE]` on the command line).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub scale: f32,
}

impl LoraSpec {
    /// Reads `FILE` or `FILE:SCALE` (scale 1 when absent; a colon not followed by a number is
    /// part of the path).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        if let Some((path, scale)) = s.rsplit_once(':')
            && let Ok(scale) = scale.trim().parse::<f32>()
        {
            if !scale.is_finite() {
                return Err(format!("LoRA `{s}`: the scale must be a finite number"));
            }
            return Ok(Self { path: PathBuf::from(path), scale });
        }
        if s.is_empty() {
            return Err("a LoRA needs a file path (FILE or FILE:SCALE)".into());
        }
        Ok(Self { path: PathBuf::from(s), scale: 1.0 })
    }
}

/// A low-rank update of one weight: `scale · up @ down`, reshaped to the weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    pub down: StoredTensor,
    pub up: StoredTensor,
    pub scale: f32,
}

impl Patch {
    pub fn rank(&self) -> usize {
        self.down.shape[0]
    }
}

/// The part of a pipeline a LoRA module adapts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Unet,
    TextEncoder,
    TextEncoder2,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Unet => "UNet",
            Target::TextEncoder => "text encoder",
            Target::TextEncoder2 => "second text encoder",
        }
    }
}

/// How a module is named in the file.
#[derive(Clone, Debug, PartialEq)]
enum ModulePath {
    /// diffusers' dotted module path (`down_blocks.0.attentions.0.proj_in`).
    Dotted(String),
    /// kohya's path with `_` for `.`.
    Kohya(String),
}

/// One adapted module as read from the file.
#[derive(Debug)]
struct Module {
    key: String,
    target: Target,
    path: ModulePath,
    down: Option<StoredTensor>,
    up: Option<StoredTensor>,
    alpha: Option<f32>,
}

/// The weight indexes a LoRA may adapt, and what kohya's SDXL names need.
pub struct Components<'a> {
    pub unet: &'a mut TensorIndex,
    pub text_encoder: &'a mut TensorIndex,
    pub text_encoder_2: Option<&'a mut TensorIndex>,
    /// The UNet's layers per block (to read original-checkpoint block numbers).
    pub layers_per_block: usize,
}

fn mismatch(file: &Path, key: &str, reason: String) -> EngineError {
    EngineError::LoraMismatch { file: file.to_path_buf(), key: key.to_string(), reason }
}

/// Applies every LoRA in `specs`, in order, to `parts`. Nothing is applied unless every module
/// of every file fits: the error names the file and its first key (in sorted order) that
/// does not.
pub fn apply(parts: Components<'_>, specs: &[LoraSpec]) -> Result<usize> {
    let Components { unet, text_encoder, mut text_encoder_2, layers_per_block } = parts;
    let mut planned: Vec<(Target, String, Patch)> = Vec::new();
    for spec in specs {
        let modules = read_modules(&spec.path)?;
        let mut names = Names::default();
        for m in modules.values() {
            let index: &TensorIndex = match m.target {
                Target::Unet => unet,
                Target::TextEncoder => text_encoder,
                Target::TextEncoder2 => text_encoder_2
                    .as_deref()
                    .ok_or_else(|| mismatch(&spec.path, &m.key, "the model has no second text encoder (is this an SDXL LoRA?)".into()))?,
            };
            let weight = names
                .resolve(m, index, layers_per_block)
                .ok_or_else(|| mismatch(&spec.path, &m.key, format!("no weight of the model's {} has this name", m.target.name())))?;
            let patch = fit(&spec.path, m, index, &weight, spec.scale)?;
            planned.push((m.target, weight, patch));
        }
        tracing::info!(file = %spec.path.display(), modules = modules.len(), scale = spec.scale, "LoRA fits the model");
    }
    let count = planned.len();
    for (target, weight, patch) in planned {
        match target {
            Target::Unet => unet.add_patch(weight, patch),
            Target::TextEncoder => text_encoder.add_patch(weight, patch),
            Target::TextEncoder2 => {
                if let Some(te2) = text_encoder_2.as_deref_mut() {
                    te2.add_patch(weight, patch)
                }
            }
        }
    }
    Ok(count)
}

/// Checks a module's pair against the weight it adapts and makes its patch.
fn fit(file: &Path, m: &Module, index: &TensorIndex, weight: &str, scale: f32) -> Result<Patch> {
    let (Some(down), Some(up)) = (&m.down, &m.up) else {
        let which = if m.down.is_none() { "down (lora_down / lora_A)" } else { "up (lora_up / lora_B)" };
        return Err(mismatch(file, &m.key, format!("the {which} half of the pair is missing")));
    };
    let w = &index.get(weight).expect("resolved names exist").shape;
    let rest = |s: &[usize]| s.iter().skip(1).product::<usize>();
    let rank = down.shape.first().copied().unwrap_or(0);
    let fits = rank > 0 && up.shape.first() == w.first() && rest(&up.shape) == rank && rest(&down.shape) == rest(w);
    if !fits {
        return Err(mismatch(
            file,
            &m.key,
            format!("down {:?} and up {:?} do not fit the weight `{weight}` of shape {w:?}", down.shape, up.shape),
        ));
    }
    let alpha = m.alpha.unwrap_or(rank as f32);
    Ok(Patch { down: down.clone(), up: up.clone(), scale: scale * alpha / rank as f32 })
}

/// Lookup tables from kohya names to weight names, built once per index when first needed.
#[derive(Default)]
struct Names {
    kohya: HashMap<Target, HashMap<String, String>>,
}

impl Names {
    fn resolve(&mut self, m: &Module, index: &TensorIndex, layers_per_block: usize) -> Option<String> {
        match &m.path {
            ModulePath::Dotted(p) => {
                let name = format!("{p}.weight");
                index.get(&name).is_some().then_some(name)
            }
            ModulePath::Kohya(k) => {
                let table = self.kohya.entry(m.target).or_insert_with(|| kohya_table(index));
                if let Some(name) = table.get(k) {
                    return Some(name.clone());
                }
                let diffusers = (m.target == Target::Unet).then(|| ldm_kohya_to_diffusers(k, layers_per_block)).flatten()?;
                table.get(&diffusers.trim_end_matches(".weight").replace('.', "_")).cloned()
            }
        }
    }
}

/// Every `.weight` of an index by its kohya spelling.
fn kohya_table(index: &TensorIndex) -> HashMap<String, String> {
    index.names().filter_map(|n| n.strip_suffix(".weight").map(|m| (m.replace('.', "_"), n.clone()))).collect()
}

/// Resnet parts of an original UNet block, as kohya writes them and as the checkpoint does.
const LDM_RESNET: &[(&str, &str)] = &[
    ("in_layers_0", "in_layers.0"),
    ("in_layers_2", "in_layers.2"),
    ("emb_layers_1", "emb_layers.1"),
    ("out_layers_0", "out_layers.0"),
    ("out_layers_3", "out_layers.3"),
    ("skip_connection", "skip_connection"),
];

/// kohya's name of an original-checkpoint UNet module (`input_blocks_4_1_transformer_blocks_0_…`)
/// as the diffusers weight name it becomes.
fn ldm_kohya_to_diffusers(k: &str, layers_per_block: usize) -> Option<String> {
    let numbers = |s: &str, n: usize| -> Option<(Vec<usize>, String)> {
        let mut parts = s.splitn(n + 1, '_');
        let nums = (0..n).map(|_| parts.next()?.parse().ok()).collect::<Option<Vec<usize>>>()?;
        Some((nums, parts.next().unwrap_or("").to_string()))
    };
    let (head, tail) = if let Some(r) = k.strip_prefix("input_blocks_") {
        let (n, t) = numbers(r, 2)?;
        (format!("input_blocks.{}.{}", n[0], n[1]), t)
    } else if let Some(r) = k.strip_prefix("output_blocks_") {
        let (n, t) = numbers(r, 2)?;
        (format!("output_blocks.{}.{}", n[0], n[1]), t)
    } else if let Some(r) = k.strip_prefix("middle_block_") {
        let (n, t) = numbers(r, 1)?;
        (format!("middle_block.{}", n[0]), t)
    } else {
        let top = [("time_embed_0", "time_embed.0"), ("time_embed_2", "time_embed.2"), ("label_emb_0_0", "label_emb.0.0")];
        let top = top.iter().chain(&[("label_emb_0_2", "label_emb.0.2"), ("out_2", "out.2")]).find(|(a, _)| *a == k)?;
        return unet_name_from_ldm(&format!("{}.weight", top.1), layers_per_block);
    };
    let tail = LDM_RESNET.iter().find(|(a, _)| *a == tail).map_or(tail.clone(), |(_, b)| b.to_string());
    let dotted = if tail.is_empty() { format!("{head}.weight") } else { format!("{head}.{tail}.weight") };
    unet_name_from_ldm(&dotted, layers_per_block)
}

/// The suffixes of a LoRA pair's tensors and which half each is.
const DOWN: &[&str] = &[".lora_down.weight", ".lora_A.weight", ".lora.down.weight"];
const UP: &[&str] = &[".lora_up.weight", ".lora_B.weight", ".lora.up.weight"];

/// Reads a LoRA file's modules, keyed (and so checked) in sorted order.
fn read_modules(path: &Path) -> Result<BTreeMap<String, Module>> {
    if !path.is_file() {
        return Err(EngineError::MissingFile { what: "LoRA file".into(), looked_for: vec![path.to_path_buf()] });
    }
    let index = TensorIndex::open(path)?;
    if index.is_empty() {
        return Err(mismatch(path, "(none)", "the file holds no tensors".into()));
    }
    let mut names: Vec<&String> = index.names().collect();
    names.sort();
    let mut modules: BTreeMap<String, Module> = BTreeMap::new();
    for name in names {
        let t = index.get(name).expect("listed");
        let (base, part) = split_key(name).ok_or_else(|| {
            mismatch(
                path,
                name,
                "not a LoRA tensor plantain reads (kohya lora_down/lora_up/alpha or diffusers/PEFT lora_A/lora_B; \
                 LoHa, LoKr and full-weight adapters are not supported)"
                    .into(),
            )
        })?;
        let m = match modules.get_mut(base) {
            Some(m) => m,
            None => {
                let (target, mpath) = module_of(base).ok_or_else(|| {
                    mismatch(path, name, "names neither a UNet nor a text-encoder module (lora_unet_/lora_te_/unet./text_encoder.)".into())
                })?;
                modules.entry(base.to_string()).or_insert(Module {
                    key: name.clone(),
                    target,
                    path: mpath,
                    down: None,
                    up: None,
                    alpha: None,
                })
            }
        };
        match part {
            Part::Down => m.down = Some(t.clone()),
            Part::Up => m.up = Some(t.clone()),
            Part::Alpha => m.alpha = Some(read_scalar(t).map_err(|e| EngineError::io(path, e))?),
        }
    }
    Ok(modules)
}

enum Part {
    Down,
    Up,
    Alpha,
}

fn split_key(name: &str) -> Option<(&str, Part)> {
    let find = |list: &[&str]| list.iter().find_map(|s| name.strip_suffix(s));
    if let Some(b) = find(DOWN) {
        return Some((b, Part::Down));
    }
    if let Some(b) = find(UP) {
        return Some((b, Part::Up));
    }
    name.strip_suffix(".alpha").map(|b| (b, Part::Alpha))
}

/// Which component a module key adapts, and its path there.
fn module_of(base: &str) -> Option<(Target, ModulePath)> {
    let kohya = [
        ("lora_unet_", Target::Unet),
        ("lora_te1_", Target::TextEncoder),
        ("lora_te2_", Target::TextEncoder2),
        ("lora_te_", Target::TextEncoder),
    ];
    for (prefix, target) in kohya {
        if let Some(rest) = base.strip_prefix(prefix) {
            return Some((target, ModulePath::Kohya(rest.to_string())));
        }
    }
    let dotted = [("unet.", Target::Unet), ("text_encoder_2.", Target::TextEncoder2), ("text_encoder.", Target::TextEncoder)];
    dotted.into_iter().find_map(|(prefix, target)| base.strip_prefix(prefix).map(|rest| (target, ModulePath::Dotted(rest.to_string()))))
}

/// A stored scalar (`alpha`) as f32.
fn read_scalar(t: &StoredTensor) -> std::io::Result<f32> {
    if t.numel() != 1 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("alpha has shape {:?}, expected one number", t.shape)));
    }
    Ok(super::quant::read_f32(t)?[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_a_file_and_an_optional_scale() {
        assert_eq!(LoraSpec::parse("a.safetensors").unwrap(), LoraSpec { path: "a.safetensors".into(), scale: 1.0 });
        assert_eq!(LoraSpec::parse("dir/a.safetensors:0.7").unwrap(), LoraSpec { path: "dir/a.safetensors".into(), scale: 0.7 });
        assert_eq!(LoraSpec::parse("C:odd").unwrap().path, PathBuf::from("C:odd"));
        assert!(LoraSpec::parse("a:inf").is_err());
        assert!(LoraSpec::parse("").is_err());
    }

    #[test]
    fn keys_name_their_component() {
        assert!(matches!(module_of("lora_unet_down_blocks_0_attentions_0_proj_in"), Some((Target::Unet, ModulePath::Kohya(_)))));
        assert!(matches!(module_of("lora_te2_text_model_encoder_layers_0_mlp_fc1"), Some((Target::TextEncoder2, _))));
        assert!(matches!(module_of("text_encoder_2.text_model.x"), Some((Target::TextEncoder2, ModulePath::Dotted(_)))));
        assert!(module_of("transformer.blocks.0").is_none());
        assert!(split_key("lora_unet_x.hada_w1_a").is_none());
    }

    #[test]
    fn original_block_names_map_to_diffusers_ones() {
        // SDXL: 2 layers per block; input block 4 is the second stage's first attention.
        let got = ldm_kohya_to_diffusers("input_blocks_4_1_transformer_blocks_0_attn1_to_q", 2).unwrap();
        assert_eq!(got, "down_blocks.1.attentions.0.transformer_blocks_0_attn1_to_q.weight");
        let got = ldm_kohya_to_diffusers("output_blocks_0_0_in_layers_2", 2).unwrap();
        assert_eq!(got, "up_blocks.0.resnets.0.conv1.weight");
        assert_eq!(ldm_kohya_to_diffusers("time_embed_0", 2).unwrap(), "time_embedding.linear_1.weight");
        assert!(ldm_kohya_to_diffusers("input_blocks_x_1_proj_in", 2).is_none());
    }
}
