//! Where downloaded models live, and reading those places.
//!
//! plantain uses the standard Hugging Face cache layout
//! (`<cache>/models--owner--name/{refs,snapshots,blobs}`) so that models pulled by
//! Python tools (`huggingface-cli download`, diffusers) are found, and models pulled
//! by plantain are usable from Python. `PLANTAIN_MODELS` is an optional plain folder
//! of model folders, for people who copy models around by hand.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::inspect::{ComponentInfo, Layout, dir_size, inspect_path};
use crate::known::{KNOWN_MODELS, KnownSource, find_known_repo};

/// Env var naming a plain folder of model folders (`<dir>/sd-turbo/`, `<dir>/owner/name/`).
pub const PLANTAIN_MODELS_ENV: &str = "PLANTAIN_MODELS";
/// Env var naming the plantain-nano folder.
pub const PLANTAIN_NANO_DIR_ENV: &str = "PLANTAIN_NANO_DIR";

/// Hugging Face hub cache directory, in the order `huggingface_hub` uses:
/// `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`,
/// `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> PathBuf {
    hf_cache_dir_from(&|k| std::env::var(k).ok())
}

/// [`hf_cache_dir`] with the environment passed in, so it can be tested without mutating it.
pub fn hf_cache_dir_from(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(v) = get("HF_HUB_CACHE").or_else(|| get("HUGGINGFACE_HUB_CACHE")) {
        return expand_home(&v, env);
    }
    if let Some(v) = get("HF_HOME") {
        return expand_home(&v, env).join("hub");
    }
    if let Some(v) = get("XDG_CACHE_HOME") {
        return expand_home(&v, env).join("huggingface").join("hub");
    }
    let home = get("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("huggingface").join("hub")
}

pub(crate) fn expand_home(p: &str, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = env("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    PathBuf::from(p)
}

/// `HF_HUB_OFFLINE` truthiness, as `huggingface_hub` reads it (1/ON/YES/TRUE).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| is_truthy(&v))
}

pub(crate) fn is_truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

/// `owner/name` → `models--owner--name`.
pub fn repo_folder_name(repo_id: &str) -> String {
    format!("models--{}", repo_id.replace('/', "--"))
}

/// `models--owner--name` → `owner/name` (what `huggingface_hub` does).
fn repo_id_from_folder(folder: &str) -> Option<String> {
    folder.strip_prefix("models--").map(|r| r.replace("--", "/"))
}

/// A full commit id, as opposed to a branch or tag name.
pub(crate) fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Outcome of looking a repo up in the HF cache.
#[derive(Debug)]
pub(crate) enum CacheHit {
    /// Snapshot folder and its commit id.
    Snapshot { path: PathBuf, commit: String, note: Option<String> },
    /// Nothing usable cached.
    Miss,
}

/// Find the snapshot for `repo_id` at `revision` (default `main`) in an HF cache.
///
/// Branch/tag names go through `refs/<name>`. If `refs/main` is missing but snapshots
/// exist (caches copied without refs, or made by tools that skip refs), the most recently
/// modified snapshot is used and a note says so.
pub(crate) fn find_snapshot(cache: &Path, repo_id: &str, revision: Option<&str>) -> CacheHit {
    let repo_dir = cache.join(repo_folder_name(repo_id));
    let snapshots = repo_dir.join("snapshots");
    let rev = revision.unwrap_or("main");
    let commit = if is_commit_hash(rev) {
        Some(rev.to_ascii_lowercase())
    } else {
        fs::read_to_string(repo_dir.join("refs").join(rev)).ok().map(|s| s.trim().to_string())
    };
    if let Some(commit) = commit {
        let path = snapshots.join(&commit);
        if path.is_dir() {
            return CacheHit::Snapshot { path, commit, note: None };
        }
        return CacheHit::Miss;
    }
    if revision.is_some() {
        return CacheHit::Miss;
    }
    let newest = fs::read_dir(&snapshots)
        .ok()
        .and_then(|rd| rd.flatten().filter(|e| e.path().is_dir()).max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok()));
    match newest {
        Some(e) => {
            let commit = e.file_name().to_string_lossy().into_owned();
            CacheHit::Snapshot {
                path: e.path(),
                note: Some(format!("{} has no refs/main in the cache; using the newest snapshot {commit}", repo_id)),
                commit,
            }
        }
        None => CacheHit::Miss,
    }
}

/// Candidate folders for a model inside a `PLANTAIN_MODELS` dir.
pub(crate) fn plain_dir_candidates(dir: &Path, short: Option<&str>, repo_id: Option<&str>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(s) = short {
        v.push(dir.join(s));
    }
    if let Some(r) = repo_id {
        v.push(dir.join(r));
        v.push(dir.join(r.replace('/', "--")));
    }
    v
}

/// Where a cached model was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CacheKind {
    /// The standard Hugging Face hub cache.
    HfCache,
    /// A folder under `PLANTAIN_MODELS`.
    ModelsDir,
}

/// One model on disk, for `plantain models`.
#[derive(Debug, Clone, Serialize)]
pub struct CachedModel {
    /// Short name when it is a known model, else the repo id or folder name.
    pub name: String,
    pub repo_id: Option<String>,
    /// Snapshot commit id (HF cache only).
    pub revision: Option<String>,
    /// Branches/tags in `refs/` that point at this snapshot.
    pub refs: Vec<String>,
    pub path: PathBuf,
    pub kind: CacheKind,
    pub layout: Option<Layout>,
    /// Bytes on disk used by this snapshot's files.
    pub size_bytes: u64,
    pub components: Vec<ComponentInfo>,
    /// Variants every required component has complete (`fp32` = unsuffixed files).
    pub variants: Vec<String>,
    /// Complete enough to load.
    pub complete: bool,
    /// What is missing (empty when complete), or why it cannot be read.
    pub missing: Vec<String>,
}

/// Where to look for models.
#[derive(Debug, Clone)]
pub struct CacheDirs {
    /// HF hub cache (see [`hf_cache_dir`]).
    pub hf_cache: PathBuf,
    /// `PLANTAIN_MODELS`, if set.
    pub models_dir: Option<PathBuf>,
}

impl CacheDirs {
    /// From the environment.
    pub fn from_env() -> Self {
        CacheDirs {
            hf_cache: hf_cache_dir(),
            models_dir: std::env::var(PLANTAIN_MODELS_ENV).ok().filter(|v| !v.is_empty()).map(PathBuf::from),
        }
    }
}

/// Every image model on disk: HF cache snapshots that are diffusers pipelines (or known repos),
/// and model folders/files under `PLANTAIN_MODELS`. Other HF cache entries (LLMs, datasets) are
/// skipped so the list stays about what plantain can load.
pub fn list_cached(dirs: &CacheDirs) -> Vec<CachedModel> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(&dirs.hf_cache) {
        let mut repos: Vec<_> = rd.flatten().collect();
        repos.sort_by_key(|e| e.file_name());
        for repo in repos {
            let folder = repo.file_name().to_string_lossy().into_owned();
            let Some(repo_id) = repo_id_from_folder(&folder) else {
                continue;
            };
            list_repo(&repo.path(), &repo_id, &mut out);
        }
    }
    if let Some(dir) = &dirs.models_dir {
        list_models_dir(dir, &mut out);
    }
    out
}

fn name_for(repo_id: &str) -> String {
    find_known_repo(repo_id).map(|k| k.name.to_string()).unwrap_or_else(|| repo_id.to_string())
}

fn list_repo(repo_dir: &Path, repo_id: &str, out: &mut Vec<CachedModel>) {
    let known = find_known_repo(repo_id).is_some();
    let mut refs: Vec<(String, String)> = Vec::new();
    collect_refs(&repo_dir.join("refs"), "", &mut refs);
    let Ok(rd) = fs::read_dir(repo_dir.join("snapshots")) else {
        return;
    };
    let mut snaps: Vec<_> = rd.flatten().filter(|e| e.path().is_dir()).collect();
    snaps.sort_by_key(|e| e.file_name());
    for snap in snaps {
        let path = snap.path();
        if !known && !path.join("model_index.json").is_file() {
            continue;
        }
        let commit = snap.file_name().to_string_lossy().into_owned();
        let mut m = describe(name_for(repo_id), Some(repo_id.to_string()), path, CacheKind::HfCache);
        m.refs = refs.iter().filter(|(_, c)| *c == commit).map(|(r, _)| r.clone()).collect();
        m.revision = Some(commit);
        out.push(m);
    }
}

fn collect_refs(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.path().is_dir() {
            collect_refs(&e.path(), &format!("{name}/"), out);
        } else if let Ok(c) = fs::read_to_string(e.path()) {
            out.push((name, c.trim().to_string()));
        }
    }
}

fn looks_like_model(p: &Path) -> bool {
    if p.is_file() {
        return p.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    }
    p.join("model_index.json").is_file() || p.join("onnx").is_dir()
}

fn list_models_dir(dir: &Path, out: &mut Vec<CachedModel>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let fname = e.file_name().to_string_lossy().into_owned();
        if looks_like_model(&p) {
            let repo_id = KNOWN_MODELS
                .iter()
                .find(|k| k.name == fname)
                .and_then(|k| match k.source {
                    KnownSource::Hub(r) => Some(r.to_string()),
                    KnownSource::Bundled => None,
                })
                .or_else(|| fname.contains("--").then(|| fname.replacen("--", "/", 1)));
            let name = repo_id.as_deref().map(name_for).unwrap_or(fname);
            out.push(describe(name, repo_id, p, CacheKind::ModelsDir));
        } else if p.is_dir() {
            // `<dir>/owner/name/`
            let Ok(inner) = fs::read_dir(&p) else {
                continue;
            };
            let mut inner: Vec<_> = inner.flatten().filter(|i| looks_like_model(&i.path())).collect();
            inner.sort_by_key(|i| i.file_name());
            for i in inner {
                let rel = format!("{fname}/{}", i.file_name().to_string_lossy());
                if i.path().is_dir() {
                    out.push(describe(name_for(&rel), Some(rel), i.path(), CacheKind::ModelsDir));
                } else {
                    out.push(describe(rel, None, i.path(), CacheKind::ModelsDir));
                }
            }
        }
    }
}

fn describe(name: String, repo_id: Option<String>, path: PathBuf, kind: CacheKind) -> CachedModel {
    let mut m = CachedModel {
        name,
        repo_id,
        revision: None,
        refs: Vec::new(),
        path: path.clone(),
        kind,
        layout: None,
        size_bytes: 0,
        components: Vec::new(),
        variants: Vec::new(),
        complete: false,
        missing: Vec::new(),
    };
    match inspect_path(&path) {
        Ok(i) => {
            m.layout = Some(i.layout);
            m.size_bytes = i.size_bytes;
            m.complete = i.complete();
            m.missing = i.missing;
            m.variants = common_variants(&i.components);
            m.components = i.components;
        }
        Err(e) => {
            m.size_bytes = if path.is_dir() { dir_size(&path, &mut HashSet::new()) } else { 0 };
            m.missing = vec![e.to_string()];
        }
    }
    m
}

/// Variants present for every required model component.
fn common_variants(components: &[ComponentInfo]) -> Vec<String> {
    let models: Vec<_> = components.iter().filter(|c| c.kind == crate::inspect::ComponentKind::Model && !c.optional).collect();
    let Some(first) = models.first() else {
        return Vec::new();
    };
    first.variants.iter().filter(|v| models.iter().all(|c| c.variants.contains(v))).cloned().collect()
}

/// Where plantain keeps its own data (provenance keys, the server's database and blobs):
/// `$PLANTAIN_HOME`, else `$XDG_DATA_HOME/plantain`, else `~/.local/share/plantain`; None when
/// none of these is set.
pub fn plantain_home() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("PLANTAIN_HOME")
        .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("plantain")))
        .or_else(|| env("HOME").map(|h| h.join(".local/share/plantain")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_precedence() {
        let env =
            |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        assert_eq!(hf_cache_dir_from(&env(&[("HOME", "/h")])), PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(hf_cache_dir_from(&env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")])), PathBuf::from("/x/huggingface/hub"));
        assert_eq!(hf_cache_dir_from(&env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x"), ("HF_HOME", "~/hf")])), PathBuf::from("/h/hf/hub"));
        assert_eq!(hf_cache_dir_from(&env(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/old")])), PathBuf::from("/old"));
        assert_eq!(
            hf_cache_dir_from(&env(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/old"), ("HF_HUB_CACHE", "/c")])),
            PathBuf::from("/c")
        );
        // Empty values count as unset, as in huggingface_hub.
        assert_eq!(hf_cache_dir_from(&env(&[("HOME", "/h"), ("HF_HOME", "")])), PathBuf::from("/h/.cache/huggingface/hub"));
    }

    #[test]
    fn truthy_and_names() {
        for t in ["1", "on", "YES", "true", " True "] {
            assert!(is_truthy(t), "{t}");
        }
        for f in ["0", "", "off", "no"] {
            assert!(!is_truthy(f), "{f}");
        }
        assert_eq!(repo_folder_name("stabilityai/sd-turbo"), "models--stabilityai--sd-turbo");
        assert_eq!(repo_id_from_folder("models--stabilityai--sd-turbo").as_deref(), Some("stabilityai/sd-turbo"));
        assert!(repo_id_from_folder("datasets--x--y").is_none());
        assert!(is_commit_hash(&"a".repeat(40)));
        assert!(!is_commit_hash("main"));
    }
}
