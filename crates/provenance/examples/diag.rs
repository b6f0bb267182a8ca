//! Tuning diagnostics (not a benchmark): coded-bit error rate per cover.
use plantain_provenance::watermark::{self, Payload, WatermarkKey};

fn main() {
    let key = WatermarkKey::from_passphrase("plantain-watermark-bench");
    let dir = std::env::args().nth(1).expect("dir");
    let mut paths: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    for p in paths {
        let img = image::open(&p).unwrap().to_rgb8();
        let payload = Payload::new_random(&key);
        let wm = watermark::embed(&img, &payload, &key);
        let (ber, peaks) = watermark::diagnose(&wm, &key, &payload);
        let (jber, _) = watermark::diagnose(&plantain_provenance::attacks::jpeg(&wm, 50).unwrap(), &key, &payload);
        println!(
            "{:30} {:?} psnr {:.1} ber {:.3} jpeg50 ber {:.3} peaks {:?}",
            p.file_name().unwrap().to_string_lossy(),
            img.dimensions(),
            watermark::psnr(&img, &wm),
            ber,
            jber,
            peaks
        );
    }
}
