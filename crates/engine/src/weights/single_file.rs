//! Single-file checkpoints.
