//! plantain's synthetic world: the scenes plantain-nano is trained and evaluated on.
//!
//! - [`scene`]: what a picture contains (colours, shapes, sizes, 3x3 grid cells, background,
//!   lighting, relations), serialisable to a readable JSON scene spec;
//! - [`sample`]: seeded scene sampling with a train / held-out split of combinations;
//! - [`caption`](mod@caption): varied captions that state everything the checker checks;
//! - [`render`](mod@render): the anti-aliased renderer (tiny-skia), any size and aspect ratio;
//! - [`check`](mod@check): an ML-free checker that finds the objects in an image and grades each
//!   attribute;
//! - [`testing`]: degradations (blur, noise, wobble), scene mutations and accuracy tallies, to
//!   measure the checker.
//!
//! The held-out combinations are [`HELD_OUT_COLOR_SHAPE`] and [`HELD_OUT_SHAPE_CELL`]; the
//! crate's README has the checker's measured accuracy.

pub mod caption;
pub mod check;
pub mod render;
pub mod sample;
pub mod scene;
pub mod testing;

pub use caption::{Caption, Stated, caption, caption_detailed, caption_plain};
pub use check::{Analysis, CheckReport, Component, ObjectCheck, analyse, check};
pub use render::render;
pub use sample::{HELD_OUT_COLOR_SHAPE, HELD_OUT_SHAPE_CELL, Split, is_held_out, sample_scene};
pub use scene::{Background, ColorName, HPos, LightDir, Lighting, Object, Relation, Scene, Shape, Size, VPos};
