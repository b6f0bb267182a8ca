//! plantain-server: the Gemini image API (`/v1beta/`, `/v1/`) and the OpenAI Images API
//! (`/v1/images/*`) over plantain's service. HTTP only: the handlers translate wire formats into
//! [`plantain_service::JobSpec`]s and the service's answers back into wire formats; the job
//! path (queue, engine, stamping, storage) is [`plantain_service`]'s.
//!
//! Start it with [`Server::start`] (what `plantain serve` does).

pub mod auth;
pub mod batch;
pub mod edit;
pub mod error;
pub mod files;
pub mod gemini;
pub mod openai;
pub mod ops;
pub mod signature;
pub mod studio;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use plantain_service::{Role, Service, StartError};
use plantain_tokenizer::ClipTokenizer;

use error::ApiError;
pub use plantain_service::Config;

/// What the handlers share: the service, plus what only the wire needs.
pub struct AppState {
    pub svc: Arc<Service>,
    /// Mints and checks Gemini `thoughtSignature`s.
    pub signer: signature::Signer,
    /// Counts prompt tokens for the usage fields and `countTokens`.
    pub tokenizer: ClipTokenizer,
    /// Idempotency keys whose first request is still running.
    pub idem_inflight: Mutex<HashSet<String>>,
    /// Wakes the batch runner when a batch is created.
    pub batch_notify: tokio::sync::Notify,
}

impl AppState {
    pub fn config(&self) -> &Config {
        &self.svc.config
    }
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
        let svc = Service::open(config).await?;
        let mut notices = svc.notices.clone();
        let mut secret = load_secret(&svc.config.data_dir.join("signature.key"))?;
        if let Some(shared) = &svc.stores.queue {
            // Nodes sharing a database sign with one key: a signature one API node minted is
            // checked by whichever node gets the next turn of the conversation.
            secret = shared.shared_secret("thought_signature", &secret).await?;
        }
        let signer = signature::Signer::new(secret);
        let addr = bind_address(&svc, &mut notices).await?;
        let state = Arc::new(AppState {
            svc: Arc::new(svc),
            signer,
            tokenizer: ClipTokenizer::embedded_default(),
            idem_inflight: Mutex::new(HashSet::new()),
            batch_notify: tokio::sync::Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| StartError::Io(format!("binding {addr}"), e))?;
        let addr = listener.local_addr().map_err(|e| StartError::Io("local address".into(), e))?;
        let role = state.svc.config.storage.role;
        let (runner, app) = if role == Role::Worker {
            // No HTTP API on a worker: health, readiness and metrics only; it runs the shared
            // queue's jobs instead of batches and requests.
            let svc = state.svc.clone();
            (tokio::spawn(async move { svc.serve_shared_queue().await }), worker_router(state.clone()))
        } else {
            tokio::spawn(housekeeping(state.svc.clone()));
            (tokio::spawn(batch::runner(state.clone())), router(state.clone()))
        };
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
        self.state.svc.shutdown().await;
    }
}

/// The configured address; loopback only while no API key exists.
async fn bind_address(svc: &Service, notices: &mut Vec<String>) -> Result<SocketAddr, StartError> {
    let mut addr = svc.config.listen_addr()?;
    let keys = svc.stores.meta.active_keys().await?;
    if keys == 0 && !addr.ip().is_loopback() {
        notices.push(format!(
            "no API keys exist: listening on loopback only (127.0.0.1:{}) instead of {}; create one with `plantain keys create`",
            addr.port(),
            addr
        ));
        addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    } else if keys == 0 {
        notices.push(format!("no API keys exist: open to local clients on {addr} only (loopback); `plantain keys create` to require keys"));
    }
    Ok(addr)
}

/// Housekeeping at start and hourly (see [`Service::housekeeping`]).
async fn housekeeping(svc: Arc<Service>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match svc.housekeeping().await {
            Ok(s) if s != Default::default() => tracing::info!(
                files = s.files,
                blobs = s.output_blobs,
                idempotency_records = s.idempotency_records,
                jobs = s.jobs,
                unclaimed_jobs = s.unclaimed_jobs,
                "housekeeping: deleted what expired"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping pass failed"),
        }
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
        state.svc.metrics.error(status, e.status);
        if status >= 500 {
            tracing::warn!(request_id = %request_id, %method, route = %route, status, message = %e.message, "request failed");
        } else {
            tracing::info!(request_id = %request_id, %method, route = %route, status, message = %e.message, "request refused");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    state.svc.metrics.request(&route, status, secs);
    tracing::debug!(request_id = %request_id, %method, route = %route, status, latency_s = secs, "request");
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// The id [`observe`] gave this request.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// A `--role worker` node's routes: `/healthz`, `/readyz`, `/metrics`.
pub fn worker_router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(ops::health_routes())
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// All routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(gemini::routes())
        .merge(files::routes())
        .merge(batch::routes())
        .merge(openai::routes())
        .merge(ops::routes())
        .merge(studio::routes())
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
