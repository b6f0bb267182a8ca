//! Server configuration: a TOML file, then environment variables on top.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use plantain_core::ImageSize;
use plantain_engine::pipeline::LoraSpec;
use plantain_engine::weights::quant::WeightBits;
use serde::Deserialize;

/// Configuration problems (reported at start-up).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    #[error("environment variable {0}={1:?} is not a number")]
    Env(String, String),
    #[error("listen address {0:?} is not host:port")]
    Listen(String),
    #[error("{0}")]
    Invalid(String),
}

/// The Gemini and OpenAI model strings answered by the default model unless the config says
/// otherwise, so that clients work by changing only their base URL.
pub const DEFAULT_ALIASES: &[&str] = &[
    "gemini-3.1-flash-image-preview",
    "gemini-2.5-flash-image",
    "gemini-2.5-flash-image-preview",
    "gemini-3-pro-image-preview",
    "gpt-image-1",
    "gpt-image-1-mini",
    "dall-e-2",
    "dall-e-3",
];

/// The whole configuration (see the README's "Server" section for every key).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `host:port`. Without API keys the server only binds loopback addresses.
    pub listen: String,
    /// SQLite database, blobs, provenance keys and the signature secret live here (default
    /// `$PLANTAIN_HOME/server`, else `~/.local/share/plantain/server`).
    pub data_dir: PathBuf,
    /// Base of the URLs handed out for `response_format=url` (default: from the Host header).
    pub public_url: Option<String>,
    /// The model answering when a request names none (OpenAI) and for the default aliases.
    pub default_model: Option<String>,
    /// Reject model image parts without a valid `thoughtSignature` (Google's behaviour).
    /// Default false: an unsigned image is used as a plain input image.
    pub strict_signatures: bool,
    /// Log level filter when `PLANTAIN_LOG` is not set.
    pub log: String,
    /// Delete outputs (records and blobs) older than this many days; 0 keeps them.
    pub retention_days: u32,
    pub limits: Limits,
    /// The plan → check → correct loop for text-to-image requests.
    pub checks: ChecksConfig,
    pub provenance: ProvenanceConfig,
    /// Where metadata and blobs live (default: embedded in `data_dir`).
    pub storage: StorageConfig,
    pub models: Vec<ModelConfig>,
    /// Extra names: `alias = "model"`.
    pub aliases: std::collections::BTreeMap<String, String>,
}

/// `[storage]`: where metadata (keys, outputs' records, quotas, idempotency records, files,
/// batches) and blobs live. Secrets are never read from the file: the PostgreSQL URL with its
/// password comes from `PLANTAIN_POSTGRES_URL`, the S3 keys from `PLANTAIN_S3_ACCESS_KEY_ID` /
/// `PLANTAIN_S3_SECRET_ACCESS_KEY` (or `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`), read
/// when storage is opened ([`crate::storage::open`]) and kept out of this struct.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// What this node does (`PLANTAIN_ROLE`, `plantain serve --role`): `all` (default), or
    /// `api` / `worker`, which hand jobs over through the PostgreSQL queue (backend `postgres`).
    pub role: Role,
    /// How long a worker's claim on a job lasts without a heartbeat (seconds; heartbeats come
    /// every third of it): a worker that died loses its job to another after this long.
    pub job_lease_secs: u64,
    /// A job no worker took within this long is failed with 503 "retry later" instead of waiting
    /// on (seconds; the shared queue only).
    pub job_unclaimed_secs: u64,
    /// How long the shared queue keeps settled jobs' rows before housekeeping deletes them
    /// (seconds).
    pub job_retention_secs: u64,
    /// This node's name in the job queue's leases (`PLANTAIN_NODE_NAME`; default: `worker-`
    /// and a random suffix).
    pub node_name: Option<String>,
    pub postgres: PostgresSection,
    pub s3: S3Section,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::default(),
            role: Role::default(),
            job_lease_secs: 30,
            job_unclaimed_secs: 300,
            job_retention_secs: 86_400,
            node_name: None,
            postgres: PostgresSection::default(),
            s3: S3Section::default(),
        }
    }
}

/// `[storage] role`: which part of the work a `plantain serve` process does.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// HTTP API and engine in one process, jobs queued in-process (one node).
    #[default]
    All,
    /// HTTP API only, no model loaded: jobs go to the shared queue, workers run them.
    Api,
    /// No HTTP API (health and metrics only): loads its models and runs the shared queue's
    /// jobs for them.
    Worker,
}

impl std::str::FromStr for Role {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Role, ConfigError> {
        match s.trim() {
            "all" => Ok(Role::All),
            "api" => Ok(Role::Api),
            "worker" => Ok(Role::Worker),
            _ => Err(ConfigError::Invalid(format!("role {s:?}: all, api or worker"))),
        }
    }
}

/// `[storage] backend`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// SQLite (`data_dir/plantain.sqlite`) and a blob folder (`data_dir/blobs`): one node.
    #[default]
    Embedded,
    /// PostgreSQL metadata and S3-compatible blobs, which several nodes can share.
    Postgres,
}

/// `[storage.postgres]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSection {
    /// `postgres://user@host:port/database`, without a password (`PLANTAIN_POSTGRES_URL`
    /// replaces it, password included).
    pub url: Option<String>,
    /// A schema for plantain's tables (created when missing); default: the search path's.
    pub schema: Option<String>,
    /// Connections this node keeps open.
    pub max_connections: u32,
}

impl Default for PostgresSection {
    fn default() -> Self {
        PostgresSection { url: None, schema: None, max_connections: 10 }
    }
}

/// `[storage.s3]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    pub bucket: Option<String>,
    /// `http://host:port` of a self-hosted S3-compatible server; none for AWS S3.
    pub endpoint: Option<String>,
    /// Default `us-east-1`.
    pub region: Option<String>,
    /// Objects go under this prefix (`prefix/blobs/…`).
    pub prefix: String,
    /// How long one S3 request is retried (with backoff) before the client gets 503 "retry
    /// later" (seconds; default 30).
    pub retry_secs: Option<u64>,
}

/// `[checks]`: how much the loop may spend per image, and the optional CLIP model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    /// Attempts per image (1 turns the loop off: one picture, still checked and reported).
    pub attempts: usize,
    /// No new attempt starts after this many seconds.
    pub time_budget_secs: u64,
    /// A CLIP model folder (transformers' layout, e.g. a local copy of
    /// openai/clip-vit-large-patch14) for the adherence check; without one it is "not checked".
    pub clip_model: Option<PathBuf>,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        let b = plantain_director::generate::Budget::DEFAULT;
        ChecksConfig { attempts: b.attempts, time_budget_secs: b.time.as_secs(), clip_model: None }
    }
}

impl ChecksConfig {
    pub fn budget(&self) -> plantain_director::generate::Budget {
        plantain_director::generate::Budget { attempts: self.attempts.max(1), time: std::time::Duration::from_secs(self.time_budget_secs) }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body (JSON or multipart), bytes.
    pub max_body_bytes: usize,
    /// Largest single input image after base64 decoding, bytes (Gemini: 7 MB inline).
    pub max_image_bytes: usize,
    /// Largest input image in decoded pixels (width x height): decompression bombs stop here.
    pub max_input_pixels: u64,
    /// Longest input image side.
    pub max_input_side: u32,
    /// Reference images per request (Gemini 3.1 Flash Image: 14).
    pub max_images: usize,
    /// Longest prompt, characters (all text parts together).
    pub max_prompt_chars: usize,
    /// Most images per request (`candidateCount`, OpenAI `n`).
    pub max_candidates: u32,
    /// Per API key (or per client address without keys); 0 = unlimited.
    pub requests_per_minute: u32,
    /// Images per API key per UTC day; 0 = unlimited.
    pub images_per_day: u32,
    /// Largest `imageSize` served ("512", "1K", "2K", "4K"); anything else is refused when the
    /// config is read.
    pub max_image_size: ImageSize,
    /// Seconds an `Idempotency-Key`'s stored response is replayed (default one day).
    pub idempotency_ttl_secs: i64,
}

impl Limits {
    /// What an input image may be.
    pub fn input(&self) -> plantain_imageio::Limits {
        plantain_imageio::Limits {
            max_image_bytes: self.max_image_bytes,
            max_input_pixels: self.max_input_pixels,
            max_input_side: self.max_input_side,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 << 20,
            max_image_bytes: 7_000_000,
            max_input_pixels: 40_000_000,
            max_input_side: 8192,
            max_images: 14,
            max_prompt_chars: 8192,
            max_candidates: 4,
            requests_per_minute: 0,
            images_per_day: 0,
            max_image_size: ImageSize::S4K,
            idempotency_ttl_secs: 86_400,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvenanceConfig {
    /// Embed the invisible watermark (switching it off is explicit and logged).
    pub watermark: bool,
    /// Sign C2PA Content Credentials.
    pub c2pa: bool,
    pub cert_chain: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Name put into a locally created signing identity.
    pub operator: String,
}

impl Default for ProvenanceConfig {
    fn default() -> Self {
        ProvenanceConfig { watermark: true, c2pa: true, cert_chain: None, private_key: None, operator: "plantain server".into() }
    }
}

/// One served model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// What clients call it (`plantain-nano`, `sd-turbo`).
    pub name: String,
    /// What `plantain generate --model` takes: a folder, a `.safetensors` file, a short name or
    /// a hub id (resolved offline). Default: `name`.
    pub source: Option<String>,
    /// Other names for it (Gemini / OpenAI model strings).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Denoising steps (default: the model's).
    pub steps: Option<usize>,
    /// Guidance scale (default: the model's).
    pub guidance: Option<f32>,
    /// img2img strength at temperature 1 (see the README's mapping).
    pub strength: Option<f32>,
    /// ONNX Runtime threads (0 = all cores).
    #[serde(default)]
    pub threads: usize,
    /// Where the model runs: `cpu` (default) or `cuda` (a build with `--features cuda` and the
    /// onnxruntime-gpu library; elsewhere the model reports why it cannot load and answers 503).
    #[serde(default)]
    pub device: Device,
    /// Queued jobs per lane (previews ≤ 1K, finals 2K/4K) before 503 UNAVAILABLE.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Most jobs one API key may have waiting in a lane (default: the whole lane). Lower it
    /// when many keys share a model, so that no key can fill the queue: past its share a key
    /// gets 429 RESOURCE_EXHAUSTED while others still get in.
    #[serde(default)]
    pub queue_per_key: Option<usize>,
    /// For a single `.safetensors` file: the diffusers folder with its configs.
    pub config_dir: Option<PathBuf>,
    /// A TAESD folder (`config.json` + `diffusion_pytorch_model.safetensors`, e.g.
    /// `madebyollin/taesd`) that decodes OpenAI partial images quickly; without one they are
    /// decoded with the model's own VAE.
    pub tiny_vae: Option<PathBuf>,
    /// LoRA files applied when the model loads, in order: `"FILE"` or `"FILE:SCALE"` (kohya or
    /// diffusers/PEFT naming). To serve a model with and without a LoRA, list it twice under
    /// two names; a request picks one by its model name.
    #[serde(default, deserialize_with = "lora_specs")]
    pub loras: Vec<LoraSpec>,
    /// What turns the model's native drawing into the 2K and 4K sizes: a Real-ESRGAN model
    /// (`x4plus`, for photographs; `anime` or `animevideov3`, for illustrations) then Lanczos3 to
    /// the exact pixels, or `lanczos` alone. Default: `x4plus` on cuda, `animevideov3` on cpu
    /// (x4plus takes many minutes per 4K picture on a CPU; see BENCHMARKS.md).
    pub upscaler: Option<Upscaler>,
    /// The denoiser's and text encoders' weights as `f32` (default), or quantised at load to
    /// `int8` or `int4` (linear layers; a UNet's convolutions to int8 per channel). The VAE
    /// stays f32.
    #[serde(default, deserialize_with = "weight_bits")]
    pub weights: WeightBits,
    /// FLUX.2 [klein]: the transformer from one file (GGUF or BFL safetensors), not `transformer/`.
    pub transformer_file: Option<PathBuf>,
    /// Release the text encoder(s) after each prompt (less memory held; a session is rebuilt
    /// for each prompt).
    #[serde(default)]
    pub lean: bool,
}

/// `weights = "int8"`, read as `plantain generate --weights` reads it.
fn weight_bits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<WeightBits, D::Error> {
    String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
}

/// `loras = ["style.safetensors:0.8", …]`, each read as [`LoraSpec::parse`] does.
fn lora_specs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<LoraSpec>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter().map(|s| LoraSpec::parse(s).map_err(serde::de::Error::custom)).collect()
}

/// A [`ModelConfig::upscaler`] choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upscaler {
    X4plus,
    Anime,
    Animevideov3,
    Lanczos,
}

impl ModelConfig {
    /// The Real-ESRGAN model that makes this model's 2K and 4K sizes, `None` for Lanczos3 alone.
    pub fn upscale_model(&self) -> Option<plantain_engine::upscale::UpscaleModel> {
        use plantain_engine::upscale::UpscaleModel;
        match self.upscaler {
            Some(Upscaler::X4plus) => Some(UpscaleModel::X4Plus),
            Some(Upscaler::Anime) => Some(UpscaleModel::X4PlusAnime),
            Some(Upscaler::Animevideov3) => Some(UpscaleModel::AnimeVideoV3),
            Some(Upscaler::Lanczos) => None,
            None => Some(UpscaleModel::default_for(self.device == Device::Cuda)),
        }
    }
}

/// The tracing filter for a log `level`: that level, with the chattiest dependencies quieted
/// (the hub client off, C2PA's per-image progress lines at warn).
pub fn log_filter(level: &str) -> String {
    format!("{level},hf_hub=off,c2pa=warn")
}

/// Where a model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

fn default_queue() -> usize {
    8
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: default_data_dir(),
            public_url: None,
            default_model: None,
            strict_signatures: false,
            log: "info".into(),
            retention_days: 0,
            limits: Limits::default(),
            checks: ChecksConfig::default(),
            provenance: ProvenanceConfig::default(),
            storage: StorageConfig::default(),
            models: Vec::new(),
            aliases: Default::default(),
        }
    }
}

impl Config {
    /// Reads `path` (relative paths inside are taken from the file's folder), then applies the
    /// environment ([`Config::apply_env`]). Without a file: defaults plus environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.to_path_buf(), e))?;
                let mut cfg = Config::from_toml(&text).map_err(|e| ConfigError::Parse(p.to_path_buf(), e))?;
                let base = p.parent().map(Path::to_path_buf).unwrap_or_default();
                cfg.rebase(&base);
                cfg
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.finish();
        Ok(cfg)
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn rebase(&mut self, base: &Path) {
        let abs = |p: &PathBuf| rebased(base, p);
        self.data_dir = rebased(base, &self.data_dir);
        for m in &mut self.models {
            // A relative source that exists next to the config file is taken from there; anything
            // else (short names, hub ids, paths relative to the working directory) goes to the
            // resolver unchanged.
            if let Some(s) = &m.source {
                let p = base.join(s);
                if Path::new(s).is_relative() && !base.as_os_str().is_empty() && p.exists() {
                    m.source = Some(p.to_string_lossy().into_owned());
                }
            }
            m.config_dir = m.config_dir.as_ref().map(abs);
            m.tiny_vae = m.tiny_vae.as_ref().map(abs);
            m.transformer_file = m.transformer_file.as_ref().map(abs);
            for l in &mut m.loras {
                l.path = abs(&l.path);
            }
        }
        self.provenance.cert_chain = self.provenance.cert_chain.as_ref().map(abs);
        self.provenance.private_key = self.provenance.private_key.as_ref().map(abs);
    }

    /// Environment variables override the file: `PLANTAIN_LISTEN`, `PLANTAIN_DATA_DIR`,
    /// `PLANTAIN_PUBLIC_URL`, `PLANTAIN_DEFAULT_MODEL`, `PLANTAIN_STRICT_SIGNATURES`,
    /// `PLANTAIN_REQUESTS_PER_MINUTE`, `PLANTAIN_IMAGES_PER_DAY`, `PLANTAIN_MAX_BODY_BYTES`,
    /// `PLANTAIN_SERVE_MODEL` (adds a model: `name=source`, or just a source), and
    /// `PLANTAIN_STORAGE` (`embedded` or `postgres`), `PLANTAIN_ROLE` (`all`, `api`, `worker`),
    /// `PLANTAIN_NODE_NAME`,
    /// `PLANTAIN_S3_BUCKET`, `PLANTAIN_S3_ENDPOINT`.
    /// Storage secrets are read only when storage is opened ([`StorageConfig`]).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let num = |k: &str, v: &str| v.trim().parse::<u64>().map_err(|_| ConfigError::Env(k.into(), v.into()));
        if let Some(v) = get("PLANTAIN_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("PLANTAIN_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("PLANTAIN_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(v) = get("PLANTAIN_DEFAULT_MODEL") {
            self.default_model = Some(v);
        }
        if let Some(v) = get("PLANTAIN_STRICT_SIGNATURES") {
            self.strict_signatures = matches!(v.trim(), "1" | "true" | "yes");
        }
        if let Some(v) = get("PLANTAIN_REQUESTS_PER_MINUTE") {
            self.limits.requests_per_minute = num("PLANTAIN_REQUESTS_PER_MINUTE", &v)? as u32;
        }
        if let Some(v) = get("PLANTAIN_IMAGES_PER_DAY") {
            self.limits.images_per_day = num("PLANTAIN_IMAGES_PER_DAY", &v)? as u32;
        }
        if let Some(v) = get("PLANTAIN_MAX_BODY_BYTES") {
            self.limits.max_body_bytes = num("PLANTAIN_MAX_BODY_BYTES", &v)? as usize;
        }
        if let Some(v) = get("PLANTAIN_STORAGE") {
            self.storage.backend = match v.trim() {
                "embedded" => StorageBackend::Embedded,
                "postgres" => StorageBackend::Postgres,
                _ => return Err(ConfigError::Invalid(format!("PLANTAIN_STORAGE={v:?}: embedded or postgres"))),
            };
        }
        if let Some(v) = get("PLANTAIN_ROLE") {
            self.storage.role = v.parse()?;
        }
        if let Some(v) = get("PLANTAIN_NODE_NAME") {
            self.storage.node_name = Some(v);
        }
        if let Some(v) = get("PLANTAIN_S3_BUCKET") {
            self.storage.s3.bucket = Some(v);
        }
        if let Some(v) = get("PLANTAIN_S3_ENDPOINT") {
            self.storage.s3.endpoint = Some(v);
        }
        if let Some(v) = get("PLANTAIN_SERVE_MODEL") {
            let (name, source) = match v.split_once('=') {
                Some((n, s)) => (n.to_string(), s.to_string()),
                None => ("plantain-nano".to_string(), v.clone()),
            };
            self.models.retain(|m| m.name != name);
            self.models.insert(0, ModelConfig::new(&name, &source));
        }
        Ok(())
    }

    /// Fills defaults: the plantain-nano model when none is configured, the default model and
    /// the Gemini/OpenAI aliases pointing at it.
    fn finish(&mut self) {
        if self.models.is_empty() {
            // By name: the resolver finds the shipped folder from any working directory.
            self.models.push(ModelConfig::new("plantain-nano", "plantain-nano"));
        }
        if self.default_model.is_none() {
            self.default_model = Some(self.models[0].name.clone());
        }
        let default = self.default_model.clone().unwrap_or_default();
        let taken: Vec<String> = self.models.iter().flat_map(|m| std::iter::once(m.name.clone()).chain(m.aliases.clone())).collect();
        for a in DEFAULT_ALIASES {
            if !taken.iter().any(|t| t == a) {
                self.aliases.entry((*a).to_string()).or_insert_with(|| default.clone());
            }
        }
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Listen(self.listen.clone()))
    }
}

/// `plantain_home()/server` (so `plantain keys` and `plantain serve` agree from any folder),
/// else `plantain-data` in the working directory.
fn default_data_dir() -> PathBuf {
    plantain_hub::plantain_home().map(|h| h.join("server")).unwrap_or_else(|| PathBuf::from("plantain-data"))
}

fn rebased(base: &Path, p: &Path) -> PathBuf {
    if p.is_relative() && !base.as_os_str().is_empty() { base.join(p) } else { p.to_path_buf() }
}

impl ModelConfig {
    pub fn new(name: &str, source: &str) -> Self {
        ModelConfig {
            name: name.into(),
            source: Some(source.into()),
            aliases: Vec::new(),
            steps: None,
            guidance: None,
            strength: None,
            threads: 0,
            device: Device::Cpu,
            queue: default_queue(),
            queue_per_key: None,
            config_dir: None,
            tiny_vae: None,
            loras: Vec::new(),
            upscaler: None,
            weights: WeightBits::F32,
            transformer_file: None,
            lean: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_alias_gemini_names_to_nano() {
        let mut c = Config::default();
        c.finish();
        assert_eq!(c.models[0].name, "plantain-nano");
        assert_eq!(c.aliases.get("gemini-3.1-flash-image-preview").map(String::as_str), Some("plantain-nano"));
    }

    #[test]
    fn toml_and_env() {
        let mut c = Config::from_toml(
            r#"
            listen = "0.0.0.0:9000"
            [limits]
            images_per_day = 5
            [[models]]
            name = "tiny"
            source = "fixtures/tiny/sd1"
            steps = 2
            aliases = ["gemini-2.5-flash-image"]
            "#,
        )
        .unwrap();
        c.apply_env(|k| (k == "PLANTAIN_REQUESTS_PER_MINUTE").then(|| "7".to_string())).unwrap();
        c.finish();
        assert_eq!(c.limits.images_per_day, 5);
        assert_eq!(c.limits.requests_per_minute, 7);
        assert_eq!(c.default_model.as_deref(), Some("tiny"));
        // The model's own alias wins; the others point at the default.
        assert!(!c.aliases.contains_key("gemini-2.5-flash-image"));
        assert_eq!(c.aliases["gemini-3.1-flash-image-preview"], "tiny");
        assert!(Config::from_toml("nonsense = 1").is_err());
        assert!(c.apply_env(|k| (k == "PLANTAIN_IMAGES_PER_DAY").then(|| "x".to_string())).is_err());
    }

    /// A model's LoRA files are read as `FILE[:SCALE]` and taken from the config file's folder;
    /// a scale that is not a finite number is refused when the config is read.
    #[test]
    fn loras_are_specs_relative_to_the_config() {
        let toml = r#"
            [[models]]
            name = "styled"
            source = "sd15"
            loras = ["loras/ink.safetensors:0.6", "/abs/film.safetensors"]
            "#;
        let mut c = Config::from_toml(toml).unwrap();
        c.rebase(Path::new("/etc/plantain"));
        let l = &c.models[0].loras;
        assert_eq!((l[0].path.as_path(), l[0].scale), (Path::new("/etc/plantain/loras/ink.safetensors"), 0.6));
        assert_eq!((l[1].path.as_path(), l[1].scale), (Path::new("/abs/film.safetensors"), 1.0));
        let bad = Config::from_toml(&toml.replace(":0.6", ":nan")).unwrap_err();
        assert!(bad.contains("finite"), "{bad}");
    }

    /// FLUX.2 [klein]'s load settings: the weights' precision by name (a typo refused when the
    /// config is read), a transformer file taken from the config's folder.
    #[test]
    fn klein_weights_and_transformer_file() {
        let toml =
            "[[models]]\nname = \"klein\"\nsource = \"flux2-klein\"\nweights = \"int4\"\ntransformer_file = \"q4.gguf\"\nlean = true\n";
        let mut c = Config::from_toml(toml).unwrap();
        c.rebase(Path::new("/srv"));
        let m = &c.models[0];
        assert_eq!((m.weights, m.transformer_file.as_deref(), m.lean), (WeightBits::Int4, Some(Path::new("/srv/q4.gguf")), true));
        assert_eq!(Config::from_toml("[[models]]\nname = \"x\"\n").unwrap().models[0].weights, WeightBits::F32);
        let bad = Config::from_toml(&toml.replace("int4", "int3")).unwrap_err();
        assert!(bad.contains("`int3` is not one of f32, int8, int4"), "{bad}");
    }

    /// Issue 21: `max_image_size` is typed, so a typo is refused instead of allowing 4K; a
    /// model's device is typed too (bug 3).
    #[test]
    fn sizes_and_devices_are_typed() {
        let c = Config::from_toml("[limits]\nmax_image_size = \"1K\"").unwrap();
        assert_eq!(c.limits.max_image_size, ImageSize::S1K);
        let e = Config::from_toml("[limits]\nmax_image_size = \"1KK\"").unwrap_err();
        assert!(e.contains("unsupported image size"), "{e}");
        let c = Config::from_toml("[[models]]\nname = \"m\"\ndevice = \"cuda\"").unwrap();
        assert_eq!(c.models[0].device, Device::Cuda);
        assert_eq!(Config::from_toml("[[models]]\nname = \"m\"").unwrap().models[0].device, Device::Cpu);
        assert!(Config::from_toml("[[models]]\nname = \"m\"\ndevice = \"tpu\"").is_err());
    }

    #[test]
    fn the_upscaler_is_typed_and_follows_the_device_by_default() {
        use plantain_engine::upscale::UpscaleModel;
        let model = |toml: &str| Config::from_toml(&format!("[[models]]\nname = \"m\"\n{toml}")).map(|c| c.models[0].upscale_model());
        assert_eq!(model("").unwrap(), Some(UpscaleModel::AnimeVideoV3));
        assert_eq!(model("device = \"cuda\"").unwrap(), Some(UpscaleModel::X4Plus));
        assert_eq!(model("upscaler = \"anime\"").unwrap(), Some(UpscaleModel::X4PlusAnime));
        assert_eq!(model("upscaler = \"lanczos\"").unwrap(), None);
        assert!(model("upscaler = \"x8\"").is_err());
    }

    /// Issue 21, bug 7: with no model configured the shipped one is served by its name, which
    /// the resolver finds from any working folder.
    #[test]
    fn the_default_model_is_the_shipped_one_by_name() {
        let mut c = Config::default();
        c.finish();
        assert_eq!(c.models[0].source.as_deref(), Some("plantain-nano"));
    }
}
