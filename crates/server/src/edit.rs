//! Edits on the wire: a Gemini turn's words are an instruction on the picture it refers to
//! (the latest user turn's images — several: fusion — else the latest model image), planned by
//! the director and run as a job whose result is pasted back pixel-exact. An instruction whose
//! target is not in the picture is answered in words with no image (`NO_IMAGE`).

use std::sync::Arc;

use plantain_core::{AspectRatio, ImageSize};
use plantain_service::worker::Worker;
use plantain_service::{EditError, EditOptions, EditPlan, ImageRole, JobSpec};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::gemini::{FoundImage, GenerateContentRequest, INPUT_IMAGE_TOKENS, Prepared, image_settings, is_model, sampling, stored_version};

/// The request's error for a plan that could not be made (answers are handled by the caller).
pub fn edit_error(e: EditError) -> ApiError {
    match e {
        EditError::Words(_) | EditError::NotFound(_) | EditError::Ambiguous(_) | EditError::Invalid(_) => ApiError::invalid(e.to_string()),
        EditError::NoSegmenter | EditError::NoReader(_) => ApiError::failed_precondition(e.to_string()),
        EditError::Region(_) | EditError::NeedsPainter(_) | EditError::Composite(_) => ApiError::internal(e.to_string()),
    }
}

/// The latest user turn's text: the instruction.
fn instruction(req: &GenerateContentRequest) -> Option<String> {
    let last_user = req.contents.iter().rposition(|c| !is_model(c))?;
    let texts: Vec<&str> = req.contents[last_user]
        .parts
        .iter()
        .filter(|p| p.thought != Some(true))
        .filter_map(|p| p.text.as_deref())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    (!texts.is_empty()).then(|| texts.join(" "))
}

/// A Gemini edit (or fusion) as a job, or as an answer without an image.
pub(crate) async fn prepare_edit(
    state: &AppState,
    worker: Arc<Worker>,
    req: &GenerateContentRequest,
    found: &[FoundImage],
    targets: &[&FoundImage],
    include_text: bool,
) -> Result<Prepared, ApiError> {
    let gc = req.generation_config.as_ref();
    let text = instruction(req).ok_or_else(|| ApiError::invalid("the latest user turn has no text: say how to edit the picture"))?;
    let max = state.config().limits.max_prompt_chars;
    if text.chars().count() > max {
        return Err(ApiError::invalid(format!("the prompt is {} characters, over the limit of {max}", text.chars().count())));
    }
    // A model image named by its signature is edited as stored (the client may have re-encoded it).
    let parent = targets.iter().find_map(|t| t.artefact.clone());
    let mut inputs = Vec::with_capacity(targets.len());
    for t in targets {
        inputs.push(stored_version(state, t, t.artefact.as_ref()).await);
    }
    let asked_ratio = gc
        .and_then(|g| g.image_config.as_ref())
        .and_then(|c| c.aspect_ratio.as_deref())
        .map(|r| r.parse::<AspectRatio>().map_err(|e| ApiError::invalid(format!("imageConfig.aspectRatio: {e}"))))
        .transpose()?;
    let first = inputs[0].rgb();
    let (_, size, format) = image_settings(state, gc, Some(&inputs[0]))?;
    let sampling = sampling(state, gc, parent.as_ref())?;
    let asked_size = gc.and_then(|g| g.image_config.as_ref()).and_then(|c| c.image_size.as_ref()).map(|_| size);
    let opts = EditOptions { aspect: asked_ratio, mask: None, size: asked_size, ..Default::default() };
    let rgbs: Vec<image::RgbImage> = inputs.iter().map(|i| i.rgb()).collect();
    let prompt_tokens = state.tokenizer.count_tokens(&text) as u32 + INPUT_IMAGE_TOKENS * found.len() as u32;
    let plan = match state.svc.plan_edit(text.clone(), rgbs, opts, &worker).await {
        Ok(p) => p,
        Err(e) if e.is_answer() => {
            let spec = spec_for(worker, &text, inputs, &sampling, format, prompt_tokens, None, parent, size, &first);
            let ratio = AspectRatio::nearest(first.width(), first.height());
            return Ok(Prepared {
                spec,
                include_text,
                include_thoughts: crate::gemini::wants_thoughts(gc),
                ratio,
                size,
                input_images: found.len() as u32,
                answer: Some(e.to_string()),
                explain: None,
            });
        }
        Err(e) => return Err(edit_error(e)),
    };
    check_output(state, &plan, format)?;
    let explain = plan.explain();
    let (w, h) = (plan.input_size.0 + 2 * plan.offset.0, plan.input_size.1 + 2 * plan.offset.1);
    let ratio = AspectRatio::nearest(w, h);
    let spec = spec_for(worker, &text, inputs, &sampling, format, prompt_tokens, Some(plan), parent, size, &first);
    Ok(Prepared {
        spec,
        include_text,
        include_thoughts: crate::gemini::wants_thoughts(gc),
        ratio,
        size,
        input_images: found.len() as u32,
        answer: None,
        explain: Some(explain),
    })
}

#[allow(clippy::too_many_arguments)]
fn spec_for(
    worker: Arc<Worker>,
    text: &str,
    inputs: Vec<plantain_imageio::InputImage>,
    sampling: &crate::gemini::Sampling,
    format: plantain_imageio::MediaFormat,
    prompt_tokens: u32,
    plan: Option<EditPlan>,
    parent: Option<plantain_store::Artefact>,
    size: ImageSize,
    first: &image::RgbImage,
) -> JobSpec {
    let (width, height) = plan.as_ref().map_or(first.dimensions(), EditPlan::output_size);
    // An exact edit (or an upscale) is deterministic: one picture, whatever candidateCount asked.
    let count = if plan.as_ref().is_some_and(|p| p.paint_request().is_none()) { 1 } else { sampling.count };
    let params = json!({
        "api": "gemini", "instruction": text, "width": width, "height": height, "candidateCount": count,
        "seed": sampling.seed, "inputImages": inputs.iter().map(|i| &i.hash).collect::<Vec<_>>(),
    });
    let images = inputs.into_iter().enumerate().map(|(i, im)| (if i == 0 { ImageRole::Edit } else { ImageRole::Reference }, im)).collect();
    JobSpec {
        model: worker,
        prompt: text.to_string(),
        negative: None,
        width,
        height,
        size_label: format!("{width}x{height}"),
        count,
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
        edit: plan.map(Arc::new),
        repaint: None,
    }
}

/// An upscale past the largest size this server serves (`limits.max_image_size`) is refused
/// before any work, like a generation asked at that size; so is a transparent cut-out asked
/// as JPEG, which has no alpha channel.
pub(crate) fn check_output(state: &AppState, plan: &EditPlan, format: plantain_imageio::MediaFormat) -> Result<(), ApiError> {
    if plan.matte.is_some() && format == plantain_imageio::MediaFormat::Jpeg {
        return Err(ApiError::invalid("a transparent cut-out cannot be JPEG (no alpha channel): ask for image/png or image/webp"));
    }
    if plan.enlarge_request().is_none() {
        return Ok(());
    }
    let max = state.config().limits.max_image_size;
    let (w, h) = plan.output_size();
    let (mw, mh) = plantain_core::output_pixels(AspectRatio::nearest(w, h), max);
    if u64::from(w) * u64::from(h) > u64::from(mw) * u64::from(mh) {
        return Err(ApiError::invalid(format!("an upscale to {w}x{h} is past the largest size served here, {max} ({mw}x{mh})")));
    }
    Ok(())
}

/// The answer to an edit that cannot be made: its reason as text, no image.
pub fn no_image_json(model: &str, request_id: &str, p: &Prepared, text: &str) -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "NO_IMAGE", "index": 0}],
        "usageMetadata": crate::gemini::usage(p.spec.prompt_tokens, p.input_images, 0),
        "modelVersion": model,
        "responseId": request_id,
    })
}
