//! The short names plantain accepts for `--model`, and what each one means.
//!
//! Kept as a static table so `plantain models`, `--help` and error suggestions all
//! agree, and so adding a model is one entry here.

use plantain_core::{DEFAULT_GUIDANCE, DEFAULT_STEPS};
use serde::Serialize;

/// The model families, defined once in `plantain-core` (the engine uses the same type).
pub use plantain_core::Family;

/// Sampling defaults used when only the family is known (arbitrary local folders): the shared
/// defaults for SD 1.x / 2.x, and the resolution their standard checkpoints were trained at.
pub fn family_defaults(family: Family) -> Defaults {
    let generic = |prediction| Defaults {
        steps: DEFAULT_STEPS as u32,
        guidance: DEFAULT_GUIDANCE,
        resolution: family.standard_resolution(prediction == Prediction::VPrediction),
        prediction,
    };
    match family {
        Family::Sd1 => generic(Prediction::Epsilon),
        Family::Sd2 => generic(Prediction::VPrediction),
        Family::Sdxl => {
            Defaults { steps: 30, guidance: 5.0, resolution: family.standard_resolution(false), prediction: Prediction::Epsilon }
        }
    }
}

/// FLUX.2 [klein] (distilled): 4 steps, one transformer pass per step (no guidance), 1024 px
/// (diffusers' `Flux2KleinPipeline` defaults). For the `flux2-klein` short name and any local
/// `Flux2KleinPipeline` folder.
pub const KLEIN_DEFAULTS: Defaults = Defaults { steps: 4, guidance: 1.0, resolution: 1024, prediction: Prediction::FlowMatching };

/// What the UNet was trained to predict; the scheduler must match or images are noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Prediction {
    Epsilon,
    VPrediction,
    /// The velocity of a rectified flow, sampled with flow-matching Euler (FLUX.2).
    FlowMatching,
}

/// Sampling defaults a model was tuned for. Square native resolution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Defaults {
    pub steps: u32,
    pub guidance: f32,
    /// Native width and height in pixels.
    pub resolution: u32,
    pub prediction: Prediction,
}

/// Where a known model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownSource {
    /// A Hugging Face hub repo id.
    Hub(&'static str),
    /// Shipped with plantain; found through the caller / `PLANTAIN_NANO_DIR`, never downloaded.
    Bundled,
}

/// One entry of the short-name table.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// What users type: `--model sd-turbo`.
    pub name: &'static str,
    pub source: KnownSource,
    /// `None` where the table does not know yet (plantain-nano: read from its folder).
    pub family: Option<Family>,
    /// `None` where the folder's own configs decide.
    pub defaults: Option<Defaults>,
    /// Licence summary to print before first use; the model card is authoritative.
    pub licence: &'static str,
    pub description: &'static str,
}

impl KnownModel {
    /// Hub repo id, if the model lives on the hub.
    pub fn repo_id(&self) -> Option<&'static str> {
        match self.source {
            KnownSource::Hub(id) => Some(id),
            KnownSource::Bundled => None,
        }
    }
}

const SAI_NC: &str = "Stability AI Non-Commercial Research Community License (non-commercial use only; \
                      commercial use needs a Stability AI membership) - check the model card for current terms";

/// Every short name plantain knows.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "sd-turbo",
        source: KnownSource::Hub("stabilityai/sd-turbo"),
        family: Some(Family::Sd2),
        defaults: Some(Defaults { steps: 1, guidance: 0.0, resolution: 512, prediction: Prediction::Epsilon }),
        licence: SAI_NC,
        description: "SD 2.1 distilled for 1-4 step sampling (ADD), 512px, no guidance",
    },
    KnownModel {
        name: "sdxl-turbo",
        source: KnownSource::Hub("stabilityai/sdxl-turbo"),
        family: Some(Family::Sdxl),
        defaults: Some(Defaults { steps: 1, guidance: 0.0, resolution: 512, prediction: Prediction::Epsilon }),
        licence: SAI_NC,
        description: "SDXL distilled for 1-4 step sampling (ADD), 512px, no guidance",
    },
    KnownModel {
        name: "sd15",
        source: KnownSource::Hub("stable-diffusion-v1-5/stable-diffusion-v1-5"),
        family: Some(Family::Sd1),
        defaults: Some(Defaults { steps: 25, guidance: 7.5, resolution: 512, prediction: Prediction::Epsilon }),
        licence: "CreativeML OpenRAIL-M (use-based restrictions apply; see the model card)",
        description: "Stable Diffusion 1.5, 512px",
    },
    KnownModel {
        name: "sd21",
        source: KnownSource::Hub("stabilityai/stable-diffusion-2-1"),
        family: Some(Family::Sd2),
        defaults: Some(Defaults { steps: 25, guidance: 7.5, resolution: 768, prediction: Prediction::VPrediction }),
        licence: "CreativeML OpenRAIL++-M (use-based restrictions apply; see the model card)",
        description: "Stable Diffusion 2.1, 768px, v-prediction",
    },
    KnownModel {
        name: "sdxl",
        source: KnownSource::Hub("stabilityai/stable-diffusion-xl-base-1.0"),
        family: Some(Family::Sdxl),
        defaults: Some(Defaults { steps: 30, guidance: 5.0, resolution: 1024, prediction: Prediction::Epsilon }),
        licence: "CreativeML OpenRAIL++-M (use-based restrictions apply; see the model card)",
        description: "SDXL 1.0 base, 1024px",
    },
    KnownModel {
        name: "flux2-klein",
        source: KnownSource::Hub("black-forest-labs/FLUX.2-klein-4B"),
        // Not a Stable Diffusion family: the engine loads it with its own pipeline.
        family: None,
        defaults: Some(KLEIN_DEFAULTS),
        licence: "Apache-2.0 (FLUX.2 [klein] 4B; the 9B models are non-commercial) - check the model card",
        description: "FLUX.2 [klein] 4B: draws and edits by instruction (Qwen3 text encoder, 4 steps), 1024px",
    },
    KnownModel {
        name: "plantain-nano",
        source: KnownSource::Bundled,
        family: None,
        // 20 Euler steps; guidance chosen by `plantain eval nano` (see the model card). The
        // recipe predicts v on a zero-terminal-SNR schedule; the folder's scheduler config says so.
        defaults: Some(Defaults { steps: 20, guidance: 2.0, resolution: 64, prediction: Prediction::VPrediction }),
        licence: "Apache-2.0, like plantain (model card: models/plantain-nano/README.md)",
        description: "small model shipped with plantain for tests and demos (local folder, never downloaded)",
    },
];

/// Comma-separated list of short names, for error messages.
pub fn known_names() -> String {
    KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// Lower-case and drop separators, so `SD-Turbo`, `sd_turbo` and `sdturbo` all match.
fn normalise(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

/// Exact lookup, forgiving case and separators (`SD-1.5` finds `sd15`).
pub fn find_known(name: &str) -> Option<&'static KnownModel> {
    let n = normalise(name);
    if n.is_empty() {
        return None;
    }
    KNOWN_MODELS.iter().find(|m| normalise(m.name) == n)
}

/// The known model whose hub repo is `repo_id` (case-insensitive, as the hub is).
pub fn find_known_repo(repo_id: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.repo_id().is_some_and(|r| r.eq_ignore_ascii_case(repo_id)))
}

/// Closest short name to a mistyped one, for "did you mean …?".
///
/// Also matches the repo part of a known id (`stable-diffusion-xl-base-1.0` → `sdxl`), since
/// people often type the repo name without its owner.
pub fn suggest(name: &str) -> Option<&'static str> {
    let n = normalise(name);
    if n.is_empty() {
        return None;
    }
    let mut best: Option<(usize, &'static str)> = None;
    for m in KNOWN_MODELS {
        let mut cands = vec![normalise(m.name)];
        if let Some(repo) = m.repo_id() {
            cands.push(normalise(repo.rsplit('/').next().unwrap_or(repo)));
        }
        for c in cands {
            if c == n {
                return Some(m.name);
            }
            let d = levenshtein(&n, &c);
            // Allow more slack for longer names, but never suggest something unrelated.
            let limit = (c.len().max(n.len()) / 3).clamp(1, 3);
            if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, m.name));
            }
        }
        // A fragment like `turbo` or `xl` that is contained in a name is worth suggesting too.
        if n.len() >= 4 && normalise(m.name).contains(&n) && best.is_none() {
            best = Some((usize::MAX - 1, m.name));
        }
    }
    best.map(|(_, name)| name)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux2_klein_is_known() {
        let k = find_known("flux2-klein").unwrap();
        assert_eq!(k.repo_id(), Some("black-forest-labs/FLUX.2-klein-4B"));
        assert_eq!(k.family, None);
        let d = k.defaults.unwrap();
        assert_eq!((d.steps, d.resolution, d.prediction), (4, 1024, Prediction::FlowMatching));
        assert_eq!(find_known_repo("black-forest-labs/FLUX.2-klein-4B").unwrap().name, "flux2-klein");
    }

    #[test]
    fn table_matches_brief() {
        let t = find_known("sd-turbo").unwrap();
        assert_eq!(t.repo_id(), Some("stabilityai/sd-turbo"));
        assert_eq!(t.family, Some(Family::Sd2));
        let d = t.defaults.unwrap();
        assert_eq!((d.steps, d.guidance, d.resolution), (1, 0.0, 512));

        let x = find_known("sdxl-turbo").unwrap().defaults.unwrap();
        assert_eq!((x.steps, x.guidance, x.resolution), (1, 0.0, 512));

        let s15 = find_known("sd15").unwrap();
        assert_eq!(s15.repo_id(), Some("stable-diffusion-v1-5/stable-diffusion-v1-5"));
        let d = s15.defaults.unwrap();
        assert_eq!((d.steps, d.guidance, d.resolution), (25, 7.5, 512));

        let s21 = find_known("sd21").unwrap().defaults.unwrap();
        assert_eq!((s21.steps, s21.resolution, s21.prediction), (25, 768, Prediction::VPrediction));

        let xl = find_known("sdxl").unwrap();
        assert_eq!(xl.family, Some(Family::Sdxl));
        let d = xl.defaults.unwrap();
        assert_eq!((d.steps, d.guidance, d.resolution), (30, 5.0, 1024));

        assert_eq!(find_known("plantain-nano").unwrap().source, KnownSource::Bundled);
        assert!(KNOWN_MODELS.iter().all(|m| !m.licence.is_empty()));
    }

    #[test]
    fn lookup_forgives_case_and_separators() {
        assert_eq!(find_known("SD-Turbo").unwrap().name, "sd-turbo");
        assert_eq!(find_known("sd1.5").unwrap().name, "sd15");
        assert_eq!(find_known("SDXL_Turbo").unwrap().name, "sdxl-turbo");
        assert!(find_known("sd3").is_none());
        assert!(find_known("--").is_none());
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("sd-turob"), Some("sd-turbo"));
        assert_eq!(suggest("sd-trbo"), Some("sd-turbo"));
        assert_eq!(suggest("sdxl-turob"), Some("sdxl-turbo"));
        assert_eq!(suggest("sd16"), Some("sd15"));
        assert_eq!(suggest("stable-diffusion-xl-base-1.0"), Some("sdxl"));
        assert_eq!(suggest("turbo"), Some("sd-turbo"));
        assert_eq!(suggest("midjourney"), None);
        assert_eq!(find_known_repo("StabilityAI/SD-Turbo").unwrap().name, "sd-turbo");
    }
}
