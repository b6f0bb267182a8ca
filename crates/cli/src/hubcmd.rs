//! `plantain pull` and `plantain models`.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use plantain_hub::{CacheDirs, PullEvent, PullOptions, Variant, list_cached, pull as hub_pull};

#[derive(clap::Args)]
pub struct PullArgs {
    /// Short name (sd15, sd21, sd-turbo, sdxl, sdxl-turbo) or a hub repo id (owner/name[@rev]).
    pub model: String,
    /// Weight variant to fetch: fp16 (half the download, default), fp32, or another suffix.
    #[arg(long, default_value = "fp16")]
    pub variant: String,
}

#[derive(clap::Args)]
pub struct ModelsArgs {}

pub fn pull(a: PullArgs) -> Result<()> {
    let mut opts = PullOptions::from_env();
    opts.variant = match a.variant.as_str() {
        "fp16" => Variant::Fp16,
        "fp32" => Variant::Fp32,
        other => Variant::Other(other.to_string()),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")?.progress_chars("=> "));
    let path = hub_pull(&a.model, &opts, |ev| match ev {
        PullEvent::Connecting { endpoint, repo_id } => bar.set_message(format!("{repo_id} from {endpoint}")),
        PullEvent::Resolved { commit, .. } => bar.println(format!("revision {commit}")),
        PullEvent::Planned { files, bytes } => {
            bar.set_length(*bytes);
            bar.println(format!("{files} files"));
        }
        PullEvent::Note(n) => bar.println(format!("note: {n}")),
        PullEvent::Progress { bytes_done, .. } => bar.set_position(*bytes_done),
        PullEvent::Finished { .. } => bar.finish_and_clear(),
    });
    bar.finish_and_clear();
    let path = path?;
    println!("{} is ready: {}", a.model, path.display());
    Ok(())
}

pub fn models(_: ModelsArgs) -> Result<()> {
    let dirs = CacheDirs::from_env();
    let models = list_cached(&dirs);
    if models.is_empty() {
        println!("no models cached (looked in {} and $PLANTAIN_MODELS)", dirs.hf_cache.display());
        println!("get one with `plantain pull sd-turbo`, or pass a local diffusers folder / .safetensors file to --model");
        return Ok(());
    }
    println!("{:<28} {:>9}  {:<10} path", "model", "size", "state");
    for m in models {
        let state = if m.complete { "ok".to_string() } else { format!("missing {}", m.missing.join(",")) };
        println!("{:<28} {:>7.2}GB  {:<10} {}", m.name, m.size_bytes as f64 / 1e9, state, m.path.display());
    }
    Ok(())
}

/// Where to look for models (see [`plantain_hub::ResolveOptions::for_this_install`]).
pub fn resolve_options() -> plantain_hub::ResolveOptions {
    plantain_hub::ResolveOptions::for_this_install()
}
