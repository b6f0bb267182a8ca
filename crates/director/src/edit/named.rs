//! Finding things by name with the loaded diffusion model: DiffEdit's mask between "a photo of
//! a cup" and "a photo" is where the model's noise predictions depend on the cup, i.e. where
//! the cup is. It serves the edits whose words name an object the salient-subject segmenter
//! cannot tell apart ("remove the cup on the left"). The mask is as good as the model: a real
//! SD checkpoint knows cups; plantain-nano and the test models know none.

use std::sync::Arc;

use image::{GrayImage, RgbImage};
use plantain_engine::pipeline::{DiffEditOptions, Pipeline};

use super::EditError;
use super::plan::Painter;
use super::regions::SubjectFinder;

/// Noises DiffEdit averages over here: fewer than diffusers' 10, to keep a lookup to about
/// four UNet batches' time on a CPU.
const MAPS: usize = 4;

/// A subject finder that also finds things by name with `pipeline` (DiffEdit), when the model
/// allows it ([`Pipeline::diffedit_mask`]: SD 1.x/2.x text-to-image UNets).
pub struct ModelFinder<S> {
    pub subject: S,
    pub pipeline: Option<Arc<Pipeline>>,
    pub seed: u64,
}

impl<S: SubjectFinder> SubjectFinder for ModelFinder<S> {
    fn subject(&self, image: &RgbImage) -> Result<GrayImage, EditError> {
        self.subject.subject(image)
    }

    fn named(&self, image: &RgbImage, noun: &str) -> Option<Result<GrayImage, EditError>> {
        let p = self.pipeline.as_ref()?;
        let opts = DiffEditOptions { maps: MAPS, seed: self.seed, ..Default::default() };
        let source = format!("a photo of a {noun}");
        Some(match p.diffedit_mask(image, &source, "a photo", None, &opts) {
            Ok(m) => {
                tracing::debug!(noun, coverage = m.coverage(), "DiffEdit mask");
                Ok(m.to_image(image.width(), image.height()))
            }
            // The model cannot make DiffEdit masks (SDXL, inpainting, InstructPix2Pix): no lookup.
            Err(plantain_engine::EngineError::Unsupported(_)) => return None,
            Err(e) => Err(EditError::Region(format!("DiffEdit: {e}"))),
        })
    }

    fn named_by(&self) -> &'static str {
        "DiffEdit (where the loaded model's noise predictions for the name and for a plain photo differ)"
    }
}

/// The painter kind a loaded model is.
pub fn painter_for(p: &Pipeline) -> Painter {
    if p.reads_references() {
        Painter::References
    } else if p.is_instruct_model() {
        Painter::Instruct
    } else {
        Painter::Generative
    }
}
