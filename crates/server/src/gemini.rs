//! The Gemini API: `models/{model}:generateContent`, `:streamGenerateContent`, `:countTokens`,
//! `GET models`, `GET models/{model}`, under `/v1beta/` and `/v1/`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use plantain_core::{AspectRatio, ImageSize, output_pixels};
use plantain_imageio::{B64, InputImage, MediaFormat, decode_base64, decode_input};
use plantain_service::worker::Worker;
use plantain_service::{CheckedOutcome as Outcome, PicturePlan as Plan};
use plantain_service::{JobSpec, LoopEvent, Output, RequestCtx};
use plantain_store::Artefact;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Admitted, Gemini};
use crate::error::{ApiError, Flavor, GeminiError};
use crate::ops::{idempotent, read_body};
use crate::signature::{SignatureError, Signed};

/// Tokens an input image counts for (Gemini 3.1 Flash Image).
pub const INPUT_IMAGE_TOKENS: u32 = 1120;

pub fn routes() -> Router<Arc<AppState>> {
    let mut r = Router::new();
    for v in ["v1beta", "v1"] {
        r = r.route(&format!("/{v}/models"), get(list_models)).route(&format!("/{v}/models/{{name}}"), get(get_model).post(model_action));
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Wire types (the SDKs send camelCase; snake_case is accepted too).

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    #[serde(default)]
    pub contents: Vec<Content>,
    #[serde(alias = "system_instruction")]
    pub system_instruction: Option<Content>,
    #[serde(alias = "generation_config")]
    pub generation_config: Option<GenerationConfig>,
}

#[derive(Deserialize, Default, Debug, Clone)]
pub struct Content {
    pub role: Option<String>,
    #[serde(default)]
    pub parts: Vec<Part>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    pub text: Option<String>,
    #[serde(alias = "inline_data")]
    pub inline_data: Option<InlineData>,
    #[serde(alias = "file_data")]
    pub file_data: Option<FileData>,
    pub thought: Option<bool>,
    #[serde(alias = "thought_signature")]
    pub thought_signature: Option<String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct InlineData {
    #[serde(alias = "mime_type")]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub data: String,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    #[serde(alias = "mime_type")]
    pub mime_type: Option<String>,
    #[serde(alias = "file_uri")]
    pub file_uri: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(alias = "response_modalities")]
    pub response_modalities: Option<Vec<String>>,
    #[serde(alias = "image_config")]
    pub image_config: Option<ImageConfig>,
    #[serde(alias = "response_format")]
    pub response_format: Option<ResponseFormat>,
    #[serde(alias = "candidate_count")]
    pub candidate_count: Option<i64>,
    pub seed: Option<i64>,
    pub temperature: Option<f64>,
    #[serde(alias = "thinking_config")]
    pub thinking_config: Option<ThinkingConfig>,
}

/// `thinkingConfig`: with `includeThoughts` the answer carries the plan and the loop's checks
/// as thought parts (the budget and level fields are accepted and not used).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    #[serde(alias = "include_thoughts")]
    pub include_thoughts: Option<bool>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    #[serde(alias = "aspect_ratio")]
    pub aspect_ratio: Option<String>,
    #[serde(alias = "image_size")]
    pub image_size: Option<String>,
    /// `image/png` (default) or `image/jpeg` (Vertex's `imageOutputOptions.mimeType`).
    #[serde(alias = "output_mime_type")]
    pub output_mime_type: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
pub struct ResponseFormat {
    pub image: Option<ImageConfig>,
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Models.

fn model_json(name: &str, served_by: &str, state: &AppState) -> Value {
    let ready = state.svc.model(served_by).map(|w| format!("{:?}", w.state())).unwrap_or_default();
    json!({
        "name": format!("models/{name}"),
        "baseModelId": name,
        "version": env!("CARGO_PKG_VERSION"),
        "displayName": if name == served_by { name.to_string() } else { format!("{name} (served by {served_by})") },
        "description": format!("Image generation by plantain with the local model {served_by} ({ready})"),
        "inputTokenLimit": 32768,
        "outputTokenLimit": 32768,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    })
}

async fn list_models(State(state): State<Arc<AppState>>, _: Admitted<Gemini>) -> Response {
    let models: Vec<Value> = state.svc.model_names().iter().map(|(n, m)| model_json(n, m, &state)).collect();
    axum::Json(json!({ "models": models })).into_response()
}

async fn get_model(State(state): State<Arc<AppState>>, _: Admitted<Gemini>, Path(name): Path<String>) -> Result<Response, GeminiError> {
    let n = name.strip_prefix("models/").unwrap_or(&name);
    let w = state.svc.model(n).ok_or_else(|| unknown_model(n, "v1beta"))?;
    Ok(axum::Json(model_json(n, &w.name, &state)).into_response())
}

fn unknown_model(name: &str, version: &str) -> ApiError {
    ApiError::not_found(format!(
        "models/{name} is not found for API version {version}, or is not supported for generateContent. Call ListModels to see the available models."
    ))
}

async fn model_action(
    State(state): State<Arc<AppState>>,
    Admitted { ctx, .. }: Admitted<Gemini>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let version = if req.uri().path().starts_with("/v1beta/") { "v1beta" } else { "v1" };
    let (parts, body) = req.into_parts();
    let Some((model, action)) = name.rsplit_once(':') else {
        return GeminiError(ApiError::not_found(format!("POST models/{name}: expected models/MODEL:ACTION"))).into_response();
    };
    let body = match read_body(&state, body).await {
        Ok(b) => b,
        Err(e) => return GeminiError(e).into_response(),
    };
    let Some(worker) = state.svc.model(model) else {
        return GeminiError(unknown_model(model, version)).into_response();
    };
    let model = model.to_string();
    let answer = |r: Result<Value, ApiError>| match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => GeminiError(e).into_response(),
    };
    match action {
        "generateContent" => {
            let fut = async { answer(generate_content(&state, &ctx, &model, worker, &body).await) };
            idempotent(&state, &ctx, &format!("generateContent/{model}"), &parts.headers, &body, Flavor::Gemini, fut).await
        }
        "streamGenerateContent" => {
            // A repeat with the same Idempotency-Key replays the stored stream (every chunk).
            let fut = async {
                stream_generate_content(state.clone(), ctx.clone(), model.clone(), worker, &body)
                    .await
                    .unwrap_or_else(|e| GeminiError(e).into_response())
            };
            idempotent(&state, &ctx, &format!("streamGenerateContent/{model}"), &parts.headers, &body, Flavor::Gemini, fut).await
        }
        "countTokens" => answer(count_tokens(&state, &body)),
        "batchGenerateContent" => answer(crate::batch::create(&state, &ctx, &model, &worker.name, &body).await),
        other => GeminiError(ApiError::not_found(format!(
            "unknown method {other:?}; this server answers generateContent, streamGenerateContent and countTokens"
        )))
        .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Turning a request into a job.

/// What the request asks for, checked.
pub struct Prepared {
    pub spec: JobSpec,
    pub include_text: bool,
    /// `thinkingConfig.includeThoughts`: the plan and the checks as thought parts.
    pub include_thoughts: bool,
    pub ratio: AspectRatio,
    pub size: ImageSize,
    pub input_images: u32,
    /// An edit that cannot be made on this picture (its target is not there, or the words
    /// match several things): answered with this text and no image (`NO_IMAGE`); no job runs.
    pub answer: Option<String>,
    /// What an edit did, in words (the text part, when TEXT is asked for).
    pub explain: Option<String>,
}

/// `thinkingConfig.includeThoughts`: the plan and the loop's checks as thought parts.
pub(crate) fn wants_thoughts(gc: Option<&GenerationConfig>) -> bool {
    gc.and_then(|g| g.thinking_config.as_ref()).and_then(|t| t.include_thoughts).unwrap_or(false)
}

/// An image part found in the request, with where it sits.
pub(crate) struct FoundImage {
    pub content: usize,
    pub from_model: bool,
    pub image: InputImage,
    /// The stored artefact the part's signature names.
    pub artefact: Option<Artefact>,
}

pub(crate) fn is_model(c: &Content) -> bool {
    c.role.as_deref() == Some("model")
}

/// Turns a `generateContent` request into a job for `worker`.
pub async fn prepare(
    state: &AppState,
    worker: Arc<Worker>,
    req: &GenerateContentRequest,
    key_id: &Option<String>,
) -> Result<Prepared, ApiError> {
    check_contents(req)?;
    let gc = req.generation_config.as_ref();
    let include_text = modalities(gc)?;
    let found = collect_images(state, req, key_id).await?;
    let targets = edit_targets(req, &found);
    if !targets.is_empty() {
        return crate::edit::prepare_edit(state, worker, req, &found, &targets, include_text).await;
    }
    // No image anywhere in the conversation: text to image, every user turn refining the prompt.
    let prompt = prompt_of(state, req, false)?;
    let (ratio, size, format) = image_settings(state, gc, None)?;
    let (width, height) = output_pixels(ratio, size);
    let sampling = sampling(state, gc, None)?;
    let prompt_tokens = state.tokenizer.count_tokens(&prompt) as u32;
    let params = json!({
        "api": "gemini", "aspectRatio": ratio.as_str(), "imageSize": size.as_str(), "width": width, "height": height,
        "candidateCount": sampling.count, "seed": sampling.seed, "temperature": sampling.temperature,
    });
    let (images, parent) = (Vec::new(), None);
    let spec = JobSpec {
        model: worker,
        prompt,
        negative: None,
        width,
        height,
        size_label: size.as_str().to_string(),
        count: sampling.count,
        seed: sampling.seed,
        images,
        mask: None,
        strength: None,
        steps: None,
        guidance: None,
        checks: None,
        format,
        parent,
        params,
        prompt_tokens,
        tokens_per_image: size.output_tokens(),
        partial_images: 0,
        progress: false,
        edit: None,
        repaint: None,
    };
    let include_thoughts = wants_thoughts(gc);
    Ok(Prepared { spec, include_text, include_thoughts, ratio, size, input_images: found.len() as u32, answer: None, explain: None })
}

fn check_contents(req: &GenerateContentRequest) -> Result<(), ApiError> {
    if req.contents.is_empty() {
        return Err(ApiError::invalid("contents is not specified: send at least one content with a text part"));
    }
    for (ci, c) in req.contents.iter().enumerate() {
        if let Some(r) = c.role.as_deref()
            && r != "user"
            && r != "model"
        {
            return Err(ApiError::invalid(format!("contents[{ci}].role must be \"user\" or \"model\", got {r:?}")));
        }
    }
    Ok(())
}

/// Modalities: this server makes images; text comes only as a short caption. Returns whether
/// to include the caption.
fn modalities(gc: Option<&GenerationConfig>) -> Result<bool, ApiError> {
    let Some(m) = gc.and_then(|g| g.response_modalities.as_ref()) else { return Ok(true) };
    let up: Vec<String> = m.iter().map(|s| s.to_ascii_uppercase()).collect();
    if let Some(bad) = up.iter().find(|s| !matches!(s.as_str(), "TEXT" | "IMAGE")) {
        return Err(ApiError::invalid(format!("responseModalities: unsupported modality {bad:?}; this server answers TEXT and IMAGE")));
    }
    if !up.iter().any(|s| s == "IMAGE") {
        return Err(ApiError::invalid("responseModalities must include IMAGE: this server only generates images"));
    }
    Ok(up.iter().any(|s| s == "TEXT"))
}

/// Every image part (inline or file), decoded and checked; model images with their signature's
/// stored artefact. Images are counted before anything is decoded.
async fn collect_images(state: &AppState, req: &GenerateContentRequest, key_id: &Option<String>) -> Result<Vec<FoundImage>, ApiError> {
    let max = state.config().limits.max_images;
    let total = req.contents.iter().flat_map(|c| &c.parts).filter(|p| p.inline_data.is_some() || p.file_data.is_some()).count();
    if total > max {
        return Err(ApiError::invalid(format!("{total} images in the request; at most {max} reference images are supported")));
    }
    let mut found = Vec::new();
    for (ci, c) in req.contents.iter().enumerate() {
        for (pi, p) in c.parts.iter().enumerate() {
            let Some(image) = decode_part(state, p, &format!("contents[{ci}].parts[{pi}]"), key_id).await? else { continue };
            let artefact = if is_model(c) { signed_artefact(state, p, ci, pi).await? } else { None };
            found.push(FoundImage { content: ci, from_model: is_model(c), image, artefact });
        }
    }
    Ok(found)
}

/// The image a part carries (None for a part without one).
async fn decode_part(state: &AppState, p: &Part, what: &str, key_id: &Option<String>) -> Result<Option<InputImage>, ApiError> {
    let limits = state.config().limits.input();
    if let Some(fd) = &p.file_data {
        let uri = fd.file_uri.as_deref().ok_or_else(|| ApiError::invalid(format!("{what}.fileData.fileUri is required")))?;
        let (bytes, stored_mime) = crate::files::resolve_file_uri(state, uri, key_id).await?;
        let mime = fd.mime_type.as_deref().or(Some(stored_mime.as_str()));
        return Ok(Some(decode_input(bytes, mime, &limits, &format!("{what}.fileData"))?));
    }
    let Some(d) = &p.inline_data else { return Ok(None) };
    if d.data.is_empty() {
        return Err(ApiError::invalid(format!("{what}.inlineData.data is empty")));
    }
    let bytes = decode_base64(&d.data, &format!("{what}.inlineData.data"))?;
    Ok(Some(decode_input(bytes, d.mime_type.as_deref(), &limits, &format!("{what}.inlineData"))?))
}

/// The stored artefact a model image's `thoughtSignature` names; a bad signature is refused,
/// a missing one only in strict mode.
async fn signed_artefact(state: &AppState, p: &Part, ci: usize, pi: usize) -> Result<Option<Artefact>, ApiError> {
    let at = format!("in content position {}, part position {}", ci + 1, pi + 1);
    match p.thought_signature.as_deref() {
        Some(sig) => match state.signer.check(sig) {
            Ok(Signed::Image(id)) => Ok(state.svc.stores.meta.artefact(&id).await?),
            Ok(Signed::Text(_)) | Err(SignatureError::Malformed) | Err(SignatureError::BadMac) => {
                Err(ApiError::invalid(format!("Image part has an invalid thought_signature {at}")))
            }
        },
        None if state.config().strict_signatures => Err(ApiError::invalid(format!("Image part is missing a thought_signature {at}"))),
        None => Ok(None),
    }
}

/// The prompt: the system instruction's text, then the users' text, oldest first (a later
/// turn refines an earlier one).
fn prompt_of(state: &AppState, req: &GenerateContentRequest, has_images: bool) -> Result<String, ApiError> {
    let system = system_texts(req)?;
    let users = req.contents.iter().filter(|c| !is_model(c)).flat_map(|c| &c.parts).filter(|p| p.thought != Some(true));
    let texts: Vec<&str> =
        system.into_iter().chain(users.filter_map(|p| p.text.as_deref())).map(str::trim).filter(|t| !t.is_empty()).collect();
    let prompt = texts.join(". ");
    let chars = prompt.chars().count();
    let max = state.config().limits.max_prompt_chars;
    if chars > max {
        return Err(ApiError::invalid(format!("the prompt is {chars} characters, over the limit of {max}")));
    }
    if prompt.is_empty() && !has_images {
        return Err(ApiError::invalid("the request has no text prompt"));
    }
    Ok(prompt)
}

/// What to edit: the images of the latest user turn (several: fusion, in their order); else
/// the latest model image (a later turn's words are an instruction on it). Empty: no edit.
fn edit_targets<'a>(req: &GenerateContentRequest, found: &'a [FoundImage]) -> Vec<&'a FoundImage> {
    let last_user = req.contents.iter().rposition(|c| !is_model(c));
    let latest: Vec<&FoundImage> = found.iter().filter(|f| Some(f.content) == last_user && !f.from_model).collect();
    if !latest.is_empty() {
        return latest;
    }
    found.iter().rev().find(|f| f.from_model).or(found.last()).into_iter().collect()
}

/// The stored version a signature names is what gets edited (the client may have re-encoded it).
pub(crate) async fn stored_version(state: &AppState, s: &FoundImage, parent: Option<&Artefact>) -> InputImage {
    let limits = state.config().limits.input();
    let stored = match parent {
        Some(a) => state.svc.stores.blobs.get(&a.output_hash).await.ok().flatten(),
        None => None,
    };
    stored.and_then(|b| decode_input(b, None, &limits, "stored image").ok()).unwrap_or_else(|| s.image.clone())
}

/// Aspect ratio, size and file format: `imageConfig`, or `responseFormat.image`.
pub(crate) fn image_settings(
    state: &AppState,
    gc: Option<&GenerationConfig>,
    init: Option<&InputImage>,
) -> Result<(AspectRatio, ImageSize, MediaFormat), ApiError> {
    let ic =
        gc.and_then(|g| g.image_config.clone().or_else(|| g.response_format.as_ref().and_then(|r| r.image.clone()))).unwrap_or_default();
    let ratio = match ic.aspect_ratio.as_deref() {
        Some(r) => r.parse::<AspectRatio>().map_err(|e| ApiError::invalid(format!("imageConfig.aspectRatio: {e}")))?,
        // An edit keeps its input's shape, as Gemini does.
        None => init.map(|i| AspectRatio::nearest(i.rgba.width(), i.rgba.height())).unwrap_or_default(),
    };
    let size = match ic.image_size.as_deref() {
        Some(s) => s.parse::<ImageSize>().map_err(|e| ApiError::invalid(format!("imageConfig.imageSize: {e}")))?,
        None => ImageSize::S1K,
    };
    let max_size = state.config().limits.max_image_size;
    if size > max_size {
        return Err(ApiError::invalid(format!("imageConfig.imageSize {size} is not served here; the largest size is {max_size}")));
    }
    let format = match ic.output_mime_type.as_deref() {
        None | Some("image/png") => MediaFormat::Png,
        Some("image/jpeg") => MediaFormat::Jpeg,
        Some("image/webp") => MediaFormat::WebP,
        Some(o) => return Err(ApiError::invalid(format!("imageConfig.outputMimeType {o:?}: use image/png, image/jpeg or image/webp"))),
    };
    Ok((ratio, size, format))
}

/// Candidate count, temperature (recorded; edits repaint only their region) and seed.
pub(crate) struct Sampling {
    pub count: u32,
    pub temperature: Option<f64>,
    pub seed: Option<u64>,
}

pub(crate) fn sampling(state: &AppState, gc: Option<&GenerationConfig>, parent: Option<&Artefact>) -> Result<Sampling, ApiError> {
    let max = state.config().limits.max_candidates;
    let count = gc.and_then(|g| g.candidate_count).unwrap_or(1);
    if count < 1 || count > i64::from(max) {
        return Err(ApiError::invalid(format!("candidateCount must be between 1 and {max}, got {count}")));
    }
    let temperature = gc.and_then(|g| g.temperature);
    if let Some(t) = temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(format!("temperature must be within [0, 2], got {t}")));
    }
    // temperature → how far an edit may move from its input: 0 → 0.3, 1 → 0.75 (default), 2 → 1.
    // The seed a signature names keeps an edit consistent with its source when none is given.
    let seed = gc.and_then(|g| g.seed).map(|s| s as u64).or(parent.map(|p| p.seed));
    Ok(Sampling { count: count as u32, temperature, seed })
}

/// The text parts of `systemInstruction` (it goes ahead of the users' text in the prompt).
/// Images there are refused: this server has no use for a reference image outside the turns.
pub(crate) fn system_texts(req: &GenerateContentRequest) -> Result<Vec<&str>, ApiError> {
    let Some(si) = &req.system_instruction else { return Ok(Vec::new()) };
    if let Some(pi) = si.parts.iter().position(|p| p.inline_data.is_some() || p.file_data.is_some()) {
        return Err(ApiError::invalid(format!(
            "systemInstruction.parts[{pi}]: only text is used in a system instruction; send images in contents"
        )));
    }
    Ok(si.parts.iter().filter(|p| p.thought != Some(true)).filter_map(|p| p.text.as_deref()).collect())
}

// ---------------------------------------------------------------------------------------------
// Responses.

pub(crate) fn usage(prompt_tokens: u32, input_images: u32, out_tokens: u32) -> Value {
    let image_in = INPUT_IMAGE_TOKENS * input_images;
    let text_in = prompt_tokens.saturating_sub(image_in);
    let mut details = vec![json!({"modality": "TEXT", "tokenCount": text_in})];
    if image_in > 0 {
        details.push(json!({"modality": "IMAGE", "tokenCount": image_in}));
    }
    json!({
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": out_tokens,
        "totalTokenCount": prompt_tokens + out_tokens,
        "promptTokensDetails": details,
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": out_tokens}],
    })
}

pub fn response_json(state: &AppState, ctx: &RequestCtx, model: &str, p: &Prepared, outs: &[Output]) -> Value {
    let candidates: Vec<Value> = outs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let a = &o.artefact;
            let mut parts = Vec::new();
            let checked = Outcome::from_record(&a.params["checks"]);
            if p.include_thoughts
                && let Some(o) = &checked
            {
                let plan =
                    p.explain.clone().unwrap_or_else(|| Plan::new(&p.spec.prompt, p.spec.negative.as_deref(), a.width, a.height).explain());
                parts.push(json!({"text": format!("{plan}\n{}", o.report()), "thought": true}));
            }
            if p.include_text {
                let text = match &p.explain {
                    Some(plan) => {
                        let e = &a.params["edit"];
                        let fidelity = match (e["fidelity_db"].as_f64(), e["input"].as_array()) {
                            (Some(db), Some(wh)) => {
                                format!("\nfidelity: shrunk back to {}x{}, {db:.1} dB PSNR against the input", wh[0], wh[1])
                            }
                            _ => String::new(),
                        };
                        format!(
                            "Here is the edited image ({}x{}, seed {}).\n{plan}\nchanged: {} pixels; outside the region: {}{fidelity}",
                            a.width, a.height, a.seed, e["changed"], e["outside_changed"]
                        )
                    }
                    None => format!("Here is the image ({}x{}, {} {}, seed {}).", a.width, a.height, p.ratio, p.size, a.seed),
                };
                let text = match &checked {
                    Some(o) => format!("{text}\n{}", o.summary()),
                    None => text,
                };
                parts.push(json!({"text": text, "thoughtSignature": state.signer.mint(&Signed::Text(ctx.request_id.clone()))}));
            }
            parts.push(json!({
                "inlineData": {"mimeType": a.mime, "data": B64.encode(o.bytes.as_slice())},
                "thoughtSignature": state.signer.mint(&Signed::Image(a.id.clone())),
            }));
            json!({"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": i})
        })
        .collect();
    let out_tokens = p.spec.tokens_per_image * outs.len() as u32;
    json!({
        "candidates": candidates,
        "usageMetadata": usage(p.spec.prompt_tokens, p.input_images, out_tokens),
        "modelVersion": model,
        "responseId": ctx.request_id,
    })
}

async fn generate_content(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    model: &str,
    worker: Arc<Worker>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let req: GenerateContentRequest = parse_json(body)?;
    let p = prepare(state, worker, &req, &ctx.caller.key_id).await?;
    if let Some(text) = &p.answer {
        return Ok(crate::edit::no_image_json(model, &ctx.request_id, &p, text));
    }
    let outs = state.svc.generate_checked(ctx, p.spec.clone(), None).await?;
    Ok(response_json(state, ctx, model, &p, &outs))
}

/// SSE: while the loop runs, chunks carrying thought parts — "step k of n" of each attempt and
/// each attempt's verdict (the SDKs keep thought parts out of `.text`); then one chunk with the
/// images. Errors found before the first job is queued (bad input, quota, full queue) are plain
/// HTTP errors; a failure after the stream started is sent as a final `{"error": …}` event.
async fn stream_generate_content(
    state: Arc<AppState>,
    ctx: RequestCtx,
    model: String,
    worker: Arc<Worker>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req: GenerateContentRequest = parse_json(body)?;
    let p = prepare(&state, worker, &req, &ctx.caller.key_id).await?;
    if let Some(text) = &p.answer {
        let v = crate::edit::no_image_json(&model, &ctx.request_id, &p, text);
        let once = futures::stream::once(async move { Ok::<Event, Infallible>(Event::default().data(v.to_string())) });
        return Ok(Sse::new(once).into_response());
    }
    let mut spec = p.spec.clone();
    spec.progress = true;
    // With `includeThoughts`, previews of the picture in progress come as thought images, as
    // Gemini's thinking image models send their interim images.
    if p.include_thoughts {
        spec.partial_images = STREAM_PREVIEWS;
    }
    let run = state.svc.start_checked(&ctx, spec).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(16);
    let (etx, erx) = tokio::sync::mpsc::channel::<LoopEvent>(16);
    // The task owns the run: when the client goes away the receiver drops, the task ends and
    // dropping the run cancels its job between steps.
    tokio::spawn(async move {
        let run = run.finish(Some(etx));
        let forward = forward_thoughts(erx, &tx, &model, &ctx.request_id, p.spec.count);
        let outs = tokio::select! {
            outs = async { tokio::join!(run, forward).0 } => outs,
            _ = tx.closed() => return,
        };
        let v = match outs {
            Ok(outs) => response_json(&state, &ctx, &model, &p, &outs),
            Err(e) => ApiError::from(e).gemini_body(),
        };
        let _ = tx.send(v).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|v| (Ok::<Event, Infallible>(Event::default().data(v.to_string())), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// The loop's events as chunks with one thought part each, until the loop ends.
async fn forward_thoughts(
    mut events: tokio::sync::mpsc::Receiver<LoopEvent>,
    tx: &tokio::sync::mpsc::Sender<Value>,
    model: &str,
    id: &str,
    count: u32,
) {
    while let Some(ev) = events.recv().await {
        let text = match ev {
            LoopEvent::Progress { image, attempt, step, total } => {
                format!("step {step} of {total} (image {} of {count}, attempt {})", image + 1, attempt + 1)
            }
            LoopEvent::Checked { line, .. } => line,
            LoopEvent::Partial { bytes, .. } => {
                if tx.send(preview_chunk(&bytes, model, id)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let chunk = json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": text, "thought": true}]}, "index": 0}],
            "modelVersion": model, "responseId": id,
        });
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// Previews a stream with `includeThoughts` sends per image (at evenly spaced steps; see
/// [`plantain_service::worker::preview_steps`]).
pub const STREAM_PREVIEWS: usize = 2;

/// A stream chunk with one preview as a thought image (stamped like every output, not stored).
fn preview_chunk(bytes: &[u8], model: &str, response_id: &str) -> Value {
    let mime = plantain_imageio::sniff(bytes).unwrap_or("image/png");
    let part = json!({"inlineData": {"mimeType": mime, "data": B64.encode(bytes)}, "thought": true});
    json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
        "modelVersion": model, "responseId": response_id,
    })
}

/// `countTokens`: text by the CLIP tokenizer the models use (no truncation), each image 1120.
fn count_tokens(state: &AppState, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct CountReq {
        #[serde(default)]
        contents: Vec<Content>,
        #[serde(alias = "generate_content_request")]
        generate_content_request: Option<GenerateContentRequest>,
    }
    let r: CountReq = parse_json(body)?;
    let mut text = 0u32;
    let contents = match r.generate_content_request {
        Some(g) => {
            text += system_texts(&g)?.iter().map(|t| state.tokenizer.count_tokens(t) as u32).sum::<u32>();
            g.contents
        }
        None => r.contents,
    };
    let mut images = 0u32;
    for p in contents.iter().flat_map(|c| &c.parts) {
        if let Some(t) = &p.text {
            text += state.tokenizer.count_tokens(t) as u32;
        }
        if p.inline_data.is_some() || p.file_data.is_some() {
            images += 1;
        }
    }
    let mut details = vec![json!({"modality": "TEXT", "tokenCount": text})];
    if images > 0 {
        details.push(json!({"modality": "IMAGE", "tokenCount": images * INPUT_IMAGE_TOKENS}));
    }
    Ok(json!({"totalTokens": text + images * INPUT_IMAGE_TOKENS, "promptTokensDetails": details}))
}
