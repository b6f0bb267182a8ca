//! plantain-server: the Gemini image API (`/v1beta/`, `/v1/`) and the OpenAI Images API
//! (`/v1/images/*`) over plantain's engine. The HTTP layer only translates wire formats into
//! one internal request ([`generate::GenSpec`]); one worker thread owns each model
//! ([`worker`]); every output is watermarked and signed ([`plantain_provenance`]) and recorded
//! as a versioned artefact ([`store`]).
//!
//! Start it with [`Server::start`] (what `plantain serve` does).

pub mod auth;
pub mod batch;
pub mod config;
pub mod error;
pub mod files;
pub mod gemini;
pub mod generate;
pub mod media;
pub mod metrics;
pub mod openai;
pub mod ops;
pub mod signature;
pub mod store;
pub mod worker;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use plantain_provenance::{Provenance, Settings};
use plantain_tokenizer::ClipTokenizer;

pub use config::Config;
use error::{ApiError, ConfigError, StoreError};
use store::{BlobStore, FsBlobs, MetaStore, SqliteStore};
use worker::{ModelState, Worker};

/// Everything the handlers share.
pub struct AppState {
    pub config: Config,
    pub workers: BTreeMap<String, Arc<Worker>>,
    pub store: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub signer: signature::Signer,
    pub provenance: Arc<Provenance>,
    pub metrics: metrics::Metrics,
    pub limiter: auth::RateLimiter,
    pub tokenizer: ClipTokenizer,
    /// Idempotency keys whose first request is still running.
    pub idem_inflight: Mutex<HashSet<String>>,
    /// Wakes the batch runner when a batch is created.
    pub batch_notify: tokio::sync::Notify,
    pub started: Instant,
}

impl AppState {
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

    pub fn queues(&self) -> Vec<(String, usize, bool, usize, bool)> {
        self.workers
            .values()
            .map(|w| {
                let (d, busy) = w.depth();
                (w.name.clone(), d, busy, w.capacity(), matches!(w.state(), ModelState::Ready { .. }))
            })
            .collect()
    }
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

/// Opens the data directory's stores (what `plantain keys` uses too).
pub fn open_stores(data_dir: &std::path::Path) -> Result<(SqliteStore, FsBlobs), StoreError> {
    Ok((SqliteStore::open(&data_dir.join("plantain.sqlite"))?, FsBlobs::open(&data_dir.join("blobs"))?))
}

fn load_secret(path: &std::path::Path) -> Result<Vec<u8>, StartError> {
    match std::fs::read_to_string(path) {
        Ok(s) => hex::decode(s.trim()).map_err(|e| StartError::Io(path.display().to_string(), std::io::Error::other(e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret: [u8; 32] = rand::random();
            std::fs::write(path, hex::encode(secret)).map_err(|e| StartError::Io(path.display().to_string(), e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
            Ok(secret.to_vec())
        }
        Err(e) => Err(StartError::Io(path.display().to_string(), e)),
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    /// Lines for the operator (loopback-only notice, provenance notices, model states).
    pub notices: Vec<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Opens storage, loads provenance material, starts one worker per model (loading in the
    /// background) and binds. Without active API keys only loopback addresses are bound.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let mut notices = Vec::new();
        std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::Io(config.data_dir.display().to_string(), e))?;
        let (meta, blobs) = open_stores(&config.data_dir)?;
        let mut settings = Settings::in_dir(config.data_dir.join("provenance"), &config.provenance.operator);
        settings.watermark = config.provenance.watermark;
        settings.c2pa = config.provenance.c2pa;
        settings.cert_chain = config.provenance.cert_chain.clone();
        settings.private_key = config.provenance.private_key.clone();
        let provenance = tokio::task::spawn_blocking(move || Provenance::load(&settings))
            .await
            .map_err(|e| StartError::Provenance(e.to_string()))?
            .map_err(|e| StartError::Provenance(e.to_string()))?;
        notices.extend(provenance.notices.iter().cloned());
        let signer = signature::Signer::new(load_secret(&config.data_dir.join("signature.key"))?);

        let mut addr = config.listen_addr()?;
        if meta.active_keys()? == 0 && !addr.ip().is_loopback() {
            notices.push(format!(
                "no API keys exist: listening on loopback only (127.0.0.1:{}) instead of {}; create one with `plantain keys create`",
                addr.port(),
                addr
            ));
            addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
        } else if meta.active_keys()? == 0 {
            notices.push(format!(
                "no API keys exist: open to local clients on {addr} only (loopback); `plantain keys create` to require keys"
            ));
        }

        let mut workers = BTreeMap::new();
        for m in &config.models {
            workers.insert(m.name.clone(), Arc::new(Worker::spawn(m)));
        }
        for w in workers.values() {
            if let ModelState::Failed(e) = w.state() {
                notices.push(format!("model {}: not available ({e}); its requests answer 503", w.name));
            }
        }
        let state = Arc::new(AppState {
            config,
            workers,
            store: Arc::new(meta),
            blobs: Arc::new(blobs),
            signer,
            provenance: Arc::new(provenance),
            metrics: metrics::Metrics::default(),
            limiter: auth::RateLimiter::default(),
            tokenizer: ClipTokenizer::embedded_default(),
            idem_inflight: Mutex::new(HashSet::new()),
            batch_notify: tokio::sync::Notify::new(),
            started: Instant::now(),
        });
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| StartError::Io(format!("binding {addr}"), e))?;
        let addr = listener.local_addr().map_err(|e| StartError::Io("local address".into(), e))?;
        // Housekeeping, at start and hourly: expired files always, old outputs when a
        // retention window is set.
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let st2 = st.clone();
                let r = tokio::task::spawn_blocking(move || {
                    let files = purge_expired_files(&st2)?;
                    let days = st2.config.retention_days;
                    let blobs = if days > 0 { apply_retention(st2.store.as_ref(), st2.blobs.as_ref(), days)? } else { 0 };
                    Ok::<_, StoreError>((files, blobs))
                })
                .await;
                match r {
                    Ok(Ok((files, blobs))) if files + blobs > 0 => {
                        tracing::info!(files, blobs, "housekeeping: deleted expired files and outputs")
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "housekeeping pass failed"),
                    _ => {}
                }
            }
        });
        let runner = tokio::spawn(batch::runner(state.clone()));
        let app = router(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let r = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "server stopped");
            }
            runner.abort();
        });
        Ok(Server { addr, state, notices, shutdown: Some(tx), task: Some(task) })
    }

    /// Waits until the server stops (it runs until [`Server::stop`] or the process ends).
    pub async fn wait(mut self) {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Stops accepting, finishes open connections, then stops the workers.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let workers: Vec<_> = self.state.workers.values().cloned().collect();
        let _ = tokio::task::spawn_blocking(move || workers.iter().for_each(|w| w.shutdown())).await;
    }
}

/// Request ids, access logs and request metrics.
async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = signature::new_id();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let mut res = next.run(req).await;
    let status = res.status().as_u16();
    if let Some(e) = res.extensions().get::<ApiError>() {
        state.metrics.error(status, e.status);
        if status >= 500 {
            tracing::warn!(request_id = %request_id, %method, route = %route, status, message = %e.message, "request failed");
        } else {
            tracing::info!(request_id = %request_id, %method, route = %route, status, message = %e.message, "request refused");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    state.metrics.request(&route, status, secs);
    tracing::debug!(request_id = %request_id, %method, route = %route, status, latency_s = secs, "request");
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// The id [`observe`] gave this request.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// All routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(gemini::routes())
        .merge(files::routes())
        .merge(batch::routes())
        .merge(openai::routes())
        .merge(ops::routes())
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        // Bodies are read with our own limit, so that a too-large body gets the API's envelope.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Runs a server until Ctrl-C or SIGTERM (what `plantain serve` does): prints the operator
/// notices to stderr, then stops gracefully.
pub fn run_blocking(config: Config) -> Result<(), StartError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Io("starting the async runtime".into(), e))?;
    rt.block_on(async move {
        let server = Server::start(config).await?;
        for n in &server.notices {
            eprintln!("note: {n}");
        }
        eprintln!("plantain server listening on http://{}", server.addr);
        let stop = async {
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        };
        stop.await;
        eprintln!("stopping: finishing open requests");
        server.stop().await;
        Ok(())
    })
}

/// Creates a key: returns `(id, secret)`; only the secret's hash is stored.
pub fn create_key(store: &dyn MetaStore, name: &str) -> Result<(String, String), StoreError> {
    let (id, secret) = auth::new_key();
    store.create_key(&id, name, &auth::hash_key(&secret))?;
    Ok((id, secret))
}

/// Deletes every artefact recorded for a key, the key's files (Files API uploads and batch
/// results files), and the blobs nothing else uses; returns how many blobs were removed.
pub fn delete_key_data(store: &dyn MetaStore, blobs: &dyn BlobStore, key_id: &str) -> Result<usize, StoreError> {
    let mut hashes = store.delete_artefacts_of_key(key_id)?;
    for f in store.list_files(Some(key_id))? {
        hashes.extend(store.delete_file(&f.name)?);
    }
    hashes.sort();
    hashes.dedup();
    for h in &hashes {
        blobs.delete(h)?;
    }
    Ok(hashes.len())
}

/// Deletes files (uploads, finished or not, and batch results files) whose 48 hours are over:
/// their records, partial uploads and the blobs nothing else uses. Expired files are already
/// invisible to the API; this makes their bytes go too. Returns how many files were removed.
pub fn purge_expired_files(state: &AppState) -> Result<usize, StoreError> {
    let expired = state.store.expired_files(store::now())?;
    for f in &expired {
        if let Some(h) = state.store.delete_file(&f.name)? {
            state.blobs.delete(&h)?;
        }
        if let Some(u) = &f.upload_id {
            let part = files::uploads_dir(state).join(u);
            match std::fs::remove_file(&part) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io(part, e)),
            }
        }
    }
    Ok(expired.len())
}

/// Deletes artefacts older than `days` and their now-unused blobs.
pub fn apply_retention(store: &dyn MetaStore, blobs: &dyn BlobStore, days: u32) -> Result<usize, StoreError> {
    let hashes = store.delete_artefacts_before(store::now() - i64::from(days) * 86_400)?;
    for h in &hashes {
        blobs.delete(h)?;
    }
    Ok(hashes.len())
}
