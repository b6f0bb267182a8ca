//! Starts a server on a loopback port with the tiny random-weight SD 1.x fixture.

#![allow(dead_code)]

pub mod cluster;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use plantain_server::{Config, Server};
use plantain_service::config::ModelConfig;

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn tiny_model() -> String {
    repo_root().join("fixtures/tiny/sd1").to_string_lossy().into_owned()
}

/// A config with the tiny model as `tiny` (2 steps, one thread), its data in a temp dir.
pub fn config(data: &tempfile::TempDir) -> Config {
    let mut c = Config::from_toml("").unwrap();
    c.listen = "127.0.0.1:0".into();
    c.data_dir = data.path().to_path_buf();
    let mut m = ModelConfig::new("tiny", &tiny_model());
    m.steps = Some(2);
    m.threads = 1;
    c.models = vec![m];
    c.limits.max_input_pixels = 1_000_000;
    c.log = "warn".into();
    c
}

pub async fn start(c: Config) -> Server {
    let mut c = c;
    // Fill the default model and aliases as `Config::load` does.
    c.default_model = Some(c.models[0].name.clone());
    for a in plantain_service::config::DEFAULT_ALIASES {
        c.aliases.entry((*a).to_string()).or_insert_with(|| c.models[0].name.clone());
    }
    let s = Server::start(c).await.expect("server starts");
    // Wait for the model to load.
    let url = format!("http://{}/readyz", s.addr);
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(&url).await
            && r.status() == 200
        {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("model did not become ready");
}

pub fn png_bytes(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

pub fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

/// Decodes a base64 image and returns its size.
pub fn dims(b64data: &str) -> (u32, u32) {
    let bytes = B64.decode(b64data).unwrap();
    let img = image::load_from_memory(&bytes).unwrap();
    (img.width(), img.height())
}

/// Starts the `plantain-server` binary with `--config config` (`adjust` may set its folder and
/// environment); returns the child and its base URL once it prints it.
pub fn spawn_server_binary(config: &Path, adjust: impl FnOnce(&mut Command)) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantain-server"));
    cmd.arg("--config").arg(config).stderr(Stdio::piped()).stdout(Stdio::null());
    adjust(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(u) = line.strip_prefix("plantain server listening on ") {
                let _ = tx.send(u.to_string());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(120)).expect("server printed its address");
    (child, url)
}
