//! Turning what the user typed after `--model` into a model on disk.
//!
//! Never touches the network: a hub model that is not downloaded yet is an error that
//! says how to download it, so `plantain generate` never starts a multi-GB download
//! by surprise.

use std::path::{Path, PathBuf};

use crate::cache::{CacheDirs, CacheHit, PLANTAIN_MODELS_ENV, PLANTAIN_NANO_DIR_ENV, expand_home, find_snapshot, plain_dir_candidates};
use crate::error::{HubError, Result};
use crate::inspect::{ComponentInfo, Inspection, Layout, PICKLE_EXTS, inspect_path};
use crate::known::{Defaults, Family, KnownModel, KnownSource, family_defaults, find_known, find_known_repo, known_names, suggest};

/// Where the resolved files were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A snapshot in the Hugging Face cache.
    HfCache,
    /// A folder under `PLANTAIN_MODELS`.
    ModelsDir,
    /// A path the user gave.
    LocalPath,
    /// The plantain-nano folder.
    Bundled,
}

/// A model ready to hand to the engine.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// What the user typed.
    pub spec: String,
    /// Name to show: short name, repo id, or the path.
    pub display_name: String,
    /// The short-name table entry, when this is a known model.
    pub known: Option<&'static KnownModel>,
    pub repo_id: Option<String>,
    /// Commit id of the HF cache snapshot used.
    pub revision: Option<String>,
    /// Folder (diffusers / ONNX) or file (single checkpoint) to load.
    pub path: PathBuf,
    pub origin: Origin,
    pub layout: Layout,
    /// `None` when it could not be determined (unusual single files, non-SD pipelines).
    pub family: Option<Family>,
    /// Steps/guidance/resolution to use when the user does not say.
    pub defaults: Defaults,
    pub licence: Option<&'static str>,
    pub components: Vec<ComponentInfo>,
    /// ONNX exports are present (alongside safetensors, or as the only weights).
    pub onnx: bool,
    pub size_bytes: u64,
    /// Assumptions and surprises worth printing (shadowed names, guessed defaults, …).
    pub notes: Vec<String>,
}

/// Where [`resolve`] looks.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    pub dirs: CacheDirs,
    /// plantain-nano's folder (`PLANTAIN_NANO_DIR`); else `$PLANTAIN_MODELS/plantain-nano`.
    pub nano_dir: Option<PathBuf>,
    /// Base for relative paths; the process's current directory when `None`.
    pub base_dir: Option<PathBuf>,
}

impl ResolveOptions {
    /// From `HF_HUB_CACHE`/`HF_HOME`/…, `PLANTAIN_MODELS` and `PLANTAIN_NANO_DIR`.
    pub fn from_env() -> Self {
        ResolveOptions {
            dirs: CacheDirs::from_env(),
            nano_dir: std::env::var(PLANTAIN_NANO_DIR_ENV).ok().filter(|v| !v.is_empty()).map(PathBuf::from),
            base_dir: None,
        }
    }

    /// Explicit HF cache and nothing else, which is what tests and embedders usually want.
    pub fn with_hf_cache(hf_cache: impl Into<PathBuf>) -> Self {
        ResolveOptions { dirs: CacheDirs { hf_cache: hf_cache.into(), models_dir: None }, nano_dir: None, base_dir: None }
    }

    fn abs(&self, p: &Path) -> PathBuf {
        let p = if let Some(s) = p.to_str() { expand_home(s, &|k| std::env::var(k).ok()) } else { p.to_path_buf() };
        match &self.base_dir {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        }
    }
}

/// How a spec string was read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Spec {
    /// Written as a path: `/x`, `./x`, `../x`, `~/x`, `a/b/c`, `x.safetensors`, …
    Path(PathBuf),
    /// A short name from the table, maybe with `@revision`.
    Known { model: &'static str, revision: Option<String> },
    /// `owner/name[@revision]`; `forced` when written `hf:owner/name`.
    Repo { repo_id: String, revision: Option<String>, forced: bool },
    /// A single word that is not a known name: an existing relative path, or a typo.
    Bare(String),
}

fn valid_repo_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
        && !s.contains("--")
        && !s.contains("..")
}

fn invalid(spec: &str, reason: &str) -> HubError {
    HubError::InvalidSpec { spec: spec.to_string(), reason: reason.to_string() }
}

/// Classify a spec. See the crate docs for the rules and their order.
pub(crate) fn parse_spec(spec: &str) -> Result<Spec> {
    let s = spec.trim();
    if s.is_empty() {
        return Err(invalid(spec, "it is empty; pass a model name, a hub id (owner/name) or a path"));
    }
    if let Some(rest) = s.strip_prefix("hf:") {
        let (base, revision) = split_revision(spec, rest)?;
        if let Some(k) = find_known(base).filter(|_| !base.contains('/')) {
            return Ok(Spec::Known { model: k.name, revision });
        }
        let Some((owner, name)) = base.split_once('/') else {
            return Err(invalid(spec, "after `hf:` put a hub repo id like owner/name"));
        };
        if !valid_repo_part(owner) || !valid_repo_part(name) {
            return Err(invalid(spec, "not a valid hub repo id (letters, digits, `-`, `_`, `.`; owner/name)"));
        }
        return Ok(Spec::Repo { repo_id: base.to_string(), revision, forced: true });
    }
    let path_like = s.starts_with(['/', '~', '\\'])
        || s.starts_with("./")
        || s.starts_with("../")
        || s == "."
        || s == ".."
        || s.contains('\\')
        || s.as_bytes().get(1) == Some(&b':') // Windows drive letter
        || Path::new(s).extension().and_then(|e| e.to_str()).is_some_and(|e| {
            let e = e.to_ascii_lowercase();
            e == "safetensors" || e == "onnx" || PICKLE_EXTS.contains(&e.as_str())
        });
    if path_like {
        return Ok(Spec::Path(PathBuf::from(s)));
    }
    let (base, revision) = match s.split_once('@') {
        Some(_) => split_revision(spec, s)?,
        None => (s, None),
    };
    match base.matches('/').count() {
        0 => match find_known(base) {
            Some(k) => Ok(Spec::Known { model: k.name, revision }),
            None if revision.is_some() => {
                Err(HubError::UnknownName { name: base.to_string(), suggestion: suggest(base).map(str::to_string), known: known_names() })
            }
            None => Ok(Spec::Bare(s.to_string())),
        },
        1 => {
            let (owner, name) = base.split_once('/').unwrap_or_default();
            if valid_repo_part(owner) && valid_repo_part(name) {
                Ok(Spec::Repo { repo_id: base.to_string(), revision, forced: false })
            } else if revision.is_some() {
                Err(invalid(spec, "not a valid hub repo id before `@`"))
            } else {
                Ok(Spec::Path(PathBuf::from(s)))
            }
        }
        _ if revision.is_none() => Ok(Spec::Path(PathBuf::from(s))),
        _ => Err(invalid(spec, "hub repo ids have exactly one `/` (owner/name)")),
    }
}

fn split_revision<'a>(spec: &str, s: &'a str) -> Result<(&'a str, Option<String>)> {
    match s.split_once('@') {
        None => Ok((s, None)),
        Some((base, rev)) => {
            if rev.is_empty() || rev.contains(char::is_whitespace) || rev.contains('@') {
                return Err(invalid(spec, "`@` must be followed by a branch, tag or commit id (e.g. owner/name@main)"));
            }
            Ok((base, Some(rev.to_string())))
        }
    }
}

/// Resolve `--model` to files on disk. Never uses the network.
///
/// See the crate documentation for the lookup order.
pub fn resolve(spec: &str, opts: &ResolveOptions) -> Result<ResolvedModel> {
    match parse_spec(spec)? {
        Spec::Path(p) => {
            let abs = opts.abs(&p);
            if !abs.exists() {
                return Err(HubError::PathNotFound { path: abs, known: known_names() });
            }
            local(spec, &abs, Origin::LocalPath, None, None, Vec::new())
        }
        Spec::Bare(word) => {
            let abs = opts.abs(Path::new(&word));
            if abs.exists() {
                return local(spec, &abs, Origin::LocalPath, None, None, Vec::new());
            }
            Err(HubError::UnknownName { name: word.clone(), suggestion: suggest(&word).map(str::to_string), known: known_names() })
        }
        Spec::Known { model, revision } => {
            let k = find_known(model).expect("parse_spec only returns table names");
            match k.source {
                KnownSource::Bundled => {
                    if revision.is_some() {
                        return Err(invalid(spec, "plantain-nano ships with plantain and has no revisions"));
                    }
                    resolve_nano(spec, k, opts)
                }
                KnownSource::Hub(repo) => resolve_hub(spec, k.name, repo, revision.as_deref(), opts),
            }
        }
        Spec::Repo { repo_id, revision, forced } => {
            // Like diffusers' from_pretrained: an existing local folder with that relative
            // path wins over the hub id. `hf:` opts out.
            let local_dir = opts.abs(Path::new(&repo_id));
            if !forced && revision.is_none() && local_dir.exists() {
                let note =
                    format!("`{repo_id}` is a local folder here, so it was used instead of the hub repo; write hf:{repo_id} for the hub");
                return local(spec, &local_dir, Origin::LocalPath, None, None, vec![note]);
            }
            let name = find_known_repo(&repo_id).map(|k| k.name).unwrap_or(&repo_id).to_string();
            resolve_hub(spec, &name, &repo_id, revision.as_deref(), opts)
        }
    }
}

impl ResolveOptions {
    /// [`ResolveOptions::from_env`], plus the plantain-nano folder that ships in the repository
    /// (`models/plantain-nano`) when the environment names none: found next to the running
    /// binary's build tree (`target/{release,debug}/…`), under the current directory, or where
    /// this crate was built from — so the shipped default resolves by its name from any folder.
    pub fn for_this_install() -> ResolveOptions {
        let mut opts = ResolveOptions::from_env();
        if opts.nano_dir.is_some() {
            return opts;
        }
        let mut candidates = Vec::new();
        if let Ok(exe) = std::env::current_exe() {
            candidates.extend(exe.ancestors().skip(3).take(1).map(|root| root.join("models/plantain-nano")));
        }
        candidates.push(PathBuf::from("models/plantain-nano"));
        candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/plantain-nano"));
        let from_models_dir = opts.dirs.models_dir.as_ref().map(|d| d.join("plantain-nano")).filter(|d| d.is_dir());
        opts.nano_dir = from_models_dir.or_else(|| candidates.into_iter().find(|c| c.join("model_index.json").is_file()));
        opts
    }
}

fn resolve_nano(spec: &str, k: &'static KnownModel, opts: &ResolveOptions) -> Result<ResolvedModel> {
    let dir = opts.nano_dir.clone().or_else(|| opts.dirs.models_dir.as_ref().map(|d| d.join("plantain-nano")));
    let Some(dir) = dir else {
        return Err(HubError::NanoNotFound { tried: None });
    };
    let dir = opts.abs(&dir);
    if !dir.exists() {
        return Err(HubError::NanoNotFound { tried: Some(dir) });
    }
    local(spec, &dir, Origin::Bundled, Some(k), None, Vec::new())
}

fn resolve_hub(spec: &str, name: &str, repo_id: &str, revision: Option<&str>, opts: &ResolveOptions) -> Result<ResolvedModel> {
    let known = find_known_repo(repo_id);
    let mut searched = Vec::new();
    // PLANTAIN_MODELS holds plain folders without revisions, so it only answers revision-less specs.
    if let Some(dir) = &opts.dirs.models_dir {
        if revision.is_none() {
            for cand in plain_dir_candidates(dir, known.map(|k| k.name), Some(repo_id)) {
                if cand.exists() {
                    let mut m = local(spec, &cand, Origin::ModelsDir, known, None, Vec::new())?;
                    m.repo_id = Some(repo_id.to_string());
                    return Ok(m);
                }
            }
        }
        searched.push(format!("{} ({PLANTAIN_MODELS_ENV})", dir.display()));
    }
    let cache = &opts.dirs.hf_cache;
    searched.push(format!("{} (Hugging Face cache)", cache.display()));
    match find_snapshot(cache, repo_id, revision) {
        CacheHit::Snapshot { path, commit, note } => {
            let insp = inspect_path(&path)?;
            if !insp.complete() {
                return Err(HubError::Incomplete {
                    name: name.to_string(),
                    path,
                    missing: insp.missing,
                    fix: format!("Run `plantain pull {name}` to finish the download"),
                });
            }
            let mut m = build(spec, &path, Origin::HfCache, known, Some(repo_id.to_string()), insp, Vec::new());
            m.revision = Some(commit);
            m.notes.extend(note);
            Ok(m)
        }
        CacheHit::Miss => Err(HubError::NotCached {
            name: name.to_string(),
            repo_id: repo_id.to_string(),
            revision: revision.map(str::to_string),
            searched: searched.join(" and "),
        }),
    }
}

/// Repo id encoded in an HF cache snapshot path (`…/models--owner--name/snapshots/<sha>`).
fn repo_from_cache_path(path: &Path) -> Option<String> {
    let mut comps = path.components().rev().map(|c| c.as_os_str().to_string_lossy().into_owned());
    let _sha = comps.next()?;
    if comps.next()? != "snapshots" {
        return None;
    }
    comps.next()?.strip_prefix("models--").map(|r| r.replace("--", "/"))
}

fn local(
    spec: &str,
    path: &Path,
    origin: Origin,
    known: Option<&'static KnownModel>,
    repo_id: Option<String>,
    notes: Vec<String>,
) -> Result<ResolvedModel> {
    let insp = inspect_path(path)?;
    if !insp.complete() {
        let fix = match (origin, known.and_then(|k| k.repo_id())) {
            (Origin::ModelsDir, Some(_)) | (Origin::LocalPath, Some(_)) => format!(
                "Copy the missing files again, or remove the folder and run `plantain pull {}`",
                known.map(|k| k.name).unwrap_or(spec)
            ),
            _ => "Copy or download the missing files again".to_string(),
        };
        return Err(HubError::Incomplete { name: spec.to_string(), path: path.to_path_buf(), missing: insp.missing, fix });
    }
    // A snapshot path typed by hand still gets the known model's defaults.
    let repo_id = repo_id.or_else(|| repo_from_cache_path(path));
    let known = known.or_else(|| repo_id.as_deref().and_then(find_known_repo));
    Ok(build(spec, path, origin, known, repo_id, insp, notes))
}

fn build(
    spec: &str,
    path: &Path,
    origin: Origin,
    known: Option<&'static KnownModel>,
    repo_id: Option<String>,
    insp: Inspection,
    mut notes: Vec<String>,
) -> ResolvedModel {
    notes.extend(insp.notes);
    let family = match (known.and_then(|k| k.family), insp.family) {
        (Some(k), Some(f)) if k != f => {
            notes.push(format!(
                "the table says {} is {}, but its configs look like {}; using the configs",
                known.map(|k| k.name).unwrap_or("?"),
                k.short_name(),
                f.short_name()
            ));
            Some(f)
        }
        (k, f) => f.or(k),
    };
    let defaults = match (known.and_then(|k| k.defaults), insp.config_defaults, family) {
        (Some(d), _, _) => d,
        (None, Some(d), _) => d,
        (None, None, Some(f)) => family_defaults(f),
        (None, None, None) => {
            let d = family_defaults(Family::Sd1);
            notes.push(format!("family unknown; using SD 1.5 defaults ({}px, {} steps, guidance {})", d.resolution, d.steps, d.guidance));
            d
        }
    };
    let display_name = match (known, &repo_id) {
        (Some(k), _) => k.name.to_string(),
        (None, Some(r)) if origin != Origin::LocalPath => r.clone(),
        _ => path.display().to_string(),
    };
    ResolvedModel {
        spec: spec.to_string(),
        display_name,
        known,
        repo_id,
        revision: None,
        path: path.to_path_buf(),
        origin,
        layout: insp.layout,
        family,
        defaults,
        licence: known.map(|k| k.licence),
        components: insp.components,
        onnx: insp.onnx,
        size_bytes: insp.size_bytes,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        use Spec::*;
        let known = |m: &'static str, r: Option<&str>| Known { model: m, revision: r.map(str::to_string) };
        let repo = |id: &str, r: Option<&str>, forced| Repo { repo_id: id.into(), revision: r.map(str::to_string), forced };
        assert_eq!(parse_spec("sd-turbo").unwrap(), known("sd-turbo", None));
        assert_eq!(parse_spec(" SDXL ").unwrap(), known("sdxl", None));
        assert_eq!(parse_spec("sd15@fp16").unwrap(), known("sd15", Some("fp16")));
        assert_eq!(parse_spec("stabilityai/sd-turbo").unwrap(), repo("stabilityai/sd-turbo", None, false));
        assert_eq!(parse_spec("a/b@v1.0").unwrap(), repo("a/b", Some("v1.0"), false));
        assert_eq!(parse_spec("hf:a/b").unwrap(), repo("a/b", None, true));
        assert_eq!(parse_spec("hf:sd-turbo").unwrap(), known("sd-turbo", None));
        assert_eq!(parse_spec("./a/b").unwrap(), Path("./a/b".into()));
        assert_eq!(parse_spec("/m/x.ckpt").unwrap(), Path("/m/x.ckpt".into()));
        assert_eq!(parse_spec("model.safetensors").unwrap(), Path("model.safetensors".into()));
        assert_eq!(parse_spec("a/b/c").unwrap(), Path("a/b/c".into()));
        assert_eq!(parse_spec("my models/x").unwrap(), Path("my models/x".into()));
        assert_eq!(parse_spec("mymodel").unwrap(), Bare("mymodel".into()));
        assert!(matches!(parse_spec(""), Err(HubError::InvalidSpec { .. })));
        assert!(matches!(parse_spec("a/b@"), Err(HubError::InvalidSpec { .. })));
        assert!(matches!(parse_spec("hf:nope"), Err(HubError::InvalidSpec { .. })));
        assert!(matches!(parse_spec("sd-turob@main"), Err(HubError::UnknownName { .. })));
    }

    #[test]
    fn cache_path_to_repo() {
        let p = Path::new("/c/hub/models--stabilityai--sd-turbo/snapshots/abc");
        assert_eq!(repo_from_cache_path(p).as_deref(), Some("stabilityai/sd-turbo"));
        assert_eq!(repo_from_cache_path(Path::new("/x/y/z")), None);
    }
}
