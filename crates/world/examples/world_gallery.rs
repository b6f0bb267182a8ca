//! Writes a contact sheet of the world so a human can look at the shapes:
//! `cargo run -p plantain-world --example world_gallery -- [out.png] [seed]`.
//!
//! Top: every shape at each size, rendered at 64x64 and enlarged 3x (nearest neighbour, to see
//! the real pixels). Below: sampled scenes at 256x256, 96x48 and 48x96; their captions are
//! printed in order. Last: the first scenes again at 64x64, blurred + noisy and then with the
//! checker's "strong" degradation (wobble, blur, colour cast, noise), enlarged 3x, with the
//! checker's verdict printed.

use image::{RgbImage, imageops};
use plantain_world::testing::{Degradation, degrade};
use plantain_world::{
    Background, ColorName, HPos, Lighting, Object, Scene, Shape, Size, Split, VPos, caption, check, render, sample_scene,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "world_gallery.png".into());
    let seed: u64 = args.next().map(|s| s.parse().expect("seed is a number")).unwrap_or(7);

    let tile = 192;
    let cols = 8;
    let mut tiles: Vec<RgbImage> = Vec::new();
    for size in Size::ALL {
        for (k, shape) in Shape::ALL.into_iter().enumerate() {
            let color = [ColorName::Red, ColorName::Blue, ColorName::Green, ColorName::Purple][k % 4];
            let object = Object { shape, color, size, h: HPos::Center, v: VPos::Middle, jitter: (0.0, 0.0) };
            let background = if k % 2 == 0 { ColorName::White } else { ColorName::Yellow };
            let scene =
                Scene { background: Background::Solid(background), lighting: Lighting::NEUTRAL, objects: vec![object], relations: vec![] };
            let small = render(&scene, 64, 64);
            tiles.push(imageops::resize(&small, tile, tile, imageops::FilterType::Nearest));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..16 {
        let split = if i % 4 == 3 { Split::HeldOut } else { Split::Train };
        let scene = sample_scene(&mut rng, split);
        println!("{i:2} {split:?}: {}", caption(&scene, &mut rng));
        let picture = match i % 8 {
            6 => letterbox(&render(&scene, 96, 48), tile),
            7 => letterbox(&render(&scene, 48, 96), tile),
            _ => imageops::resize(&render(&scene, 256, 256), tile, tile, imageops::FilterType::Triangle),
        };
        tiles.push(picture);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for degradation in [Degradation::BlurNoise, Degradation::Strong] {
        for i in 0..8u64 {
            let scene = sample_scene(&mut rng, Split::Train);
            let small = degrade(&render(&scene, 64, 64), degradation, i);
            let report = check(&scene, &small);
            let found: Vec<String> = report.components.iter().map(|c| format!("{:?} {:?}", c.color, c.shape)).collect();
            println!("{degradation:?} {i}: all correct {} (found {})", report.all_correct(), found.join(", "));
            tiles.push(imageops::resize(&small, tile, tile, imageops::FilterType::Nearest));
        }
    }
    let rows = tiles.len().div_ceil(cols);
    let gap = 4;
    let mut sheet = RgbImage::from_pixel(cols as u32 * (tile + gap), rows as u32 * (tile + gap), image::Rgb([60, 60, 60]));
    for (i, t) in tiles.iter().enumerate() {
        let (x, y) = ((i % cols) as u32 * (tile + gap), (i / cols) as u32 * (tile + gap));
        imageops::overlay(&mut sheet, t, x as i64, y as i64);
    }
    sheet.save(&out).expect("write the contact sheet");
    println!("wrote {out}");
}

/// Enlarges a small non-square picture 2x (nearest) onto a grey tile.
fn letterbox(picture: &RgbImage, tile: u32) -> RgbImage {
    let big = imageops::resize(picture, picture.width() * 2, picture.height() * 2, imageops::FilterType::Nearest);
    let mut canvas = RgbImage::from_pixel(tile, tile, image::Rgb([90, 90, 90]));
    imageops::overlay(&mut canvas, &big, ((tile - big.width()) / 2) as i64, ((tile - big.height()) / 2) as i64);
    canvas
}
