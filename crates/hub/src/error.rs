//! One error type for resolving and pulling models. Every message names the
//! thing that failed (path, name, repo) and says what the user can do about it,
//! because these errors end up printed verbatim by `plantain` on the command line.

use std::path::PathBuf;
use std::time::Duration;

/// Shorthand used across the crate.
pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// What went wrong while turning `--model` into files on disk, or while downloading them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// A spec written as a path (`./x`, `/x`, `x.safetensors`, …) names nothing on disk.
    #[error(
        "model path `{}` does not exist. Pass a diffusers folder (one with model_index.json), \
         a .safetensors file, a folder with onnx/ exports, a known name ({known}), or a hub id like owner/name",
        path.display()
    )]
    PathNotFound { path: PathBuf, known: String },

    /// Pickle checkpoints can execute code when loaded, so they are never opened.
    #[error(
        "`{}` is a pickle checkpoint (.{ext}); plantain only loads .safetensors because unpickling can run \
         arbitrary code. Download the .safetensors version of this model, or convert it once in a sandbox \
         (e.g. diffusers' convert scripts, or `safetensors` convert) and pass the .safetensors file",
        path.display()
    )]
    PickleRejected { path: PathBuf, ext: String },

    /// A file with an extension plantain cannot load at all.
    #[error(
        "`{}` is not a model file plantain can load: expected a .safetensors file, or a folder with \
         model_index.json (diffusers layout) or onnx/ exports",
        path.display()
    )]
    UnsupportedFile { path: PathBuf },

    /// A folder that exists but holds no recognisable model layout.
    #[error(
        "folder `{}` is not a model: it has no model_index.json (diffusers layout), no onnx/ exports and no \
         .safetensors checkpoint. Point --model at the folder that contains model_index.json{hint}",
        path.display()
    )]
    NotAModelFolder { path: PathBuf, hint: String },

    /// A diffusers folder whose `model_index.json` (or a component config) cannot be parsed.
    #[error("cannot read `{}`: {detail}. The download may be truncated; re-run `plantain pull` or re-copy the folder", path.display())]
    BadConfig { path: PathBuf, detail: String },

    /// A bare word that is neither a known model name nor an existing path.
    #[error("unknown model name `{name}`{}. Known names: {known}; or pass a hub id (owner/name) or a local path",
        suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownName { name: String, suggestion: Option<String>, known: String },

    /// A spec that cannot be parsed (empty, bad characters, `@` without a revision, …).
    #[error("cannot understand model spec `{spec}`: {reason}")]
    InvalidSpec { spec: String, reason: String },

    /// A hub model that has not been downloaded to any cache this machine knows of.
    #[error(
        "model `{name}` (hub repo {repo_id}{}) is not downloaded: looked in {searched}. \
         Run `plantain pull {name}` to download it, or download it on a machine with internet \
         (e.g. `huggingface-cli download {repo_id}`) and pass `--model /path/to/folder`",
        revision.as_ref().map(|r| format!(" @ {r}")).unwrap_or_default()
    )]
    NotCached { name: String, repo_id: String, revision: Option<String>, searched: String },

    /// A model folder or cached snapshot that is missing files a pipeline needs (an interrupted
    /// download, a partial copy, or a partial download made by another tool).
    #[error(
        "model `{name}` at `{}` is incomplete (missing: {}). {fix}",
        path.display(), missing.join(", ")
    )]
    Incomplete {
        name: String,
        path: PathBuf,
        missing: Vec<String>,
        /// What to do about it; depends on where the folder came from.
        fix: String,
    },

    /// `plantain-nano` ships with plantain rather than on the hub; the caller did not say where.
    #[error(
        "plantain-nano was not found{}: it ships in the plantain repository as models/plantain-nano, \
         found next to the build tree or under the current directory. Point PLANTAIN_NANO_DIR (or \
         PLANTAIN_MODELS, containing plantain-nano/) at that folder, train one with `plantain train \
         nano`, or pass --model with another model (e.g. a local SD-Turbo folder)",
        tried.as_ref().map(|p| format!(" (`{}` does not exist)", p.display())).unwrap_or_default()
    )]
    NanoNotFound { tried: Option<PathBuf> },

    /// Something that is not a hub model was given to `pull`.
    #[error("`{spec}` cannot be pulled: {reason}")]
    NotPullable { spec: String, reason: String },

    /// `HF_HUB_OFFLINE` is set and the model is not already complete in the cache.
    #[error(
        "HF_HUB_OFFLINE is set, so `{name}` ({repo_id}) was not downloaded. Unset HF_HUB_OFFLINE to download, \
         or download it elsewhere and pass `--model /path/to/folder`"
    )]
    Offline { name: String, repo_id: String },

    /// No connection to the hub (DNS failure, refused, firewall, timeout). Returned quickly
    /// rather than retried for minutes, because the fix is on the user's side.
    #[error(
        "cannot reach the Hugging Face Hub at {endpoint} to download `{name}` (gave up after {elapsed:.1?}: {detail}). \
         Without network, download the model on another machine (e.g. `huggingface-cli download {repo_id}`), \
         copy the folder here and pass `--model /path/to/folder`; or copy that machine's Hugging Face cache \
         and point HF_HOME at it. Set HF_ENDPOINT if you use a mirror"
    )]
    Unreachable { endpoint: String, name: String, repo_id: String, detail: String, elapsed: Duration },

    /// The repo does not exist, or is private and no token was sent.
    #[error(
        "hub repo `{repo_id}` was not found at {endpoint}. Check the spelling; if the repo is private, \
         set HF_TOKEN to a token that can read it"
    )]
    RepoNotFound { repo_id: String, endpoint: String },

    /// The branch, tag or commit does not exist in the repo.
    #[error(
        "revision `{revision}` does not exist in hub repo `{repo_id}` (or the repo itself does not exist); \
         check the branch, tag or commit id"
    )]
    RevisionNotFound { repo_id: String, revision: String },

    /// Gated repos need the licence accepted on the website and a token.
    #[error(
        "access to hub repo `{repo_id}` was refused ({detail}): it may not exist (the hub answers 401 for unknown \
         repos), be private, or be gated. Check the spelling; for a gated model accept its licence at \
         {endpoint}/{repo_id} and set HF_TOKEN to a read token of that account"
    )]
    AccessDenied { repo_id: String, endpoint: String, detail: String },

    /// Pull only understands diffusers-layout repos.
    #[error(
        "hub repo `{repo_id}` has no model_index.json, so it is not a diffusers pipeline; plantain pull only \
         fetches diffusers-layout repos. Download a single .safetensors file yourself and pass it with --model"
    )]
    NotDiffusers { repo_id: String },

    /// A component only has pickle (or flax) weights on the hub.
    #[error(
        "component `{component}` of `{repo_id}` has no .safetensors weights (found: {found}); plantain only \
         loads safetensors because pickle files can run code. Try another revision of the repo"
    )]
    NoSafetensors { repo_id: String, component: String, found: String },

    /// No byte arrived for a long time during a download.
    #[error(
        "download of `{name}` stalled: no data for {} s. Files finished so far are kept; run `plantain pull {name}` \
         again to continue",
        after.as_secs()
    )]
    Stalled { name: String, after: Duration },

    /// Any other hub failure, with hf-hub's own description.
    #[error("hub request for `{repo_id}` failed: {source}")]
    Hub {
        repo_id: String,
        #[source]
        source: hf_hub::HFError,
    },

    /// Filesystem trouble, with the path involved.
    #[error("I/O error on `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io { path: path.into(), source }
    }
}
