//! Opens the storage `[storage]` names: the embedded SQLite + folder in `data_dir` (default), or
//! PostgreSQL + S3-compatible blobs shared by several nodes. Secrets come from the environment
//! here, at open, and go nowhere else (never into [`Config`], never into logs).

use std::time::Duration;

use plantain_store::{PostgresConfig, S3Config, Stores, redact_url};

use crate::StartError;
use crate::config::{Config, ConfigError, StorageBackend};

/// The stores the config names; `env` reads environment variables (`std::env::var` in the
/// server, a map in tests).
pub async fn open(config: &Config, env: impl Fn(&str) -> Option<String>) -> Result<Stores, StartError> {
    match config.storage.backend {
        StorageBackend::Embedded => {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::Io(config.data_dir.display().to_string(), e))?;
            Ok(Stores::open_embedded(&config.data_dir)?)
        }
        StorageBackend::Postgres => {
            let (pg, s3) = scaleout_configs(config, env)?;
            tracing::info!(postgres = %redact_url(&pg.url), bucket = %s3.bucket, endpoint = ?s3.endpoint, "opening PostgreSQL + S3 storage");
            Ok(Stores::open_scaleout(&pg, &s3).await?)
        }
    }
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The PostgreSQL and S3 settings from `[storage]` and the environment's secrets.
fn scaleout_configs(config: &Config, env: impl Fn(&str) -> Option<String>) -> Result<(PostgresConfig, S3Config), ConfigError> {
    let st = &config.storage;
    if let Some(u) = &st.postgres.url
        && redact_url(u) != *u
    {
        return Err(invalid("[storage.postgres] url holds a password: put the URL with its password in PLANTAIN_POSTGRES_URL instead"));
    }
    let url = env("PLANTAIN_POSTGRES_URL")
        .or_else(|| st.postgres.url.clone())
        .ok_or_else(|| invalid("storage backend \"postgres\" needs [storage.postgres] url or PLANTAIN_POSTGRES_URL"))?;
    let pg =
        PostgresConfig { schema: st.postgres.schema.clone(), max_connections: st.postgres.max_connections, ..PostgresConfig::new(&url) };
    let bucket = st.s3.bucket.clone().ok_or_else(|| invalid("storage backend \"postgres\" needs [storage.s3] bucket (blobs go there)"))?;
    let either = |a: &str, b: &str| env(a).or_else(|| env(b));
    let access_key_id = either("PLANTAIN_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
        .ok_or_else(|| invalid("S3 storage needs PLANTAIN_S3_ACCESS_KEY_ID (or AWS_ACCESS_KEY_ID)"))?;
    let secret_access_key = either("PLANTAIN_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
        .ok_or_else(|| invalid("S3 storage needs PLANTAIN_S3_SECRET_ACCESS_KEY (or AWS_SECRET_ACCESS_KEY)"))?;
    let s3 = S3Config {
        bucket,
        endpoint: st.s3.endpoint.clone(),
        region: st.s3.region.clone().unwrap_or_else(|| "us-east-1".into()),
        access_key_id,
        secret_access_key,
        prefix: st.s3.prefix.clone(),
        retry_timeout: Duration::from_secs(st.s3.retry_secs.unwrap_or(30).max(1)),
    };
    Ok((pg, s3))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn storage_section_parses_and_defaults_to_embedded() {
        assert_eq!(Config::default().storage.backend, StorageBackend::Embedded);
        let cfg = Config::from_toml(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://plantain@db/plantain\"\nschema = \"p\"\n\
             [storage.s3]\nbucket = \"b\"\nendpoint = \"http://s3:8333\"\n",
        )
        .unwrap();
        assert_eq!(cfg.storage.backend, StorageBackend::Postgres);
        let (pg, s3) = scaleout_configs(&cfg, env(&[("AWS_ACCESS_KEY_ID", "id"), ("PLANTAIN_S3_SECRET_ACCESS_KEY", "sk")])).unwrap();
        assert_eq!((pg.url.as_str(), pg.schema.as_deref(), pg.max_connections), ("postgres://plantain@db/plantain", Some("p"), 10));
        assert_eq!((s3.bucket.as_str(), s3.endpoint.as_deref(), s3.region.as_str()), ("b", Some("http://s3:8333"), "us-east-1"));
        assert_eq!((s3.access_key_id.as_str(), s3.secret_access_key.as_str()), ("id", "sk"));
        // The environment's URL (with its password) wins over the file's.
        let (pg, _) = scaleout_configs(
            &cfg,
            env(&[("PLANTAIN_POSTGRES_URL", "postgres://u:pw@h/d"), ("AWS_ACCESS_KEY_ID", "i"), ("AWS_SECRET_ACCESS_KEY", "s")]),
        )
        .unwrap();
        assert_eq!(pg.url, "postgres://u:pw@h/d");
        assert!(Config::from_toml("[storage]\nbackend = \"mongodb\"\n").is_err());
        let mut c = Config::default();
        c.apply_env(env(&[("PLANTAIN_STORAGE", "postgres"), ("PLANTAIN_S3_BUCKET", "x")])).unwrap();
        assert_eq!((c.storage.backend, c.storage.s3.bucket.as_deref()), (StorageBackend::Postgres, Some("x")));
        assert!(c.apply_env(env(&[("PLANTAIN_STORAGE", "nfs")])).is_err());
    }

    #[test]
    fn missing_settings_and_passwords_in_the_file_are_refused() {
        let mut cfg = Config::default();
        cfg.storage.backend = StorageBackend::Postgres;
        let keys = [("AWS_ACCESS_KEY_ID", "i"), ("AWS_SECRET_ACCESS_KEY", "s")];
        let err = |cfg: &Config, vars: &[(&str, &str)]| scaleout_configs(cfg, env(vars)).unwrap_err().to_string();
        assert!(err(&cfg, &keys).contains("PLANTAIN_POSTGRES_URL"));
        cfg.storage.postgres.url = Some("postgres://u:hunter2@h/d".into());
        let e = err(&cfg, &keys);
        assert!(e.contains("holds a password") && !e.contains("hunter2"), "{e}");
        cfg.storage.postgres.url = Some("postgres://u@h/d".into());
        assert!(err(&cfg, &keys).contains("bucket"));
        cfg.storage.s3.bucket = Some("b".into());
        assert!(err(&cfg, &[]).contains("PLANTAIN_S3_ACCESS_KEY_ID"));
        assert!(err(&cfg, &keys[..1]).contains("PLANTAIN_S3_SECRET_ACCESS_KEY"));
        assert!(scaleout_configs(&cfg, env(&keys)).is_ok());
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_start_error() {
        let mut cfg = Config::default();
        cfg.storage.backend = StorageBackend::Postgres;
        cfg.storage.postgres.url = Some("postgres://u@127.0.0.1:1/d".into());
        cfg.storage.s3.bucket = Some("b".into());
        let e = open(&cfg, env(&[("AWS_ACCESS_KEY_ID", "i"), ("AWS_SECRET_ACCESS_KEY", "s")])).await.err().unwrap();
        assert!(matches!(e, StartError::Store(plantain_store::StoreError::Connect(_))), "{e}");
        // The same failure while serving is "unavailable, retry" (503), not an internal error.
        let pg = PostgresConfig { connect_timeout: Duration::from_secs(1), ..PostgresConfig::new("postgres://u@127.0.0.1:1/d") };
        let e = crate::ServiceError::from(plantain_store::PgStore::open(&pg).await.err().unwrap());
        assert_eq!((e.kind, e.retry_after), (crate::ErrorKind::Unavailable, Some(5)));
    }
}
