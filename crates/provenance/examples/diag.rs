//! Tuning diagnostics (not a benchmark): lattice estimates and detection per cover and attack.
use plantain_provenance::attacks::Attack;
use plantain_provenance::watermark::{self, Payload, WatermarkKey};

fn main() {
    let key = WatermarkKey::from_passphrase("plantain-watermark-bench");
    let dir = std::env::args().nth(1).expect("dir");
    let attacks: Vec<Attack> =
        std::env::args().nth(2).unwrap_or("0".into()).split(',').map(|i| Attack::all()[i.parse::<usize>().unwrap()]).collect();
    let mut paths: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    for p in paths {
        let img = image::open(&p).unwrap().to_rgb8();
        let payload = Payload::new_random(&key);
        let wm = watermark::embed(&img, &payload, &key);
        for a in &attacks {
            let att = a.apply(&wm).unwrap();
            let d = watermark::detect(&att, &key);
            let lat: Vec<String> = watermark::lattice_debug(&att).iter().map(|(p, t)| format!("{p:.1}@{t:.2}")).collect();
            println!(
                "{:28} {:12} {} z {:.1} lattice {:?} found {:.1}@{:.2}",
                p.file_name().unwrap().to_string_lossy(),
                a.name(),
                if d.present { "OK  " } else { "miss" },
                d.sync_z,
                lat,
                d.tile_period_px,
                d.rotation_deg
            );
        }
    }
}
