//! The studio's routes over real HTTP with the tiny model: the page and its files, the settings
//! table, conversations from the ledger (per key), previews in the Gemini stream, and an
//! OpenAI edit of a stored version recorded as its child.

mod common;

use common::*;
use serde_json::{Value, json};

struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).header("x-goog-api-key", &self.key).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn generate(&self, body: &Value) -> Value {
        let url = format!("{}/v1beta/models/tiny:generateContent", self.base);
        let r = self.http.post(url).header("x-goog-api-key", &self.key).json(body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

fn image_part(resp: &Value) -> Value {
    resp["candidates"][0]["content"]["parts"].as_array().unwrap().iter().find(|p| p.get("inlineData").is_some()).unwrap().clone()
}

/// Thought parts with an image in an SSE body, and its last chunk.
fn stream_previews(text: &str) -> (usize, Value) {
    let chunks: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let previews = chunks
        .iter()
        .flat_map(|c| c["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["thought"] == true && p.get("inlineData").is_some())
        .count();
    (previews, chunks.last().cloned().unwrap_or_default())
}

#[tokio::test]
async fn the_page_and_its_files_are_served_without_a_key() {
    let data = tempfile::tempdir().unwrap();
    let s = start(config(&data)).await;
    let _ = plantain_service::keys::create_key(&s.state.svc.stores, "k").await.unwrap();
    let base = format!("http://{}", s.addr);
    let r = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = r.text().await.unwrap();
    assert!(html.contains("/studio/app.js"));
    let r = reqwest::get(format!("{base}/studio/app.js")).await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/javascript; charset=utf-8");
    let r = reqwest::get(format!("{base}/studio/nope.js")).await.unwrap();
    assert_eq!(r.status(), 404);
    // The API the page calls needs the key.
    let r = reqwest::get(format!("{base}/v1/image-settings")).await.unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn settings_and_conversations_come_from_the_server() {
    let data = tempfile::tempdir().unwrap();
    let mut c = config(&data);
    c.limits.max_image_size = plantain_core::ImageSize::S2K;
    let s = start(c).await;
    let (_, key) = plantain_service::keys::create_key(&s.state.svc.stores, "a").await.unwrap();
    let (_, other) = plantain_service::keys::create_key(&s.state.svc.stores, "b").await.unwrap();
    let base = format!("http://{}", s.addr);
    let a = Client { base: base.clone(), key, http: reqwest::Client::new() };
    let b = Client { base, key: other, http: reqwest::Client::new() };

    let (st, settings) = a.get("/v1/image-settings").await;
    assert_eq!(st, 200);
    assert_eq!(settings["aspectRatios"].as_array().unwrap().len(), 14);
    assert_eq!(
        settings["pixels"]["16:9"]["1K"],
        json!(plantain_core::output_pixels(plantain_core::AspectRatio::R16x9, plantain_core::ImageSize::S1K))
    );
    assert_eq!(settings["imageSizes"][3], json!({"name": "4K", "served": false}));
    assert_eq!(settings["models"][0]["name"], "tiny");
    assert_eq!(settings["limits"]["maxImages"], 14);

    // A picture, an edit of it (named by its signature), and a branch from the picture.
    let gen_req = json!({"contents": [{"role": "user", "parts": [{"text": "a red circle"}]}],
        "generationConfig": {"imageConfig": {"aspectRatio": "1:1", "imageSize": "512"}, "seed": 3}});
    let first = a.generate(&gen_req).await;
    let img = image_part(&first);
    let edit = |words: &str| {
        json!({"contents": [
        {"role": "user", "parts": [{"text": "a red circle"}]},
        {"role": "model", "parts": [img.clone()]},
        {"role": "user", "parts": [{"text": words}]}]})
    };
    let second = a.generate(&edit("make it warmer")).await;
    let third = a.generate(&edit("make it cooler")).await;

    // Found by the responseId of the answer that made it, from the root.
    let (st, conv) = a.get(&format!("/v1/conversations/{}", second["responseId"].as_str().unwrap())).await;
    assert_eq!(st, 200, "{conv}");
    let v = conv["versions"].as_array().unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(conv["id"], v[0]["id"]);
    assert_eq!(conv["selected"], v[1]["id"]);
    assert_eq!(
        (v[1]["parentId"].clone(), v[2]["parentId"].clone()),
        (v[0]["id"].clone(), v[0]["id"].clone()),
        "two branches from the root"
    );
    assert_eq!(v[1]["version"], 2);
    assert!(v[0]["seed"].is_string(), "64-bit seeds as strings");
    assert_eq!(v[2]["params"]["instruction"], "make it cooler");
    assert_eq!(v[0]["thoughtSignature"], img["thoughtSignature"], "the signature to edit a version");
    // Its url is the stored image.
    let url = v[0]["url"].as_str().unwrap();
    assert!(url.contains("/v1/blobs/"));
    let bytes = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert_eq!(b64(&bytes), img["inlineData"]["data"].as_str().unwrap());
    // By a version's id too.
    let (_, by_id) = a.get(&format!("/v1/conversations/{}", v[2]["id"].as_str().unwrap())).await;
    assert_eq!((by_id["id"].clone(), by_id["selected"].clone()), (conv["id"].clone(), v[2]["id"].clone()));
    let _ = third;

    // The list: roots only, newest first, paged.
    let _ = a.generate(&gen_req).await;
    let (_, list) = a.get("/v1/conversations").await;
    let roots = list["conversations"].as_array().unwrap();
    assert_eq!(roots.len(), 2);
    assert_eq!(roots[1]["id"], conv["id"]);
    assert_eq!(list["nextOffset"], Value::Null);
    let (_, page) = a.get("/v1/conversations?limit=1").await;
    assert_eq!((page["conversations"].as_array().unwrap().len(), page["nextOffset"].clone()), (1, json!(1)));

    // Another key sees none of it; bad paging is 400 in the Gemini envelope.
    let (st, _) = b.get(&format!("/v1/conversations/{}", conv["id"].as_str().unwrap())).await;
    assert_eq!(st, 404);
    assert_eq!(b.get("/v1/conversations").await.1["conversations"], json!([]));
    let (st, e) = a.get("/v1/conversations?limit=500").await;
    assert_eq!((st, e["error"]["status"].clone()), (400, json!("INVALID_ARGUMENT")));
    s.stop().await;
}

#[tokio::test]
async fn an_openai_edit_of_a_stored_version_is_its_child_and_streams_show_previews() {
    let data = tempfile::tempdir().unwrap();
    let s = start(config(&data)).await;
    let base = format!("http://{}", s.addr);
    let http = reqwest::Client::new();
    // A stream with includeThoughts: progress, then previews as thought images, then the image.
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "a blue square"}]}],
        "generationConfig": {"imageConfig": {"imageSize": "512"}, "thinkingConfig": {"includeThoughts": true}}});
    let text = http
        .post(format!("{base}/v1beta/models/tiny:streamGenerateContent?alt=sse"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (previews, last) = stream_previews(&text);
    assert!(previews >= 1, "previews in the stream: {previews}");
    assert!(image_part(&last)["thoughtSignature"].is_string());
    // Without includeThoughts: no previews.
    let plain = json!({"contents": body["contents"], "generationConfig": {"imageConfig": {"imageSize": "512"}}});
    let text = http
        .post(format!("{base}/v1beta/models/tiny:streamGenerateContent?alt=sse"))
        .json(&plain)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(stream_previews(&text).0, 0);

    // The stored bytes, edited through OpenAI with a mask: recorded as the child.
    let (_, list) = {
        let r = http.get(format!("{base}/v1/conversations")).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let root = list["conversations"][0].clone();
    let stored = http.get(root["url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap().to_vec();
    let (w, h) = (root["width"].as_u64().unwrap() as u32, root["height"].as_u64().unwrap() as u32);
    let mut mask = image::RgbaImage::from_pixel(w, h, image::Rgba([0, 0, 0, 255]));
    for y in 0..h / 2 {
        for x in 0..w / 2 {
            mask.put_pixel(x, y, image::Rgba([0, 0, 0, 0]));
        }
    }
    let mut mask_png = std::io::Cursor::new(Vec::new());
    mask.write_to(&mut mask_png, image::ImageFormat::Png).unwrap();
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(stored).file_name("i.png").mime_str("image/png").unwrap())
        .part("mask", reqwest::multipart::Part::bytes(mask_png.into_inner()).file_name("m.png").mime_str("image/png").unwrap())
        .text("prompt", "a yellow square")
        .text("model", "tiny");
    let r = http.post(format!("{base}/v1/images/edits")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = http.get(format!("{base}/v1/conversations/{}", root["id"].as_str().unwrap())).send().await.unwrap();
    let conv: Value = r.json().await.unwrap();
    let v = conv["versions"].as_array().unwrap();
    assert_eq!(v.len(), 2, "{conv}");
    assert_eq!(
        (v[1]["parentId"].clone(), v[1]["version"].clone(), v[1]["params"]["api"].clone()),
        (root["id"].clone(), json!(2), json!("openai"))
    );
    s.stop().await;
}
