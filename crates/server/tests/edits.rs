//! Editing over HTTP: a turn's words are an instruction on its picture, the change is the one
//! asked for (judged by the synthetic world's checker), every pixel outside the plan's region is
//! the input's, each edit is a child version with its plan in the ledger, and a target that is
//! not there is answered in words with no image.

mod common;

use base64::Engine as _;
use common::*;
use plantain_world::{Background, ColorName, HPos, Lighting, Object, Scene, Shape, Size, VPos, check, render};
use serde_json::{Value, json};

const GEN: &str = "/v1beta/models/gemini-3.1-flash-image-preview:generateContent";

fn obj(shape: Shape, color: ColorName, h: HPos, v: VPos) -> Object {
    Object { shape, color, size: Size::Medium, h, v, jitter: (0.0, 0.0) }
}

fn scene(background: Background, objects: Vec<Object>) -> Scene {
    let relations = Scene::relations_from_cells(&objects);
    Scene { background, lighting: Lighting::NEUTRAL, objects, relations }
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn decode(v: &Value) -> image::RgbImage {
    let data = v["candidates"][0]["content"]["parts"].as_array().unwrap().iter().find_map(|p| p["inlineData"]["data"].as_str()).unwrap();
    image::load_from_memory(&base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap().to_rgb8()
}

async fn post(base: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{base}{GEN}")).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn inline(img: &image::RgbImage) -> Value {
    json!({"inlineData": {"mimeType": "image/png", "data": b64(&png(img))}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_turns_edit_only_what_was_asked() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let base = format!("http://{}", s.addr);
    // With the watermark on, the pixels outside the edit must still be the input's: the
    // watermark goes only inside the region.
    let red_circle = scene(Background::Solid(ColorName::White), vec![obj(Shape::Circle, ColorName::Red, HPos::Center, VPos::Middle)]);
    let input = render(&red_circle, 320, 240);

    // Turn 1: the user's picture and "make the background green".
    let turn1 = json!({"role": "user", "parts": [{"text": "make the background green"}, inline(&input)]});
    let (st, r1) = post(&base, &json!({"contents": [turn1.clone()]})).await;
    assert_eq!(st, 200, "{r1}");
    let out1 = decode(&r1);
    assert_eq!(out1.dimensions(), input.dimensions());
    let mut want = red_circle.clone();
    want.background = Background::Solid(ColorName::Green);
    let report = check(&want, &out1);
    assert!(report.all_correct(), "{report:?}");
    // The circle's core is untouched.
    assert_eq!(out1.get_pixel(160, 120), input.get_pixel(160, 120));
    let text = r1["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap();
    assert!(text.contains("recolour background") && text.contains("outside the region: 0"), "{text}");

    // Turn 2, on the model's picture: "remove the red circle"; a child version with its plan.
    let model_turn = r1["candidates"][0]["content"].clone();
    let turn2 = json!({"role": "user", "parts": [{"text": "remove the red circle"}]});
    let (st, r2) = post(&base, &json!({"contents": [turn1.clone(), model_turn.clone(), turn2]})).await;
    assert_eq!(st, 200, "{r2}");
    let out2 = decode(&r2);
    let report = check(&scene(Background::Solid(ColorName::Green), vec![]), &out2);
    assert!(report.all_correct(), "{report:?}");
    let changed = out2.pixels().zip(out1.pixels()).filter(|(a, b)| a != b).count();
    assert!(changed < 320 * 240 / 5, "{changed} pixels moved for a small object");
    let sig = r2["candidates"][0]["content"]["parts"][1]["thoughtSignature"].as_str().unwrap();
    let plantain_server::signature::Signed::Image(id) = s.state.signer.check(sig).unwrap() else { panic!() };
    let a = s.state.svc.stores.meta.artefact(&id).await.unwrap().unwrap();
    assert_eq!(a.version, 2);
    assert!(a.parent_id.is_some());
    assert_eq!(a.params["edit"]["operation"], "remove", "{}", a.params);
    assert_eq!(a.params["edit"]["outside_changed"], 0, "{}", a.params);

    // A target that is not there: said in words, no image, nothing stored.
    let turn3 = json!({"role": "user", "parts": [{"text": "remove the blue star"}]});
    let before = s.state.svc.stores.meta.artefacts_of_request("x").await.unwrap().len();
    let (st, r3) = post(&base, &json!({"contents": [turn1, model_turn, turn3]})).await;
    assert_eq!(st, 200, "{r3}");
    assert_eq!(r3["candidates"][0]["finishReason"], "NO_IMAGE");
    assert!(r3["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap().contains("blue star"), "{r3}");
    assert_eq!(s.state.svc.stores.meta.artefacts_of_request("x").await.unwrap().len(), before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_fusion_and_generative_edits() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let base = format!("http://{}", s.addr);
    let star = render(
        &scene(Background::Solid(ColorName::White), vec![obj(Shape::Star, ColorName::Orange, HPos::Center, VPos::Middle)]),
        200,
        200,
    );
    let room = scene(Background::Solid(ColorName::Blue), vec![obj(Shape::Heart, ColorName::Pink, HPos::Right, VPos::Middle)]);
    let room_img = render(&room, 300, 200);
    let body = json!({"contents": [{"parts": [{"text": "put the subject of image 1 into the scene of image 2, on the left"}, inline(&star), inline(&room_img)]}]});
    let (st, v) = post(&base, &body).await;
    assert_eq!(st, 200, "{v}");
    let out = decode(&v);
    let mut want = room.clone();
    want.objects.push(obj(Shape::Star, ColorName::Orange, HPos::Left, VPos::Middle));
    want.relations = Scene::relations_from_cells(&want.objects);
    assert!(check(&want, &out).all_correct(), "{:?}", check(&want, &out));

    // "add …" needs the model: the tiny random model paints noise, but only inside the box.
    // It goes through the loop: each attempt checked for locality and the asked change.
    let body = json!({"contents": [{"parts": [{"text": "add a green square at the top left"}, inline(&room_img)]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "thinkingConfig": {"includeThoughts": true}}});
    let (st, v) = post(&base, &body).await;
    assert_eq!(st, 200, "{v}");
    let out = decode(&v);
    let outside = out.enumerate_pixels().filter(|&(x, y, p)| (x > 120 || y > 90) && p != room_img.get_pixel(x, y)).count();
    assert_eq!(outside, 0, "pixels moved outside the top-left box and its band");
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    let thought = parts.iter().find(|p| p["thought"] == true).and_then(|p| p["text"].as_str()).expect("the plan and checks as a thought");
    assert!(
        thought.contains("attempt 1 (seed") && thought.contains("edit locality: pass — 0 pixels changed outside the region"),
        "{thought}"
    );
    assert!(thought.contains("asked change: "), "{thought}");
    let text = parts.iter().find(|p| p["thought"].is_null() && p["text"].is_string()).and_then(|p| p["text"].as_str()).unwrap();
    assert!(text.contains("checks passed: exact size, not blank, edit locality"), "{text}");
    s.stop().await;
}

/// With an InstructPix2Pix model loaded, a model edit is the whole picture edited after the
/// user's own words, still pasted back inside the plan's region; the text part says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instruction_model_paints_by_the_users_words_inside_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.models[0] =
        plantain_service::config::ModelConfig::new("tiny-pix2pix", &repo_root().join("fixtures/tiny/sd1-pix2pix").to_string_lossy());
    c.models[0].steps = Some(2);
    c.models[0].threads = 1;
    let s = start(c).await;
    let base = format!("http://{}", s.addr);
    let room = scene(Background::Solid(ColorName::Blue), vec![obj(Shape::Heart, ColorName::Pink, HPos::Right, VPos::Middle)]);
    let img = render(&room, 256, 192);
    let words = "add a green square at the top left";
    let body =
        json!({"contents": [{"parts": [{"text": words}, inline(&img)]}], "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}});
    let (st, v) = post(&base, &body).await;
    assert_eq!(st, 200, "{v}");
    let text = v["candidates"][0]["content"]["parts"].as_array().unwrap().iter().filter_map(|p| p["text"].as_str()).collect::<String>();
    assert!(text.contains("instruction-following model"), "{text}");
    let out = decode(&v);
    let outside = out.enumerate_pixels().filter(|&(x, y, p)| (x > 110 || y > 85) && p != img.get_pixel(x, y)).count();
    assert_eq!(outside, 0, "pixels moved outside the top-left box and its band");
    assert_ne!(out, img, "the model painted inside the box");
    s.stop().await;
}

/// "upscale to 2K": the picture enlarged by Real-ESRGAN (the server's CPU default,
/// animevideov3) to the 2K pixels of its ratio, a child version whose plan reports its fidelity;
/// a size past the server's largest is refused before any work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upscale_edit_enlarges_to_the_tables_pixels_with_the_super_resolution_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.limits.max_image_size = plantain_core::ImageSize::S2K;
    let s = start(c).await;
    let base = format!("http://{}", s.addr);
    let photo = image::open(repo_root().join(".assets/photos/astronaut.png")).expect("scripts/setup.sh installs the photographs").to_rgb8();
    let input = image::imageops::resize(&photo, 512, 512, image::imageops::FilterType::Lanczos3);
    let ask = |words: &str| json!({"contents": [{"parts": [{"text": words}, inline(&input)]}], "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}});
    let (st, v) = post(&base, &ask("upscale to 2K")).await;
    assert_eq!(st, 200, "{v}");
    let out = decode(&v);
    assert_eq!(out.dimensions(), plantain_core::output_pixels(plantain_core::AspectRatio::R1x1, plantain_core::ImageSize::S2K));
    let text = v["candidates"][0]["content"]["parts"].as_array().unwrap().iter().filter_map(|p| p["text"].as_str()).collect::<String>();
    assert!(text.contains("operation: upscale") && text.contains("super-resolution"), "{text}");
    assert!(!text.contains("Lanczos3 (no super"), "the model ran: {text}");
    let db: f64 = text
        .split("fidelity: shrunk back to 512x512, ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|d| d.parse().ok())
        .expect(&text);
    assert!(db >= 30.0, "{db} dB");
    // Sharper than Lanczos3 from the same input: more high-frequency energy.
    let lanczos = image::imageops::resize(&input, out.width(), out.height(), image::imageops::FilterType::Lanczos3);
    let detail = |img: &image::RgbImage| {
        img.enumerate_pixels()
            .filter(|&(x, _, _)| x + 1 < img.width())
            .map(|(x, y, p)| (i32::from(p[1]) - i32::from(img.get_pixel(x + 1, y)[1])).unsigned_abs() as u64)
            .sum::<u64>()
    };
    assert!(detail(&out) > detail(&lanczos), "{} vs Lanczos3 {}", detail(&out), detail(&lanczos));
    // 4K is past this server's largest size: refused in the API's envelope, nothing queued.
    let (st, v) = post(&base, &ask("upscale to 4K")).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("largest size served here, 2K"), "{v}");
    s.stop().await;
}

/// "remove the background": a transparent cut-out — a PNG with an alpha channel, the object
/// opaque and the input's own, the background transparent; JPEG is refused before any work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_background_answers_a_transparent_png() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let base = format!("http://{}", s.addr);
    let room = scene(Background::Solid(ColorName::Yellow), vec![obj(Shape::Circle, ColorName::Red, HPos::Center, VPos::Middle)]);
    let input = render(&room, 240, 180);
    let ask = |mime: &str| {
        json!({"contents": [{"parts": [{"text": "remove the background"}, inline(&input)]}],
               "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"outputMimeType": mime}}})
    };
    let (st, v) = post(&base, &ask("image/png")).await;
    assert_eq!(st, 200, "{v}");
    let data = v["candidates"][0]["content"]["parts"].as_array().unwrap().iter().find_map(|p| p["inlineData"]["data"].as_str()).unwrap();
    let out = image::load_from_memory(&base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap();
    assert!(out.color().has_alpha(), "{:?}", out.color());
    let out = out.to_rgba8();
    assert_eq!(out.dimensions(), input.dimensions());
    let (centre, corner) = (out.get_pixel(120, 90), out.get_pixel(4, 4));
    assert_eq!(centre.0[3], 255);
    assert_eq!(&centre.0[..3], &input.get_pixel(120, 90).0[..]);
    assert_eq!(corner.0[3], 0, "the background is transparent");
    let text = v["candidates"][0]["content"]["parts"].as_array().unwrap().iter().filter_map(|p| p["text"].as_str()).collect::<String>();
    assert!(text.contains("operation: cut out"), "{text}");
    let (st, v) = post(&base, &ask("image/jpeg")).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("cannot be JPEG"), "{v}");
    s.stop().await;
}
