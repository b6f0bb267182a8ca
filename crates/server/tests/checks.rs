//! The plan → check → correct loop over HTTP: a text-to-image request is planned, every
//! attempt checked, the best one answered; `thinkingConfig.includeThoughts` shows the plan and
//! every attempt's checks as a thought part, the TEXT part says what was checked, and
//! `[checks] attempts` bounds the loop.

mod common;

use common::*;
use serde_json::{Value, json};

const GEN: &str = "/v1beta/models/gemini-3.1-flash-image-preview:generateContent";

async fn post(base: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{base}{GEN}")).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn parts(v: &Value) -> Vec<Value> {
    v["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_reports_its_plan_and_checks_and_keeps_to_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.checks.attempts = 2;
    let s = start(c).await;
    let base = format!("http://{}", s.addr);
    // A prompt in the synthetic world's words: the tiny random model cannot draw it, so the
    // scene check fails and the loop spends its two attempts.
    let body = json!({
        "contents": [{"role": "user", "parts": [{"text": "a red circle in the center on a white background"}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "thinkingConfig": {"includeThoughts": true},
                             "imageConfig": {"imageSize": "512"}},
    });
    let (st, v) = post(&base, &body).await;
    assert_eq!(st, 200, "{v}");
    let ps = parts(&v);
    let thought = ps.iter().find(|p| p["thought"] == json!(true)).and_then(|p| p["text"].as_str()).expect("a thought part").to_string();
    assert!(thought.contains("scene (the synthetic world's words)"), "{thought}");
    assert!(thought.contains("attempt 1") && thought.contains("attempt 2") && !thought.contains("attempt 3"), "{thought}");
    assert!(thought.contains("scene: FAIL"), "{thought}");
    let text = ps.iter().filter(|p| p["thought"] != json!(true)).find_map(|p| p["text"].as_str()).expect("a text part");
    assert!(text.contains("FAILED: scene") && text.contains("of 2 kept"), "{text}");
    assert_eq!(ps.iter().filter(|p| p.get("inlineData").is_some()).count(), 1, "one picture answered");

    // Free text: the scene check does not apply, nothing fails, one attempt is enough; no
    // thoughts unless asked.
    let body = json!({
        "contents": [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"imageSize": "512"}},
    });
    let (st, v) = post(&base, &body).await;
    assert_eq!(st, 200, "{v}");
    let ps = parts(&v);
    assert!(ps.iter().all(|p| p["thought"] != json!(true)));
    let text = ps.iter().find_map(|p| p["text"].as_str()).unwrap();
    assert!(text.contains("attempt 1 of 1 kept") && text.contains("not checked: scene"), "{text}");
    s.stop().await;
}
