//! Tuning tool (not a benchmark): detection counts per attack over a cover directory with several
//! payloads per cover, plus PSNR and the identity-lattice soft-bit SNR of the unattacked image.
//!
//! `cargo run --release -p plantain-provenance --example wm_tune -- DIR [ATTACK_INDICES] [PAYLOADS]`
use plantain_provenance::attacks::Attack;
use plantain_provenance::watermark::{self, Payload, WatermarkKey};

fn main() {
    let key = WatermarkKey::from_passphrase("plantain-watermark-bench");
    let dir = std::env::args().nth(1).expect("dir");
    let attacks: Vec<Attack> =
        std::env::args().nth(2).unwrap_or("0,3,7,10".into()).split(',').map(|i| Attack::all()[i.parse::<usize>().unwrap()]).collect();
    let reps: u32 = std::env::args().nth(3).map_or(2, |s| s.parse().unwrap());
    let mut paths: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    let mut totals = vec![0u32; attacks.len()];
    let mut n = 0;
    let mut psnrs = Vec::new();
    for p in paths {
        let img = image::open(&p).unwrap().to_rgb8();
        let mut line = format!("{:26}", p.file_name().unwrap().to_string_lossy());
        let mut hits = vec![0u32; attacks.len()];
        let mut snr = 0f32;
        let mut ps = 0f64;
        for r in 0..reps {
            let payload = Payload { generator: Payload::PLANTAIN, key_id: key.key_id(), nonce: 0x1234_5678 ^ r.wrapping_mul(0x9E37_79B9) };
            let wm = watermark::embed(&img, &payload, &key);
            ps += watermark::psnr(&img, &wm) / f64::from(reps);
            snr += watermark::diagnose(&wm, &key, &payload).0 / reps as f32;
            for (a, h) in attacks.iter().zip(hits.iter_mut()) {
                let d = watermark::detect(&a.apply(&wm).unwrap(), &key);
                *h += u32::from(d.present && d.payload == Some(payload));
            }
        }
        psnrs.push(ps);
        n += reps;
        line += &format!(" psnr {ps:5.1} ber0 {snr:.3} |");
        for (h, t) in hits.iter().zip(totals.iter_mut()) {
            *t += h;
            line += &format!(" {h}");
        }
        println!("{line}");
    }
    let names: Vec<String> = attacks.iter().map(|a| a.name()).collect();
    println!(
        "TOTAL of {n}: {:?} psnr mean {:.1} min {:.1}",
        names.iter().zip(&totals).map(|(a, t)| format!("{a}: {t}")).collect::<Vec<_>>(),
        psnrs.iter().sum::<f64>() / psnrs.len() as f64,
        psnrs.iter().copied().fold(f64::INFINITY, f64::min)
    );
}
