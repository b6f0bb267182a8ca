//! The real configurations of the benchmarked models, as their hub repos ship them
//! (runwayml/stable-diffusion-v1-5, stabilityai/sd-turbo), trimmed to the keys that matter.
//! scripts/bench_diffusers.py builds the peer's models from the same values.

pub const SD15_INDEX: &str = r#"{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0"}"#;
pub const TURBO_INDEX: &str = r#"{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.24.0"}"#;

pub const SD15_SCHEDULER: &str = r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
  "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
  "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#;
pub const TURBO_SCHEDULER: &str = r#"{"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
  "beta_start": 0.00085, "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000,
  "prediction_type": "epsilon", "set_alpha_to_one": false, "steps_offset": 1, "timestep_spacing": "trailing",
  "trained_betas": null, "use_karras_sigmas": false}"#;

pub const CLIP_L_TEXT: &str = r#"{"hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072,
  "max_position_embeddings": 77, "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768,
  "vocab_size": 49408, "layer_norm_eps": 1e-05}"#;
/// OpenCLIP ViT-H/14 text tower as diffusers keeps it for SD 2.x (23 of 24 layers).
pub const OPENCLIP_H_TEXT: &str = r#"{"hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096,
  "max_position_embeddings": 77, "num_attention_heads": 16, "num_hidden_layers": 23, "projection_dim": 512,
  "vocab_size": 49408, "layer_norm_eps": 1e-05}"#;

pub const SD15_UNET: &str = r#"{"act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false, "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}"#;
pub const SD21_UNET: &str = r#"{"act_fn": "silu", "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false, "cross_attention_dim": 1024,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "dual_cross_attention": false, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4,
  "sample_size": 64, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "use_linear_projection": true, "upcast_attention": false}"#;

pub const SD_VAE: &str = r#"{"act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
  "sample_size": 512, "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#;
