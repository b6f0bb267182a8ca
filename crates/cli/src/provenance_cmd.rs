//! Provenance for the CLI: where keys live, the `--no-watermark` / `--no-c2pa` switches, and
//! stamping outputs (watermark + signed C2PA + labels) through `plantain-provenance`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plantain_provenance::{Action, Ingredient, ManifestInfo, MediaFormat, Provenance, Settings, Stamped};

/// Provenance options of `plantain generate`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StampArgs {
    /// Do not embed the invisible watermark (on by default; the output says when it is off).
    #[arg(long)]
    pub no_watermark: bool,
    /// Do not sign C2PA Content Credentials (on by default; the output says when it is off).
    #[arg(long)]
    pub no_c2pa: bool,
    #[command(flatten)]
    pub dir: DirArgs,
    /// Sign with this certificate chain (PEM, leaf first; with --c2pa-key) instead of the local
    /// identity. Default: `signing-chain.pem` in the provenance directory, if present.
    #[arg(long, requires = "c2pa_key")]
    pub c2pa_cert: Option<PathBuf>,
    /// The private key (PEM) of --c2pa-cert. Default: `signing-key.pem` in the provenance directory.
    #[arg(long, requires = "c2pa_cert")]
    pub c2pa_key: Option<PathBuf>,
}

/// Where the watermark key and signing identity live.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DirArgs {
    /// Provenance directory (watermark key, signing identity). Default: $PLANTAIN_HOME/provenance,
    /// else $XDG_DATA_HOME/plantain/provenance, else ~/.local/share/plantain/provenance.
    #[arg(long, value_name = "DIR")]
    pub provenance_dir: Option<PathBuf>,
}

/// Operator certificate files looked for in the provenance directory.
pub const OPERATOR_CHAIN_FILE: &str = "signing-chain.pem";
pub const OPERATOR_KEY_FILE: &str = "signing-key.pem";

impl DirArgs {
    pub fn resolve(&self) -> Result<PathBuf> {
        if let Some(d) = &self.provenance_dir {
            return Ok(d.clone());
        }
        match plantain_hub::plantain_home() {
            Some(h) => Ok(h.join("provenance")),
            None => bail!("no provenance directory: set PLANTAIN_HOME or pass --provenance-dir"),
        }
    }

    fn settings(&self) -> Result<Settings> {
        Ok(Settings::in_dir(self.resolve()?, &operator_name()))
    }
}

/// The name put in a local signing identity: the host name, else a generic one.
fn operator_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "local".to_string())
}

/// The output format from the file extension, checked before any generation work.
pub fn output_format(path: &Path) -> Result<MediaFormat> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    MediaFormat::from_extension(ext).with_context(|| {
        format!(
            "{}: unknown output format {:?}; use .png, .jpg/.jpeg or .webp",
            path.display(),
            if ext.is_empty() { "(no extension)" } else { ext }
        )
    })
}

/// Loads (creating on first run) the watermark key and signing identity for stamping, and prints
/// the notices (new key, local identity not publicly trusted, what is switched off) to stderr.
pub fn load_for_stamping(a: &StampArgs) -> Result<Provenance> {
    let mut settings = a.dir.settings()?;
    settings.watermark = !a.no_watermark;
    settings.c2pa = !a.no_c2pa;
    let dir = a.dir.resolve()?;
    match (&a.c2pa_cert, &a.c2pa_key) {
        (Some(c), Some(k)) => (settings.cert_chain, settings.private_key) = (Some(c.clone()), Some(k.clone())),
        _ => {
            let (c, k) = (dir.join(OPERATOR_CHAIN_FILE), dir.join(OPERATOR_KEY_FILE));
            match (c.exists(), k.exists()) {
                (true, true) => (settings.cert_chain, settings.private_key) = (Some(c), Some(k)),
                (false, false) => {}
                _ => bail!("{}: put both {OPERATOR_CHAIN_FILE} and {OPERATOR_KEY_FILE} there, or neither", dir.display()),
            }
        }
    }
    let prov = Provenance::load(&settings).with_context(|| format!("provenance (directory {})", dir.display()))?;
    for n in &prov.notices {
        eprintln!("note: {n}");
    }
    Ok(prov)
}

/// Watermarks, encodes, labels and signs one generated image. `input` is the edited image
/// (`--image`): it becomes the manifest's ingredient (its hash, never its pixels) and the action
/// `c2pa.edited`; otherwise the action is `c2pa.created`. Prints what was stamped (or that a part
/// is switched off) to stderr. The prompt is not recorded: it can be private.
pub fn stamp(
    prov: &Provenance,
    img: &image::RgbImage,
    format: MediaFormat,
    model: &str,
    input: Option<&Path>,
    g: &plantain_engine::pipeline::Generated,
) -> Result<Stamped> {
    let input_bytes = input.map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display()))).transpose()?;
    // A local folder or file is recorded by its name only: its full path can be private.
    let model = match Path::new(model) {
        p if p.is_absolute() => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| model.to_string()),
        _ => model.to_string(),
    };
    let mut info = ManifestInfo::created(&model);
    if let (Some(p), Some(bytes)) = (input, &input_bytes) {
        info.action = Action::Edited;
        let title = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into());
        info.ingredients.push(Ingredient { title, bytes });
    }
    info.set_generation(g.seed, g.steps_run);
    for (k, v) in [
        ("scheduler", serde_json::json!(g.scheduler.to_string())),
        ("guidance", serde_json::json!(g.guidance)),
        ("width", serde_json::json!(img.width())),
        ("height", serde_json::json!(img.height())),
    ] {
        info.parameters.insert(k.into(), v);
    }
    let stamped = prov.stamp(img, format, &info).context("stamping the output (watermark, C2PA)")?;
    let wm = match stamped.payload {
        Some(p) => format!("watermark {}", p.to_hex()),
        None => "watermark OFF (--no-watermark)".into(),
    };
    let c2pa = match &prov.identity {
        Some(id) if id.is_local() => "C2PA signed (local identity, not publicly trusted)".to_string(),
        Some(id) => format!("C2PA signed ({})", id.source),
        None => "C2PA OFF (--no-c2pa)".into(),
    };
    let action = if input.is_some() { "edited" } else { "created" };
    eprintln!("provenance: {wm}; {c2pa}; action {action}; labelled AI-generated");
    Ok(stamped)
}

/// Loads what verification needs (watermark key, trust anchors) without creating anything.
pub fn load_for_verify(a: &DirArgs) -> Result<Provenance> {
    let dir = a.resolve()?;
    Provenance::load_for_verify(&a.settings()?).with_context(|| format!("provenance (directory {})", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_format_follows_the_extension() {
        assert_eq!(output_format(Path::new("a/b.PNG")).unwrap(), MediaFormat::Png);
        assert_eq!(output_format(Path::new("b.jpg")).unwrap(), MediaFormat::Jpeg);
        assert_eq!(output_format(Path::new("b.jpeg")).unwrap(), MediaFormat::Jpeg);
        assert_eq!(output_format(Path::new("b.webp")).unwrap(), MediaFormat::WebP);
        let e = output_format(Path::new("b.gif")).unwrap_err().to_string();
        assert!(e.contains("unknown output format") && e.contains("gif"), "{e}");
        assert!(output_format(Path::new("noext")).unwrap_err().to_string().contains("no extension"));
    }

    #[test]
    fn explicit_directory_wins() {
        let d = DirArgs { provenance_dir: Some("/x/y".into()) };
        assert_eq!(d.resolve().unwrap(), PathBuf::from("/x/y"));
    }
}
