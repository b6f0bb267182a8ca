//! Publishing a finished job: stamp (watermark, labels, signed C2PA), store (blob + artefact
//! records, in one transaction with the quota reservation), meter (metrics and a log line).

use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use plantain_provenance::{Action, Ingredient, ManifestInfo, MediaFormat, Provenance};
use plantain_store::{Artefact, Timings, Usage, blob_address, now};

use crate::Service;
use crate::error::ServiceError;
use crate::job::{ImageRole, Job, JobSpec, Made, Output, Ran};
use crate::worker::PreviewEvent;

/// How a job's images are stamped: the same for its finished images and its partial images.
#[derive(Clone)]
pub struct Stamper {
    prov: Arc<Provenance>,
    model: String,
    format: MediaFormat,
    action: Action,
    /// C2PA ingredients (title, bytes; only their hashes go in).
    ingredients: Arc<Vec<(String, Vec<u8>)>>,
    /// An edit's region: the watermark goes only there, so every other pixel stays the input's.
    region: Option<Arc<image::GrayImage>>,
    /// A transparent cut-out's alpha channel.
    matte: Option<Arc<image::GrayImage>>,
}

impl Stamper {
    pub fn new(svc: &Service, spec: &JobSpec) -> Self {
        let edits = spec.images.iter().any(|(r, _)| *r == ImageRole::Edit);
        let action = match (edits, spec.images.len()) {
            (false, 0) => Action::Created,
            (_, n) if n > 1 => Action::Placed,
            _ => Action::Edited,
        };
        let ingredients = spec
            .images
            .iter()
            .enumerate()
            .map(|(i, (_, im))| (format!("input-{i}.{}", plantain_imageio::file_extension(im.mime)), im.bytes.clone()))
            .collect();
        Stamper {
            prov: svc.provenance.clone(),
            model: spec.model.name.clone(),
            format: spec.format,
            action,
            ingredients: Arc::new(ingredients),
            region: spec.edit.as_ref().map(|p| Arc::new(p.alpha.clone())),
            matte: spec.edit.as_ref().and_then(|p| p.matte.clone()).map(Arc::new),
        }
    }

    /// Blocking: watermark, encode, label and sign one picture.
    pub fn stamp(&self, img: &RgbImage, seed: u64, steps: usize, extra: &[(&str, serde_json::Value)]) -> Result<Vec<u8>, ServiceError> {
        let mut info = ManifestInfo::created(&self.model);
        info.action = self.action;
        info.ingredients = self.ingredients.iter().map(|(t, b)| Ingredient { title: t.clone(), bytes: b }).collect();
        info.set_generation(seed, steps);
        for (k, v) in extra {
            info.parameters.insert((*k).into(), v.clone());
        }
        let stamped = match (&self.region, &self.matte) {
            (Some(r), Some(m)) if r.dimensions() == img.dimensions() => self.prov.stamp_cut_out(img, r, m, self.format, &info),
            (Some(r), _) if r.dimensions() == img.dimensions() => self.prov.stamp_within(img, r, self.format, &info),
            _ => self.prov.stamp(img, self.format, &info),
        };
        stamped.map(|s| s.bytes).map_err(|e| ServiceError::internal(format!("provenance stamp failed: {e}")))
    }
}

fn timings(g: &Made, queued_for: f64, stamp_s: f64) -> Timings {
    Timings {
        queue_and_run_s: queued_for,
        text_s: g.timings.text.as_secs_f64(),
        image_encode_s: g.timings.image_encode.as_secs_f64(),
        denoise_s: g.timings.denoise.as_secs_f64(),
        decode_s: g.timings.decode.as_secs_f64(),
        stamp_s,
    }
}

impl Service {
    /// Stamps, stores and records every image of a finished job, and meters it. All of a
    /// job's images are recorded together (a batch item re-run after a crash finds all or none).
    pub async fn publish(&self, ran: Ran) -> Result<Vec<Output>, ServiceError> {
        let Ran { mut job, made: generated } = ran;
        let queued_for = job.queued_for().as_secs_f64();
        let t_stamp = Instant::now();
        let stamper = Stamper::new(self, &job.spec);
        let pictures: Vec<(RgbImage, u64, usize, Option<serde_json::Value>)> = generated
            .iter()
            .map(|g| {
                (
                    g.image.clone(),
                    g.seed,
                    g.steps_run,
                    g.edit.as_ref().map(|r| serde_json::json!({"operation": r.operation, "method": r.method})),
                )
            })
            .collect();
        let stamped = tokio::task::spawn_blocking(move || {
            pictures
                .iter()
                .map(|(img, seed, steps, edit)| {
                    let extra: Vec<(&str, serde_json::Value)> = edit.iter().map(|e| ("edit", e.clone())).collect();
                    stamper.stamp(img, *seed, *steps, &extra)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ServiceError::internal(format!("stamping task failed: {e}")))??;
        let stamp_s = t_stamp.elapsed().as_secs_f64();
        let spec = &job.spec;
        let prompt_hash = blob_address(spec.prompt.as_bytes());
        let mut outs = Vec::with_capacity(stamped.len());
        for (g, bytes) in generated.iter().zip(stamped) {
            let output_hash = self.stores.blobs.put(&bytes).await?;
            let artefact = Artefact {
                id: crate::new_id(),
                version: spec.parent.as_ref().map(|p| p.version + 1).unwrap_or(1),
                request_id: job.ctx.request_id.clone(),
                key_id: job.ctx.caller.key_id.clone(),
                model: spec.model.name.clone(),
                prompt_hash: prompt_hash.clone(),
                params: recorded_params(spec, job.steps, g.edit.as_ref()),
                seed: g.seed,
                timings: timings(g, queued_for, stamp_s),
                usage: Usage { prompt_tokens: spec.prompt_tokens, output_tokens: spec.tokens_per_image },
                output_hash,
                mime: spec.format.mime().to_string(),
                width: g.image.width(),
                height: g.image.height(),
                parent_id: spec.parent.as_ref().map(|p| p.id.clone()),
                created_at: now(),
            };
            outs.push(Output { artefact, bytes: Arc::new(bytes) });
        }
        let records: Vec<Artefact> = outs.iter().map(|o| o.artefact.clone()).collect();
        self.stores.meta.insert_artefacts(&records, job.reservation()).await?;
        job.settle();
        self.meter(&job, &outs);
        Ok(outs)
    }

    /// Previously published outputs of a request (a batch item re-run after a restart).
    pub async fn outputs_of_request(&self, request_id: &str) -> Result<Vec<Output>, ServiceError> {
        let mut outs = Vec::new();
        for a in self.stores.meta.artefacts_of_request(request_id).await? {
            let bytes = self
                .stores
                .blobs
                .get(&a.output_hash)
                .await?
                .ok_or_else(|| ServiceError::internal(format!("blob of {} is missing", a.id)))?;
            outs.push(Output { artefact: a, bytes: Arc::new(bytes) });
        }
        Ok(outs)
    }

    fn meter(&self, job: &crate::job::Job, outs: &[Output]) {
        let spec = &job.spec;
        let secs = job.queued_for().as_secs_f64();
        self.metrics.generation(&spec.model.name, &spec.size_label, secs, outs.len() as u64);
        tracing::info!(
            request_id = %job.ctx.request_id,
            key_id = %job.ctx.caller.label(),
            model = %spec.model.name,
            size = %spec.size_label,
            images = outs.len(),
            seeds = ?job.seeds,
            prompt_tokens = spec.prompt_tokens,
            output_tokens = spec.tokens_per_image * outs.len() as u32,
            latency_s = secs,
            outputs = ?outs.iter().map(|o| &o.artefact.output_hash[..16]).collect::<Vec<_>>(),
            "generated"
        );
    }
}

/// The wire-level parameters plus the steps the engine ran, and an edit's plan as carried out.
fn recorded_params(spec: &JobSpec, steps: usize, edit: Option<&plantain_director::edit::PlanReport>) -> serde_json::Value {
    let mut p = spec.params.clone();
    if let Some(o) = p.as_object_mut() {
        o.insert("steps".into(), serde_json::json!(steps));
        if let Some(r) = edit {
            o.insert("edit".into(), serde_json::to_value(r).unwrap_or_default());
        }
        if let Some(c) = &spec.checks {
            o.insert("checks".into(), c.clone());
        }
    }
    p
}

impl Job {
    /// Stamps a partial image like a finished one (watermark, labels, signed C2PA that records
    /// it as partial image `index` after step `step`). Partial images are not stored.
    pub async fn stamp_partial(&self, svc: &Service, ev: PreviewEvent) -> Result<Vec<u8>, ServiceError> {
        let stamper = Stamper::new(svc, &self.spec);
        let seed = self.seeds.get(ev.image).copied().unwrap_or_default();
        let steps = self.steps;
        tokio::task::spawn_blocking(move || {
            let extra = [
                ("partial_image", serde_json::json!(ev.index)),
                ("partial_step", serde_json::json!(ev.step)),
                ("partial_of_steps", serde_json::json!(ev.total)),
            ];
            stamper.stamp(&ev.picture, seed, steps, &extra)
        })
        .await
        .map_err(|e| ServiceError::internal(format!("stamping task failed: {e}")))?
    }
}
