//! The CLIP byte-level BPE tokenizer of the Stable Diffusion text encoders.
//!
//! It reproduces Hugging Face's slow (pure Python) `transformers.CLIPTokenizer`, the class
//! diffusers' pipelines load, id for id: ftfy-style text cleanup, whitespace cleanup,
//! lowercasing, CLIP's pre-tokenisation regex, the byte→unicode map, BPE with the `</w>`
//! end-of-word suffix, `<|startoftext|>` / `<|endoftext|>`, truncation to 77 tokens (end token
//! kept) and padding. `fixtures/tokenizer/clip_ids.json` (from `scripts/tokenizer_fixtures.py`)
//! holds the reference ids the tests compare against.
//!
//! **Why not the `tokenizers` crate.** CLIP's BPE is ~150 lines here, while `tokenizers` pulls a
//! large dependency tree and a C regex backend (onig) or `fancy-regex`, and its CLIP pipeline is
//! the *fast* tokenizer, which replaces ftfy with plain NFC and so differs from the slow one on
//! curly quotes, full-width characters, ligatures, HTML entities and the Greek final sigma
//! (`scripts/tokenizer_fixtures.py` counts those cases). Writing it ourselves gives the slow
//! tokenizer's ids with two small dependencies (`regex`, `unicode-normalization`).
//!
//! Padding differs by model: SD 1.x pads with `<|endoftext|>` (49407); SD 2.x and SDXL's
//! second tokenizer pad with `!` (id 0), which `special_tokens_map.json` says. As in
//! transformers, the pad token is then a special token and is split out of the prompt text too
//! (so `"wow!!!"` ends in three id-0 tokens under SD 2.x, not the `!!!</w>` token).
//!
//! Sources: a tokenizer folder ([`ClipTokenizer::from_dir`]: `vocab.json` + `merges.txt`, or
//! `tokenizer.json`, with optional `tokenizer_config.json`, `special_tokens_map.json`,
//! `added_tokens.json`), or the compiled-in copy of the real CLIP vocabulary
//! ([`ClipTokenizer::embedded_default`], from `assets/clip-tokenizer/`, MIT, see its LICENSE).
//!
//! ```
//! use plantain_tokenizer::ClipTokenizer;
//! let tok = ClipTokenizer::embedded_default(); // ~80 ms in release: build once, share
//! assert_eq!(tok.encode("a photograph of an astronaut riding a horse"),
//!            [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]);
//! let enc = tok.encode_for_model("cat", 77);
//! assert_eq!(&enc.ids[..4], [49406, 2368, 49407, 49407]);
//! assert!(!enc.truncated());
//! ```
//!
//! Known differences from the Python reference: ftfy's mojibake repair is not reproduced (see
//! `clean`), `single_word` added tokens are matched like ordinary ones, and characters assigned
//! after the Unicode version of the other side (Python 3.11 knows Unicode 14; the `regex`
//! crate and `std` are newer) may classify or lowercase differently. A sweep of every code
//! point in the context `x{c}y'{c}` against transformers 4.57 differed only on code points
//! unassigned in Unicode 14.

mod clean;
mod entities;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use regex::Regex;
use serde_json::Value;

/// The context length of every CLIP text encoder in Stable Diffusion.
pub const DEFAULT_MAX_LENGTH: usize = 77;

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
const END_OF_WORD: &str = "</w>";
/// The slow CLIPTokenizer reads at most this many merges from merges.txt (49152 - 256 - 2).
const SLOW_MERGE_LIMIT: usize = 48_894;
/// Past this many cached words the cache is dropped, so arbitrary input cannot grow it forever.
const CACHE_LIMIT: usize = 1 << 16;

/// CLIP's pre-tokenisation pattern. Python compiles it with IGNORECASE, but it runs on
/// lowercased text, so only the literal alternatives keep case folding (`'ſ` still matches
/// `'s`, as in Python), and U+0345 is left out of the last class because Python's
/// case-insensitive classes match it nowhere (it is dropped there too).
const PATTERN: &str = r"(?i:<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)|\p{L}+|\p{N}|[^\s\p{L}\p{N}\x{345}]+";

static EMBEDDED_VOCAB: &str = include_str!("../../../assets/clip-tokenizer/vocab.json");
static EMBEDDED_MERGES: &str = include_str!("../../../assets/clip-tokenizer/merges.txt");

/// What can go wrong loading a tokenizer. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{dir}: no CLIP tokenizer files: expected vocab.json and merges.txt, or tokenizer.json")]
    MissingFiles { dir: PathBuf },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: malformed vocabulary: {reason}")]
    MalformedVocab { path: PathBuf, reason: String },
    #[error("{path}: malformed merge #{index} ({merge:?}): {reason}")]
    MalformedMerges { path: PathBuf, index: usize, merge: String, reason: String },
    #[error("{path}: {role} token {token:?} is neither in the vocabulary nor an added token")]
    UnknownSpecialToken { path: PathBuf, role: &'static str, token: String },
    #[error("{path}: not a CLIP BPE tokenizer: {reason}")]
    Unsupported { path: PathBuf, reason: String },
}

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

type Vocab = HashMap<String, u32>;
type Merges = Vec<(String, String)>;

/// A padded, truncated encoding plus what a "prompt was truncated" warning needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedEncoding {
    /// Exactly `max_len` ids: `<|startoftext|>`, the kept tokens, `<|endoftext|>`, padding.
    pub ids: Vec<u32>,
    /// Tokens the whole prompt needs, counting start and end tokens.
    pub prompt_tokens: usize,
    /// Tokens kept in `ids` before the padding, counting start and end tokens.
    pub kept_tokens: usize,
}

impl PaddedEncoding {
    /// Whether part of the prompt was cut off.
    pub fn truncated(&self) -> bool {
        self.prompt_tokens > self.kept_tokens
    }
}

/// The CLIP tokenizer. Cheap to share between threads (`&self` methods; the word cache is
/// behind a mutex).
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    /// id → token text, for the vocabulary and added tokens.
    tokens: HashMap<u32, String>,
    /// (left id, right id) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    byte_decoder: HashMap<char, u8>,
    /// Ids of the 256 byte symbols, alone and with `</w>`.
    byte_ids: [u32; 256],
    byte_eow_ids: [u32; 256],
    pattern: Regex,
    /// Added and special tokens, split out of the raw text before cleanup, longest first.
    split_tokens: Vec<(String, u32)>,
    /// Added tokens that are not special: decoded as their text.
    added_plain: HashMap<u32, String>,
    /// Start, end, unknown, pad and special added tokens: skipped by `decode`.
    special_ids: Vec<u32>,
    bos_id: u32,
    eos_id: u32,
    unk_id: u32,
    pad_id: u32,
    model_max_length: usize,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab.len())
            .field("merges", &self.merges.len())
            .field("added_tokens", &self.split_tokens.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("model_max_length", &self.model_max_length)
            .finish_non_exhaustive()
    }
}

impl Clone for ClipTokenizer {
    fn clone(&self) -> Self {
        Self {
            vocab: self.vocab.clone(),
            tokens: self.tokens.clone(),
            merges: self.merges.clone(),
            byte_decoder: self.byte_decoder.clone(),
            byte_ids: self.byte_ids,
            byte_eow_ids: self.byte_eow_ids,
            pattern: self.pattern.clone(),
            split_tokens: self.split_tokens.clone(),
            added_plain: self.added_plain.clone(),
            special_ids: self.special_ids.clone(),
            bos_id: self.bos_id,
            eos_id: self.eos_id,
            unk_id: self.unk_id,
            pad_id: self.pad_id,
            model_max_length: self.model_max_length,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

/// The special-token settings and added tokens gathered from the config files.
#[derive(Debug, Clone)]
struct Specials {
    bos: String,
    eos: String,
    unk: String,
    /// None: the files set no pad token (`null`); we pad with the end token then.
    pad: Option<String>,
    model_max_length: usize,
    /// (content, id, special)
    added: Vec<(String, u32, bool)>,
    /// The config file that set each role's token, for error messages.
    sources: HashMap<&'static str, PathBuf>,
}

impl Default for Specials {
    fn default() -> Self {
        Self {
            bos: BOS.into(),
            eos: EOS.into(),
            unk: EOS.into(),
            pad: Some(EOS.into()),
            model_max_length: DEFAULT_MAX_LENGTH,
            added: Vec::new(),
            sources: HashMap::new(),
        }
    }
}

impl ClipTokenizer {
    /// The real CLIP vocabulary compiled into the binary (SD 1.x conventions: pad with
    /// `<|endoftext|>`), for models that ship no tokenizer folder. Parses ~1.5 MB of text, so
    /// build it once and share it.
    pub fn embedded_default() -> Self {
        Self::embedded(Specials::default())
    }

    /// [`embedded_default`](Self::embedded_default) but padding with `!` (id 0), as SD 2.x and
    /// SDXL's second text encoder expect.
    pub fn embedded_default_openclip() -> Self {
        Self::embedded(Specials { pad: Some("!".into()), ..Specials::default() })
    }

    fn embedded(specials: Specials) -> Self {
        let label = Path::new("<embedded assets/clip-tokenizer>");
        Self::build_from_strs(EMBEDDED_VOCAB, EMBEDDED_MERGES, specials, label)
            .expect("the embedded CLIP vocabulary is checked by the crate's tests")
    }

    /// The text of the embedded `vocab.json` and `merges.txt`, for writing a model's
    /// tokenizer folder.
    pub fn embedded_files() -> (&'static str, &'static str) {
        (EMBEDDED_VOCAB, EMBEDDED_MERGES)
    }

    /// A tokenizer from the text of a `vocab.json` and a `merges.txt`, with CLIP's default
    /// special tokens (SD 1.x padding).
    pub fn from_vocab_merges(vocab_json: &str, merges_txt: &str) -> Result<Self> {
        Self::build_from_strs(vocab_json, merges_txt, Specials::default(), Path::new("<memory>"))
    }

    /// A model's tokenizer folder (e.g. `stable-diffusion-v1-5/tokenizer`): `vocab.json` +
    /// `merges.txt` when present (the slow tokenizer's files), else `tokenizer.json`; either way
    /// with `tokenizer_config.json`, `special_tokens_map.json` and `added_tokens.json` when
    /// present (the map wins over the config, as in transformers).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        if vocab_path.is_file() && merges_path.is_file() {
            let specials = read_specials(dir, Specials::default())?;
            let vocab = read_file(&vocab_path)?;
            let merges = read_file(&merges_path)?;
            let vocab = parse_vocab(&vocab, &vocab_path)?;
            let merges = parse_merges_txt(&merges, &merges_path)?;
            return Self::build(vocab, merges, specials, &vocab_path, &merges_path);
        }
        let json_path = dir.join("tokenizer.json");
        if json_path.is_file() {
            return Self::from_tokenizer_json(&json_path);
        }
        Err(TokenizerError::MissingFiles { dir: dir.to_path_buf() })
    }

    /// A Hugging Face fast-tokenizer file (`tokenizer.json`): its `model.vocab`, `model.merges`
    /// (`"a b"` strings or `["a", "b"]` pairs) and `added_tokens`. Config files beside it
    /// (`tokenizer_config.json`, `special_tokens_map.json`) are read too, as transformers does.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_file(path)?;
        let (vocab, merges, mut specials) = parse_tokenizer_json(&text, path)?;
        if let Some(dir) = path.parent() {
            specials = read_specials(dir, specials)?;
        }
        Self::build(vocab, merges, specials, path, path)
    }

    /// [`from_tokenizer_json`](Self::from_tokenizer_json) from the file's text (no config files).
    pub fn from_tokenizer_json_str(json: &str) -> Result<Self> {
        let path = Path::new("<tokenizer.json>");
        let (vocab, merges, specials) = parse_tokenizer_json(json, path)?;
        Self::build(vocab, merges, specials, path, path)
    }

    fn build_from_strs(vocab: &str, merges: &str, specials: Specials, label: &Path) -> Result<Self> {
        let vocab_path = label.join("vocab.json");
        let merges_path = label.join("merges.txt");
        let vocab = parse_vocab(vocab, &vocab_path)?;
        let merges = parse_merges_txt(merges, &merges_path)?;
        Self::build(vocab, merges, specials, &vocab_path, &merges_path)
    }

    fn build(
        vocab: HashMap<String, u32>,
        merge_list: Vec<(String, String)>,
        specials: Specials,
        vocab_path: &Path,
        merges_path: &Path,
    ) -> Result<Self> {
        let byte_encoder = bytes_to_unicode();
        let byte_decoder = byte_encoder.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        let mut byte_ids = [0u32; 256];
        let mut byte_eow_ids = [0u32; 256];
        for (b, c) in byte_encoder.iter().enumerate() {
            for (suffix, slot) in [("", &mut byte_ids[b]), (END_OF_WORD, &mut byte_eow_ids[b])] {
                let symbol = format!("{c}{suffix}");
                *slot = *vocab.get(&symbol).ok_or_else(|| TokenizerError::MalformedVocab {
                    path: vocab_path.to_path_buf(),
                    reason: format!("byte symbol {symbol:?} missing: not a byte-level CLIP vocabulary"),
                })?;
            }
        }
        let mut merges = HashMap::with_capacity(merge_list.len());
        for (rank, (a, b)) in merge_list.iter().enumerate() {
            let bad = |reason: String| TokenizerError::MalformedMerges {
                path: merges_path.to_path_buf(),
                index: rank + 1,
                merge: format!("{a} {b}"),
                reason,
            };
            let id = |s: &str| vocab.get(s).copied().ok_or_else(|| bad(format!("{s:?} is not in the vocabulary")));
            let key = (id(a)?, id(b)?);
            let merged = id(&format!("{a}{b}"))?;
            // A repeated pair takes its last rank, as Python's dict(zip(...)) does.
            merges.insert(key, (rank as u32, merged));
        }
        let mut tokens: HashMap<u32, String> = vocab.iter().map(|(k, &v)| (v, k.clone())).collect();
        for (content, id, _) in &specials.added {
            tokens.insert(*id, content.clone());
        }
        let mut tok = Self {
            vocab,
            tokens,
            merges,
            byte_decoder,
            byte_ids,
            byte_eow_ids,
            pattern: Regex::new(PATTERN).expect("the CLIP pattern is valid"),
            split_tokens: Vec::new(),
            added_plain: HashMap::new(),
            special_ids: Vec::new(),
            bos_id: 0,
            eos_id: 0,
            unk_id: 0,
            pad_id: 0,
            model_max_length: DEFAULT_MAX_LENGTH,
            cache: Mutex::new(HashMap::new()),
        };
        tok.apply_specials(&specials, vocab_path)?;
        Ok(tok)
    }

    fn apply_specials(&mut self, specials: &Specials, path: &Path) -> Result<()> {
        let added: HashMap<&str, u32> = specials.added.iter().map(|(c, id, _)| (c.as_str(), *id)).collect();
        let resolve = |role: &'static str, token: &str| -> Result<u32> {
            added.get(token).or_else(|| self.vocab.get(token)).copied().ok_or_else(|| TokenizerError::UnknownSpecialToken {
                path: specials.sources.get(role).map_or(path, |p| p).to_path_buf(),
                role,
                token: token.to_owned(),
            })
        };
        let bos_id = resolve("bos", &specials.bos)?;
        let eos_id = resolve("eos", &specials.eos)?;
        let unk_id = resolve("unk", &specials.unk)?;
        let pad = specials.pad.as_deref().unwrap_or(&specials.eos);
        let pad_id = resolve("pad", pad)?;

        let mut split: HashMap<String, u32> = HashMap::new();
        let mut added_plain = HashMap::new();
        let mut special_ids: Vec<u32> = vec![bos_id, eos_id, unk_id, pad_id];
        for (content, id, special) in &specials.added {
            if content.is_empty() {
                continue;
            }
            split.insert(content.clone(), *id);
            if *special {
                special_ids.push(*id);
            } else {
                added_plain.insert(*id, content.clone());
            }
        }
        for (content, id) in
            [(specials.bos.as_str(), bos_id), (specials.eos.as_str(), eos_id), (specials.unk.as_str(), unk_id), (pad, pad_id)]
        {
            if !content.is_empty() {
                split.insert(content.to_owned(), id);
            }
        }
        added_plain.retain(|id, _| !special_ids.contains(id));
        special_ids.sort_unstable();
        special_ids.dedup();
        let mut split_tokens: Vec<(String, u32)> = split.into_iter().collect();
        // Longest first, so the first hit at a position is the longest, as in transformers' trie.
        split_tokens.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));

        self.bos_id = bos_id;
        self.eos_id = eos_id;
        self.unk_id = unk_id;
        self.pad_id = pad_id;
        self.split_tokens = split_tokens;
        self.added_plain = added_plain;
        self.special_ids = special_ids;
        self.model_max_length = specials.model_max_length;
        self.clear_cache();
        Ok(())
    }

    fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// `<|startoftext|>`'s id (49406 in CLIP).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// `<|endoftext|>`'s id (49407 in CLIP).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The padding id: 49407 for SD 1.x, 0 (`!`) for SD 2.x / SDXL's second encoder.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// `model_max_length` from `tokenizer_config.json`, 77 when absent.
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    /// Number of ids: vocabulary plus added tokens beyond it.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a token's text (`"cat</w>"`), if it has one.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.split_tokens.iter().find(|(c, _)| c == token).map(|(_, id)| *id).or_else(|| self.vocab.get(token).copied())
    }

    /// The text of a token id (`"cat</w>"`).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(&id).map(String::as_str)
    }

    /// The ids of `text` with start and end tokens, neither truncated nor padded.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.bos_id];
        self.encode_content(text, &mut ids);
        ids.push(self.eos_id);
        ids
    }

    /// How many tokens `text` needs, counting start and end tokens (compare with 77).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.encode(text).len()
    }

    /// Exactly `max_len` ids, as diffusers asks for them (`padding="max_length",
    /// truncation=True`): start token, at most `max_len - 2` prompt tokens, end token, then
    /// padding. A `max_len` below 2 is treated as 2.
    pub fn encode_padded(&self, text: &str, max_len: usize) -> Vec<u32> {
        self.encode_for_model(text, max_len).ids
    }

    /// [`encode_padded`](Self::encode_padded) plus the token counts, for truncation warnings.
    pub fn encode_for_model(&self, text: &str, max_len: usize) -> PaddedEncoding {
        let max_len = max_len.max(2);
        let mut ids = self.encode(text);
        let prompt_tokens = ids.len();
        if ids.len() > max_len {
            ids.truncate(max_len - 1);
            ids.push(self.eos_id);
        }
        let kept_tokens = ids.len();
        ids.resize(max_len, self.pad_id);
        PaddedEncoding { ids, prompt_tokens, kept_tokens }
    }

    /// The text that truncation to `max_len` cuts off, for a warning like diffusers' "The
    /// following part of your input was truncated…"; None when everything fits.
    pub fn truncated_text(&self, text: &str, max_len: usize) -> Option<String> {
        let ids = self.encode(text);
        let keep = max_len.max(2) - 1;
        (ids.len() > keep + 1).then(|| self.decode(&ids[keep..ids.len() - 1]))
    }

    /// Text of the ids, skipping special tokens (start, end, unknown, pad), like transformers'
    /// `decode(ids, skip_special_tokens=True)`: so with SD 2.x padding `!` is skipped too.
    /// Word ends become spaces; added tokens are joined with spaces; the result is trimmed.
    pub fn decode(&self, ids: &[u32]) -> String {
        let skip = &self.special_ids;
        let mut parts: Vec<String> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        let flush = |bytes: &mut Vec<u8>, parts: &mut Vec<String>| {
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(bytes).replace(END_OF_WORD, " ");
                parts.push(text.trim().to_owned());
                bytes.clear();
            }
        };
        for id in ids {
            if skip.contains(id) {
                continue;
            }
            if let Some(text) = self.added_plain.get(id) {
                flush(&mut bytes, &mut parts);
                parts.push(text.clone());
                continue;
            }
            let Some(token) = self.tokens.get(id) else {
                continue;
            };
            for c in token.chars() {
                match self.byte_decoder.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        flush(&mut bytes, &mut parts);
        parts.join(" ").trim().to_owned()
    }

    /// Appends the ids of `text`'s content (no start/end tokens).
    fn encode_content(&self, text: &str, out: &mut Vec<u32>) {
        let mut rest = text;
        let mut pos = 0;
        // Split on added/special tokens first (earliest match, longest at that position), as
        // transformers' trie does; the pieces between go through cleanup and BPE.
        while pos < rest.len() {
            let hit = self.split_tokens.iter().find(|(content, _)| rest[pos..].starts_with(content.as_str()));
            match hit {
                Some((content, id)) => {
                    self.encode_chunk(&rest[..pos], out);
                    out.push(*id);
                    rest = &rest[pos + content.len()..];
                    pos = 0;
                }
                None => pos += rest[pos..].chars().next().map_or(1, char::len_utf8),
            }
        }
        self.encode_chunk(rest, out);
    }

    fn encode_chunk(&self, chunk: &str, out: &mut Vec<u32>) {
        if chunk.is_empty() {
            return;
        }
        let cleaned = clean::clean(chunk);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > CACHE_LIMIT {
            cache.clear();
        }
        for piece in self.pattern.find_iter(&cleaned) {
            let piece = piece.as_str();
            // The slow tokenizer's BPE cache starts out mapping these two to themselves.
            if piece == BOS || piece == EOS {
                out.push(self.vocab.get(piece).copied().unwrap_or(self.unk_id));
                continue;
            }
            if let Some(ids) = cache.get(piece) {
                out.extend_from_slice(ids);
                continue;
            }
            let ids = self.bpe(piece.as_bytes());
            out.extend_from_slice(&ids);
            cache.insert(piece.to_owned(), ids);
        }
    }

    /// BPE over one pre-token's bytes: byte symbols (the last one with `</w>`), then merge the
    /// lowest-ranked adjacent pair, all its occurrences left to right, until none is left.
    fn bpe(&self, bytes: &[u8]) -> Vec<u32> {
        let Some((&last, init)) = bytes.split_last() else {
            return Vec::new();
        };
        let mut word: Vec<u32> = init.iter().map(|&b| self.byte_ids[usize::from(b)]).collect();
        word.push(self.byte_eow_ids[usize::from(last)]);
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|w| self.merges.get(&(w[0], w[1])).map(|&(rank, _)| (rank, (w[0], w[1]))))
                .min_by_key(|&(rank, _)| rank);
            let Some((_, pair)) = best else { break };
            let merged = self.merges[&pair].1;
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && (word[i], word[i + 1]) == pair {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        word
    }
}

/// CLIP's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other 68 bytes to
/// U+0100 onwards, so BPE never sees whitespace or control characters.
fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
        map[usize::from(b)] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{fffd}');
            next += 1;
            c
        };
    }
    map
}

/// The vocabulary, merges and special tokens of a `tokenizer.json`.
fn parse_tokenizer_json(json: &str, path: &Path) -> Result<(Vocab, Merges, Specials)> {
    let root: Value = serde_json::from_str(json).map_err(|source| TokenizerError::Json { path: path.to_path_buf(), source })?;
    let unsupported = |reason: String| TokenizerError::Unsupported { path: path.to_path_buf(), reason };
    let model = root.get("model").ok_or_else(|| unsupported("no \"model\" object".into()))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str)
        && kind != "BPE"
    {
        return Err(unsupported(format!("model type {kind:?}, expected \"BPE\"")));
    }
    match model.get("end_of_word_suffix") {
        Some(Value::String(s)) if s == END_OF_WORD => {}
        other => {
            return Err(unsupported(format!(
                "end_of_word_suffix is {}, CLIP's BPE uses \"</w>\"",
                other.map_or("missing".into(), Value::to_string)
            )));
        }
    }
    let vocab_value =
        model.get("vocab").ok_or_else(|| TokenizerError::MalformedVocab { path: path.to_path_buf(), reason: "no model.vocab".into() })?;
    let vocab = vocab_from_value(vocab_value, path)?;
    let merges = match model.get("merges") {
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, item)| merge_from_value(item, i, path)).collect::<Result<Vec<_>>>()?
        }
        _ => {
            return Err(TokenizerError::MalformedMerges {
                path: path.to_path_buf(),
                index: 0,
                merge: String::new(),
                reason: "model.merges is missing or not an array".into(),
            });
        }
    };

    let mut specials = Specials::default();
    if let Some(Value::Array(added)) = root.get("added_tokens") {
        for item in added {
            let (Some(content), Some(id)) = (item.get("content").and_then(Value::as_str), item.get("id").and_then(Value::as_u64)) else {
                return Err(TokenizerError::MalformedVocab {
                    path: path.to_path_buf(),
                    reason: format!("added token without content and id: {item}"),
                });
            };
            let id = id_u32(id, path)?;
            let special = item.get("special").and_then(Value::as_bool).unwrap_or(false);
            specials.added.push((content.to_owned(), id, special));
        }
    }
    // Start/end tokens from the post-processor (RobertaProcessing: cls/sep).
    if let Some(pp) = root.get("post_processor") {
        if let Some(cls) = pp.get("cls").and_then(|c| c.get(0)).and_then(Value::as_str) {
            specials.bos = cls.to_owned();
        }
        if let Some(sep) = pp.get("sep").and_then(|c| c.get(0)).and_then(Value::as_str) {
            specials.eos = sep.to_owned();
        }
    }
    if let Some(unk) = model.get("unk_token").and_then(Value::as_str) {
        specials.unk = unk.to_owned();
    }
    if let Some(pad) = root.get("padding").and_then(|p| p.get("pad_token")).and_then(Value::as_str) {
        specials.pad = Some(pad.to_owned());
    }
    Ok((vocab, merges, specials))
}

fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.to_path_buf(), source })
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_file(path)?;
    serde_json::from_str(&text).map(Some).map_err(|source| TokenizerError::Json { path: path.to_path_buf(), source })
}

fn id_u32(id: u64, path: &Path) -> Result<u32> {
    u32::try_from(id)
        .map_err(|_| TokenizerError::MalformedVocab { path: path.to_path_buf(), reason: format!("token id {id} does not fit in 32 bits") })
}

fn parse_vocab(text: &str, path: &Path) -> Result<HashMap<String, u32>> {
    let value: Value = serde_json::from_str(text).map_err(|source| TokenizerError::Json { path: path.to_path_buf(), source })?;
    vocab_from_value(&value, path)
}

fn vocab_from_value(value: &Value, path: &Path) -> Result<HashMap<String, u32>> {
    let Value::Object(map) = value else {
        return Err(TokenizerError::MalformedVocab { path: path.to_path_buf(), reason: "expected a JSON object of token → id".into() });
    };
    let mut vocab = HashMap::with_capacity(map.len());
    for (token, id) in map {
        let id = id.as_u64().ok_or_else(|| TokenizerError::MalformedVocab {
            path: path.to_path_buf(),
            reason: format!("id of {token:?} is {id}, expected a non-negative integer"),
        })?;
        vocab.insert(token.clone(), id_u32(id, path)?);
    }
    Ok(vocab)
}

/// merges.txt as the slow tokenizer reads it: trimmed, a leading `#version` line skipped, at
/// most 48894 merges, each two space-separated symbols.
fn parse_merges_txt(text: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let mut lines = text.trim().split('\n').peekable();
    if lines.peek().is_some_and(|l| l.starts_with("#version")) {
        lines.next();
    }
    lines
        .take(SLOW_MERGE_LIMIT)
        .enumerate()
        .map(|(i, line)| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_owned(), b.to_owned())),
                _ => Err(TokenizerError::MalformedMerges {
                    path: path.to_path_buf(),
                    index: i + 1,
                    merge: line.to_owned(),
                    reason: "expected two space-separated symbols".into(),
                }),
            }
        })
        .collect()
}

fn merge_from_value(item: &Value, index: usize, path: &Path) -> Result<(String, String)> {
    let bad = |reason: &str| TokenizerError::MalformedMerges {
        path: path.to_path_buf(),
        index: index + 1,
        merge: item.to_string(),
        reason: reason.into(),
    };
    match item {
        Value::String(s) => {
            let mut parts = s.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
                _ => Err(bad("expected \"left right\"")),
            }
        }
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(a), Value::String(b)] => Ok((a.clone(), b.clone())),
            _ => Err(bad("expected a pair of strings")),
        },
        _ => Err(bad("expected a string or a pair of strings")),
    }
}

/// A special-token entry: `"<|endoftext|>"`, `{"content": "<|endoftext|>", ...}` or `null`.
fn token_content(value: &Value) -> Option<Option<String>> {
    match value {
        Value::Null => Some(None),
        Value::String(s) => Some(Some(s.clone())),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(|s| Some(s.to_owned())),
        _ => None,
    }
}

/// Reads `tokenizer_config.json`, then `special_tokens_map.json` (which wins, as in
/// transformers), then `added_tokens.json`, over `base`.
fn read_specials(dir: &Path, mut specials: Specials) -> Result<Specials> {
    let config_path = dir.join("tokenizer_config.json");
    let map_path = dir.join("special_tokens_map.json");
    for (path, is_config) in [(&config_path, true), (&map_path, false)] {
        let Some(json) = read_json(path)? else {
            continue;
        };
        for (key, role, slot) in
            [("bos_token", "bos", &mut specials.bos), ("eos_token", "eos", &mut specials.eos), ("unk_token", "unk", &mut specials.unk)]
        {
            // A null start/end/unknown token keeps CLIP's default.
            if let Some(Some(content)) = json.get(key).and_then(token_content) {
                *slot = content;
                specials.sources.insert(role, path.clone());
            }
        }
        if let Some(pad) = json.get("pad_token").and_then(token_content) {
            specials.pad = pad;
            specials.sources.insert("pad", path.clone());
        }
        if !is_config {
            continue;
        }
        if let Some(n) = json.get("model_max_length").and_then(Value::as_f64) {
            // transformers writes ~1e30 for "no limit"; keep CLIP's 77 then.
            if (1.0..=1e9).contains(&n) {
                specials.model_max_length = n as usize;
            }
        }
        if let Some(Value::Object(decoder)) = json.get("added_tokens_decoder") {
            for (id, entry) in decoder {
                let parsed = id.parse::<u64>().ok().zip(entry.get("content").and_then(Value::as_str));
                let Some((id, content)) = parsed else {
                    return Err(TokenizerError::MalformedVocab {
                        path: path.clone(),
                        reason: format!("added_tokens_decoder entry {id:?} needs a numeric id and a content"),
                    });
                };
                let special = entry.get("special").and_then(Value::as_bool).unwrap_or(false);
                specials.added.push((content.to_owned(), id_u32(id, path)?, special));
            }
        }
    }
    let added_path = dir.join("added_tokens.json");
    if let Some(json) = read_json(&added_path)? {
        let Value::Object(map) = json else {
            return Err(TokenizerError::MalformedVocab { path: added_path, reason: "expected a JSON object of token → id".into() });
        };
        for (content, id) in map {
            let Some(id) = id.as_u64() else {
                return Err(TokenizerError::MalformedVocab {
                    path: added_path,
                    reason: format!("id of {content:?} is {id}, expected a non-negative integer"),
                });
            };
            if !specials.added.iter().any(|(c, _, _)| *c == content) {
                specials.added.push((content, id_u32(id, &added_path)?, false));
            }
        }
    }
    Ok(specials)
}
