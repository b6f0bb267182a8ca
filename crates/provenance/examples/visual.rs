//! Writes watermarked crops and amplified differences for looking at (tuning aid).
use image::RgbImage;
use plantain_provenance::testimages::scene;
use plantain_provenance::watermark::{self, Payload, WatermarkKey};

fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or("/tmp/wm-visual".into()));
    std::fs::create_dir_all(&out).unwrap();
    let key = WatermarkKey::from_passphrase("visual");
    let p = Payload::new_random(&key);
    let mut covers: Vec<(String, RgbImage)> = vec![
        ("scene".into(), scene(1024, 768, 4)),
        ("flatgrey".into(), RgbImage::from_pixel(512, 512, image::Rgb([128, 128, 128]))),
        ("gradient".into(), RgbImage::from_fn(512, 512, |x, y| image::Rgb([(x / 2) as u8, (y / 2) as u8, 180]))),
    ];
    for a in std::env::args().skip(2) {
        covers.push((a.clone(), image::open(&a).unwrap().to_rgb8()));
    }
    for (i, (name, img)) in covers.iter().enumerate() {
        let wm = watermark::embed(img, &p, &key);
        let (w, h) = img.dimensions();
        let (cw, ch) = (w.min(384), h.min(384));
        let side = RgbImage::from_fn(cw * 3, ch, |x, y| {
            let (sx, sy) = (x % cw, y);
            match x / cw {
                0 => *img.get_pixel(sx, sy),
                1 => *wm.get_pixel(sx, sy),
                _ => {
                    let (a, b) = (img.get_pixel(sx, sy).0, wm.get_pixel(sx, sy).0);
                    image::Rgb([0, 1, 2].map(|c| (128 + 20 * (b[c] as i32 - a[c] as i32)).clamp(0, 255) as u8))
                }
            }
        });
        side.save(out.join(format!("{i}-side.png"))).unwrap();
        wm.save(out.join(format!("{i}-wm.png"))).unwrap();
        println!("{name}: psnr {:.1} dB, detected {}", watermark::psnr(img, &wm), watermark::detect(&wm, &key).present);
    }
}
