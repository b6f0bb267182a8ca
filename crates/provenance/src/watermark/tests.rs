use super::*;
use crate::attacks::Attack;
use crate::testimages::scene;

fn setup(w: u32, h: u32, seed: u64) -> (WatermarkKey, Payload, RgbImage, RgbImage) {
    let key = WatermarkKey::from_passphrase("test");
    let img = scene(w, h, seed);
    let payload = Payload { generator: Payload::PLANTAIN, key_id: key.key_id(), nonce: 0xdead_beef ^ seed as u32 };
    let wm = embed(&img, &payload, &key);
    (key, payload, img, wm)
}

#[test]
fn round_trip_invisible_and_keyed() {
    let (key, payload, img, wm) = setup(512, 384, 1);
    let p = psnr(&img, &wm);
    assert!(p >= 40.0, "psnr {p}");
    let d = detect(&wm, &key);
    assert!(d.present, "{d:?}");
    assert_eq!(d.payload, Some(payload));
    assert!(d.confidence > 0.9 && d.false_positive_probability < 1e-8, "{d:?}");
    assert!(!detect(&img, &key).present);
    // Another key neither reads nor confirms it.
    let other = detect(&wm, &WatermarkKey::from_passphrase("other"));
    assert!(!other.present && other.payload.is_none());
}

#[test]
fn survives_the_hard_attacks() {
    let (key, payload, _, wm) = setup(640, 480, 2);
    for a in [Attack::Jpeg(50), Attack::Resize { factor: 0.5, back: false }, Attack::Crop(0.25), Attack::Rotate(2.0)] {
        let d = detect(&a.apply(&wm).unwrap(), &key);
        assert!(d.present && d.payload == Some(payload), "{}: {d:?}", a.name());
    }
}

#[test]
fn any_size_from_tiny_to_large() {
    let key = WatermarkKey::from_passphrase("sizes");
    // Thumbnails carry the payload only where the picture leaves room (smooth content); detailed
    // pictures need about 200 px a side.
    let smooth = |w, h| RgbImage::from_fn(w, h, |x, y| image::Rgb([(40 + x) as u8, (90 + y / 2) as u8, 160]));
    for (w, h) in [(1, 1), (17, 9), (64, 64), (96, 200), (256, 200), (1500, 900)] {
        let img = if w < 200 { smooth(w, h) } else { scene(w, h, 5) };
        // A fixed payload per size: a random one would make the test's outcome vary by run.
        let p = Payload { generator: Payload::PLANTAIN, key_id: key.key_id(), nonce: 0x5eed_0000 ^ (w * 7919 + h) };
        let wm = embed(&img, &p, &key);
        assert_eq!(wm.dimensions(), (w, h));
        let d = detect(&wm, &key);
        if w >= 64 && h >= 64 {
            assert!(psnr(&img, &wm) >= 40.0);
            assert_eq!(d.payload, Some(p), "{w}x{h}: {d:?}");
        } else {
            assert!(!d.present || d.payload == Some(p));
        }
    }
}

#[test]
fn no_false_positives_on_plain_images() {
    let key = WatermarkKey::from_passphrase("test");
    let mut negatives: Vec<RgbImage> = (0..6).map(|i| scene(256 + 64 * i, 320, 100 + u64::from(i))).collect();
    negatives.push(RgbImage::from_pixel(300, 300, image::Rgb([200, 10, 10])));
    negatives.push(RgbImage::from_fn(300, 200, |x, y| image::Rgb([(x ^ y) as u8, (x * 7) as u8, (y * 3) as u8])));
    for img in &negatives {
        let d = detect(img, &key);
        assert!(!d.present, "{d:?}");
        assert!(d.false_positive_probability < 1e-8);
    }
}

#[test]
fn key_and_payload_encodings() {
    let k = WatermarkKey::generate();
    assert_eq!(WatermarkKey::from_hex(&k.to_hex()), Some(k.clone()));
    assert!(WatermarkKey::from_hex("zz").is_none());
    assert!(!format!("{k:?}").contains(&k.to_hex()));
    let p = Payload { generator: 1, key_id: 2, nonce: 3 };
    assert_eq!(p.to_hex(), "0001000200000003");
    assert_eq!(Payload::from_hex(&p.to_hex()), Some(p));
    let dir = std::env::temp_dir().join(format!("plantain-wm-key-{}", std::process::id()));
    let path = dir.join("k");
    let (a, created) = WatermarkKey::load_or_create(&path).unwrap();
    let (b, again) = WatermarkKey::load_or_create(&path).unwrap();
    assert!(created && !again && a == b);
    std::fs::write(&path, "not hex").unwrap();
    assert!(matches!(WatermarkKey::load_or_create(&path), Err(KeyError::Format { .. })));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn chroma_copy_stays_off_flat_areas() {
    // Top half flat grey, bottom half strong texture (a picture whose luma alone fails the
    // simulated JPEG, so the chroma copy takes its largest share).
    // Whether luma alone survives the simulated JPEG depends on the payload too, so fixed payloads
    // are tried until one gives the chroma copy its share; every one must keep flat areas clean.
    let key = WatermarkKey::from_passphrase("test");
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let img = RgbImage::from_fn(512, 512, |_, y| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        if y < 256 { image::Rgb([128, 128, 128]) } else { image::Rgb([(s >> 8) as u8, (s >> 16) as u8, (s >> 24) as u8]) }
    });
    let mut seen = Vec::new();
    for nonce in [0x89ab_cdefu32, 0x8765_4321, 0x3c3c_c3c3, 0x3333_4444, 0xffff_1234, 0x0000_0001] {
        let v = (u64::from(Payload::PLANTAIN) << 48) | (u64::from(key.key_id()) << 32) | u64::from(nonce);
        let p = Payload::from_u64(v);
        let wm = embed(&img, &p, &key);
        assert!(psnr(&img, &wm) >= 40.0);
        assert_eq!(detect(&wm, &key).payload, Some(p));
        // RMS of the change along the chroma copy's direction (the luma change has none, only its
        // rounding), over the flat part away from the texture, and over the texture.
        let along = |y0: u32, y1: u32| {
            let mut e = 0f64;
            for y in y0..y1 {
                for x in 0..512 {
                    let (a, b) = (img.get_pixel(x, y).0, wm.get_pixel(x, y).0);
                    let d: f32 = (0..3).map(|c| (f32::from(b[c]) - f32::from(a[c])) * CHROMA_U[c]).sum();
                    e += f64::from(d * d);
                }
            }
            (e / (f64::from(y1 - y0) * 512.0)).sqrt()
        };
        let (flat, texture) = (along(0, 230), along(280, 512));
        assert!(flat < 0.4, "nonce {nonce:x}: chroma RMS on the flat part {flat} (texture {texture})");
        seen.push((flat, texture));
        if texture > 1.0 {
            return;
        }
    }
    panic!("no payload gave the chroma copy a share on the texture: (flat, texture) RMS {seen:?}");
}
