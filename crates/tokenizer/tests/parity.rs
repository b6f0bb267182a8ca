//! Id-for-id parity with transformers' slow CLIPTokenizer (fixtures/tokenizer/clip_ids.json,
//! written by scripts/tokenizer_fixtures.py), over every loading path.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plantain_tokenizer::{ClipTokenizer, DEFAULT_MAX_LENGTH, TokenizerError};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        let text = std::fs::read_to_string(repo().join("fixtures/tokenizer/clip_ids.json"))
            .expect("fixtures/tokenizer/clip_ids.json (run scripts/tokenizer_fixtures.py)");
        serde_json::from_str(&text).unwrap()
    })
}

fn sd1() -> &'static ClipTokenizer {
    static T: OnceLock<ClipTokenizer> = OnceLock::new();
    T.get_or_init(ClipTokenizer::embedded_default)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn cases() -> &'static [Value] {
    fixtures()["cases"].as_array().unwrap()
}

/// A tokenizer folder: the asset vocab/merges plus the config files of `configs` (a fixtures dir).
fn folder(configs: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(repo().join("assets/clip-tokenizer").join(f), dir.path().join(f)).unwrap();
    }
    if let Some(configs) = configs {
        for entry in std::fs::read_dir(repo().join("fixtures/tokenizer").join(configs)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}

/// Checks every fixture case under one padding convention; collects all mismatches.
fn check_all(tok: &ClipTokenizer, convention: &str) {
    let mut failures = Vec::new();
    for case in cases() {
        let prompt = case["prompt"].as_str().unwrap();
        let max_len = case["max_length"].as_u64().unwrap() as usize;
        let want = &case[convention];
        let got = tok.encode(prompt);
        if got != ids(&want["ids"]) {
            failures.push(format!("{convention} encode {prompt:?}\n  got  {got:?}\n  want {:?}", ids(&want["ids"])));
        }
        let padded = tok.encode_for_model(prompt, max_len);
        if padded.ids != ids(&want["padded"]) {
            failures.push(format!("{convention} padded {prompt:?}\n  got  {:?}\n  want {:?}", padded.ids, ids(&want["padded"])));
        }
        assert_eq!(padded.prompt_tokens, got.len());
        assert_eq!(padded.truncated(), got.len() > max_len, "{prompt:?}");
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn fixture_is_big_enough() {
    assert!(cases().len() >= 40);
    assert_eq!(fixtures()["bos_id"], 49406);
    assert_eq!(fixtures()["eos_id"], 49407);
}

#[test]
fn embedded_default_matches_sd1() {
    let tok = sd1();
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.pad_id()), (49406, 49407, 49407));
    assert_eq!(tok.vocab_size(), 49408);
    assert_eq!(tok.model_max_length(), DEFAULT_MAX_LENGTH);
    check_all(tok, "sd1");
}

#[test]
fn embedded_openclip_matches_sd2() {
    let tok = ClipTokenizer::embedded_default_openclip();
    assert_eq!(tok.pad_id(), 0);
    check_all(&tok, "sd2");
}

#[test]
fn folder_without_configs_matches_sd1() {
    let dir = folder(None);
    check_all(&ClipTokenizer::from_dir(dir.path()).unwrap(), "sd1");
}

#[test]
fn sd2_folder_pads_with_bang() {
    // special_tokens_map.json says "!", tokenizer_config.json says <|endoftext|>: the map wins.
    let dir = folder(Some("sd2-config"));
    let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(tok.model_max_length(), 77);
    check_all(&tok, "sd2");
}

#[test]
fn decode_matches() {
    for case in cases() {
        let want = case["decoded"].as_str().unwrap();
        assert_eq!(sd1().decode(&ids(&case["sd1"]["ids"])), want, "{}", case["prompt"]);
    }
}

#[test]
fn counts_and_truncated_text() {
    let tok = sd1();
    let long = "word ".repeat(80);
    let enc = tok.encode_for_model(&long, 77);
    assert_eq!((enc.prompt_tokens, enc.kept_tokens), (82, 77));
    assert!(enc.truncated());
    assert_eq!(enc.ids[76], tok.eos_id());
    assert_eq!(tok.count_tokens(&long), 82);
    assert_eq!(tok.truncated_text(&long, 77).as_deref(), Some("word word word word word"));
    assert_eq!(tok.truncated_text("a cat", 77), None);
    let short = tok.encode_for_model("a cat", 77);
    assert_eq!((short.prompt_tokens, short.kept_tokens, short.truncated()), (4, 4, false));
    // Degenerate lengths do not panic.
    assert_eq!(tok.encode_padded("a cat", 0), vec![49406, 49407]);
    assert_eq!(tok.encode_padded("", 77).len(), 77);
}

/// A tokenizer.json like the hub's fast CLIP tokenizer, built from the asset files.
fn tokenizer_json(pair_merges: bool, extra_added: &[(&str, u32)]) -> String {
    let vocab: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("assets/clip-tokenizer/vocab.json")).unwrap()).unwrap();
    let merges_txt = std::fs::read_to_string(repo().join("assets/clip-tokenizer/merges.txt")).unwrap();
    let merges: Vec<Value> = merges_txt
        .lines()
        .skip(1)
        .map(|l| {
            if pair_merges {
                let (a, b) = l.split_once(' ').unwrap();
                json!([a, b])
            } else {
                json!(l)
            }
        })
        .collect();
    let mut added = vec![
        json!({"id": 49406, "content": "<|startoftext|>", "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": true, "special": true}),
        json!({"id": 49407, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": true, "special": true}),
    ];
    for (content, id) in extra_added {
        added.push(json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": true, "special": false}));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": []},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": []},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", 49407],
                           "cls": ["<|startoftext|>", 49406], "trim_offsets": false,
                           "add_prefix_space": false},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
                  "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
    .to_string()
}

#[test]
fn tokenizer_json_string_and_pair_merges() {
    for pair in [false, true] {
        let tok = ClipTokenizer::from_tokenizer_json_str(&tokenizer_json(pair, &[])).unwrap();
        assert_eq!(tok.pad_id(), 49407);
        check_all(&tok, "sd1");
    }
}

#[test]
fn tokenizer_json_in_folder_with_sd2_configs() {
    // No vocab.json/merges.txt: from_dir falls back to tokenizer.json and reads the configs.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer_json(true, &[])).unwrap();
    for f in ["special_tokens_map.json", "tokenizer_config.json"] {
        std::fs::copy(repo().join("fixtures/tokenizer/sd2-config").join(f), dir.path().join(f)).unwrap();
    }
    let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.pad_id(), 0);
    check_all(&tok, "sd2");
}

fn check_added(tok: &ClipTokenizer) {
    let f = fixtures();
    for (content, id) in f["added_tokens"].as_object().unwrap() {
        assert_eq!(tok.token_to_id(content), Some(id.as_u64().unwrap() as u32));
    }
    for case in f["added_cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        assert_eq!(tok.encode(prompt), ids(&case["ids"]), "{prompt:?}");
        assert_eq!(tok.encode_padded(prompt, 77), ids(&case["padded"]), "{prompt:?}");
    }
    assert_eq!(tok.decode(&tok.encode("a photo of <cat-toy> on a beach")), "a photo of <cat-toy> on a beach");
}

#[test]
fn added_tokens_from_saved_folder() {
    // tokenizer_config.json (added_tokens_decoder) + added_tokens.json, as save_pretrained writes.
    let dir = folder(Some("added-config"));
    let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.vocab_size(), 49410);
    check_added(&tok);
}

#[test]
fn added_tokens_from_tokenizer_json() {
    let json = tokenizer_json(false, &[("<cat-toy>", 49408), ("<sks>", 49409)]);
    check_added(&ClipTokenizer::from_tokenizer_json_str(&json).unwrap());
}

#[test]
fn shared_between_threads() {
    let tok = sd1();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for case in cases() {
                    let prompt = case["prompt"].as_str().unwrap();
                    assert_eq!(tok.encode(prompt), ids(&case["sd1"]["ids"]));
                }
            });
        }
    });
}

// ---- error paths -------------------------------------------------------------------------

fn err_text(e: TokenizerError) -> String {
    e.to_string()
}

#[test]
fn missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let e = ClipTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(e, TokenizerError::MissingFiles { .. }), "{e:?}");
    let msg = err_text(e);
    assert!(msg.contains(&dir.path().display().to_string()) && msg.contains("vocab.json"), "{msg}");

    let e = ClipTokenizer::from_tokenizer_json(dir.path().join("tokenizer.json")).unwrap_err();
    assert!(matches!(e, TokenizerError::Io { .. }), "{e:?}");
    assert!(err_text(e).contains("tokenizer.json"));

    // vocab.json without merges.txt is not a slow-tokenizer folder either.
    std::fs::write(dir.path().join("vocab.json"), "{}").unwrap();
    assert!(matches!(ClipTokenizer::from_dir(dir.path()), Err(TokenizerError::MissingFiles { .. })));
}

#[test]
fn malformed_vocab() {
    let merges = "#version: 0.2\n";
    let e = ClipTokenizer::from_vocab_merges("not json", merges).unwrap_err();
    assert!(matches!(e, TokenizerError::Json { .. }), "{e:?}");
    let e = ClipTokenizer::from_vocab_merges("[1, 2]", merges).unwrap_err();
    assert!(matches!(e, TokenizerError::MalformedVocab { .. }), "{e:?}");
    let e = ClipTokenizer::from_vocab_merges(r#"{"a": -1}"#, merges).unwrap_err();
    assert!(err_text(e).contains("non-negative"));
    // A vocabulary that is not byte-level.
    let e = ClipTokenizer::from_vocab_merges(r#"{"a": 0}"#, merges).unwrap_err();
    let msg = err_text(e);
    assert!(msg.contains("vocab.json") && msg.contains("byte symbol"), "{msg}");
}

#[test]
fn malformed_merges_name_the_file_and_merge() {
    let dir = folder(None);
    std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\ni n\nt h e x\n").unwrap();
    let e = ClipTokenizer::from_dir(dir.path()).unwrap_err();
    let msg = err_text(e);
    assert!(msg.contains("merges.txt") && msg.contains("#2") && msg.contains("t h e x"), "{msg}");

    std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\ni n\nzz qq\n").unwrap();
    let msg = err_text(ClipTokenizer::from_dir(dir.path()).unwrap_err());
    assert!(msg.contains("not in the vocabulary"), "{msg}");

    let bad = r#"{"model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": {}, "merges": [1]}}"#;
    let msg = err_text(ClipTokenizer::from_tokenizer_json_str(bad).unwrap_err());
    assert!(msg.contains("merge #1"), "{msg}");
}

#[test]
fn unknown_special_token() {
    let dir = folder(None);
    std::fs::write(dir.path().join("special_tokens_map.json"), r#"{"pad_token": "<|pad|>"}"#).unwrap();
    let e = ClipTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(e, TokenizerError::UnknownSpecialToken { role: "pad", .. }), "{e:?}");
    let msg = err_text(e);
    assert!(msg.contains("special_tokens_map.json"), "{msg}");
    assert!(msg.contains("<|pad|>"), "{msg}");

    std::fs::write(dir.path().join("special_tokens_map.json"), "{ broken").unwrap();
    let e = ClipTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(e, TokenizerError::Json { .. }) && err_text(e).contains("special_tokens_map.json"));
}

#[test]
fn unsupported_tokenizer_json() {
    let wordpiece = r#"{"model": {"type": "WordPiece", "vocab": {}}}"#;
    let e = ClipTokenizer::from_tokenizer_json_str(wordpiece).unwrap_err();
    assert!(matches!(e, TokenizerError::Unsupported { .. }) && err_text(e).contains("WordPiece"));
    let gpt2 = r#"{"model": {"type": "BPE", "vocab": {}, "merges": []}}"#;
    let e = ClipTokenizer::from_tokenizer_json_str(gpt2).unwrap_err();
    assert!(err_text(e).contains("end_of_word_suffix"));
    let e = ClipTokenizer::from_tokenizer_json_str("[]").unwrap_err();
    assert!(matches!(e, TokenizerError::Unsupported { .. }));
}

#[test]
fn null_pad_falls_back_to_eos() {
    let dir = folder(None);
    std::fs::write(dir.path().join("special_tokens_map.json"), r#"{"pad_token": null}"#).unwrap();
    assert_eq!(ClipTokenizer::from_dir(dir.path()).unwrap().pad_id(), 49407);
}

#[test]
fn conventions_really_differ() {
    // Guards the comparison itself: SD 1.x ids must not pass as SD 2.x ones.
    let differ = cases().iter().filter(|c| c["sd1"]["padded"] != c["sd2"]["padded"]).count();
    assert!(differ >= cases().len() / 2);
    let bang = cases().iter().find(|c| c["prompt"].as_str().unwrap().starts_with("!!!")).unwrap();
    assert_ne!(bang["sd1"]["ids"], bang["sd2"]["ids"]);
    assert_ne!(sd1().encode(bang["prompt"].as_str().unwrap()), ids(&bang["sd2"]["ids"]));
}
