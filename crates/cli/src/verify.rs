//! `plantain verify FILE…`: the C2PA manifest (does its signature and hash binding validate?),
//! the invisible watermark (present? payload, confidence) and a one-line verdict per file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plantain_provenance::{Provenance, VerifyReport};

use crate::provenance_cmd::{self, DirArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Image files (PNG, JPEG, WebP).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the full reports as JSON (an array with one object per file).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Files larger than this are not read (no image plantain verifies comes near it).
const MAX_FILE_BYTES: u64 = 1 << 30;

fn check(prov: &Provenance, path: &Path) -> Result<VerifyReport> {
    let len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if len > MAX_FILE_BYTES {
        bail!("{}: {len} bytes, larger than the {MAX_FILE_BYTES} bytes verify reads", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(prov.verify(&bytes)?)
}

pub fn run(a: Args) -> Result<()> {
    let prov = provenance_cmd::load_for_verify(&a.dir)?;
    for n in &prov.notices {
        eprintln!("note: {n}");
    }
    let mut failed = 0usize;
    let mut json = Vec::new();
    for (i, path) in a.files.iter().enumerate() {
        // Each file on its own: a bad one is reported and the others are still checked.
        let result = check(&prov, path);
        if result.is_err() {
            failed += 1;
        }
        if a.json {
            json.push(match &result {
                Ok(r) => serde_json::json!({ "file": path, "report": r }),
                Err(e) => serde_json::json!({ "file": path, "error": format!("{e:#}") }),
            });
            continue;
        }
        if i > 0 {
            println!();
        }
        match result {
            Ok(r) => print_report(path, &r),
            Err(e) => {
                println!("{}: ERROR: {e:#}", path.display());
                eprintln!("error: {}: {e:#}", path.display());
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    if failed > 0 {
        bail!("{failed} of {} file(s) could not be verified", a.files.len());
    }
    Ok(())
}

fn yes_no(b: bool, yes: &'static str, no: &'static str) -> &'static str {
    if b { yes } else { no }
}

fn print_report(path: &Path, r: &VerifyReport) {
    println!("{}: {}", path.display(), r.verdict);
    println!("  image: {:?}, {}x{}", r.format, r.width, r.height);
    match &r.manifest {
        None => println!("  C2PA: no manifest"),
        Some(m) => {
            println!(
                "  C2PA: state {}; signature {}; hash binding {}; signer {}",
                m.state,
                yes_no(m.signature_valid, "valid", "INVALID"),
                yes_no(m.hash_valid, "valid", "INVALID (pixels or metadata changed after signing)"),
                yes_no(m.trusted, "trusted", "not on a trust list"),
            );
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            println!("    claim generator: {}", opt(&m.claim_generator));
            println!("    signed by: {} (issuer {}) at {}", opt(&m.signer), opt(&m.issuer), opt(&m.signed_at));
            let actions = if m.actions.is_empty() { "-".to_string() } else { m.actions.join(", ") };
            let source = m.digital_source_type.as_deref().map(|d| d.rsplit('/').next().unwrap_or(d)).unwrap_or("-");
            println!("    actions: {actions} (digital source type {source}); model: {}", opt(&m.model));
            if !m.ingredients.is_empty() {
                println!("    ingredients: {}", m.ingredients.join(", "));
            }
            if let Some(p) = m.soft_binding {
                println!("    soft binding: watermark payload {}", p.to_hex());
            }
            for f in &m.failures {
                println!("    failure: {f}");
            }
        }
    }
    match &r.watermark {
        None => println!("  watermark: not checked (no watermark key in the provenance directory)"),
        Some(d) if d.present => {
            let p = d.payload.expect("a present watermark has a payload");
            println!(
                "  watermark: present; payload {} (generator {:#06x}, key id {:#06x}, nonce {:#010x}); confidence {:.2}; \
                 false positive probability {:.1e}",
                p.to_hex(),
                p.generator,
                p.key_id,
                p.nonce,
                d.confidence,
                d.false_positive_probability
            );
            if let Some(linked) = r.soft_binding_matches {
                println!("    {}", yes_no(linked, "matches the manifest's soft binding", "does NOT match the manifest's soft binding"));
            }
        }
        Some(d) => println!(
            "  watermark: not found ({} decoding attempts; false positive probability {:.1e})",
            d.attempts, d.false_positive_probability
        ),
    }
}
