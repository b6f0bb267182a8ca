//! Resolving what a user names as `--model` to a model on disk, listing downloaded models,
//! and pulling models from the Hugging Face Hub.
//!
//! # What `--model` accepts, and the order it is read in
//!
//! [`resolve`] never uses the network. It reads the spec like this, first match wins:
//!
//! 1. `hf:owner/name[@rev]` (or `hf:short-name`): always the hub, even if a local folder
//!    has the same relative path.
//! 2. Anything written as a path: starts with `/`, `./`, `../` or `~`, contains `\`, has
//!    more than one `/`, or ends in `.safetensors` / `.onnx` / a pickle extension. It must
//!    exist. Accepted: a diffusers folder (with `model_index.json`), a single `.safetensors`
//!    checkpoint, or a folder with ONNX exports. `.ckpt`/`.pt`/`.pth`/`.bin` pickles are
//!    refused, because unpickling can run arbitrary code.
//! 3. A known short name (`sd15`, `sd21`, `sd-turbo`, `sdxl`, `sdxl-turbo`, `plantain-nano`;
//!    case and `-`/`_`/`.` are ignored, so `SD-1.5` works), optionally `@rev`. A folder in
//!    the current directory with the same name does **not** shadow it; write `./sdxl` for that.
//! 4. `owner/name[@rev]`: if a folder with that relative path exists (and no `@rev` was
//!    given) **the local folder wins**, as in diffusers' `from_pretrained`; a note says so.
//!    Otherwise it is a hub repo id.
//! 5. Any other single word: an existing file/folder of that name in the current
//!    directory, else an "unknown model name" error with a "did you mean …?" suggestion.
//!
//! A hub model (short name or repo id) is then looked up, in order, in:
//! `$PLANTAIN_MODELS/<short-name>`, `$PLANTAIN_MODELS/<owner>/<name>`,
//! `$PLANTAIN_MODELS/<owner>--<name>` (only without `@rev`, as plain folders have no
//! revisions), then the Hugging Face cache snapshot (`HF_HUB_CACHE`, else `$HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`, the same place Python tools use) for `refs/<rev>`
//! (default `main`) or the commit id given. A missing model is a [`HubError::NotCached`]
//! error naming `plantain pull NAME` and the copy-a-folder alternative; a half-downloaded
//! one is [`HubError::Incomplete`]. `plantain-nano` is never on the hub: it comes from
//! `PLANTAIN_NANO_DIR` / [`ResolveOptions::nano_dir`], else `$PLANTAIN_MODELS/plantain-nano`.
//!
//! [`pull`] downloads with the `hf-hub` 1.0 crate into the same cache; see [`pull`] for
//! what is fetched and how it behaves without network.

mod cache;
mod error;
mod inspect;
mod known;
mod pull;
mod resolve;

pub use cache::{
    CacheDirs, CacheKind, CachedModel, PLANTAIN_MODELS_ENV, PLANTAIN_NANO_DIR_ENV, hf_cache_dir, hf_cache_dir_from, list_cached,
    offline_from_env, plantain_home, repo_folder_name,
};
pub use error::{HubError, Result};
pub use inspect::{ComponentInfo, ComponentKind, Inspection, Layout, OPTIONAL_COMPONENTS, inspect_path};
pub use known::{
    Defaults, Family, KLEIN_DEFAULTS, KNOWN_MODELS, KnownModel, KnownSource, Prediction, family_defaults, find_known, find_known_repo,
    known_names, suggest,
};
pub use pull::{PullEvent, PullOptions, Variant, pull, pull_async};
pub use resolve::{Origin, ResolveOptions, ResolvedModel, resolve};
