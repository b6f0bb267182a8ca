//! `plantain-server --config FILE`: the server alone, without the rest of the CLI (what the
//! Python SDK tests and the load test start). `plantain serve` does the same.

use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config: Option<PathBuf> = None;
    let mut role: Option<String> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config = args.next().map(PathBuf::from),
            "--role" => role = args.next(),
            "--help" | "-h" => {
                println!(
                    "usage: plantain-server [--config FILE] [--role all|api|worker]   (environment: PLANTAIN_LISTEN, PLANTAIN_DATA_DIR, …)"
                );
                return std::process::ExitCode::SUCCESS;
            }
            other => {
                eprintln!("error: unexpected argument {other:?}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let cfg = match plantain_server::Config::load(config.as_deref()).and_then(|mut c| {
        if let Some(r) = &role {
            c.storage.role = r.parse()?;
        }
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLANTAIN_LOG")
        .unwrap_or_else(|_| plantain_service::config::log_filter(&cfg.log).into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match plantain_server::run_blocking(cfg) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
