//! FLUX.2 [klein] as a served model (the tiny random-weight fixture, loaded from its folder like
//! any model): Gemini text-to-image answers the table's exact pixels, a turn with an image part
//! is klein's instruction edit kept inside the planner's region, two image parts are fused in
//! one pass of klein, and all carry valid provenance.

mod common;

use base64::Engine as _;
use common::*;
use plantain_service::config::ModelConfig;
use plantain_world::{Background, ColorName, HPos, Lighting, Object, Scene, Shape, Size, VPos, render};
use serde_json::{Value, json};

const GEN: &str = "/v1beta/models/gemini-3.1-flash-image-preview:generateContent";

fn klein_config(data: &tempfile::TempDir) -> plantain_server::Config {
    let mut c = config(data);
    let mut m = ModelConfig::new("klein", &repo_root().join("fixtures/tiny/flux2-klein").to_string_lossy());
    m.threads = 1;
    c.models = vec![m];
    c
}

async fn post(base: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{base}{GEN}")).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn image_of(r: &Value) -> Vec<u8> {
    let parts = r["candidates"][0]["content"]["parts"].as_array().unwrap();
    B64.decode(parts.iter().find_map(|p| p["inlineData"]["data"].as_str()).expect("an image part")).unwrap()
}

fn text_of(r: &Value) -> String {
    let parts = r["candidates"][0]["content"]["parts"].as_array().unwrap();
    parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n")
}

/// The server's own verify: a signed manifest whose hash matches the pixels.
async fn assert_credentials(base: &str, png: Vec<u8>) {
    let rv = reqwest::Client::new().post(format!("{base}/v1/verify")).body(png).send().await.unwrap();
    assert_eq!(rv.status(), 200);
    let report: Value = rv.json().await.unwrap();
    let m = &report["manifest"];
    assert!(m["signature_valid"] == true && m["hash_valid"] == true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klein_draws_and_edits_over_gemini() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(klein_config(&dir)).await;
    let base = format!("http://{}", s.addr);

    // Text to image: the table's exact pixels (16:9 at 512 is 688x384, on klein's 16 px grid).
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "seed": 5, "imageConfig": {"aspectRatio": "16:9", "imageSize": "512"}}});
    let (st, r) = post(&base, &body).await;
    assert_eq!(st, 200, "{r}");
    let png = image_of(&r);
    let first = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(first.dimensions(), (688, 384));
    assert_credentials(&base, png).await;
    let (_, again) = post(&base, &body).await;
    let again = image::load_from_memory(&image_of(&again)).unwrap().to_rgb8();
    assert_eq!(again, first, "the same seed, the same picture");

    // An edit: a picture and words. "add a blue square at the top right" is planned on the
    // picture (the synthetic world's analysis finds its place), klein edits the whole picture,
    // and only the box at the top right (and its feather band) may change.
    let circle =
        Object { shape: Shape::Circle, color: ColorName::Red, size: Size::Medium, h: HPos::Left, v: VPos::Bottom, jitter: (0.0, 0.0) };
    let scene =
        Scene { background: Background::Solid(ColorName::White), lighting: Lighting::NEUTRAL, objects: vec![circle], relations: vec![] };
    let input = render(&scene, 320, 240);
    let mut bytes = std::io::Cursor::new(Vec::new());
    input.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    let turn = json!({"role": "user", "parts": [{"text": "add a blue square at the top right"},
        {"inlineData": {"mimeType": "image/png", "data": b64(bytes.get_ref())}}]});
    let (st, r) = post(&base, &json!({"contents": [turn], "generationConfig": {"seed": 9}})).await;
    assert_eq!(st, 200, "{r}");
    let text = text_of(&r);
    assert!(text.contains("instruction-following model") && text.contains("outside the region: 0"), "{text}");
    let png = image_of(&r);
    let out = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(out.dimensions(), (320, 240));
    // The left half and the bottom third are far from the top-right box: the input's own bytes.
    for (x, y, p) in out.enumerate_pixels() {
        if x < 160 || y >= 160 {
            assert_eq!(p, input.get_pixel(x, y), "({x}, {y}) is outside the edit");
        }
    }
    assert!(out.pixels().zip(input.pixels()).any(|(a, b)| a != b), "klein painted something inside the box");
    assert_credentials(&base, png).await;

    // Fusion: two pictures in one turn are klein's references in one pass, drawn at the size
    // of the picture the words put things into.
    let subject = image::RgbImage::from_fn(96, 128, |x, y| image::Rgb([200, (x * 2) as u8, (y * 2) as u8]));
    let mut sbytes = std::io::Cursor::new(Vec::new());
    subject.write_to(&mut sbytes, image::ImageFormat::Png).unwrap();
    let turn = json!({"role": "user", "parts": [{"text": "put the subject of image 1 into the scene of image 2"},
        {"inlineData": {"mimeType": "image/png", "data": b64(sbytes.get_ref())}},
        {"inlineData": {"mimeType": "image/png", "data": b64(bytes.get_ref())}}]});
    let (st, r) = post(&base, &json!({"contents": [turn], "generationConfig": {"seed": 4}})).await;
    assert_eq!(st, 200, "{r}");
    let text = text_of(&r);
    assert!(text.contains("fused in one pass by the multi-reference model") && text.contains("outside the region: 0"), "{text}");
    let png = image_of(&r);
    assert_eq!(image::load_from_memory(&png).unwrap().to_rgb8().dimensions(), (320, 240), "image 2's size");
    assert_credentials(&base, png).await;
    s.stop().await;
}
