use super::*;
use crate::testimages::scene;

#[test]
fn round_trip_512() {
    let key = WatermarkKey::from_passphrase("test");
    let img = scene(512, 384, 1);
    let payload = Payload { generator: Payload::PLANTAIN, key_id: key.key_id(), nonce: 0xdead_beef };
    let wm = embed(&img, &payload, &key);
    let p = psnr(&img, &wm);
    assert!(p >= 40.0, "psnr {p}");
    let d = detect(&wm, &key);
    assert!(d.present, "{d:?}");
    assert_eq!(d.payload, Some(payload));
    assert!(!detect(&img, &key).present);
    assert!(!detect(&wm, &WatermarkKey::from_passphrase("other")).present);
}
