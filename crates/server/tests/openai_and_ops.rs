//! The OpenAI routes, keys, quotas, rate limits, idempotency and backpressure.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

fn assert_openai_error(status: u16, body: &Value, code: u16, needle: &str) {
    assert_eq!(status, code, "{body}");
    let e = &body["error"];
    assert!(e["type"].is_string(), "{body}");
    assert!(e["message"].as_str().unwrap().contains(needle), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_generations_edits_variations() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let base = format!("http://{}", s.addr);
    let http = reqwest::Client::new();

    let r = http
        .post(format!("{base}/v1/images/generations"))
        .json(&json!({"prompt": "a fox", "size": "512x384", "n": 2, "model": "gpt-image-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(dims(v["data"][0]["b64_json"].as_str().unwrap()), (512, 384));
    assert_eq!(v["size"], "512x384");
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // response_format=url: served by this server; jpeg output.
    let r = http
        .post(format!("{base}/v1/images/generations"))
        .json(&json!({"prompt": "a fox", "size": "256x256", "response_format": "url", "output_format": "jpeg"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let url = v["data"][0]["url"].as_str().unwrap();
    let (bare, query) = url.split_once('?').expect("a signed URL");
    assert!(url.starts_with(&base) && bare.ends_with(".jpg"), "{url}");
    let img = http.get(url).send().await.unwrap();
    assert_eq!(img.headers()["content-type"], "image/jpeg");
    let bytes = img.bytes().await.unwrap();
    assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 256);
    // The URL is signed and expires (60 minutes): the image's hash alone, or a stretched expiry,
    // opens nothing.
    let exp: i64 = query.split('&').find_map(|kv| kv.strip_prefix("exp=")).unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((3500..=3700).contains(&(exp - now)), "{url}");
    let stretched = url.replace(&format!("exp={exp}"), &format!("exp={}", exp + 86_400));
    for bad in [bare.to_string(), stretched] {
        let r = http.get(&bad).send().await.unwrap();
        assert_eq!(r.status(), 403, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "permission_denied", "{v}");
    }

    // Errors in OpenAI's envelope.
    for (body, code, needle) in [
        (json!({"prompt": "x", "size": "10x10"}), 400, "size"),
        (json!({"prompt": "x", "n": 0}), 400, "n must be"),
        (json!({"size": "256x256"}), 400, "prompt is required"),
        (json!({"prompt": "x", "model": "nope"}), 404, "nope"),
        (json!({"prompt": "x", "background": "transparent"}), 400, "transparent"),
        (json!({"prompt": "x", "response_format": "gif"}), 400, "response_format"),
    ] {
        let r = http.post(format!("{base}/v1/images/generations")).json(&body).send().await.unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_openai_error(st, &v, code, needle);
    }
    let r = http.post(format!("{base}/v1/images/generations")).body("{oops").send().await.unwrap();
    let st = r.status().as_u16();
    assert_openai_error(st, &r.json().await.unwrap(), 400, "JSON");

    // Edit with a mask (transparent = edit), same size as the image; output keeps the requested size.
    let image = png_bytes(64, 48, [200, 10, 10]);
    let mut mask = image::RgbaImage::from_pixel(64, 48, image::Rgba([0, 0, 0, 255]));
    for y in 0..24 {
        for x in 0..32 {
            mask.put_pixel(x, y, image::Rgba([0, 0, 0, 0]));
        }
    }
    let mut mask_png = std::io::Cursor::new(Vec::new());
    mask.write_to(&mut mask_png, image::ImageFormat::Png).unwrap();
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(image.clone()).file_name("in.png").mime_str("image/png").unwrap())
        .part("mask", reqwest::multipart::Part::bytes(mask_png.into_inner()).file_name("mask.png").mime_str("image/png").unwrap())
        .text("prompt", "a window")
        .text("size", "320x256");
    let r = http.post(format!("{base}/v1/images/edits")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    // An edit keeps the input's own size, and every pixel outside the mask (and its feather
    // band) is the input's.
    let out = v["data"][0]["b64_json"].as_str().unwrap();
    let input = image::load_from_memory(&image).unwrap().to_rgb8();
    assert_eq!(dims(out), input.dimensions());
    let out = image::load_from_memory(&B64.decode(out).unwrap()).unwrap().to_rgb8();
    let (w, h) = input.dimensions();
    let region = image::GrayImage::from_fn(w, h, |x, y| image::Luma([if x < 32 && y < 24 { 255 } else { 0 }]));
    let alpha = plantain_imageio::composite::feathered(&region, plantain_imageio::composite::default_feather(w, h));
    assert_eq!(plantain_imageio::composite::changed_outside(&input, &out, &alpha), 0);
    assert!(plantain_imageio::composite::changed(&input, &out) > 0);

    // A mask of another size, a MIME type that lies, two images: refused.
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(image.clone()).file_name("in.png").mime_str("image/png").unwrap())
        .part("mask", reqwest::multipart::Part::bytes(png_bytes(8, 8, [0, 0, 0])).file_name("m.png").mime_str("image/png").unwrap())
        .text("prompt", "x");
    let r = http.post(format!("{base}/v1/images/edits")).multipart(form).send().await.unwrap();
    let st = r.status().as_u16();
    assert_openai_error(st, &r.json().await.unwrap(), 400, "same size");
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(jpeg_bytes(16, 16)).file_name("in.png").mime_str("image/png").unwrap())
        .text("prompt", "x");
    let r = http.post(format!("{base}/v1/images/edits")).multipart(form).send().await.unwrap();
    let st = r.status().as_u16();
    assert_openai_error(st, &r.json().await.unwrap(), 400, "image/jpeg");
    let form = reqwest::multipart::Form::new()
        .part("image[]", reqwest::multipart::Part::bytes(image.clone()).file_name("a.png").mime_str("image/png").unwrap())
        .part("image[]", reqwest::multipart::Part::bytes(image.clone()).file_name("b.png").mime_str("image/png").unwrap())
        .text("prompt", "x");
    let r = http.post(format!("{base}/v1/images/edits")).multipart(form).send().await.unwrap();
    let st = r.status().as_u16();
    assert_openai_error(st, &r.json().await.unwrap(), 400, "could not tell what to do");
    let r = http.post(format!("{base}/v1/images/edits")).json(&json!({"prompt": "x"})).send().await.unwrap();
    let st = r.status().as_u16();
    assert_openai_error(st, &r.json().await.unwrap(), 400, "multipart");

    // Variation: img2img without a prompt.
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(image).file_name("in.png").mime_str("image/png").unwrap())
        .text("size", "128x128");
    let r = http.post(format!("{base}/v1/images/variations")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(dims(v["data"][0]["b64_json"].as_str().unwrap()), (128, 128));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_quota_rate_limit_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.limits.images_per_day = 2;
    cfg.limits.requests_per_minute = 7;
    let s = start(cfg).await;
    let base = format!("http://{}", s.addr);
    let http = reqwest::Client::new();
    let gen_url = format!("{base}/v1beta/models/tiny:generateContent");
    let body = json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"imageSize": "512"}}});

    // Keys: once one exists, requests need it (header, Bearer, or ?key=).
    let (id, secret) = plantain_service::keys::create_key(&s.state.svc.stores, "test").await.unwrap();
    let keys = s.state.svc.stores.meta.list_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(!format!("{keys:?}").contains(&secret), "the key itself is never stored");
    let r = http.get(format!("{base}/v1beta/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(http.get(format!("{base}/v1beta/models")).header("x-goog-api-key", "wrong").send().await.unwrap().status(), 401);
    assert_eq!(http.get(format!("{base}/v1beta/models?key={secret}")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{base}/v1beta/models")).bearer_auth(&secret).send().await.unwrap().status(), 200);

    // Idempotency: the same key and body give the stored response, not a second image.
    let send =
        |k: &'static str, b: Value| http.post(&gen_url).header("x-goog-api-key", &secret).header("idempotency-key", k).json(&b).send();
    let r1 = send("req-1", body.clone()).await.unwrap();
    assert_eq!(r1.status(), 200);
    let t1 = r1.text().await.unwrap();
    let r2 = send("req-1", body.clone()).await.unwrap();
    assert_eq!(r2.status(), 200);
    assert_eq!(r2.headers()["idempotent-replayed"], "true");
    assert_eq!(r2.text().await.unwrap(), t1);
    assert_eq!(s.state.svc.stores.meta.images_since(Some(&id), 0).await.unwrap(), 1);
    let r3 = send("req-1", json!({"contents": [{"parts": [{"text": "other"}]}]})).await.unwrap();
    assert_eq!(r3.status(), 400);

    // Daily quota: 2 images per day → the second fresh image is allowed, the third is not.
    assert_eq!(send("req-2", body.clone()).await.unwrap().status(), 200);
    let r = send("req-3", body.clone()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    assert!(v["error"]["message"].as_str().unwrap().contains("quota"));

    // Rate limit: 7 per minute; this test has made 7 keyed requests so far (a wrong key is
    // refused before it counts).
    let r = http.get(format!("{base}/v1beta/models")).header("x-goog-api-key", &secret).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));

    // Revoking the key, then deleting its data removes its blobs.
    assert!(s.state.svc.stores.meta.revoke_key(&id).await.unwrap());
    assert_eq!(
        http.get(format!("{base}/v1beta/models")).header("x-goog-api-key", &secret).send().await.unwrap().status(),
        200,
        "no keys left → open"
    );
    let hash = {
        let v: Value = serde_json::from_str(&t1).unwrap();
        let sig = v["candidates"][0]["content"]["parts"][1]["thoughtSignature"].as_str().unwrap().to_string();
        let plantain_server::signature::Signed::Image(aid) = s.state.signer.check(&sig).unwrap() else { panic!() };
        s.state.svc.stores.meta.artefact(&aid).await.unwrap().unwrap().output_hash
    };
    assert!(s.state.svc.stores.blobs.get(&hash).await.unwrap().is_some());
    // A file the key uploaded goes too (recorded directly: the key's rate limit is spent).
    let upload = s.state.svc.stores.blobs.put(b"an uploaded reference image").await.unwrap();
    let now = plantain_store::now();
    s.state
        .svc
        .stores
        .meta
        .put_file(&plantain_store::FileRecord {
            name: "files/keyfile1".into(),
            key_id: Some(id.clone()),
            display_name: None,
            mime_type: "image/png".into(),
            size_bytes: 27,
            sha256: Some(upload.clone()),
            state: plantain_store::FileState::Active,
            upload_id: None,
            received: 27,
            created_at: now,
            expires_at: now + 3600,
            source: plantain_store::FileSource::Uploaded,
        })
        .await
        .unwrap();
    assert_eq!(plantain_service::keys::delete_key_data(&s.state.svc.stores, &id).await.unwrap(), 3);
    assert!(s.state.svc.stores.blobs.get(&hash).await.unwrap().is_none());
    assert!(s.state.svc.stores.blobs.get(&upload).await.unwrap().is_none());
    assert!(s.state.svc.stores.meta.file("files/keyfile1").await.unwrap().is_none());
    assert_eq!(s.state.svc.stores.meta.images_since(Some(&id), 0).await.unwrap(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_and_unloadable_model_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.models[0].queue = 1;
    cfg.models[0].steps = Some(30);
    let mut broken = plantain_service::config::ModelConfig::new("broken", "/nonexistent/model/folder");
    broken.queue = 1;
    cfg.models.push(broken);
    let s = start(cfg).await;
    let base = format!("http://{}", s.addr);
    let http = reqwest::Client::new();
    let body = json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"imageSize": "512"}}});

    let r = http.post(format!("{base}/v1beta/models/broken:generateContent")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAVAILABLE");

    // A queue of one: of 6 simultaneous requests at most one waits while one runs; the rest are
    // turned away with 503 and Retry-After.
    let mut handles = Vec::new();
    for _ in 0..6 {
        let (h, u, b) = (http.clone(), format!("{base}/v1beta/models/tiny:generateContent"), body.clone());
        handles.push(tokio::spawn(async move {
            let r = h.post(u).json(&b).send().await.unwrap();
            (r.status().as_u16(), r.headers().get("retry-after").is_some())
        }));
    }
    let mut ok = 0;
    let mut busy = 0;
    for h in handles {
        match h.await.unwrap() {
            (200, _) => ok += 1,
            (503, true) => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((1..=2).contains(&ok) && busy >= 4 && ok + busy == 6, "ok {ok}, busy {busy}");
    let m = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(m.contains("plantain_model_ready{model=\"broken\"} 0"), "{m}");
    s.stop().await;
}

async fn wait_cancelled(base: &str, n: u64) {
    for _ in 0..200 {
        let m = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        if m.contains(&format!("plantain_jobs_cancelled_total {n}")) && m.contains("plantain_worker_busy{model=\"tiny\"} 0") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("job was not cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.models[0].steps = Some(1000);
    let s = start(cfg).await;
    let base = format!("http://{}", s.addr);
    let body = json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"imageSize": "512"}}});

    // A stream read until its first progress chunk, then dropped: timing-independent.
    let mut r =
        reqwest::Client::new().post(format!("{base}/v1beta/models/tiny:streamGenerateContent?alt=sse")).json(&body).send().await.unwrap();
    let mut seen = String::new();
    while let Some(c) = r.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&c));
        if seen.contains("step 1 of 1000") {
            break;
        }
    }
    drop(r);
    wait_cancelled(&base, 1).await;

    // A plain request whose client gives up (1000 steps take longer than 1 s).
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_millis(1000)).build().unwrap();
    let r = client.post(format!("{base}/v1beta/models/tiny:generateContent")).json(&body).send().await;
    assert!(r.is_err(), "the request should time out on the client");
    wait_cancelled(&base, 2).await;

    // An OpenAI stream with partial images, dropped after its first partial image (at step
    // 125 of 500: quality low halves the 1000 steps): the job still stops between steps.
    let mut r = reqwest::Client::new()
        .post(format!("{base}/v1/images/generations"))
        .json(&json!({"prompt": "x", "size": "64x64", "quality": "low", "stream": true, "partial_images": 3}))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while let Some(c) = r.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&c));
        if seen.contains("\n\n") && seen.contains("image_generation.partial_image") {
            break;
        }
    }
    assert!(!seen.contains("completed"), "{seen:.300}");
    drop(r);
    wait_cancelled(&base, 3).await;
    // Nothing was recorded for any of them.
    assert_eq!(s.state.svc.stores.meta.images_since(None, 0).await.unwrap(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_streams_and_quality_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.models[0].steps = Some(4);
    let s = start(cfg).await;
    let base = format!("http://{}", s.addr);
    let http = reqwest::Client::new();
    let images = async || s.state.svc.stores.meta.images_since(None, 0).await.unwrap();

    // A Gemini stream under an Idempotency-Key: the repeat replays every chunk, no new image.
    let url = format!("{base}/v1beta/models/tiny:streamGenerateContent?alt=sse");
    let body = json!({"contents": [{"parts": [{"text": "a boat"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"imageSize": "512"}}});
    let send = |k: &'static str, b: &Value| http.post(&url).header("idempotency-key", k).json(b).send();
    let first = send("s-1", &body).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = first.text().await.unwrap();
    // Per attempt of the loop: 4 progress chunks and its verdict; then the image.
    let chunks = first.matches("data: ").count();
    assert!(chunks >= 6 && (chunks - 1) % 5 == 0, "4 progress chunks and a verdict per attempt, then the image: {first:.300}");
    assert_eq!(images().await, 1);
    let again = send("s-1", &body).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert!(again.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert_eq!(again.text().await.unwrap(), first);
    assert_eq!(images().await, 1, "replayed, not generated again");
    // The same key with another body is refused; a failed stream is not stored.
    let other = json!({"contents": [{"parts": [{"text": "a car"}]}]});
    assert_eq!(send("s-1", &other).await.unwrap().status(), 400);
    let bad = json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"aspectRatio": "5:5"}}});
    assert_eq!(send("s-2", &bad).await.unwrap().status(), 400);
    let r = send("s-2", &body).await.unwrap();
    assert_eq!(r.headers().get("idempotent-replayed"), None);
    assert!(r.text().await.unwrap().contains("inlineData"));
    assert_eq!(images().await, 2);

    // OpenAI streams are covered too.
    let oai = format!("{base}/v1/images/generations");
    let ob = json!({"prompt": "a fox", "size": "256x256", "stream": true});
    let r1 = http.post(&oai).header("idempotency-key", "o-1").json(&ob).send().await.unwrap().text().await.unwrap();
    assert!(r1.contains("event: image_generation.completed"), "{r1:.200}");
    let r2 = http.post(&oai).header("idempotency-key", "o-1").json(&ob).send().await.unwrap();
    assert_eq!(r2.headers()["idempotent-replayed"], "true");
    assert_eq!(r2.text().await.unwrap(), r1);
    assert_eq!(images().await, 3);

    // quality → steps (configured 4): low 2, medium 3, high/hd/auto/standard 4.
    let mut pixels = std::collections::HashMap::new();
    for (q, steps) in [("low", 2), ("medium", 3), ("high", 4), ("hd", 4), ("standard", 4), ("auto", 4)] {
        let r = http.post(&oai).json(&json!({"prompt": "a fox", "size": "256x256", "quality": q, "seed": 1})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let arts = s.state.svc.stores.meta.artefacts_of_request(&rid).await.unwrap();
        assert_eq!(arts[0].params["steps"], steps, "quality {q}");
        assert_eq!(arts[0].params["quality"], q);
        let v: Value = r.json().await.unwrap();
        let png = B64.decode(v["data"][0]["b64_json"].as_str().unwrap()).unwrap();
        pixels.insert(q, image::load_from_memory(&png).unwrap().to_rgb8().into_raw());
    }
    // The steps reach the engine: same seed, fewer steps → another picture; the same steps →
    // the same picture up to each output's own watermark.
    let mad = |x: &[u8], y: &[u8]| x.iter().zip(y).map(|(p, q)| f64::from(p.abs_diff(*q))).sum::<f64>() / x.len() as f64;
    let (same, fewer) = (mad(&pixels["high"], &pixels["auto"]), mad(&pixels["high"], &pixels["low"]));
    assert!(fewer > 4.0 * same + 1.0, "same steps differ by {same:.2}, fewer steps by {fewer:.2}");
    let r = http.post(&oai).json(&json!({"prompt": "a fox", "quality": "ultra"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "quality");
    s.stop().await;
}

/// Server-sent events as (event name, JSON data) pairs.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((std::mem::take(&mut name), serde_json::from_str(d).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_with_and_without_partial_images() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir)).await;
    let base = format!("http://{}", s.addr);
    let http = reqwest::Client::new();
    let gen_url = format!("{base}/v1/images/generations");

    // stream=true, partial_images 0: one completed event per image, in OpenAI's shape.
    let r =
        http.post(&gen_url).json(&json!({"prompt": "a fox", "size": "256x192", "stream": true, "partial_images": 0})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.text().await.unwrap());
    assert_eq!(events.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["image_generation.completed"]);
    assert_eq!(events[0].1["type"], "image_generation.completed");
    assert_eq!(dims(events[0].1["b64_json"].as_str().unwrap()), (256, 192));

    // partial_images 2 (the model runs 2 steps): a partial image after each step, then the
    // completed event. Every field of OpenAI's ImageGenPartialImageEvent.
    let r = http
        .post(&gen_url)
        .json(
            &json!({"prompt": "a fox", "size": "1024x1024", "stream": true, "partial_images": 2, "quality": "high", "output_format": "png"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"]);
    for (i, (_, d)) in events[..2].iter().enumerate() {
        assert_eq!(d["type"], "image_generation.partial_image", "{d}");
        assert_eq!(d["partial_image_index"], i, "{d}");
        assert_eq!(d["size"], "1024x1024");
        assert_eq!(d["quality"], "high");
        assert_eq!(d["background"], "opaque");
        assert_eq!(d["output_format"], "png");
        assert!(d["created_at"].as_u64().unwrap() > 1_700_000_000, "{d}");
        assert_eq!(dims(d["b64_json"].as_str().unwrap()), (1024, 1024));
        // Stamped like every output: the server's own verify finds its watermark and manifest.
        let bytes = B64.decode(d["b64_json"].as_str().unwrap()).unwrap();
        let rv = http.post(format!("{base}/v1/verify")).body(bytes).send().await.unwrap();
        let report: Value = rv.json().await.unwrap();
        // (At 1024 px: on the tiny model's noise pictures under about 700 px a side the watermark
        // is not reliably readable; see gemini_api.rs.)
        assert_eq!(report["watermark"]["present"], true, "{report}");
        assert_eq!(report["soft_binding_matches"], true, "{report}");
        assert!(report["manifest"].is_object(), "{report}");
    }
    // The last partial image is the model's estimate after the last step: the final picture up
    // to its (independent) watermark.
    let decode = |d: &Value| image::load_from_memory(&B64.decode(d["b64_json"].as_str().unwrap()).unwrap()).unwrap().to_rgb8();
    let (last, fin) = (decode(&events[1].1), decode(&events[2].1));
    let mad = last.as_raw().iter().zip(fin.as_raw()).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / last.as_raw().len() as f64;
    assert!(mad < 4.0, "last partial image vs final: {mad:.2} levels on average");

    // More partial images than steps: one per step. With n=2, each image has its own, numbered
    // on through the stream.
    let r = http
        .post(&gen_url)
        .json(&json!({"prompt": "a fox", "size": "64x64", "stream": true, "partial_images": 3, "n": 2}))
        .send()
        .await
        .unwrap();
    let events = sse_events(&r.text().await.unwrap());
    let summary: Vec<(&str, Value)> = events.iter().map(|(n, d)| (n.as_str(), d["partial_image_index"].clone())).collect();
    let p = "image_generation.partial_image";
    let c = "image_generation.completed";
    assert_eq!(summary, [(p, json!(0)), (p, json!(1)), (p, json!(2)), (p, json!(3)), (c, Value::Null), (c, Value::Null)], "{summary:?}");

    // Out of range or not a number: 400 in OpenAI's envelope, stream or not.
    for (body, needle) in [
        (json!({"prompt": "a fox", "stream": true, "partial_images": 4}), "between 0 and 3"),
        (json!({"prompt": "a fox", "partial_images": -1}), "between 0 and 3"),
        (json!({"prompt": "a fox", "stream": true, "partial_images": "x"}), "integer"),
    ] {
        let r = http.post(&gen_url).json(&body).send().await.unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_openai_error(st, &v, 400, needle);
        assert_eq!(v["error"]["param"], "partial_images", "{v}");
    }
    // Without stream the field has no effect (as with OpenAI): a plain JSON answer.
    let r = http.post(&gen_url).json(&json!({"prompt": "a fox", "size": "64x64", "partial_images": 2})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");

    // Edits (multipart): image_edit.partial_image events, then image_edit.completed.
    let form = |partial: &str| {
        reqwest::multipart::Form::new()
            .part("image", reqwest::multipart::Part::bytes(png_bytes(64, 48, [9, 9, 9])).file_name("in.png").mime_str("image/png").unwrap())
            .text("prompt", "add a blue square at the top right")
            .text("size", "128x96")
            .text("stream", "true")
            .text("partial_images", partial.to_string())
    };
    let r = http.post(format!("{base}/v1/images/edits")).multipart(form("1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["image_edit.partial_image", "image_edit.completed"]);
    assert_eq!(events[0].1["type"], "image_edit.partial_image");
    assert_eq!(events[0].1["partial_image_index"], 0);
    // Partial images are pasted back like the final one: the input's size, and far from the
    // top-right box the input's own pixels.
    assert_eq!(dims(events[0].1["b64_json"].as_str().unwrap()), (64, 48));
    let partial = image::load_from_memory(&B64.decode(events[0].1["b64_json"].as_str().unwrap()).unwrap()).unwrap().to_rgb8();
    assert_eq!(partial.get_pixel(2, 46).0, [9, 9, 9]);
    let r = http.post(format!("{base}/v1/images/edits")).multipart(form("9")).send().await.unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_openai_error(st, &v, 400, "between 0 and 3");
    let r = http.post(format!("{base}/v1/images/edits")).multipart(form("0")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sse_events(&r.text().await.unwrap()).iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["image_edit.completed"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_images_use_the_tiny_vae_when_one_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.models[0].tiny_vae = Some(std::path::PathBuf::from(tiny_model()).with_file_name("taesd"));
    let s = start(cfg).await;
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/images/generations", s.addr))
        .json(&json!({"prompt": "a fox", "size": "96x64", "stream": true, "partial_images": 2, "output_format": "jpeg"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.text().await.unwrap());
    let p = "image_generation.partial_image";
    assert_eq!(events.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), [p, p, "image_generation.completed"]);
    assert_eq!(events[0].1["output_format"], "jpeg");
    let bytes = B64.decode(events[0].1["b64_json"].as_str().unwrap()).unwrap();
    assert_eq!(&bytes[..2], [0xff, 0xd8], "a JPEG");
    assert_eq!(dims(events[0].1["b64_json"].as_str().unwrap()), (96, 64));
    // The partial image after the last step has the final latents, decoded by TAESD: with the
    // model's VAE it would be the final picture up to the watermark (about 1 level, see above);
    // the tiny random TAESD draws something else.
    let decode = |d: &Value| image::load_from_memory(&B64.decode(d["b64_json"].as_str().unwrap()).unwrap()).unwrap().to_rgb8();
    let (last, fin) = (decode(&events[1].1), decode(&events[2].1));
    let mad = last.as_raw().iter().zip(fin.as_raw()).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / last.as_raw().len() as f64;
    assert!(mad > 10.0, "last partial image vs final: {mad:.2} levels on average");
    s.stop().await;
}

/// With `queue_per_key`, a key that floods a lane gets 429 past its share while another key
/// still gets in (without it, the flood would fill the lane and the other key would get 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_queue_share_gets_429_and_others_still_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.models[0].queue = 3;
    cfg.models[0].queue_per_key = Some(1);
    cfg.models[0].steps = Some(10);
    let s = start(cfg).await;
    let base = format!("http://{}", s.addr);
    let (_, flood) = plantain_service::keys::create_key(&s.state.svc.stores, "flood").await.unwrap();
    let (_, other) = plantain_service::keys::create_key(&s.state.svc.stores, "other").await.unwrap();
    let http = reqwest::Client::new();
    let body = json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"imageSize": "512"}}});
    let send = |key: String| {
        let (h, u, b) = (http.clone(), format!("{base}/v1beta/models/tiny:generateContent"), body.clone());
        tokio::spawn(async move {
            let r = h.post(u).header("x-goog-api-key", key).json(&b).send().await.unwrap();
            let st = r.status().as_u16();
            let retry = r.headers().get("retry-after").is_some();
            let v: Value = r.json().await.unwrap();
            (st, retry, v["error"]["status"].as_str().unwrap_or("").to_string())
        })
    };
    let floods: Vec<_> = (0..5).map(|_| send(flood.clone())).collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let late = send(other.clone());
    let (mut ok, mut exhausted) = (0, 0);
    for h in floods {
        match h.await.unwrap() {
            (200, _, _) => ok += 1,
            (429, true, st) if st == "RESOURCE_EXHAUSTED" => exhausted += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // One runs and one waits (or, if the first had not started yet, only one waited).
    assert!((1..=2).contains(&ok) && ok + exhausted == 5, "ok {ok}, exhausted {exhausted}");
    assert_eq!(late.await.unwrap().0, 200, "the other key was admitted");
    s.stop().await;
}
