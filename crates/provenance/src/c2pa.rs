//! C2PA Content Credentials: sign an encoded PNG/JPEG/WebP with plantain's manifest, and read
//! and validate the manifest of a file.

use std::io::Cursor;

use serde_json::{Value, json};

use crate::identity::SigningIdentity;
use crate::labels::{COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, TRAINED_ALGORITHMIC_MEDIA};
use crate::watermark::Payload;
use crate::{MediaFormat, ProvenanceError};

/// Label and algorithm name of the soft-binding assertion that names plantain's watermark.
pub const SOFT_BINDING_LABEL: &str = "c2pa.soft-binding";
pub const SOFT_BINDING_ALG: &str = "org.plantain.watermark.v1";
/// Label of plantain's own assertion (model name, settings the caller chooses to record).
pub const GENERATION_LABEL: &str = "org.plantain.generation";

/// What the output is, for the C2PA action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Made from a prompt only: `c2pa.created`, digital source type `trainedAlgorithmicMedia`.
    Created,
    /// An edit of an input image (img2img, inpainting, conversational edit): `c2pa.opened` of
    /// the input (the `parentOf` ingredient), then `c2pa.edited`; further inputs `c2pa.placed`.
    Edited,
    /// A fusion of several input images into a new one: `c2pa.created`, then `c2pa.placed` with
    /// the inputs as `componentOf` ingredients.
    Placed,
}

/// An input image of an edit or fusion.
#[derive(Clone, Debug)]
pub struct Ingredient<'a> {
    /// A title for it (e.g. its file name); not the bytes.
    pub title: String,
    /// The encoded input. Only its hash (and its own manifest, if any) goes into the claim — the
    /// pixels are never embedded.
    pub bytes: &'a [u8],
}

/// What to record in the manifest.
#[derive(Clone, Debug)]
pub struct ManifestInfo<'a> {
    pub action: Action,
    /// The model name as users call it (`sd-turbo`, `plantain-nano`, ...).
    pub model: String,
    pub title: Option<String>,
    pub ingredients: Vec<Ingredient<'a>>,
    /// The watermark payload embedded in the pixels (for the soft-binding assertion).
    pub watermark: Option<Payload>,
    /// Extra fields for the `org.plantain.generation` assertion (seed, steps, ...). Keep prompts
    /// out unless the operator opts in: they can be private.
    pub parameters: serde_json::Map<String, Value>,
}

impl ManifestInfo<'_> {
    pub fn created(model: &str) -> Self {
        ManifestInfo {
            action: Action::Created,
            model: model.into(),
            title: None,
            ingredients: Vec::new(),
            watermark: None,
            parameters: Default::default(),
        }
    }

    /// Records the generation's seed and denoising steps — the fields every plantain output
    /// carries, written the same way by the CLI and the server. The seed is a string: C2PA's
    /// CBOR integers are i64 and seeds are u64.
    pub fn set_generation(&mut self, seed: u64, steps: usize) {
        self.parameters.insert("seed".into(), Value::String(seed.to_string()));
        self.parameters.insert("steps".into(), Value::from(steps));
    }

    /// The IPTC digital source type of this output.
    pub fn digital_source_type(&self) -> &'static str {
        match self.action {
            Action::Created => TRAINED_ALGORITHMIC_MEDIA,
            Action::Edited | Action::Placed => COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
        }
    }
}

/// Trust anchors for validation.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// PEM bundle of additional trusted roots (e.g. the local CA of this installation).
    pub anchors_pem: Option<String>,
}

impl Trust {
    pub fn with_anchor_pem(pem: &str) -> Self {
        Trust { anchors_pem: Some(pem.to_string()) }
    }
}

fn c2pa_err(what: &str, e: ::c2pa::Error) -> ProvenanceError {
    ProvenanceError::C2pa(format!("{what}: {e}"))
}

fn context(trust: &Trust) -> Result<::c2pa::Context, ProvenanceError> {
    let mut settings = json!({
        "verify": { "ocsp_fetch": false, "remote_manifest_fetch": false, "verify_after_sign": false },
        // No thumbnails: they would embed a copy of the picture, and this build of c2pa-rs has
        // no thumbnail support (left on, it logs a warning for every signed image).
        "builder": { "thumbnail": { "enabled": false } },
    });
    if let Some(pem) = &trust.anchors_pem {
        settings["trust"] = json!({ "user_anchors": pem });
    }
    ::c2pa::Context::new().with_settings(settings.to_string().as_str()).map_err(|e| c2pa_err("settings", e))
}

/// Signs `bytes` (an encoded image of `format`) with a C2PA manifest and returns the new file.
pub fn sign(bytes: &[u8], format: MediaFormat, info: &ManifestInfo, identity: &SigningIdentity) -> Result<Vec<u8>, ProvenanceError> {
    let version = env!("CARGO_PKG_VERSION");
    let dst = info.digital_source_type();
    let ids: Vec<String> = (0..info.ingredients.len()).map(|i| format!("input-{i}")).collect();
    let main = |action: &str| {
        json!({
            "action": action,
            "digitalSourceType": dst,
            "softwareAgent": { "name": "plantain", "version": version },
            "description": format!("model: {}", info.model),
        })
    };
    let placed = |ids: &[String]| json!({ "action": "c2pa.placed", "parameters": { "ingredientIds": ids } });
    // C2PA 2.x: a manifest's first action is `c2pa.created` or `c2pa.opened` (of its one
    // `parentOf` ingredient); validators reject anything else as malformed.
    let actions: Vec<Value> = match (info.action, ids.split_first()) {
        (Action::Edited, Some((parent, others))) => {
            let mut v = vec![json!({ "action": "c2pa.opened", "parameters": { "ingredientIds": [parent] } }), main("c2pa.edited")];
            if !others.is_empty() {
                // Further inputs of an edit are placed into it.
                v.push(placed(others));
            }
            v
        }
        (Action::Placed, Some(_)) => vec![main("c2pa.created"), placed(&ids)],
        // An edit or fusion whose inputs were not given: a new image all the same.
        (Action::Edited, None) => vec![main("c2pa.created"), main("c2pa.edited")],
        (Action::Created, _) | (Action::Placed, None) => vec![main("c2pa.created")],
    };
    let mut generation = serde_json::Map::new();
    generation.insert("model".into(), json!(info.model));
    for (k, v) in &info.parameters {
        generation.insert(k.clone(), v.clone());
    }
    let mut assertions =
        vec![json!({ "label": "c2pa.actions", "data": { "actions": actions } }), json!({ "label": GENERATION_LABEL, "data": generation })];
    if let Some(p) = info.watermark {
        assertions.push(json!({
            "label": SOFT_BINDING_LABEL,
            "data": {
                "alg": SOFT_BINDING_ALG,
                "blocks": [{ "scope": {}, "value": p.to_hex() }],
                "name": "plantain keyed spread-spectrum luma watermark (64-bit payload)",
            }
        }));
    }
    let definition = json!({
        "claim_generator_info": [{ "name": "plantain", "version": version }],
        "title": info.title.clone().unwrap_or_else(|| format!("plantain output ({})", info.model)),
        "format": format.mime(),
        "assertions": assertions,
    });
    let mut builder = ::c2pa::Builder::from_context(context(&Trust::default())?)
        .with_definition(definition.to_string().as_str())
        .map_err(|e| c2pa_err("manifest definition", e))?;
    for (i, (ing, id)) in info.ingredients.iter().zip(&ids).enumerate() {
        // The edited image is the parent; everything placed into an image is a component.
        let relationship = if info.action == Action::Edited && i == 0 { "parentOf" } else { "componentOf" };
        let fmt = MediaFormat::sniff(ing.bytes)
            .ok_or_else(|| ProvenanceError::BadImage(format!("ingredient {}: not PNG, JPEG or WebP", ing.title)))?;
        let ij = json!({ "title": ing.title, "relationship": relationship, "label": id });
        builder
            .add_ingredient_from_stream(ij.to_string(), fmt.mime(), &mut Cursor::new(ing.bytes))
            .map_err(|e| c2pa_err("ingredient", e))?;
    }
    let signer = ::c2pa::create_signer::from_keys(
        identity.cert_chain_pem.as_bytes(),
        identity.private_key_pem.as_bytes(),
        ::c2pa::SigningAlg::Es256,
        None,
    )
    .map_err(|e| c2pa_err("signing identity", e))?;
    let mut source = Cursor::new(bytes);
    let mut dest = Cursor::new(Vec::new());
    builder.sign(signer.as_ref(), format.mime(), &mut source, &mut dest).map_err(|e| c2pa_err("signing", e))?;
    Ok(dest.into_inner())
}

/// What the manifest of a file says and whether it validates.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ManifestReport {
    /// `Trusted`, `Valid` or `Invalid` (C2PA validation state).
    pub state: String,
    /// The claim signature verifies against the signing certificate.
    pub signature_valid: bool,
    /// The hard binding (hash of the file's bytes) matches.
    pub hash_valid: bool,
    /// The signing certificate chains to a trust anchor (the C2PA list or configured anchors).
    pub trusted: bool,
    /// Failure codes with explanations (untrusted-certificate codes included).
    pub failures: Vec<String>,
    pub claim_generator: Option<String>,
    pub signer: Option<String>,
    pub issuer: Option<String>,
    pub signed_at: Option<String>,
    pub actions: Vec<String>,
    pub digital_source_type: Option<String>,
    pub model: Option<String>,
    pub ingredients: Vec<String>,
    /// The watermark payload named by the soft-binding assertion.
    pub soft_binding: Option<Payload>,
}

/// Reads and validates the C2PA manifest of `bytes`. `Ok(None)` when the file has none.
pub fn read(bytes: &[u8], format: MediaFormat, trust: &Trust) -> Result<Option<ManifestReport>, ProvenanceError> {
    let reader = match ::c2pa::Reader::from_context(context(trust)?).with_stream(format.mime(), Cursor::new(bytes)) {
        Ok(r) => r,
        Err(::c2pa::Error::JumbfNotFound) | Err(::c2pa::Error::ProvenanceMissing) => return Ok(None),
        Err(e) => {
            // A manifest that cannot even be parsed is a failed validation, not an absent one.
            return Ok(Some(ManifestReport {
                state: "Invalid".into(),
                signature_valid: false,
                hash_valid: false,
                trusted: false,
                failures: vec![format!("manifest unreadable: {e}")],
                claim_generator: None,
                signer: None,
                issuer: None,
                signed_at: None,
                actions: Vec::new(),
                digital_source_type: None,
                model: None,
                ingredients: Vec::new(),
                soft_binding: None,
            }));
        }
    };
    let state = reader.validation_state();
    let failures: Vec<(String, String)> = reader
        .validation_results()
        .and_then(|r| r.active_manifest())
        .map(|s| s.failure().iter().map(|v| (v.code().to_string(), v.explanation().unwrap_or_default().to_string())).collect())
        .unwrap_or_default();
    let has = |prefixes: &[&str]| failures.iter().any(|(c, _)| prefixes.iter().any(|p| c.starts_with(p)));
    let signature_valid = !has(&["claimSignature", "signingCredential.invalid", "signingCredential.revoked", "timeStamp.mismatch"]);
    let hash_valid =
        !has(&["assertion.dataHash", "assertion.boxesHash", "assertion.hashedURI", "assertion.bmffHash", "assertion.collectionHash"]);
    let m = reader.active_manifest();
    let mut report = ManifestReport {
        state: format!("{state:?}"),
        signature_valid,
        hash_valid,
        trusted: state == ::c2pa::ValidationState::Trusted,
        failures: failures.iter().map(|(c, e)| if e.is_empty() { c.clone() } else { format!("{c}: {e}") }).collect(),
        claim_generator: None,
        signer: None,
        issuer: None,
        signed_at: None,
        actions: Vec::new(),
        digital_source_type: None,
        model: None,
        ingredients: Vec::new(),
        soft_binding: None,
    };
    if let Some(m) = m {
        report.claim_generator = m.claim_generator().map(str::to_string).or_else(|| {
            let v: Value = serde_json::from_str(&reader.json()).ok()?;
            let label = reader.active_label()?;
            let info = v.get("manifests")?.get(label)?.get("claim_generator_info")?.get(0)?;
            Some(format!("{}/{}", info.get("name")?.as_str()?, info.get("version").and_then(Value::as_str).unwrap_or("?")))
        });
        report.signer = m.signature_info().and_then(|s| s.common_name.clone());
        report.issuer = m.issuer();
        report.signed_at = m.time();
        report.ingredients = m.ingredients().iter().map(|i| i.title().unwrap_or("untitled").to_string()).collect();
        for a in m.assertions() {
            let Ok(v) = a.value() else { continue };
            match a.label() {
                l if l.starts_with("c2pa.actions") => {
                    for act in v.get("actions").and_then(Value::as_array).into_iter().flatten() {
                        if let Some(name) = act.get("action").and_then(Value::as_str) {
                            report.actions.push(name.to_string());
                        }
                        if report.digital_source_type.is_none() {
                            report.digital_source_type = act.get("digitalSourceType").and_then(Value::as_str).map(str::to_string);
                        }
                    }
                }
                GENERATION_LABEL => report.model = v.get("model").and_then(Value::as_str).map(str::to_string),
                SOFT_BINDING_LABEL if v.get("alg").and_then(Value::as_str) == Some(SOFT_BINDING_ALG) => {
                    report.soft_binding = v.pointer("/blocks/0/value").and_then(Value::as_str).and_then(Payload::from_hex);
                }
                _ => {}
            }
        }
    }
    Ok(Some(report))
}
