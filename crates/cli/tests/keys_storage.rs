//! `plantain keys` works on the storage the server config names: with `[storage] backend =
//! "postgres"` the key goes to PostgreSQL (where every node reads it), with `--data-dir` to the
//! embedded store in that folder. The PostgreSQL test needs the real server, like the store's
//! (`eval "$(bash scripts/services.sh start DIR)"`, then `--ignored`).

use std::path::Path;
use std::process::{Command, Output};

use plantain_store::{PgStore, PostgresConfig, Stores};

fn service_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: start PostgreSQL and S3 first (`eval \"$(bash scripts/services.sh start DIR)\"`, see README)"),
    }
}

/// Runs `plantain keys ARGS` with `home` as PLANTAIN_HOME and HOME, and `env` on top.
fn keys(home: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantain"));
    cmd.arg("keys").args(args).env("PLANTAIN_HOME", home).env("HOME", home).env_remove("PLANTAIN_STORAGE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "plantain keys {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[tokio::test]
#[ignore = "needs PostgreSQL and S3: scripts/services.sh"]
async fn keys_go_to_the_configured_postgres_store() {
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("cli_{}_{}", std::process::id(), plantain_store::now());
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nschema = \"{schema}\"\n[storage.s3]\nbucket = \"{}\"\nendpoint = \"{}\"\n",
            service_env("PLANTAIN_TEST_S3_BUCKET"),
            service_env("PLANTAIN_TEST_S3_ENDPOINT")
        ),
    )
    .unwrap();
    let env = [
        ("PLANTAIN_POSTGRES_URL", service_env("PLANTAIN_TEST_PG_URL")),
        ("PLANTAIN_S3_ACCESS_KEY_ID", service_env("PLANTAIN_TEST_S3_ACCESS_KEY_ID")),
        ("PLANTAIN_S3_SECRET_ACCESS_KEY", service_env("PLANTAIN_TEST_S3_SECRET_ACCESS_KEY")),
    ];
    let config = cfg.to_str().unwrap();
    let created = keys(dir.path(), &["create", "--name", "ci", "--config", config], &env);
    let secret = String::from_utf8(created.stdout).unwrap().trim().to_string();
    assert!(String::from_utf8_lossy(&created.stderr).contains("the PostgreSQL store"));

    // The key is in PostgreSQL, where every node reads it.
    let pg =
        PgStore::open(&PostgresConfig { schema: Some(schema), ..PostgresConfig::new(&service_env("PLANTAIN_TEST_PG_URL")) }).await.unwrap();
    use plantain_store::Keys as _;
    let listed = pg.list_keys().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "ci");
    assert!(!secret.is_empty() && !format!("{listed:?}").contains(&secret), "only the key's hash is stored");
    let list = keys(dir.path(), &["list", "--config", config], &env);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&listed[0].id));
    keys(dir.path(), &["revoke", &listed[0].id, "--config", config], &env);
    assert_eq!(pg.active_keys().await.unwrap(), 0);

    // --data-dir: the embedded store in that folder, whatever the config says.
    let data = dir.path().join("data");
    keys(dir.path(), &["create", "--name", "local", "--data-dir", data.to_str().unwrap(), "--config", config], &env);
    let embedded = Stores::open_embedded(&data).unwrap();
    assert_eq!(embedded.meta.active_keys().await.unwrap(), 1);
    assert_eq!(pg.list_keys().await.unwrap().len(), 1, "nothing more in PostgreSQL");
}
