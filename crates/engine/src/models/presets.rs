//! The real configurations of the standard models, as their hub repos ship them
//! (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1, stabilityai/sd-turbo,
//! stabilityai/stable-diffusion-xl-base-1.0), trimmed to the keys that matter. Used for
//! single-file checkpoints without a config folder and by `plantain bench`.
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
/// openai/clip-vit-large-patch14 as a whole `CLIPModel` (the adherence scorer's model; its text
/// tower is SD 1.x's encoder, with `text_projection`), trimmed to the keys that matter.
pub const CLIP_VIT_L14: &str = r#"{"model_type": "clip", "projection_dim": 768, "logit_scale_init_value": 2.6592,
  "text_config": {"hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072, "max_position_embeddings": 77,
    "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768, "vocab_size": 49408, "layer_norm_eps": 1e-05,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1},
  "vision_config": {"hidden_act": "quick_gelu", "hidden_size": 1024, "image_size": 224, "intermediate_size": 4096,
    "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
    "layer_norm_eps": 1e-05}}"#;
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

pub const SD21_INDEX: &str = r#"{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.10.0"}"#;
/// stabilityai/stable-diffusion-2-1 (768, v-prediction).
pub const SD21_SCHEDULER: &str = r#"{"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
  "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
  "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null}"#;

pub const SDXL_INDEX: &str =
    r#"{"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.19.0", "force_zeros_for_empty_prompt": true}"#;
pub const SDXL_SCHEDULER: &str = r#"{"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
  "beta_start": 0.00085, "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000,
  "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": false, "skip_prk_steps": true,
  "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false}"#;
/// SDXL's first text encoder: CLIP ViT-L/14 (SD 1.x's), used through its penultimate layer.
pub const SDXL_TEXT: &str = CLIP_L_TEXT;
/// SDXL's second text encoder: OpenCLIP ViT-bigG/14 with its projection.
pub const SDXL_TEXT_2: &str = r#"{"hidden_act": "gelu", "hidden_size": 1280, "intermediate_size": 5120,
  "max_position_embeddings": 77, "num_attention_heads": 20, "num_hidden_layers": 32, "projection_dim": 1280,
  "vocab_size": 49408, "layer_norm_eps": 1e-05}"#;
pub const SDXL_UNET: &str = r#"{"act_fn": "silu", "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
  "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280], "center_input_sample": false,
  "cross_attention_dim": 2048, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4,
  "projection_class_embeddings_input_dim": 2816, "sample_size": 128, "transformer_layers_per_block": [1, 2, 10],
  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "use_linear_projection": true}"#;
pub const SDXL_VAE: &str = r#"{"act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
  "sample_size": 1024, "scaling_factor": 0.13025,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#;

/// FLUX.2 [klein]: how its pipeline uses the networks, as diffusers' `Flux2KleinPipeline` does
/// (the hub name, repository and sampling defaults live in `plantain-hub`'s table of known
/// models; the network sizes in the folder's configs).
#[derive(Clone, Copy, Debug)]
pub struct KleinSpec {
    /// Prompt tokens: the chat-formatted prompt is padded (or truncated) to this length.
    pub text_len: usize,
    /// The text encoder's hidden states (transformers' `hidden_states[k]`, 0 = embeddings)
    /// concatenated per token into the transformer's context.
    pub text_layers: [usize; 3],
    /// Reference image `i` (from 0) gets RoPE time coordinate `ref_time_scale * (i + 1)`.
    pub ref_time_scale: i64,
}

pub const FLUX2_KLEIN: KleinSpec = KleinSpec { text_len: 512, text_layers: [9, 18, 27], ref_time_scale: 10 };

/// black-forest-labs/FLUX.2-klein-4B `transformer/config.json` (the same for the base model).
pub const FLUX2_KLEIN_4B_TRANSFORMER: &str = r#"{"_class_name": "Flux2Transformer2DModel", "attention_head_dim": 128,
  "axes_dims_rope": [32, 32, 32, 32], "eps": 1e-06, "guidance_embeds": false, "in_channels": 128,
  "joint_attention_dim": 7680, "mlp_ratio": 3.0, "num_attention_heads": 24, "num_layers": 5, "num_single_layers": 20,
  "out_channels": null, "patch_size": 1, "rope_theta": 2000, "timestep_guidance_channels": 256}"#;
/// Qwen3-4B, FLUX.2 [klein] 4B's text encoder, trimmed to the keys that matter.
pub const FLUX2_KLEIN_4B_TEXT: &str = r#"{"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 2560,
  "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000, "hidden_act": "silu"}"#;
/// The FLUX.2 VAE (`AutoencoderKLFlux2`), trimmed to the keys that matter.
pub const FLUX2_VAE: &str = r#"{"_class_name": "AutoencoderKLFlux2", "block_out_channels": [128, 256, 512, 512],
  "layers_per_block": 2, "latent_channels": 32, "norm_num_groups": 32, "batch_norm_eps": 0.0001, "patch_size": [2, 2],
  "use_quant_conv": true, "use_post_quant_conv": true, "mid_block_add_attention": true}"#;

/// The standard configs of one model, as diffusers folder files would hold them.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    pub model_index: &'static str,
    pub scheduler: &'static str,
    pub text_encoder: &'static str,
    pub text_encoder_2: Option<&'static str>,
    pub unet: &'static str,
    pub vae: &'static str,
}

pub const SD15: Preset = Preset {
    model_index: SD15_INDEX,
    scheduler: SD15_SCHEDULER,
    text_encoder: CLIP_L_TEXT,
    text_encoder_2: None,
    unet: SD15_UNET,
    vae: SD_VAE,
};
pub const SD21: Preset = Preset {
    model_index: SD21_INDEX,
    scheduler: SD21_SCHEDULER,
    text_encoder: OPENCLIP_H_TEXT,
    text_encoder_2: None,
    unet: SD21_UNET,
    vae: SD_VAE,
};
pub const SD_TURBO: Preset = Preset {
    model_index: TURBO_INDEX,
    scheduler: TURBO_SCHEDULER,
    text_encoder: OPENCLIP_H_TEXT,
    text_encoder_2: None,
    unet: SD21_UNET,
    vae: SD_VAE,
};
pub const SDXL: Preset = Preset {
    model_index: SDXL_INDEX,
    scheduler: SDXL_SCHEDULER,
    text_encoder: SDXL_TEXT,
    text_encoder_2: Some(SDXL_TEXT_2),
    unet: SDXL_UNET,
    vae: SDXL_VAE,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::clip::ClipTextConfig;
    use crate::models::unet::UNetConfig;
    use crate::models::vae::VaeConfig;

    /// The full-size klein graphs build, and ask for the tensors (names and shapes) a real
    /// checkpoint has, without any weights on disk.
    #[test]
    fn full_size_klein_graphs_build() {
        use crate::models::{flux2, qwen3};
        use crate::weights::TensorIndex;
        let dit = flux2::Flux2Config::from_json(FLUX2_KLEIN_4B_TRANSFORMER).unwrap();
        let idx = TensorIndex::recording();
        flux2::build(&dit, &idx).unwrap();
        let rec = idx.recorded();
        let shape = |n: &str| rec.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone()).unwrap_or_else(|| panic!("{n} not asked for"));
        assert_eq!(shape("context_embedder.weight"), vec![3072, 7680]);
        assert_eq!(shape("single_transformer_blocks.19.attn.to_qkv_mlp_proj.weight"), vec![3 * 3072 + 2 * 9216, 3072]);
        assert_eq!(shape("single_transformer_blocks.19.attn.to_out.weight"), vec![3072, 3072 + 9216]);
        assert_eq!(shape("transformer_blocks.4.ff_context.linear_in.weight"), vec![2 * 9216, 3072]);
        let params: usize = rec.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert!((3.8e9..4.0e9).contains(&(params as f64)), "{params} parameters");

        let te = qwen3::Qwen3Config::from_json(FLUX2_KLEIN_4B_TEXT).unwrap();
        let idx = TensorIndex::recording();
        qwen3::build(&te, &idx, FLUX2_KLEIN.text_len, &FLUX2_KLEIN.text_layers).unwrap();
        let rec = idx.recorded();
        assert!(rec.iter().any(|(k, _)| k == "model.layers.26.mlp.down_proj.weight"));
        assert!(!rec.iter().any(|(k, _)| k.starts_with("model.layers.27.") || k == "model.norm.weight"), "only 27 layers run");
        assert_eq!(dit.joint_attention_dim, FLUX2_KLEIN.text_layers.len() * te.hidden_size);

        let vae: VaeConfig = VaeConfig::from_json(FLUX2_VAE).unwrap();
        assert_eq!((vae.patch(), vae.latent_channels * 4), (Some(2), dit.in_channels));
        let idx = TensorIndex::recording();
        crate::models::vae::build_flux2_decoder(&vae, &idx).unwrap();
        assert!(idx.recorded().iter().any(|(k, s)| k == "bn.running_var" && s == &vec![128, 1, 1]));
    }

    #[test]
    fn every_preset_parses() {
        for p in [SD15, SD21, SD_TURBO, SDXL] {
            for t in [p.model_index, p.scheduler] {
                serde_json::from_str::<serde_json::Value>(t).unwrap();
            }
            plantain_schedulers::SchedulerConfig::from_json_str(p.scheduler).unwrap();
            for t in std::iter::once(p.text_encoder).chain(p.text_encoder_2) {
                serde_json::from_str::<ClipTextConfig>(t).unwrap();
            }
            let u = UNetConfig::from_json(p.unet).unwrap();
            assert_eq!(u.spatial_multiple(), if p.text_encoder_2.is_some() { 4 } else { 8 });
            serde_json::from_str::<VaeConfig>(p.vae).unwrap();
        }
        assert_eq!(UNetConfig::from_json(SDXL_UNET).unwrap().text_time, Some((256, 2816)));
    }
}
