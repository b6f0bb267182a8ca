//! The networks, each a function from a config and a weight index to a [`crate::graph::Graph`].

pub mod clip;
pub mod nn;
pub mod taesd;
pub mod unet;
pub mod vae;
