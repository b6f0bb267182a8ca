//! `plantain pull`: download the files a diffusers pipeline needs into the standard
//! Hugging Face cache, with hf-hub 1.0.
//!
//! Network behaviour is designed around two facts: users without network should be told
//! so in seconds (not after minutes of retries), and multi-GB downloads on a working
//! network must not be killed by a wall-clock limit. So the first request (repo info) is
//! a probe with no retries and a hard time limit, and the download itself runs under a
//! stall watchdog (abort when no byte arrives for `stall_timeout`) instead of a deadline.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use hf_hub::repository::{HFRepository, RepoTypeModel};
use hf_hub::{HFClient, HFError};

use crate::cache::{CacheHit, find_snapshot, hf_cache_dir, is_commit_hash, offline_from_env, repo_folder_name};
use crate::error::{HubError, Result};
use crate::inspect::{ComponentKind, index_variant, inspect_path, parse_model_index, variant_label, weight_variant};
use crate::known::{KnownSource, find_known, find_known_repo, known_names, suggest};
use crate::resolve::{Spec, parse_spec};

/// Which weight files to fetch for each component.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Variant {
    /// `*.fp16.safetensors`: half the download. Falls back to the unsuffixed files for
    /// components that have no fp16 files (diffusers does the same).
    #[default]
    Fp16,
    /// The unsuffixed `*.safetensors` files (fp32 in the SD repos).
    Fp32,
    /// Any other suffix a repo uses (`bf16`, …).
    Other(String),
}

impl Variant {
    /// The file-name suffix, `None` for unsuffixed files.
    pub fn suffix(&self) -> Option<&str> {
        match self {
            Variant::Fp16 => Some("fp16"),
            Variant::Fp32 => None,
            Variant::Other(s) => Some(s),
        }
    }
}

impl FromStr for Variant {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "fp16" | "f16" | "half" => Variant::Fp16,
            "fp32" | "f32" | "full" | "" | "default" => Variant::Fp32,
            other => Variant::Other(other.to_string()),
        })
    }
}

/// Settings for [`pull`].
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// HF hub cache to download into.
    pub cache_dir: PathBuf,
    /// Hub URL; `None` lets hf-hub read `HF_ENDPOINT` (default https://huggingface.co).
    pub endpoint: Option<String>,
    /// Access token; `None` lets hf-hub read `HF_TOKEN`, `HF_TOKEN_PATH` or the saved login.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: never touch the network.
    pub offline: bool,
    pub variant: Variant,
    /// Also fetch ONNX exports (`onnx/`, `*.onnx`, external-data files).
    pub include_onnx: bool,
    /// Components of `model_index.json` not to fetch (e.g. `safety_checker`, 1.2 GB, which
    /// plantain does not run).
    pub skip_components: Vec<String>,
    /// TCP connect limit for every request.
    pub connect_timeout: Duration,
    /// Hard limit for the first contact with the hub; this is what bounds the offline case.
    pub probe_timeout: Duration,
    /// Abort a download when no byte has arrived for this long.
    pub stall_timeout: Duration,
    /// Parallel file downloads.
    pub max_workers: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            cache_dir: hf_cache_dir(),
            endpoint: None,
            token: None,
            offline: false,
            variant: Variant::default(),
            include_onnx: false,
            skip_components: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(120),
            max_workers: 4,
        }
    }
}

impl PullOptions {
    /// Defaults plus `HF_HUB_OFFLINE` and the cache location from the environment.
    pub fn from_env() -> Self {
        PullOptions { cache_dir: hf_cache_dir(), offline: offline_from_env(), ..Default::default() }
    }
}

/// What [`pull`] reports to its progress callback.
#[derive(Debug, Clone, PartialEq)]
pub enum PullEvent {
    /// About to contact the hub.
    Connecting { endpoint: String, repo_id: String },
    /// The revision resolved to this commit.
    Resolved { repo_id: String, commit: String },
    /// Files chosen for download (already-cached ones included).
    Planned { files: usize, bytes: u64 },
    /// A choice worth telling the user about (variant fallbacks, skipped components).
    Note(String),
    /// Throttled to a few per second; only sent when something changed.
    Progress { files_done: usize, files_total: usize, bytes_done: u64, bytes_total: u64 },
    /// Done; the snapshot folder to pass to `--model`.
    Finished { path: PathBuf },
}

/// Where a pull goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PullTarget {
    pub name: String,
    pub repo_id: String,
    pub revision: Option<String>,
}

pub(crate) fn pull_target(spec: &str) -> Result<PullTarget> {
    let not = |reason: String| HubError::NotPullable { spec: spec.to_string(), reason };
    match parse_spec(spec)? {
        Spec::Known { model, revision } => {
            let k = find_known(model).expect("table name");
            match k.source {
                KnownSource::Hub(repo) => Ok(PullTarget { name: k.name.to_string(), repo_id: repo.to_string(), revision }),
                KnownSource::Bundled => {
                    Err(not("plantain-nano ships with plantain and is never downloaded; set PLANTAIN_NANO_DIR to its folder".into()))
                }
            }
        }
        Spec::Repo { repo_id, revision, .. } => {
            let name = find_known_repo(&repo_id).map(|k| k.name.to_string()).unwrap_or_else(|| repo_id.clone());
            Ok(PullTarget { name, repo_id, revision })
        }
        Spec::Path(p) => {
            Err(not(format!("`{}` is a local path, so there is nothing to download; pass it to --model as it is", p.display())))
        }
        Spec::Bare(w) => Err(HubError::UnknownName { suggestion: suggest(&w).map(str::to_string), name: w, known: known_names() }),
    }
}

/// Files chosen from a repo listing.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Selection {
    /// Repo paths and sizes.
    pub files: Vec<(String, u64)>,
    pub notes: Vec<String>,
}

/// Extensions never fetched by default: pickles (unsafe), flax/TF (unused).
const SKIPPED_EXTS: &[&str] = &["bin", "ckpt", "pt", "pth", "pkl", "msgpack", "h5", "ot"];
const ONNX_EXTS: &[&str] = &["onnx", "onnx_data", "pb"];

/// Pick what to download: `model_index.json`, and for each used component its config and
/// vocabulary files plus one complete set of safetensors weights of the wanted variant.
/// Root-level checkpoints (`v1-5-pruned.safetensors`, 4-7 GB) and pickles are never chosen.
pub(crate) fn select_files(
    repo_id: &str,
    tree: &[(String, u64)],
    model_index: &serde_json::Value,
    variant: &Variant,
    include_onnx: bool,
    skip: &[String],
) -> Result<Selection> {
    let index = parse_model_index(model_index, Path::new("model_index.json"))?;
    let mut sel = Selection::default();
    let size_of: HashMap<&str, u64> = tree.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    sel.files.push(("model_index.json".into(), size_of.get("model_index.json").copied().unwrap_or(0)));
    if include_onnx {
        for (p, s) in tree.iter().filter(|(p, _)| p.starts_with("onnx/")) {
            sel.files.push((p.clone(), *s));
        }
    }
    for (comp, class) in &index.components {
        if skip.iter().any(|s| s == comp) {
            sel.notes.push(format!("skipping component `{comp}` as asked"));
            continue;
        }
        let prefix = format!("{comp}/");
        // Direct children only: diffusers components are flat folders.
        let files: Vec<(&str, u64)> =
            tree.iter().filter_map(|(p, s)| p.strip_prefix(&prefix).map(|f| (f, *s))).filter(|(f, _)| !f.contains('/')).collect();
        let mut weights: BTreeMap<Option<String>, Vec<(&str, u64)>> = BTreeMap::new();
        let mut indexes: BTreeMap<Option<String>, (&str, u64)> = BTreeMap::new();
        let mut others_found = Vec::new();
        let mut has_onnx = false;
        for &(f, s) in &files {
            let ext = f.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
            if let Some(v) = index_variant(f) {
                indexes.insert(v, (f, s));
            } else if let Some(v) = weight_variant(f) {
                weights.entry(v).or_default().push((f, s));
            } else if ONNX_EXTS.contains(&ext.as_str()) || f.ends_with(".onnx.data") {
                has_onnx = true;
                if include_onnx {
                    sel.files.push((format!("{prefix}{f}"), s));
                }
            } else if SKIPPED_EXTS.contains(&ext.as_str()) {
                others_found.push(f.to_string());
            } else if matches!(ext.as_str(), "json" | "txt" | "model") {
                // configs, vocab.json, merges.txt, tokenizer.json, spiece.model
                sel.files.push((format!("{prefix}{f}"), s));
            }
        }
        let kind = ComponentKind::from_class(class);
        if kind != ComponentKind::Model {
            continue;
        }
        let wanted = variant.suffix().map(str::to_string);
        let order = [Some(wanted.clone()), Some(None), weights.keys().next().cloned()];
        let chosen = order.into_iter().flatten().find(|v| weights.contains_key(v));
        match chosen {
            Some(v) => {
                if v != wanted {
                    sel.notes.push(format!("`{comp}` has no {} weights; fetching {} instead", variant_label(&wanted), variant_label(&v)));
                }
                for (f, s) in &weights[&v] {
                    sel.files.push((format!("{prefix}{f}"), *s));
                }
                if let Some((f, s)) = indexes.get(&v) {
                    sel.files.push((format!("{prefix}{f}"), *s));
                }
            }
            None if include_onnx && has_onnx => {}
            None => {
                return Err(HubError::NoSafetensors {
                    repo_id: repo_id.to_string(),
                    component: comp.clone(),
                    found: if others_found.is_empty() { "nothing".into() } else { others_found.join(", ") },
                });
            }
        }
    }
    sel.files.sort();
    sel.files.dedup();
    Ok(sel)
}

/// Make a repo path match itself literally under globset (hf-hub's allow_patterns syntax).
fn glob_escape(p: &str) -> String {
    let mut s = String::with_capacity(p.len());
    for c in p.chars() {
        match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '!' => {
                s.push('[');
                s.push(c);
                s.push(']');
            }
            _ => s.push(c),
        }
    }
    s
}

/// Download a model into the HF cache (blocking). Returns the snapshot folder.
///
/// `spec` is a known short name or `owner/name[@rev]`. Fetched: `model_index.json`, and for
/// each component it lists, its config/vocabulary files plus one complete set of
/// `.safetensors` weights of [`PullOptions::variant`] (falling back to another variant for
/// components that lack it, reported as a [`PullEvent::Note`]). Never fetched: pickles
/// (`.bin`, `.ckpt`), flax/TF weights, root-level single-file checkpoints, and ONNX unless
/// [`PullOptions::include_onnx`]. Files land in the standard HF cache layout (blobs +
/// snapshot symlinks + `refs/<rev>`), so Python tools see them too.
///
/// Without network it fails within [`PullOptions::probe_timeout`] (a DNS failure or refused
/// connection takes milliseconds) with [`HubError::Unreachable`], unless a complete copy is
/// already cached, which is then returned with a note. `HF_HUB_OFFLINE` makes no request at
/// all. A download that stops receiving data for [`PullOptions::stall_timeout`] is aborted
/// with [`HubError::Stalled`]; finished files stay cached and a re-run skips them.
///
/// Runs its own tokio runtime on a scoped thread, so it is safe to call from sync code and
/// from inside another runtime. Async callers can use [`pull_async`] directly.
pub fn pull<F>(spec: &str, opts: &PullOptions, progress: F) -> Result<PathBuf>
where
    F: FnMut(&PullEvent) + Send,
{
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| HubError::io("<tokio runtime>", e))?;
            rt.block_on(pull_async(spec, opts, progress))
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Async form of [`pull`]; needs a multi-threaded tokio runtime (hf-hub spawns tasks).
pub async fn pull_async<F>(spec: &str, opts: &PullOptions, mut progress: F) -> Result<PathBuf>
where
    F: FnMut(&PullEvent) + Send,
{
    let target = pull_target(spec)?;
    if opts.offline {
        return offline_answer(&target, opts, &mut progress);
    }
    let started = Instant::now();
    let probe = client(opts, 0, Some(opts.probe_timeout))?;
    let attempt = Attempt {
        target: &target,
        endpoint: probe.endpoint().to_string(),
        rev: target.revision.clone().unwrap_or_else(|| "main".into()),
        started,
        stall_timeout: opts.stall_timeout,
    };
    progress(&PullEvent::Connecting { endpoint: attempt.endpoint.clone(), repo_id: target.repo_id.clone() });
    let commit = match resolve_commit(&probe, &attempt, opts).await {
        Ok(commit) => commit,
        // Like huggingface_hub: without a hub, a complete cached copy is still an answer.
        Err(HubError::Unreachable { detail, .. }) if cached_complete(&target, opts).is_some() => {
            let path = cached_complete(&target, opts).unwrap_or_default();
            progress(&PullEvent::Note(format!(
                "the hub is unreachable ({detail}); using the copy already in the cache, which may be \
                 older than the hub's"
            )));
            progress(&PullEvent::Finished { path: path.clone() });
            return Ok(path);
        }
        Err(e) => return Err(e),
    };
    progress(&PullEvent::Resolved { repo_id: target.repo_id.clone(), commit: commit.clone() });

    // Reachable: the real client keeps hf-hub's retries for transient failures mid-download.
    let hf = client(opts, 3, None)?;
    let (owner, name) = hf_hub::split_id(&target.repo_id);
    let repo = hf.model(owner, name);
    let sel = plan_files(&repo, &commit, &attempt, opts).await?;
    for n in &sel.notes {
        progress(&PullEvent::Note(n.clone()));
    }
    let path = download_files(&repo, &commit, &sel.files, &attempt, opts, &mut progress).await?;
    record_ref(opts, &target.repo_id, &attempt.rev, &commit)?;
    let insp = inspect_path(&path)?;
    if !insp.complete() {
        return Err(HubError::Incomplete {
            name: target.name.clone(),
            path,
            missing: insp.missing,
            fix: format!("The hub repo {} lacks these files at this revision, so plantain cannot load it", target.repo_id),
        });
    }
    progress(&PullEvent::Finished { path: path.clone() });
    Ok(path)
}

/// One pull's context, for the errors of each of its requests: what it pulls, from where,
/// which revision, since when, and how long a request may go without data.
struct Attempt<'a> {
    target: &'a PullTarget,
    endpoint: String,
    rev: String,
    started: Instant,
    stall_timeout: Duration,
}

impl Attempt<'_> {
    /// An hf-hub error as the [`HubError`] that tells the user what went wrong.
    fn hub_error(&self, e: HFError) -> HubError {
        map_err(e, self.target, &self.endpoint, &self.rev, self.started)
    }

    /// The error for a request that received nothing for [`PullOptions::stall_timeout`].
    fn stalled(&self) -> HubError {
        HubError::Stalled { name: self.target.name.clone(), after: self.stall_timeout }
    }

    /// Runs a request that must answer within the stall timeout.
    async fn within_stall<T>(&self, request: impl Future<Output = std::result::Result<T, HFError>>) -> Result<T> {
        tokio::time::timeout(self.stall_timeout, request).await.map_err(|_| self.stalled())?.map_err(|e| self.hub_error(e))
    }
}

/// The first contact with the hub (no retries, [`PullOptions::probe_timeout`] at most): the
/// commit the wanted revision points at.
async fn resolve_commit(probe: &HFClient, attempt: &Attempt<'_>, opts: &PullOptions) -> Result<String> {
    let target = attempt.target;
    let (owner, name) = hf_hub::split_id(&target.repo_id);
    let info = tokio::time::timeout(opts.probe_timeout, probe.model(owner, name).info().maybe_revision(target.revision.clone()).send())
        .await
        .map_err(|_| HubError::Unreachable {
            endpoint: attempt.endpoint.clone(),
            name: target.name.clone(),
            repo_id: target.repo_id.clone(),
            detail: format!("no answer within {} s", opts.probe_timeout.as_secs()),
            elapsed: attempt.started.elapsed(),
        })?
        .map_err(|e| attempt.hub_error(e))?;
    info.sha.ok_or_else(|| HubError::Hub {
        repo_id: target.repo_id.clone(),
        source: HFError::malformed_response("repo info has no commit sha"),
    })
}

/// Lists the repo at `commit`, reads its `model_index.json` and picks the files to fetch
/// ([`select_files`]).
async fn plan_files(repo: &HFRepository<RepoTypeModel>, commit: &str, attempt: &Attempt<'_>, opts: &PullOptions) -> Result<Selection> {
    let target = attempt.target;
    let listing = async {
        let stream = repo.list_tree().revision(commit.to_string()).recursive(true).send()?;
        futures_util::pin_mut!(stream);
        let mut files = Vec::new();
        while let Some(entry) = stream.next().await {
            if let hf_hub::repository::RepoTreeEntry::File { path, size, .. } = entry? {
                files.push((path, size));
            }
        }
        Ok::<_, HFError>(files)
    };
    let tree = attempt.within_stall(listing).await?;
    if !tree.iter().any(|(p, _)| p == "model_index.json") {
        return Err(HubError::NotDiffusers { repo_id: target.repo_id.clone() });
    }
    let index_path = attempt.within_stall(repo.download_file().filename("model_index.json").revision(commit.to_string()).send()).await?;
    let index_bytes = std::fs::read(&index_path).map_err(|e| HubError::io(&index_path, e))?;
    let index: serde_json::Value =
        serde_json::from_slice(&index_bytes).map_err(|e| HubError::BadConfig { path: index_path.clone(), detail: e.to_string() })?;
    select_files(&target.repo_id, &tree, &index, &opts.variant, opts.include_onnx, &opts.skip_components)
}

/// Downloads the planned files (repo paths and sizes) of `commit` into the cache under the
/// stall watchdog, reporting progress a few times a second; returns the snapshot folder.
async fn download_files<F: FnMut(&PullEvent)>(
    repo: &HFRepository<RepoTypeModel>,
    commit: &str,
    files: &[(String, u64)],
    attempt: &Attempt<'_>,
    opts: &PullOptions,
    progress: &mut F,
) -> Result<PathBuf> {
    let bytes_total: u64 = files.iter().map(|(_, s)| s).sum();
    progress(&PullEvent::Planned { files: files.len(), bytes: bytes_total });
    let tracker = Arc::new(Tracker::default());
    let patterns: Vec<String> = files.iter().map(|(p, _)| glob_escape(p)).collect();
    let download = repo
        .snapshot_download()
        .revision(commit.to_string())
        .allow_patterns(patterns)
        .max_workers(opts.max_workers.max(1))
        .progress(Arc::clone(&tracker))
        .send();
    tokio::pin!(download);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = (usize::MAX, u64::MAX);
    let mut last_change = Instant::now();
    let path = loop {
        tokio::select! {
            r = &mut download => break r.map_err(|e| attempt.hub_error(e))?,
            _ = tick.tick() => {
                let now = tracker.totals(files);
                if now != last {
                    last = now;
                    last_change = Instant::now();
                    progress(&PullEvent::Progress {
                        files_done: now.0, files_total: files.len(), bytes_done: now.1, bytes_total,
                    });
                } else if last_change.elapsed() > opts.stall_timeout {
                    return Err(attempt.stalled());
                }
            }
        }
    };
    progress(&PullEvent::Progress { files_done: files.len(), files_total: files.len(), bytes_done: bytes_total, bytes_total });
    Ok(path)
}

/// hf-hub writes refs only for branch downloads; a pull downloads by commit to pin the file
/// list, so it records the branch or tag itself, as huggingface_hub would.
fn record_ref(opts: &PullOptions, repo_id: &str, rev: &str, commit: &str) -> Result<()> {
    if is_commit_hash(rev) {
        return Ok(());
    }
    let ref_path = opts.cache_dir.join(repo_folder_name(repo_id)).join("refs").join(rev);
    if let Some(parent) = ref_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    }
    std::fs::write(&ref_path, commit).map_err(|e| HubError::io(&ref_path, e))
}

/// `HF_HUB_OFFLINE`: succeed only when the model is already complete in the cache.
fn offline_answer<F: FnMut(&PullEvent)>(target: &PullTarget, opts: &PullOptions, progress: &mut F) -> Result<PathBuf> {
    if let Some(path) = cached_complete(target, opts) {
        progress(&PullEvent::Note("HF_HUB_OFFLINE is set; the model is already in the cache".into()));
        progress(&PullEvent::Finished { path: path.clone() });
        return Ok(path);
    }
    Err(HubError::Offline { name: target.name.clone(), repo_id: target.repo_id.clone() })
}

/// The cached snapshot for the target, if it is complete enough to load.
fn cached_complete(target: &PullTarget, opts: &PullOptions) -> Option<PathBuf> {
    match find_snapshot(&opts.cache_dir, &target.repo_id, target.revision.as_deref()) {
        CacheHit::Snapshot { path, .. } if inspect_path(&path).is_ok_and(|i| i.complete()) => Some(path),
        _ => None,
    }
}

const USER_AGENT: &str = concat!("plantain-hub/", env!("CARGO_PKG_VERSION"), "; hf-hub/1.0.0");

/// hf-hub client over our own reqwest client, because hf-hub's default one has no connect or
/// read timeout (a firewalled network would hang for minutes).
fn client(opts: &PullOptions, retries: usize, total: Option<Duration>) -> Result<HFClient> {
    let mut rb =
        reqwest::Client::builder().user_agent(USER_AGENT).connect_timeout(opts.connect_timeout).read_timeout(Duration::from_secs(60));
    if let Some(t) = total {
        rb = rb.timeout(t);
    }
    let http = rb.build().map_err(|e| HubError::Hub { repo_id: String::new(), source: e.into() })?;
    let mut b = HFClient::builder().client(http).cache_dir(&opts.cache_dir).retry_max_attempts(retries);
    if let Some(e) = &opts.endpoint {
        b = b.endpoint(e.clone());
    }
    if let Some(t) = &opts.token {
        b = b.token(t.clone());
    }
    b.build().map_err(|e| HubError::Hub { repo_id: String::new(), source: e })
}

/// Translate hf-hub errors into ones that say what to do.
fn map_err(e: HFError, t: &PullTarget, endpoint: &str, rev: &str, started: Instant) -> HubError {
    let repo_id = t.repo_id.clone();
    let unreachable = |detail: String| HubError::Unreachable {
        endpoint: endpoint.to_string(),
        name: t.name.clone(),
        repo_id: t.repo_id.clone(),
        detail,
        elapsed: started.elapsed(),
    };
    // Proxies, firewalls and captive portals answer 403/404 pages of their own; blaming the
    // repo name or a token for those would send the user the wrong way.
    if let Some(status) = foreign_http_status(&e) {
        return unreachable(format!(
            "the server answered HTTP {status} without any Hugging Face headers, so a proxy, firewall or \
             captive portal is probably answering instead of the hub (check HF_ENDPOINT and HTTPS_PROXY)"
        ));
    }
    match e {
        HFError::Request { source, .. } if source.is_connect() || source.is_timeout() => unreachable(root_cause(&source)),
        HFError::RepoNotFound { .. } => HubError::RepoNotFound { repo_id, endpoint: endpoint.to_string() },
        HFError::RevisionNotFound { .. } => HubError::RevisionNotFound { repo_id, revision: rev.to_string() },
        HFError::AuthRequired { context } | HFError::Forbidden { context } => {
            HubError::AccessDenied { repo_id, endpoint: endpoint.to_string(), detail: format!("HTTP {}", context.status) }
        }
        other => HubError::Hub { repo_id, source: other },
    }
}

/// HTTP status of an error response that carries none of the tags the hub puts on its
/// errors (`X-Request-Id`, `X-Error-Code`, a JSON `error` field), i.e. someone else answered.
/// (hf-hub does not export its context type, hence one arm binding all variants.)
fn foreign_http_status(e: &HFError) -> Option<u16> {
    match e {
        HFError::Http { context }
        | HFError::AuthRequired { context }
        | HFError::Forbidden { context }
        | HFError::RateLimited { context, .. }
        | HFError::RepoNotFound { context: Some(context), .. }
        | HFError::RevisionNotFound { context: Some(context), .. }
        | HFError::EntryNotFound { context: Some(context), .. } => {
            let tagged = context.request_id.is_some() || context.error_code.is_some() || context.server_message.is_some();
            (!tagged).then_some(context.status.as_u16())
        }
        _ => None,
    }
}

/// Innermost error message (`dns error: failed to lookup address …`), which is the useful part.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    let mut msg = e.to_string();
    while let Some(next) = cur.source() {
        msg = next.to_string();
        cur = next;
    }
    msg
}

/// Collects hf-hub's per-file progress deltas.
#[derive(Default)]
struct Tracker {
    files: Mutex<HashMap<String, (u64, bool)>>,
}

impl Tracker {
    /// (files complete, bytes done) over the planned files.
    fn totals(&self, planned: &[(String, u64)]) -> (usize, u64) {
        let map = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut files = 0;
        let mut bytes = 0;
        for (p, size) in planned {
            match map.get(p) {
                Some((_, true)) => {
                    files += 1;
                    bytes += size;
                }
                Some((done, false)) => bytes += (*done).min(*size),
                None => {}
            }
        }
        (files, bytes)
    }
}

impl ProgressHandler for Tracker {
    fn on_progress(&self, event: &ProgressEvent) {
        if let ProgressEvent::Download(DownloadEvent::Progress { files }) = event {
            let mut map = self.files.lock().unwrap_or_else(|p| p.into_inner());
            for f in files {
                let e = map.entry(f.filename.clone()).or_default();
                e.0 = e.0.max(f.bytes_completed);
                e.1 |= f.status == hf_hub::progress::FileStatus::Complete;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sd_index() -> serde_json::Value {
        json!({
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.6.0",
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "image_encoder": [null, null]
        })
    }

    fn sd_tree() -> Vec<(String, u64)> {
        [
            ("model_index.json", 1),
            ("README.md", 1),
            ("v1-5-pruned.safetensors", 4_000),
            ("v1-5-pruned.ckpt", 4_000),
            ("feature_extractor/preprocessor_config.json", 1),
            ("safety_checker/config.json", 1),
            ("safety_checker/model.safetensors", 1_200),
            ("safety_checker/model.fp16.safetensors", 600),
            ("safety_checker/pytorch_model.bin", 1_200),
            ("scheduler/scheduler_config.json", 1),
            ("text_encoder/config.json", 1),
            ("text_encoder/model.safetensors", 490),
            ("text_encoder/model.fp16.safetensors", 245),
            ("text_encoder/flax_model.msgpack", 490),
            ("tokenizer/merges.txt", 1),
            ("tokenizer/special_tokens_map.json", 1),
            ("tokenizer/tokenizer_config.json", 1),
            ("tokenizer/vocab.json", 1),
            ("unet/config.json", 1),
            ("unet/diffusion_pytorch_model.safetensors", 3_400),
            ("unet/diffusion_pytorch_model.fp16.safetensors", 1_700),
            ("unet/diffusion_pytorch_model.non_ema.bin", 3_400),
            ("vae/config.json", 1),
            ("vae/diffusion_pytorch_model.safetensors", 330),
            ("vae_1_0/diffusion_pytorch_model.safetensors", 330),
        ]
        .iter()
        .map(|(p, s)| (p.to_string(), *s))
        .collect()
    }

    fn names(sel: &Selection) -> Vec<&str> {
        sel.files.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn selects_a_flux2_klein_folder() {
        let index = serde_json::json!({
            "_class_name": "Flux2KleinPipeline",
            "is_distilled": true,
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "Qwen3ForCausalLM"],
            "tokenizer": ["transformers", "Qwen2TokenizerFast"],
            "transformer": ["diffusers", "Flux2Transformer2DModel"],
            "vae": ["diffusers", "AutoencoderKLFlux2"]
        });
        let tree: Vec<(String, u64)> = [
            ("model_index.json", 1),
            ("flux-2-klein-4b.safetensors", 7_750),
            ("scheduler/scheduler_config.json", 1),
            ("text_encoder/config.json", 1),
            ("text_encoder/generation_config.json", 1),
            ("text_encoder/model-00001-of-00002.safetensors", 4_970),
            ("text_encoder/model-00002-of-00002.safetensors", 3_080),
            ("text_encoder/model.safetensors.index.json", 1),
            ("tokenizer/added_tokens.json", 1),
            ("tokenizer/merges.txt", 2),
            ("tokenizer/special_tokens_map.json", 1),
            ("tokenizer/tokenizer.json", 11),
            ("tokenizer/tokenizer_config.json", 1),
            ("tokenizer/vocab.json", 3),
            ("transformer/config.json", 1),
            ("transformer/diffusion_pytorch_model.safetensors", 7_750),
            ("vae/config.json", 1),
            ("vae/diffusion_pytorch_model.safetensors", 168),
        ]
        .iter()
        .map(|(p, s)| (p.to_string(), *s))
        .collect();
        let sel = select_files("black-forest-labs/FLUX.2-klein-4B", &tree, &index, &Variant::Fp16, false, &[]).unwrap();
        let n = names(&sel);
        for want in [
            "text_encoder/model-00001-of-00002.safetensors",
            "text_encoder/model-00002-of-00002.safetensors",
            "text_encoder/model.safetensors.index.json",
            "tokenizer/tokenizer.json",
            "tokenizer/tokenizer_config.json",
            "transformer/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json",
        ] {
            assert!(n.contains(&want), "{want} not in {n:?}");
        }
        assert!(!n.contains(&"flux-2-klein-4b.safetensors"), "the root single file is never fetched: {n:?}");
    }

    #[test]
    fn selects_fp16_with_fallback() {
        let sel = select_files("o/n", &sd_tree(), &sd_index(), &Variant::Fp16, false, &[]).unwrap();
        assert_eq!(
            names(&sel),
            vec![
                "feature_extractor/preprocessor_config.json",
                "model_index.json",
                "safety_checker/config.json",
                "safety_checker/model.fp16.safetensors",
                "scheduler/scheduler_config.json",
                "text_encoder/config.json",
                "text_encoder/model.fp16.safetensors",
                "tokenizer/merges.txt",
                "tokenizer/special_tokens_map.json",
                "tokenizer/tokenizer_config.json",
                "tokenizer/vocab.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.fp16.safetensors",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors",
            ]
        );
        assert_eq!(sel.notes, vec!["`vae` has no fp16 weights; fetching fp32 instead".to_string()]);
    }

    #[test]
    fn selects_fp32_and_skips() {
        let skip = vec!["safety_checker".to_string(), "feature_extractor".to_string()];
        let sel = select_files("o/n", &sd_tree(), &sd_index(), &Variant::Fp32, false, &skip).unwrap();
        let n = names(&sel);
        assert!(n.contains(&"unet/diffusion_pytorch_model.safetensors"));
        assert!(!n.iter().any(|f| f.contains("fp16") || f.starts_with("safety") || f.starts_with("feature")));
        assert!(!n.iter().any(|f| f.ends_with(".bin") || f.ends_with(".ckpt") || f.ends_with(".msgpack")));
        let total: u64 = sel.files.iter().map(|(_, s)| s).sum();
        assert_eq!(total, 1 + 1 + 1 + 490 + 4 + 1 + 3_400 + 1 + 330);
    }

    #[test]
    fn sharded_weights_take_matching_index() {
        let tree: Vec<(String, u64)> = [
            ("model_index.json", 1),
            ("unet/config.json", 1),
            ("unet/diffusion_pytorch_model.safetensors.index.json", 1),
            ("unet/diffusion_pytorch_model-00001-of-00002.safetensors", 10),
            ("unet/diffusion_pytorch_model-00002-of-00002.safetensors", 10),
            ("unet/diffusion_pytorch_model.safetensors.index.fp16.json", 1),
            ("unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors", 5),
            ("unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors", 5),
        ]
        .iter()
        .map(|(p, s)| (p.to_string(), *s))
        .collect();
        let index = json!({"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"]});
        let sel = select_files("o/n", &tree, &index, &Variant::Fp16, false, &[]).unwrap();
        assert_eq!(
            names(&sel),
            vec![
                "model_index.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
                "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
                "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
            ]
        );
    }

    #[test]
    fn pickle_only_component_is_refused() {
        let tree: Vec<(String, u64)> = [("model_index.json", 1), ("unet/config.json", 1), ("unet/diffusion_pytorch_model.bin", 9)]
            .iter()
            .map(|(p, s)| (p.to_string(), *s))
            .collect();
        let index = json!({"unet": ["diffusers", "UNet2DConditionModel"]});
        let err = select_files("o/n", &tree, &index, &Variant::Fp16, false, &[]).unwrap_err();
        assert!(matches!(err, HubError::NoSafetensors { .. }), "{err}");
        assert!(err.to_string().contains("diffusion_pytorch_model.bin"), "{err}");
    }

    #[test]
    fn pull_targets() {
        let t = pull_target("sd-turbo").unwrap();
        assert_eq!((t.name.as_str(), t.repo_id.as_str(), t.revision), ("sd-turbo", "stabilityai/sd-turbo", None));
        let t = pull_target("stabilityai/sdxl-turbo@refs/pr/1");
        assert!(t.is_ok());
        let t = pull_target("owner/thing@v2").unwrap();
        assert_eq!((t.name.as_str(), t.revision.as_deref()), ("owner/thing", Some("v2")));
        assert!(matches!(pull_target("plantain-nano"), Err(HubError::NotPullable { .. })));
        assert!(matches!(pull_target("./local"), Err(HubError::NotPullable { .. })));
        let e = pull_target("sdxl-trubo").unwrap_err();
        assert!(e.to_string().contains("did you mean sdxl-turbo?"), "{e}");
    }

    #[test]
    fn pull_async_future_is_send() {
        // The server spawns pulls on its runtime; that needs a Send future.
        fn is_send<T: Send>(_: &T) {}
        let opts = PullOptions::default();
        let fut = pull_async("sd-turbo", &opts, |_| {});
        is_send(&fut);
    }

    #[test]
    fn variants_and_globs() {
        assert_eq!("fp32".parse::<Variant>().unwrap().suffix(), None);
        assert_eq!("FP16".parse::<Variant>().unwrap(), Variant::Fp16);
        assert_eq!("bf16".parse::<Variant>().unwrap().suffix(), Some("bf16"));
        assert_eq!(glob_escape("unet/config.json"), "unet/config.json");
        assert_eq!(glob_escape("a[1]*.json"), "a[[]1[]][*].json");
    }
}
