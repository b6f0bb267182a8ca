//! The Gemini routes over real HTTP with the tiny model.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(s: &plantain_server::Server) -> Self {
        Client { base: format!("http://{}", s.addr), http: reqwest::Client::new() }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).header("content-type", "application/json").body(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn gen_req(text: &str, config: Value) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}], "generationConfig": config})
}

const GEN: &str = "/v1beta/models/gemini-3.1-flash-image-preview:generateContent";

fn image_parts(resp: &Value) -> Vec<&Value> {
    resp["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["content"]["parts"].as_array().unwrap())
        .filter(|p| p.get("inlineData").is_some())
        .collect()
}

fn assert_error(resp: &(u16, Value), code: u16, status: &str, needle: &str) {
    assert_eq!(resp.0, code, "{}", resp.1);
    assert_eq!(resp.1["error"]["code"], code, "{}", resp.1);
    assert_eq!(resp.1["error"]["status"], status, "{}", resp.1);
    let msg = resp.1["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_shapes_modalities_candidates_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let c = Client::new(&s);

    // camelCase imageConfig: exactly the table's pixels; TEXT+IMAGE → a caption and an image.
    let (st, r) =
        c.post(GEN, &gen_req("a red square", json!({"imageConfig": {"aspectRatio": "16:9", "imageSize": "512"}, "seed": 42}))).await;
    assert_eq!(st, 200, "{r}");
    let parts = r["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts[0]["text"].as_str().unwrap().contains("seed 42"));
    assert!(parts[0]["thoughtSignature"].is_string());
    assert!(parts[1]["thoughtSignature"].is_string());
    assert_eq!(parts[1]["inlineData"]["mimeType"], "image/png");
    assert_eq!(dims(parts[1]["inlineData"]["data"].as_str().unwrap()), (688, 384));
    assert_eq!(r["candidates"][0]["finishReason"], "STOP");
    assert_eq!(r["usageMetadata"]["candidatesTokenCount"], 747);
    assert_eq!(r["modelVersion"], "gemini-3.1-flash-image-preview");

    // snake_case, IMAGE only → no text part; candidateCount 2 → two images.
    let body = json!({"contents": [{"parts": [{"text": "a cat"}]}],
        "generation_config": {"response_modalities": ["IMAGE"], "candidate_count": 2, "image_config": {"aspect_ratio": "21:9", "image_size": "512"}}});
    let (st, r) = c.post("/v1/models/tiny:generateContent", &body).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["candidates"].as_array().unwrap().len(), 2);
    for cand in r["candidates"].as_array().unwrap() {
        let parts = cand["content"]["parts"].as_array().unwrap();
        assert_eq!(parts.len(), 1, "IMAGE only must give no text part");
        assert_eq!(dims(parts[0]["inlineData"]["data"].as_str().unwrap()), (792, 336));
    }
    assert_ne!(image_parts(&r)[0]["inlineData"]["data"], image_parts(&r)[1]["inlineData"]["data"]);

    // responseFormat.image (the newer shape) and a lowercase k (lenient).
    let (st, r) = c
        .post(
            GEN,
            &gen_req(
                "x",
                json!({"responseModalities": ["IMAGE"], "responseFormat": {"image": {"aspectRatio": "1:4", "imageSize": "0.5k"}}}),
            ),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(dims(image_parts(&r)[0]["inlineData"]["data"].as_str().unwrap()), (256, 1024));

    // Every output is stamped: the server's own verify finds its watermark. Checked on a 1K
    // square: the tiny random model draws fine noise, and on noise pictures under about 700 px a
    // side the watermark is not reliably readable (measured: upscaled 4 px noise at 688x384 or
    // 256x1024, 0 of 12 payloads found; at 1024x1024, 12 of 12) — a documented limit, not what
    // this test is about.
    let (st, r) = c
        .post(GEN, &gen_req("x", json!({"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "1:1", "imageSize": "1K"}})))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(dims(image_parts(&r)[0]["inlineData"]["data"].as_str().unwrap()), (1024, 1024));
    let png = B64.decode(image_parts(&r)[0]["inlineData"]["data"].as_str().unwrap()).unwrap();
    let rv = reqwest::Client::new().post(format!("{}/v1/verify", c.base)).body(png).send().await.unwrap();
    assert_eq!(rv.status(), 200);
    let report: Value = rv.json().await.unwrap();
    assert_eq!(report["watermark"]["present"], true, "{report}");
    assert!(report["manifest"].is_object(), "{report}");

    // Models, countTokens, health, metrics.
    let (st, r) = c.get("/v1beta/models").await;
    assert_eq!(st, 200);
    assert!(r["models"].as_array().unwrap().iter().any(|m| m["name"] == "models/gemini-3.1-flash-image-preview"));
    let (st, r) = c.get("/v1beta/models/gemini-2.5-flash-image").await;
    assert_eq!(st, 200);
    assert!(r["displayName"].as_str().unwrap().contains("tiny"));
    assert_error(&c.get("/v1beta/models/nope").await, 404, "NOT_FOUND", "models/nope");
    let (st, r) = c
        .post(
            "/v1beta/models/tiny:countTokens",
            &json!({"contents": [{"parts": [{"text": "a photo of a cat"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}]}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    // "a photo of a cat" is 5 CLIP tokens plus start and end; one image counts 1120.
    assert_eq!(r["totalTokens"], 1127);
    assert_eq!(c.get("/healthz").await.0, 200);
    let m = reqwest::get(format!("{}/metrics", c.base)).await.unwrap().text().await.unwrap();
    assert!(m.contains("plantain_images_total{model=\"tiny\"} 5"), "{m}");
    assert!(m.contains("plantain_generation_seconds_bucket{model=\"tiny\",size=\"512\""), "{m}");
    assert!(m.contains("plantain_queue_depth{model=\"tiny\"} 0"), "{m}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_gemini_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.limits.max_body_bytes = 3_000_000;
    cfg.limits.max_image_bytes = 1_000_000;
    cfg.limits.max_prompt_chars = 100;
    let s = start(cfg).await;
    let c = Client::new(&s);
    let with_image = |mime: &str, data: String| json!({"contents": [{"role": "user", "parts": [{"text": "edit"}, {"inlineData": {"mimeType": mime, "data": data}}]}]});

    assert_error(&c.post_raw(GEN, b"{not json".to_vec()).await, 400, "INVALID_ARGUMENT", "Invalid JSON");
    assert_error(&c.post_raw(GEN, br#"{"contents": "hello"}"#.to_vec()).await, 400, "INVALID_ARGUMENT", "Invalid JSON");
    assert_error(&c.post(GEN, &json!({"contents": []})).await, 400, "INVALID_ARGUMENT", "contents");
    assert_error(&c.post(GEN, &with_image("image/png", "!!!not base64!!!".into())).await, 400, "INVALID_ARGUMENT", "base64");
    assert_error(&c.post(GEN, &with_image("image/png", b64(&jpeg_bytes(8, 8)))).await, 400, "INVALID_ARGUMENT", "image/jpeg");
    assert_error(&c.post(GEN, &with_image("image/png", b64(b"GIF89a-not-really"))).await, 400, "INVALID_ARGUMENT", "gif");
    assert_error(&c.post(GEN, &with_image("image/png", b64(b"plain text"))).await, 400, "INVALID_ARGUMENT", "not a PNG");
    // Decompression bomb: a small file whose pixels are over the limit (1 MP in this config).
    let bomb = png_bytes(2000, 2000, [0, 0, 0]);
    assert!(bomb.len() < 100_000);
    assert_error(&c.post(GEN, &with_image("image/png", b64(&bomb))).await, 400, "INVALID_ARGUMENT", "2000x2000");
    // An image over the per-image byte limit, and a body over the body limit.
    let noisy: Vec<u8> = (0..1_200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    assert_error(&c.post(GEN, &with_image("image/png", b64(&noisy))).await, 400, "INVALID_ARGUMENT", "over the limit");
    // As Google answers it: 400 INVALID_ARGUMENT (google.rpc has no 413).
    assert_error(&c.post_raw(GEN, vec![b' '; 3_500_000]).await, 400, "INVALID_ARGUMENT", "body");
    // The rest of that body was never read, so the server closes the connection and says so:
    // a client must not send its next request down that socket.
    let r = c.http.post(format!("{}{GEN}", c.base)).body(vec![b' '; 3_500_000]).send().await.unwrap();
    assert_eq!(r.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    assert_error(
        &c.post("/v1beta/models/no-such-model:generateContent", &gen_req("x", json!({}))).await,
        404,
        "NOT_FOUND",
        "no-such-model",
    );
    assert_error(
        &c.post(GEN, &gen_req("x", json!({"imageConfig": {"aspectRatio": "7:3"}}))).await,
        400,
        "INVALID_ARGUMENT",
        "aspect ratio",
    );
    assert_error(&c.post(GEN, &gen_req("x", json!({"imageConfig": {"imageSize": "3K"}}))).await, 400, "INVALID_ARGUMENT", "image size");
    assert_error(&c.post(GEN, &gen_req("x", json!({"candidateCount": 0}))).await, 400, "INVALID_ARGUMENT", "candidateCount");
    assert_error(&c.post(GEN, &gen_req("x", json!({"responseModalities": ["TEXT"]}))).await, 400, "INVALID_ARGUMENT", "IMAGE");
    assert_error(&c.post(GEN, &gen_req(&"long ".repeat(40), json!({}))).await, 400, "INVALID_ARGUMENT", "prompt");
    let many: Vec<Value> =
        (0..15).map(|_| json!({"inlineData": {"mimeType": "image/png", "data": b64(&png_bytes(4, 4, [1, 2, 3]))}})).collect();
    let mut parts = vec![json!({"text": "fuse"})];
    parts.extend(many);
    assert_error(&c.post(GEN, &json!({"contents": [{"parts": parts}]})).await, 400, "INVALID_ARGUMENT", "at most 14");
    // Fusion of two plain pictures: nothing to take from image 1, said in words, no image.
    let two = json!({"contents": [{"parts": [{"text": "put the subject of image 1 into image 2"},
        {"inlineData": {"mimeType": "image/png", "data": b64(&png_bytes(8, 8, [1, 2, 3]))}},
        {"inlineData": {"mimeType": "image/png", "data": b64(&png_bytes(8, 8, [3, 2, 1]))}}]}]});
    let (st, v) = c.post(GEN, &two).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["candidates"][0]["finishReason"], "NO_IMAGE", "{v}");
    assert!(image_parts(&v).is_empty());
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap().contains("no object"), "{v}");
    // Words the planner cannot read: a 400 naming what is supported.
    let one = json!({"contents": [{"parts": [{"text": "sing a song"},
        {"inlineData": {"mimeType": "image/png", "data": b64(&png_bytes(8, 8, [1, 2, 3]))}}]}]});
    let (st, v) = c.post(GEN, &one).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["candidates"][0]["finishReason"], "NO_IMAGE", "{v}");
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap().contains("supported edits"), "{v}");
    assert_error(&c.post("/v1beta/models/tiny:batchGenerateContent", &json!({})).await, 400, "INVALID_ARGUMENT", "batch");
    assert_error(&c.get("/v1beta/files/nope").await, 403, "PERMISSION_DENIED", "nope");
    assert_error(&c.get("/v1beta/nothing/here").await, 404, "NOT_FOUND", "not a route");
    // Nothing above was a server error.
    let m = reqwest::get(format!("{}/metrics", c.base)).await.unwrap().text().await.unwrap();
    assert!(!m.contains("code=\"500\""), "{m}");
    s.stop().await;
}

fn model_turn(resp: &Value) -> Value {
    resp["candidates"][0]["content"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_editing_with_and_without_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let c = Client::new(&s);
    let cfg = json!({"imageConfig": {"aspectRatio": "1:1", "imageSize": "512"}, "seed": 7});
    let (st, r1) = c.post(GEN, &gen_req("a lighthouse", cfg.clone())).await;
    assert_eq!(st, 200, "{r1}");
    let turn1 = model_turn(&r1);
    let sig = turn1["parts"][1]["thoughtSignature"].as_str().unwrap().to_string();
    let first_id = match s.state.signer.check(&sig).unwrap() {
        plantain_server::signature::Signed::Image(id) => id,
        other => panic!("{other:?}"),
    };
    let first = s.state.svc.stores.meta.artefact(&first_id).await.unwrap().unwrap();
    assert_eq!((first.version, first.seed, first.parent_id.clone()), (1, 7, None));

    // Turn 2 resends the history: the signed model image is the one edited; the new version's
    // parent is the first, its version 2, its seed the parent's (none given).
    let history = |model: Value| {
        json!({"contents": [
            {"role": "user", "parts": [{"text": "a lighthouse"}]},
            model,
            {"role": "user", "parts": [{"text": "make it night"}]}],
          "generationConfig": {"imageConfig": {"imageSize": "512"}}})
    };
    let (st, r2) = c.post(GEN, &history(turn1.clone())).await;
    assert_eq!(st, 200, "{r2}");
    let sig2 = r2["candidates"][0]["content"]["parts"][1]["thoughtSignature"].as_str().unwrap();
    let plantain_server::signature::Signed::Image(id2) = s.state.signer.check(sig2).unwrap() else { panic!() };
    let second = s.state.svc.stores.meta.artefact(&id2).await.unwrap().unwrap();
    assert_eq!(second.parent_id.as_deref(), Some(first_id.as_str()));
    assert_eq!((second.version, second.seed), (2, 7));

    // Dropped signature, lenient (default): the image is used as a plain input, no parent.
    let mut unsigned = turn1.clone();
    for p in unsigned["parts"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("thoughtSignature");
    }
    let (st, r3) = c.post(GEN, &history(unsigned.clone())).await;
    assert_eq!(st, 200, "{r3}");
    let sig3 = r3["candidates"][0]["content"]["parts"][1]["thoughtSignature"].as_str().unwrap();
    let plantain_server::signature::Signed::Image(id3) = s.state.signer.check(sig3).unwrap() else { panic!() };
    let third = s.state.svc.stores.meta.artefact(&id3).await.unwrap().unwrap();
    assert_eq!((third.parent_id, third.version), (None, 1));

    // A forged signature is refused whatever the mode.
    let mut forged = turn1.clone();
    forged["parts"][1]["thoughtSignature"] = json!(sig.replace(&sig[10..14], "AAAA"));
    assert_error(&c.post(GEN, &history(forged)).await, 400, "INVALID_ARGUMENT", "invalid thought_signature");
    s.stop().await;

    // Strict mode: a dropped signature is refused as Google does.
    let mut cfg = config(&dir);
    cfg.strict_signatures = true;
    let s = start(cfg).await;
    let c = Client::new(&s);
    assert_error(
        &c.post(GEN, &history(unsigned)).await,
        400,
        "INVALID_ARGUMENT",
        "missing a thought_signature in content position 2, part position 2",
    );
    // The signature minted by the first server still verifies: the secret is kept in data_dir.
    let (st, r) = c.post(GEN, &history(turn1)).await;
    assert_eq!(st, 200, "{r}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sends_progress_then_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let url = format!("http://{}/v1beta/models/tiny:streamGenerateContent?alt=sse", s.addr);
    let body = gen_req("a boat", json!({"imageConfig": {"aspectRatio": "3:2", "imageSize": "512"}}));
    let r = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let events: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(events.len() >= 3, "{events:?}");
    let thoughts: Vec<&str> = events
        .iter()
        .filter(|e| e["candidates"][0]["content"]["parts"][0]["thought"] == true)
        .map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap())
        .collect();
    // Each attempt of the loop: its 2 steps, then its verdict.
    let verdicts: Vec<&&str> = thoughts.iter().filter(|t| t.starts_with("attempt ")).collect();
    assert!(!verdicts.is_empty() && verdicts.len() <= 3, "{thoughts:?}");
    assert!(verdicts[0].starts_with("attempt 1 of up to 3 (first attempt): score"), "{thoughts:?}");
    assert_eq!(thoughts.len(), 3 * verdicts.len(), "2 steps and a verdict per attempt: {thoughts:?}");
    assert!(thoughts[0].starts_with("step 1 of 2 (image 1 of 1, attempt 1)"), "{thoughts:?}");
    let last = events.last().unwrap();
    assert_eq!(dims(image_parts(last)[0]["inlineData"]["data"].as_str().unwrap()), (632, 424));

    // Errors before the stream starts are plain HTTP errors.
    let url = format!("http://{}/v1beta/models/tiny:streamGenerateContent?alt=sse", s.addr);
    let r = reqwest::Client::new().post(url).json(&gen_req("x", json!({"imageConfig": {"aspectRatio": "5:5"}}))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_instruction_goes_ahead_of_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let c = Client::new(&s);
    let cfg = json!({"responseModalities": ["IMAGE"], "imageConfig": {"imageSize": "512"}, "seed": 9});
    let plain = gen_req("a cat", cfg.clone());
    let mut with_system = plain.clone();
    with_system["systemInstruction"] = json!({"parts": [{"text": "in watercolour"}, {"text": "  "}]});
    let mut snake = plain.clone();
    snake["system_instruction"] = json!({"role": "system", "parts": [{"text": "in watercolour"}]});

    let (st, a) = c.post(GEN, &plain).await;
    assert_eq!(st, 200, "{a}");
    let (st, b) = c.post(GEN, &with_system).await;
    assert_eq!(st, 200, "{b}");
    let (st, b2) = c.post(GEN, &snake).await;
    assert_eq!(st, 200, "{b2}");
    // The recorded prompt (by its hash) is the system text, then the user's, joined with ". ".
    let prompt_hash = async |r: &Value| {
        let arts = s.state.svc.stores.meta.artefacts_of_request(r["responseId"].as_str().unwrap()).await.unwrap();
        arts[0].prompt_hash.clone()
    };
    let sha = |t: &str| plantain_store::blob_address(t.as_bytes());
    assert_eq!(prompt_hash(&a).await, sha("a cat"));
    assert_eq!(prompt_hash(&b).await, sha("in watercolour. a cat"));
    assert_eq!(prompt_hash(&b2).await, sha("in watercolour. a cat"));
    let tokens = |r: &Value| r["usageMetadata"]["promptTokenCount"].as_u64().unwrap();
    assert!(tokens(&b) > tokens(&a), "{} vs {}", tokens(&b), tokens(&a));
    // Same seed, different prompt → the engine drew something else. Each output carries its
    // own watermark payload and manifest, so two runs of the same prompt differ a little, never
    // byte for byte. Compared as 16x16 block means, where the watermark partly averages out:
    // measured, the same prompt differs by 0.1-0.2 and the other by about 0.9 (a ratio of 4-7
    // with this random-weight model), so the bound leaves room for load and still fails when
    // the system instruction never reaches the engine (ratio about 1).
    let blocks = |r: &Value| {
        let bytes = B64.decode(image_parts(r)[0]["inlineData"]["data"].as_str().unwrap()).unwrap();
        let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
        image::imageops::resize(&img, 16, 16, image::imageops::FilterType::Triangle).into_raw()
    };
    let mad = |x: &[u8], y: &[u8]| x.iter().zip(y).map(|(p, q)| f64::from(p.abs_diff(*q))).sum::<f64>() / x.len() as f64;
    let (same, other) = (mad(&blocks(&b), &blocks(&b2)), mad(&blocks(&a), &blocks(&b)));
    assert!(other > 2.0 * same, "same prompt differs by {same:.2}, another prompt by {other:.2}");

    // countTokens of a generateContentRequest counts the system instruction too.
    let (_, n1) = c.post("/v1beta/models/tiny:countTokens", &json!({"generateContentRequest": plain})).await;
    let (_, n2) = c.post("/v1beta/models/tiny:countTokens", &json!({"generateContentRequest": with_system})).await;
    assert!(n2["totalTokens"].as_u64().unwrap() > n1["totalTokens"].as_u64().unwrap(), "{n1} {n2}");

    // A system instruction alone is a prompt; an image in it is refused.
    let only = json!({"systemInstruction": {"parts": [{"text": "a lighthouse"}]}, "contents": [{"role": "user", "parts": []}],
        "generationConfig": cfg});
    let (st, r) = c.post(GEN, &only).await;
    assert_eq!(st, 200, "{r}");
    let mut img = with_system.clone();
    img["systemInstruction"]["parts"][1] = json!({"inlineData": {"mimeType": "image/png", "data": b64(&png_bytes(8, 8, [1, 2, 3]))}});
    assert_error(&c.post(GEN, &img).await, 400, "INVALID_ARGUMENT", "systemInstruction.parts[1]");
    s.stop().await;
}
