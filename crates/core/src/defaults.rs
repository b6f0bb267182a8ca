//! Generation defaults that the engine, the CLI and the server must agree on, so that a
//! request left at its defaults gives the same picture everywhere.

/// Denoising steps when neither the request nor the model says otherwise (SD 1.x / 2.x).
pub const DEFAULT_STEPS: usize = 25;

/// Classifier-free guidance scale when neither the request nor the model says otherwise
/// (SD 1.x / 2.x).
pub const DEFAULT_GUIDANCE: f32 = 7.5;

/// img2img strength (how much of the schedule runs on the input image) when a request does not
/// give one: `plantain generate --strength` and the server's model default.
pub const DEFAULT_STRENGTH: f32 = 0.75;

/// InstructPix2Pix image guidance (how closely the edit keeps to the input picture) when a
/// request does not give one: diffusers' `image_guidance_scale` default.
pub const DEFAULT_IMAGE_GUIDANCE: f32 = 1.5;
