//! plantain-service: the job path shared by the server, its batch runner and tools.
//!
//! - [`Service::admit`]: who is calling (API key) and the per-caller rate limit;
//! - [`Service::submit`]: reserves the images against the daily quota (atomically) and queues a
//!   [`job::JobSpec`] on its model's worker (one thread per model, fair lanes: [`worker`]);
//! - [`job::Job::next`] / [`job::Job::run`]: one event stream per job — progress, partial
//!   images, then the engine's pictures, not yet published;
//! - [`Service::publish`]: stamp (watermark, labels, C2PA), store (blob + records), meter;
//! - [`Service::generate_checked`]: text to image through the plan → check → correct loop
//!   (attempts run unpublished; the best of each image is published with its checks).
//!
//! It speaks no HTTP and no SQL: wire formats live in the server, storage behind
//! [`plantain_store`]'s traits.

mod checked;
pub mod config;
pub mod error;
pub mod housekeeping;
pub mod job;
pub mod keys;
pub mod metrics;
mod publish;
pub mod shared;
pub mod storage;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use plantain_provenance::{Provenance, Settings};
use plantain_store::{PgStore, StoreError, Stores};

pub use checked::{CheckedRun, LoopEvent, LoopEvents};
pub use config::{Config, ConfigError, Role};
pub use error::{ErrorKind, ServiceError};
pub use job::{ImageRole, Job, JobEvent, JobSpec, Made, Output, RequestCtx};
pub use keys::Caller;
pub use plantain_director::edit::{EditError, EditOptions, EditPlan};
pub use plantain_director::generate::{Outcome as CheckedOutcome, Plan as PicturePlan};
/// The largest output the engine draws (pixels, longest side): wire layers check sizes against it.
pub use plantain_engine::pipeline::{MAX_OUTPUT_PIXELS, MAX_OUTPUT_SIDE};
pub use publish::Stamper;
use worker::{ModelState, Worker};

/// A random 128-bit id, hex.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("provenance: {0}")]
    Provenance(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Nodes sharing a database stamp and verify as one installation: the first node's watermark
/// key and local signing identity (stored in its `secrets`) replace this node's own.
async fn share_provenance(p: &mut Provenance, store: &PgStore, notices: &mut Vec<String>) -> Result<(), StartError> {
    let mine = p.shareable();
    let mut shared = plantain_provenance::Shareable::default();
    let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| StartError::Provenance("shared provenance material is not text".into()));
    if let Some(key) = &mine.watermark_key {
        shared.watermark_key = Some(text(store.shared_secret("watermark_key", key.as_bytes()).await?)?);
    }
    if let Some(identity) = &mine.local_identity {
        shared.local_identity = Some(text(store.shared_secret("c2pa_local_identity", identity.as_bytes()).await?)?);
    }
    if shared != mine {
        p.adopt(&shared, "PostgreSQL").map_err(|e| StartError::Provenance(e.to_string()))?;
        notices.push("provenance: this node uses the watermark key and signing identity shared through PostgreSQL".into());
    }
    Ok(())
}

/// The loaded models, storage and provenance material every request uses.
pub struct Service {
    pub config: Config,
    workers: BTreeMap<String, Arc<Worker>>,
    pub stores: Stores,
    provenance: Arc<Provenance>,
    pub metrics: metrics::Metrics,
    pub limiter: keys::RateLimiter,
    pub started: Instant,
    /// Lines for the operator (provenance notices, models that failed).
    pub notices: Vec<String>,
    /// The salient-subject segmenter edits of photographs use, loaded on first use (when it
    /// is not installed such edits answer with an error naming the set-up script).
    segmenter: Arc<plantain_director::edit::LazySegmenter>,
    /// The loop's check models (BRISQUE, fonts, OCR), each loaded on first use; a missing one
    /// makes its check say "not checked".
    checks: Arc<plantain_director::generate::InstalledChecks>,
}

impl Service {
    /// Plans an edit of `images[0]` (fusion: of several) after `text` for `model`, on a
    /// blocking thread (region finding measures every pixel, and a photograph runs the
    /// segmenter). Once the model is loaded it also finds named objects (DiffEdit) and decides
    /// the painter's kind (an InstructPix2Pix model edits by the user's own words); an API node
    /// takes the kind its workers announced.
    pub async fn plan_edit(
        &self,
        text: String,
        images: Vec<image::RgbImage>,
        mut opts: EditOptions,
        model: &Worker,
    ) -> Result<EditPlan, EditError> {
        if let Some(painter) = model.painter().await {
            opts.painter = painter;
        }
        let pipeline = model.pipeline();
        let finder = plantain_director::edit::ModelFinder { subject: self.segmenter.clone(), pipeline, seed: 0 };
        tokio::task::spawn_blocking(move || plantain_director::edit::plan(&text, &images, &opts, Some(&finder)))
            .await
            .map_err(|e| EditError::Region(format!("the planning task failed: {e}")))?
    }

    /// Opens storage (`[storage]`: by default the embedded SQLite + folder in the config's data
    /// dir), loads provenance material and starts one worker per model (loading in the background).
    pub async fn open(config: Config) -> Result<Service, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::Io(config.data_dir.display().to_string(), e))?;
        let stores = storage::open(&config, |k| std::env::var(k).ok()).await?;
        Self::with_stores(config, stores).await
    }

    /// As [`Service::open`], with the given storage backends.
    pub async fn with_stores(config: Config, stores: Stores) -> Result<Service, StartError> {
        let mut settings = Settings::in_dir(config.data_dir.join("provenance"), &config.provenance.operator);
        settings.watermark = config.provenance.watermark;
        settings.c2pa = config.provenance.c2pa;
        settings.cert_chain = config.provenance.cert_chain.clone();
        settings.private_key = config.provenance.private_key.clone();
        let mut provenance = tokio::task::spawn_blocking(move || Provenance::load(&settings))
            .await
            .map_err(|e| StartError::Provenance(e.to_string()))?
            .map_err(|e| StartError::Provenance(e.to_string()))?;
        let mut notices = provenance.notices.clone();
        if let Some(shared) = &stores.queue {
            share_provenance(&mut provenance, shared, &mut notices).await?;
        }
        let workers: BTreeMap<String, Arc<Worker>> = match (config.storage.role, &stores.queue) {
            (Role::All, _) => config.models.iter().map(|m| (m.name.clone(), Arc::new(Worker::spawn(m)))).collect(),
            (role, None) => {
                return Err(StartError::Config(ConfigError::Invalid(format!(
                    "role {role:?} hands jobs over through PostgreSQL: it needs [storage] backend = \"postgres\""
                ))));
            }
            (Role::Api, Some(store)) => {
                let hub = Arc::new(shared::EventHub::default());
                tokio::spawn(hub.clone().listen(store.clone()));
                let unclaimed = std::time::Duration::from_secs(config.storage.job_unclaimed_secs.max(1));
                let q = Arc::new(shared::SharedQueue { store: store.clone(), hub, unclaimed });
                config.models.iter().map(|m| (m.name.clone(), Arc::new(Worker::spawn_shared(m, q.clone())))).collect()
            }
            (Role::Worker, Some(_)) => config.models.iter().map(|m| (m.name.clone(), Arc::new(Worker::spawn(m)))).collect(),
        };
        for w in workers.values() {
            if let ModelState::Failed(e) = w.state() {
                notices.push(format!("model {}: not available ({e}); its requests answer 503", w.name));
            }
        }
        Ok(Service {
            segmenter: Arc::default(),
            checks: Arc::new(plantain_director::generate::InstalledChecks::with_clip(config.checks.clip_model.clone())),
            config,
            workers,
            stores,
            provenance: Arc::new(provenance),
            metrics: metrics::Metrics::default(),
            limiter: keys::RateLimiter::default(),
            started: Instant::now(),
            notices,
        })
    }

    /// The worker answering to `name` (`models/` prefix allowed): a configured model, one of
    /// its aliases, or a global alias.
    pub fn model(&self, name: &str) -> Option<Arc<Worker>> {
        let n = name.strip_prefix("models/").unwrap_or(name);
        if let Some(w) = self.workers.get(n) {
            return Some(w.clone());
        }
        if let Some(m) = self.config.models.iter().find(|m| m.aliases.iter().any(|a| a == n)) {
            return self.workers.get(&m.name).cloned();
        }
        self.config.aliases.get(n).and_then(|m| self.workers.get(m)).cloned()
    }

    pub fn default_model(&self) -> Option<Arc<Worker>> {
        self.config.default_model.as_deref().and_then(|m| self.model(m))
    }

    /// Every configured model's worker.
    pub fn workers(&self) -> impl Iterator<Item = &Arc<Worker>> {
        self.workers.values()
    }

    /// Every name a client can use, with the model that answers it.
    pub fn model_names(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for m in &self.config.models {
            v.push((m.name.clone(), m.name.clone()));
            v.extend(m.aliases.iter().map(|a| (a.clone(), m.name.clone())));
        }
        v.extend(self.config.aliases.iter().filter(|(_, m)| self.workers.contains_key(*m)).map(|(a, m)| (a.clone(), m.clone())));
        v
    }

    /// Prometheus text for the service's metrics and each model's queue.
    pub fn render_metrics(&self) -> String {
        let queues: Vec<_> = self
            .workers
            .values()
            .map(|w| {
                let (d, busy) = w.depth();
                (w.name.clone(), d, busy, w.capacity(), matches!(w.state(), ModelState::Ready { .. }))
            })
            .collect();
        let cancelled = self.workers.values().map(|w| w.cancelled.load(std::sync::atomic::Ordering::Relaxed)).sum();
        self.metrics.render(&queues, cancelled)
    }

    /// Checks a picture's provenance with this installation's key and trust anchors.
    pub async fn verify(&self, bytes: Vec<u8>) -> Result<plantain_provenance::VerifyReport, ServiceError> {
        let prov = self.provenance.clone();
        tokio::task::spawn_blocking(move || prov.verify(&bytes))
            .await
            .map_err(|e| ServiceError::internal(e.to_string()))?
            .map_err(|e| ServiceError::invalid(e.to_string()))
    }

    /// On a `--role worker` node: takes the shared queue's jobs for every model this process
    /// loads, and runs them, until the process ends (returns at once on other roles).
    pub async fn serve_shared_queue(&self) {
        let (Role::Worker, Some(store)) = (self.config.storage.role, &self.stores.queue) else { return };
        let node = self.config.storage.node_name.clone().unwrap_or_else(|| format!("worker-{}", &new_id()[..12]));
        let workers = self.workers.values().cloned().collect();
        shared::serve_worker(workers, store.clone(), node, self.config.storage.job_lease_secs).await;
    }

    /// Stops the workers after their running jobs (queued jobs are answered cancelled).
    pub async fn shutdown(&self) {
        let workers: Vec<_> = self.workers.values().cloned().collect();
        let _ = tokio::task::spawn_blocking(move || workers.iter().for_each(|w| w.shutdown())).await;
    }
}
