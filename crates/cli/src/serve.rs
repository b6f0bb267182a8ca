//! `plantain serve` (the Gemini / OpenAI-compatible HTTP server) and `plantain keys` (which
//! needs only the service's config and storage, not the server).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use plantain_service::Config;
use plantain_service::config::StorageBackend;
use plantain_store::Stores;

#[derive(clap::Args)]
pub struct Args {
    /// TOML config file (see the README's "Server" section); environment variables override it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Listen address (overrides the config and PLANTAIN_LISTEN).
    #[arg(long)]
    pub listen: Option<String>,
    /// What this process does: `all` (HTTP API and models, the default), `api` (HTTP only; jobs
    /// go to the shared PostgreSQL queue) or `worker` (models only: runs the shared queue's
    /// jobs; serves /healthz, /readyz, /metrics). Overrides `[storage] role` and PLANTAIN_ROLE.
    #[arg(long)]
    pub role: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let mut cfg = Config::load(a.config.as_deref()).context("reading the server config")?;
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if let Some(r) = a.role {
        cfg.storage.role = r.parse().context("--role")?;
    }
    // The config's log level, unless PLANTAIN_LOG says otherwise.
    crate::init_logging(&cfg.log);
    plantain_server::run_blocking(cfg).context("plantain serve")?;
    Ok(())
}

#[derive(clap::Args)]
pub struct KeysArgs {
    /// The server's config file (its `[storage]`, by default its data_dir, holds the keys).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// The data directory (instead of the config's data_dir).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once and only its hash is stored.
    Create {
        /// A label for the key (who or what uses it).
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// List keys (ids, labels, dates; never the keys).
    List,
    /// Revoke a key by id; with --delete-data also delete its outputs (records and blobs).
    Revoke {
        id: String,
        #[arg(long)]
        delete_data: bool,
    },
}

pub fn keys(a: KeysArgs) -> Result<()> {
    // An explicit --data-dir is the embedded store in that folder; otherwise the config's
    // `[storage]` (the embedded store in its data_dir by default, or PostgreSQL + S3).
    let config = match a.data_dir {
        Some(d) => Config { data_dir: d, ..Config::default() },
        None => Config::load(a.config.as_deref()).context("reading the server config")?,
    };
    let place = match config.storage.backend {
        StorageBackend::Embedded => config.data_dir.display().to_string(),
        StorageBackend::Postgres => "the PostgreSQL store".to_string(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async {
        let stores =
            plantain_service::storage::open(&config, |k| std::env::var(k).ok()).await.with_context(|| format!("opening {place}"))?;
        keys_command(a.command, &stores, &place).await
    })
}

async fn keys_command(command: KeysCommand, stores: &Stores, place: &str) -> Result<()> {
    match command {
        KeysCommand::Create { name } => {
            let (id, secret) = plantain_service::keys::create_key(stores, &name).await?;
            eprintln!("created key {id} ({name}) in {place}; it is shown only now:");
            println!("{secret}");
        }
        KeysCommand::List => {
            let keys = stores.meta.list_keys().await?;
            if keys.is_empty() {
                eprintln!("no keys in {place} (the server accepts loopback clients without a key)");
            }
            for k in keys {
                let state = match k.revoked_at {
                    Some(t) => format!("revoked {}", rfc3339(t)),
                    None => "active".to_string(),
                };
                println!("{}\t{}\tcreated {}\t{state}", k.id, k.name, rfc3339(k.created_at));
            }
        }
        KeysCommand::Revoke { id, delete_data } => {
            let revoked = stores.meta.revoke_key(&id).await?;
            if !revoked && !delete_data {
                bail!("no active key {id}");
            }
            if revoked {
                eprintln!("revoked {id}");
            }
            if delete_data {
                let n = plantain_service::keys::delete_key_data(stores, &id).await?;
                eprintln!("deleted {id}'s outputs, files, batches and idempotency records ({n} blobs)");
            }
        }
    }
    Ok(())
}

use plantain_core::time::rfc3339;
