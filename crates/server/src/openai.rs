//! The OpenAI Images API: `POST /v1/images/generations` (JSON), `/v1/images/edits` and
//! `/v1/images/variations` (multipart), errors in OpenAI's envelope.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use plantain_core::ImageSize;
use plantain_imageio::{B64, InputImage, MediaFormat, decode_input, has_alpha, openai_mask};
use plantain_service::worker::Worker;
use plantain_service::{CheckedRun, EditOptions, ImageRole, JobSpec, LoopEvent, MAX_OUTPUT_PIXELS, MAX_OUTPUT_SIDE, Output, RequestCtx};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Admitted, OpenAi};
use crate::edit::edit_error;
use crate::error::{ApiError, Flavor, OpenAiError};
use crate::ops::{base_url, idempotent, read_body};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/images/generations", post(generations))
        .route("/v1/images/edits", post(edits))
        .route("/v1/images/variations", post(variations))
}

/// The fields the three endpoints share (multipart fields arrive as strings).
#[derive(Deserialize, Default, Debug, Clone)]
struct Params {
    prompt: Option<String>,
    model: Option<String>,
    n: Option<Value>,
    size: Option<String>,
    quality: Option<String>,
    background: Option<String>,
    output_format: Option<String>,
    response_format: Option<String>,
    stream: Option<Value>,
    partial_images: Option<Value>,
    seed: Option<Value>,
}

fn as_int(v: &Value, what: &str) -> Result<i64, ApiError> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| ApiError::invalid(format!("{what} must be an integer")).with_param(what)),
        Value::String(s) => {
            s.trim().parse().map_err(|_| ApiError::invalid(format!("{what} must be an integer, got {s:?}")).with_param(what))
        }
        _ => Err(ApiError::invalid(format!("{what} must be an integer")).with_param(what)),
    }
}

fn as_bool(v: &Value) -> bool {
    matches!(v, Value::Bool(true)) || matches!(v, Value::String(s) if s == "true")
}

struct Common {
    worker: Arc<Worker>,
    model_label: String,
    n: u32,
    width: u32,
    height: u32,
    format: MediaFormat,
    url: bool,
    stream: bool,
    seed: Option<u64>,
    quality: String,
    /// Denoising steps `quality` asks for.
    steps: usize,
    /// Partial images per image (only with `stream`).
    partial_images: u32,
}

/// OpenAI `quality` → denoising steps, from the model's configured `steps` (its full
/// quality): `low` half, `medium` three quarters, `high`, `hd`, `standard` and `auto` all of
/// them (rounded, at least 1). None: not a quality OpenAI defines.
pub fn quality_steps(quality: &str, configured: usize) -> Option<usize> {
    let share = match quality {
        "low" => 0.5,
        "medium" => 0.75,
        "high" | "hd" | "standard" | "auto" => 1.0,
        _ => return None,
    };
    Some(((configured as f64 * share).round() as usize).max(1))
}

/// `partial_images` (0–3, as OpenAI allows): with `stream=true`, that many partial images
/// (previews decoded from the model's estimate of the finished picture at evenly spaced
/// denoising steps, see [`plantain_service::worker::preview_steps`]) come as `*.partial_image` events
/// before each image's `*.completed` event. Without `stream` the field has no effect, as with
/// OpenAI.
fn check_partial_images(v: Option<&Value>) -> Result<u32, ApiError> {
    let n = match v {
        None | Some(Value::Null) => 0,
        Some(v) => as_int(v, "partial_images")?,
    };
    if !(0..=3).contains(&n) {
        return Err(ApiError::invalid(format!("partial_images must be between 0 and 3, got {n}")).with_param("partial_images"));
    }
    Ok(n as u32)
}

/// `size`: `auto` (1024x1024, or for an edit the standard size closest to the input's shape)
/// or `WxH` with each side 64..=4096 — the output has exactly those pixels.
fn parse_size(size: Option<&str>, input: Option<&InputImage>) -> Result<(u32, u32), ApiError> {
    match size.map(str::trim) {
        None | Some("auto") | Some("") => Ok(match input {
            Some(i) if i.rgba.width() * 10 > i.rgba.height() * 12 => (1536, 1024),
            Some(i) if i.rgba.height() * 10 > i.rgba.width() * 12 => (1024, 1536),
            _ => (1024, 1024),
        }),
        Some(s) => {
            let bad = || ApiError::invalid(format!("size {s:?}: use auto or WIDTHxHEIGHT, each side 64 to 4096")).with_param("size");
            let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
            let (w, h): (u32, u32) = (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
            if !(64..=4096).contains(&w)
                || !(64..=4096).contains(&h)
                || w > MAX_OUTPUT_SIDE
                || u64::from(w) * u64::from(h) > MAX_OUTPUT_PIXELS
            {
                return Err(bad());
            }
            Ok((w, h))
        }
    }
}

fn common(state: &AppState, p: &Params, input: Option<&InputImage>) -> Result<Common, ApiError> {
    let limits = &state.config().limits;
    let (worker, model_label) = match p.model.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => (
            state
                .svc
                .model(m)
                .ok_or_else(|| ApiError::not_found(format!("The model `{m}` does not exist on this server")).with_param("model"))?,
            m.to_string(),
        ),
        None => {
            let w = state.svc.default_model().ok_or_else(|| ApiError::not_found("no default model is configured").with_param("model"))?;
            let n = w.name.clone();
            (w, n)
        }
    };
    let n = match &p.n {
        Some(v) => as_int(v, "n")?,
        None => 1,
    };
    if n < 1 || n > i64::from(limits.max_candidates.min(10)) {
        return Err(
            ApiError::invalid(format!("n must be between 1 and {} on this server, got {n}", limits.max_candidates.min(10))).with_param("n")
        );
    }
    let (width, height) = parse_size(p.size.as_deref(), input)?;
    let format = match p.output_format.as_deref().unwrap_or("png") {
        "png" => MediaFormat::Png,
        "jpeg" | "jpg" => MediaFormat::Jpeg,
        "webp" => MediaFormat::WebP,
        o => return Err(ApiError::invalid(format!("output_format {o:?}: use png, jpeg or webp")).with_param("output_format")),
    };
    let url = match p.response_format.as_deref().unwrap_or("b64_json") {
        "b64_json" => false,
        "url" => true,
        o => return Err(ApiError::invalid(format!("response_format {o:?}: use b64_json or url")).with_param("response_format")),
    };
    match p.background.as_deref() {
        None | Some("auto") | Some("opaque") => {}
        Some("transparent") => {
            return Err(
                ApiError::invalid("background=transparent is not supported: the models here draw opaque images").with_param("background")
            );
        }
        Some(o) => return Err(ApiError::invalid(format!("background {o:?}: use auto or opaque")).with_param("background")),
    }
    let quality = p.quality.clone().unwrap_or_else(|| "auto".into());
    let steps = quality_steps(&quality, worker.defaults.steps)
        .ok_or_else(|| ApiError::invalid(format!("quality {quality:?}: use auto, low, medium or high")).with_param("quality"))?;
    let seed = p.seed.as_ref().map(|v| as_int(v, "seed")).transpose()?.map(|s| s as u64);
    let stream = p.stream.as_ref().is_some_and(as_bool);
    let partial_images = check_partial_images(p.partial_images.as_ref())?;
    let partial_images = if stream { partial_images } else { 0 };
    Ok(Common { worker, model_label, n: n as u32, width, height, format, url, stream, seed, quality, steps, partial_images })
}

fn check_prompt(state: &AppState, prompt: Option<&str>, required: bool) -> Result<String, ApiError> {
    let p = prompt.unwrap_or("").trim().to_string();
    if required && p.is_empty() {
        return Err(ApiError::invalid("prompt is required").with_param("prompt"));
    }
    let max = state.config().limits.max_prompt_chars;
    if p.chars().count() > max {
        return Err(ApiError::invalid(format!("prompt is {} characters, over the limit of {max}", p.chars().count())).with_param("prompt"));
    }
    Ok(p)
}

/// Output tokens: those of the Gemini size closest in area.
fn tokens_for(w: u32, h: u32) -> u32 {
    let area = f64::from(w) * f64::from(h);
    let size = ImageSize::ALL
        .into_iter()
        .min_by(|a, b| {
            let (aw, ah) = plantain_core::output_pixels(plantain_core::AspectRatio::R1x1, *a);
            let (bw, bh) = plantain_core::output_pixels(plantain_core::AspectRatio::R1x1, *b);
            (f64::from(aw * ah).ln() - area.ln()).abs().total_cmp(&(f64::from(bw * bh).ln() - area.ln()).abs())
        })
        .unwrap_or_default();
    size.output_tokens()
}

/// The job for an OpenAI request: `edit` is the image to change, `strength` how far it may
/// move (variations; edits carry a plan instead).
struct Edit {
    image: InputImage,
    strength: Option<f32>,
}

fn spec(state: &AppState, c: &Common, prompt: String, edit: Option<Edit>, extra: Value) -> JobSpec {
    let image_tokens = if edit.is_some() { crate::gemini::INPUT_IMAGE_TOKENS } else { 0 };
    let prompt_tokens = state.tokenizer.count_tokens(&prompt) as u32 + image_tokens;
    let strength = edit.as_ref().and_then(|e| e.strength);
    let images = edit.map(|e| vec![(ImageRole::Edit, e.image)]).unwrap_or_default();
    JobSpec {
        model: c.worker.clone(),
        prompt,
        negative: None,
        width: c.width,
        height: c.height,
        size_label: format!("{}x{}", c.width, c.height),
        count: c.n,
        seed: c.seed,
        images,
        mask: None,
        strength,
        steps: Some(c.steps),
        guidance: None,
        checks: None,
        format: c.format,
        parent: None,
        params: json!({"api": "openai", "model": c.model_label, "n": c.n, "width": c.width, "height": c.height,
            "quality": c.quality, "seed": c.seed, "strength": strength, "extra": extra}),
        prompt_tokens,
        tokens_per_image: tokens_for(c.width, c.height),
        partial_images: c.partial_images as usize,
        progress: false,
        edit: None,
        repaint: None,
    }
}

fn response_json(state: &AppState, c: &Common, headers: &HeaderMap, outs: &[Output], prompt_tokens: u32) -> Value {
    let base = base_url(state, headers);
    let data: Vec<Value> = outs
        .iter()
        .map(|o| {
            if c.url {
                json!({"url": crate::ops::blob_url(state, &base, &o.artefact.output_hash, &o.artefact.mime)})
            } else {
                json!({"b64_json": B64.encode(o.bytes.as_slice())})
            }
        })
        .collect();
    let out_tokens = tokens_for(c.width, c.height) * outs.len() as u32;
    json!({
        "created": plantain_store::now(),
        "data": data,
        "background": "opaque",
        "output_format": format_name(c.format),
        "quality": c.quality,
        "size": format!("{}x{}", c.width, c.height),
        "usage": {
            "input_tokens": prompt_tokens, "output_tokens": out_tokens, "total_tokens": prompt_tokens + out_tokens,
            "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": 0},
        },
    })
}

async fn run(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    c: Common,
    s: JobSpec,
    event_prefix: &'static str,
) -> Result<Response, ApiError> {
    let prompt_tokens = s.prompt_tokens;
    // Every request goes through the plan → check → correct loop (an exact edit: one attempt).
    let checked = state.svc.start_checked(ctx, s).await?;
    if !c.stream {
        let outs = checked.finish(None).await?;
        return Ok(axum::Json(response_json(state, &c, headers, &outs, prompt_tokens)).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    tokio::spawn(stream_job(state.clone(), headers.clone(), c, checked, event_prefix, prompt_tokens, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<Event, Infallible>(e), rx)) });
    Ok(Sse::new(stream).into_response())
}

/// `*.partial_image` events while the loop runs (when asked: each attempt's), then
/// `*.completed` per image, or an `error` event. The task owns the run: when the client leaves,
/// it ends and dropping the run cancels its job between steps.
async fn stream_job(
    state: Arc<AppState>,
    headers: HeaderMap,
    c: Common,
    checked: CheckedRun,
    event_prefix: &'static str,
    prompt_tokens: u32,
    tx: tokio::sync::mpsc::Sender<Event>,
) {
    let (etx, erx) = tokio::sync::mpsc::channel::<LoopEvent>(4);
    let forward = forward_partials(erx, &tx, &c, event_prefix);
    let outs = tokio::select! {
        outs = async { tokio::join!(checked.finish(Some(etx)), forward).0 } => outs,
        _ = tx.closed() => return,
    };
    match outs {
        Ok(outs) => {
            let body = response_json(&state, &c, &headers, &outs, prompt_tokens);
            for d in body["data"].as_array().cloned().unwrap_or_default() {
                let ev = json!({"type": format!("{event_prefix}.completed"), "b64_json": d.get("b64_json"), "created_at": body["created"],
                    "background": "opaque", "output_format": body["output_format"], "quality": body["quality"], "size": body["size"], "usage": body["usage"]});
                if tx.send(Event::default().event(format!("{event_prefix}.completed")).data(ev.to_string())).await.is_err() {
                    return;
                }
            }
        }
        Err(e) => {
            let _ = tx.send(Event::default().event("error").data(ApiError::from(e).openai_body().to_string())).await;
        }
    }
}

/// Sends the loop's stamped partial images as `*.partial_image` events (OpenAI's
/// `ImageGenPartialImageEvent` / `ImageEditPartialImageEvent`), until the loop ends: at most
/// `partial_images` per image, as asked (a later attempt's are not sent).
/// `partial_image_index` counts the stream's partial images from 0 (image after image).
async fn forward_partials(
    mut events: tokio::sync::mpsc::Receiver<LoopEvent>,
    tx: &tokio::sync::mpsc::Sender<Event>,
    c: &Common,
    event_prefix: &str,
) {
    let mut index = 0u32;
    let mut sent = HashMap::<usize, u32>::new();
    let kind = format!("{event_prefix}.partial_image");
    while let Some(ev) = events.recv().await {
        let LoopEvent::Partial { bytes, image, .. } = ev else { continue };
        let n = sent.entry(image).or_default();
        if *n >= c.partial_images {
            continue;
        }
        *n += 1;
        let body = json!({
            "type": kind, "b64_json": B64.encode(&bytes), "created_at": plantain_store::now(), "background": "opaque",
            "output_format": format_name(c.format), "quality": c.quality, "size": format!("{}x{}", c.width, c.height),
            "partial_image_index": index,
        });
        index += 1;
        if tx.send(Event::default().event(kind.clone()).data(body.to_string())).await.is_err() {
            return;
        }
    }
}

fn format_name(f: MediaFormat) -> &'static str {
    match f {
        MediaFormat::Png => "png",
        MediaFormat::Jpeg => "jpeg",
        MediaFormat::WebP => "webp",
    }
}

async fn generations(State(state): State<Arc<AppState>>, Admitted { ctx, .. }: Admitted<OpenAi>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(&state, body).await {
        Ok(b) => b,
        Err(e) => return OpenAiError(e).into_response(),
    };
    let fut = async {
        let r: Result<Response, ApiError> = async {
            let p: Params = serde_json::from_slice(&body)
                .map_err(|e| ApiError::invalid(format!("We could not parse the JSON body of your request: {e}")))?;
            let prompt = check_prompt(&state, p.prompt.as_deref(), true)?;
            let c = common(&state, &p, None)?;
            let s = spec(&state, &c, prompt, None, Value::Null);
            run(&state, &ctx, &parts.headers, c, s, "image_generation").await
        }
        .await;
        r.unwrap_or_else(|e| OpenAiError(e).into_response())
    };
    idempotent(&state, &ctx, "images/generations", &parts.headers, &body, Flavor::OpenAi, fut).await
}

/// A multipart form: files by field name, other fields as text.
struct Form {
    files: Vec<(String, Option<String>, Vec<u8>)>,
    fields: HashMap<String, String>,
    /// Everything received, for the idempotency hash.
    digest: Vec<u8>,
}

async fn read_form(state: &AppState, req: Request) -> Result<Form, ApiError> {
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::invalid(format!("this endpoint takes multipart/form-data: {}", e.body_text())))?;
    let limit = state.config().limits.max_body_bytes;
    let mut total = 0usize;
    let mut form = Form { files: Vec::new(), fields: HashMap::new(), digest: Vec::new() };
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    while let Some(mut field) =
        mp.next_field().await.map_err(|e| ApiError::invalid(format!("malformed multipart body: {}", e.body_text())))?
    {
        let name = field.name().unwrap_or("").to_string();
        let is_file = field.file_name().is_some();
        let ctype = field.content_type().map(str::to_string);
        let mut data = Vec::new();
        while let Some(chunk) =
            field.chunk().await.map_err(|e| ApiError::invalid(format!("malformed multipart body: {}", e.body_text())))?
        {
            total += chunk.len();
            if total > limit {
                return Err(ApiError::too_large(format!("request body is over the limit of {limit} bytes")));
            }
            data.extend_from_slice(&chunk);
        }
        hasher.update(name.as_bytes());
        hasher.update(&data);
        if is_file || name == "image" || name == "image[]" || name == "mask" {
            form.files.push((name, ctype, data));
        } else {
            form.fields.insert(name, String::from_utf8_lossy(&data).into_owned());
        }
    }
    form.digest = hasher.finalize().to_vec();
    Ok(form)
}

fn form_params(f: &Form) -> Params {
    let g = |k: &str| f.fields.get(k).cloned();
    Params {
        prompt: g("prompt"),
        model: g("model"),
        n: g("n").map(Value::String),
        size: g("size"),
        quality: g("quality"),
        background: g("background"),
        output_format: g("output_format"),
        response_format: g("response_format"),
        stream: g("stream").map(Value::String),
        partial_images: g("partial_images").map(Value::String),
        seed: g("seed").map(Value::String),
    }
}

fn form_images(state: &AppState, f: &Form) -> Result<(Vec<InputImage>, Option<InputImage>), ApiError> {
    let max_images = state.config().limits.max_images;
    let limits = state.config().limits.input();
    let mut images = Vec::new();
    let mut mask = None;
    for (i, (name, ctype, data)) in f.files.iter().enumerate() {
        // A generic `application/octet-stream` says nothing; anything else is checked against the bytes.
        let declared = ctype.as_deref().filter(|c| *c != "application/octet-stream");
        match name.as_str() {
            "image" | "image[]" => images.push(
                decode_input(data.clone(), declared, &limits, &format!("image[{i}]")).map_err(|e| ApiError::from(e).with_param("image"))?,
            ),
            "mask" => mask = Some(decode_input(data.clone(), declared, &limits, "mask").map_err(|e| ApiError::from(e).with_param("mask"))?),
            other => return Err(ApiError::invalid(format!("unexpected file field {other:?}")).with_param(other)),
        }
    }
    if images.len() > 16.min(max_images) {
        return Err(ApiError::invalid(format!("{} images; at most {} are accepted", images.len(), 16.min(max_images))).with_param("image"));
    }
    Ok((images, mask))
}

async fn edits(State(state): State<Arc<AppState>>, admitted: Admitted<OpenAi>, req: Request) -> Response {
    multipart_route(state, admitted.ctx, req, "images/edits").await
}

async fn variations(State(state): State<Arc<AppState>>, admitted: Admitted<OpenAi>, req: Request) -> Response {
    multipart_route(state, admitted.ctx, req, "images/variations").await
}

async fn multipart_route(state: Arc<AppState>, ctx: RequestCtx, req: Request, route: &'static str) -> Response {
    let headers = req.headers().clone();
    let form = match read_form(&state, req).await {
        Ok(f) => f,
        Err(e) => return OpenAiError(e).into_response(),
    };
    let digest = form.digest.clone();
    let fut = async {
        let r = multipart_job(&state, &ctx, &headers, &form, route).await;
        r.unwrap_or_else(|e| OpenAiError(e).into_response())
    };
    idempotent(&state, &ctx, route, &headers, &digest, Flavor::OpenAi, fut).await
}

/// `images/edits` (planned: with a mask the masked area is repainted, without one the prompt
/// is an instruction; pasted back at the input's size) and `images/variations` (redrawn
/// without a prompt at 0.6).
async fn multipart_job(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    form: &Form,
    route: &str,
) -> Result<Response, ApiError> {
    let p = form_params(form);
    let (images, mask) = form_images(state, form)?;
    let Some(first) = images.first().cloned() else {
        return Err(ApiError::invalid("image is required").with_param("image"));
    };
    let mut c = common(state, &p, Some(&first))?;
    if route == "images/variations" {
        let edit = Edit { image: first, strength: Some(0.6) };
        let s = spec(state, &c, String::new(), Some(edit), json!({"variation": true}));
        return run(state, ctx, headers, c, s, "image_variation").await;
    }
    if images.len() > 1 && route == "images/variations" {
        return Err(ApiError::invalid("images/variations takes one image").with_param("image"));
    }
    let prompt = check_prompt(state, p.prompt.as_deref(), true)?;
    let mask = mask.map(|m| edit_mask(&m, &first)).transpose()?;
    // With a mask the words say what to paint there; without, they are an instruction the
    // planner reads. Either way the result is pasted back: outside the region every pixel is
    // the input's own, at the input's size.
    let opts = EditOptions { aspect: None, mask, ..Default::default() };
    let plan =
        state.svc.plan_edit(prompt.clone(), images.iter().map(InputImage::rgb).collect(), opts, &c.worker).await.map_err(edit_error)?;
    crate::edit::check_output(state, &plan, c.format)?;
    (c.width, c.height) = plan.output_size();
    if plan.paint_request().is_none() {
        c.n = 1;
    }
    let explain = plan.explain();
    // An image byte-identical to one of the caller's stored versions is that version: the
    // edit is recorded as its child (as a Gemini edit of a signed image is).
    let parent = state.svc.stores.meta.artefact_by_output(ctx.caller.key_id.as_deref(), &first.hash).await?;
    let mut s = spec(state, &c, prompt, Some(Edit { image: first, strength: None }), json!({"plan": explain}));
    s.parent = parent;
    s.images.extend(images.into_iter().skip(1).map(|i| (ImageRole::Reference, i)));
    s.edit = Some(Arc::new(plan));
    run(state, ctx, headers, c, s, "image_edit").await
}

/// An OpenAI mask (transparent = edit) as the engine's (white = repaint); same size as the image.
fn edit_mask(m: &InputImage, image: &InputImage) -> Result<image::GrayImage, ApiError> {
    if m.rgba.dimensions() != image.rgba.dimensions() {
        return Err(ApiError::invalid(format!(
            "mask is {}x{} but the image is {}x{}: they must be the same size",
            m.rgba.width(),
            m.rgba.height(),
            image.rgba.width(),
            image.rgba.height()
        ))
        .with_param("mask"));
    }
    Ok(openai_mask(m, has_alpha(m)))
}
