//! Text cleanup before pre-tokenisation: the part of `ftfy.fix_text` that Hugging Face's slow
//! `CLIPTokenizer` runs (and OpenAI CLIP was trained with), then `whitespace_clean` and
//! lowercasing.
//!
//! ftfy's fixers are reproduced in ftfy's order and repeated until nothing changes, as ftfy
//! does: HTML entities (only in segments without `<`), C1 controls read as Windows-1252, Latin
//! ligatures, full/half-width forms, curly quotes, line breaks, terminal escapes, control
//! characters, NFC. Left out: ftfy's mojibake repair (`fix_encoding`: re-decoding text such as
//! `cafÃ©` that was decoded with the wrong codec). It is heuristic, needs ftfy's large tables,
//! and does not touch text that was typed rather than mis-decoded.

use unicode_normalization::UnicodeNormalization;

use crate::entities::ENTITIES;

/// ftfy fixes text in segments of at most this many characters (its `max_decode_length`).
const MAX_SEGMENT_CHARS: usize = 1_000_000;

/// `whitespace_clean(ftfy.fix_text(text)).lower()` as in `CLIPTokenizer._tokenize`.
pub(crate) fn clean(text: &str) -> String {
    let fixed = fix_text(text);
    let mut out = String::with_capacity(fixed.len());
    for word in fixed.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    // Rust's to_lowercase, like Python's str.lower, uses the full mappings and the final-sigma rule.
    out.to_lowercase()
}

/// `ftfy.fix_text` minus the mojibake repair.
pub(crate) fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // ftfy turns HTML unescaping off for good once a segment contains '<' (it replaces its config).
    let mut unescape = true;
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        if let Some((i, _)) = rest[..end].char_indices().nth(MAX_SEGMENT_CHARS) {
            end = i;
        }
        let segment = &rest[..end];
        if segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
        rest = &rest[end..];
    }
    out
}

fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_owned();
    // ftfy loops until a fixpoint; a few rounds cover any real input ("&amp;amp;amp;").
    for _ in 0..16 {
        let before = text.clone();
        if unescape {
            text = unescape_html(&text);
        }
        text = text.chars().map(c1_to_windows_1252).flat_map(|c| ligature(c).map_or_else(|| Chars::One(c), Chars::Str)).collect();
        text = fix_character_width(&text);
        text = text.chars().map(uncurl).collect();
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text.retain(|c| !is_removed_control(c));
        text = text.nfc().collect();
        if text == before {
            break;
        }
    }
    text
}

/// One char or a short replacement string, so a `flat_map` can yield either without allocating.
enum Chars {
    One(char),
    Str(&'static str),
}

impl Iterator for Chars {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        match self {
            Chars::One(c) => {
                let c = *c;
                *self = Chars::Str("");
                Some(c)
            }
            Chars::Str(s) => {
                let c = s.chars().next()?;
                *s = &s[c.len_utf8()..];
                Some(c)
            }
        }
    }
}

/// ftfy `unescape_html`: entities matching `&#?[0-9A-Za-z]{1,24};`.
fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        match entity_at(tail) {
            Some((len, replacement)) => {
                out.push_str(&replacement);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// If `s` (starting with '&') begins with an entity ftfy decodes: its length and replacement.
fn entity_at(s: &str) -> Option<(usize, String)> {
    let bytes = s.as_bytes();
    let numeric = bytes.get(1) == Some(&b'#');
    let start = if numeric { 2 } else { 1 };
    let name_len = bytes[start..].iter().take_while(|b| b.is_ascii_alphanumeric()).count();
    if name_len == 0 || name_len > 24 || bytes.get(start + name_len) != Some(&b';') {
        return None;
    }
    let name = &s[start..start + name_len];
    let len = start + name_len + 1;
    if numeric {
        let c = char_reference(name)?;
        // ftfy keeps the original when the result still holds a ';' (it reads that as a partial decode).
        (!c.contains(';')).then_some((len, c))
    } else {
        let i = ENTITIES.binary_search_by(|(k, _)| (*k).cmp(name)).ok()?;
        Some((len, ENTITIES[i].1.to_owned()))
    }
}

/// Python's `html.unescape` for `&#NNN;` / `&#xHHH;`; None where it would not decode all of it.
fn char_reference(body: &str) -> Option<String> {
    let (digits, radix) = match body.strip_prefix(['x', 'X']) {
        Some(hex) => (hex, 16),
        None => (body, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Saturate: anything past U+10FFFF decodes to U+FFFD anyway.
    let num = digits.chars().fold(0u64, |n, c| (n * u64::from(radix) + u64::from(c.to_digit(radix).unwrap_or(0))).min(0x11_0000));
    let num = u32::try_from(num).unwrap_or(0x11_0000);
    // html._invalid_charrefs
    match num {
        0x00 => return Some("\u{fffd}".into()),
        0x0d => return Some("\r".into()),
        0x80..=0x9f => {
            let c = windows_1252(num as u8);
            if c as u32 != num {
                return Some(c.to_string());
            }
        }
        _ => {}
    }
    if (0xd800..=0xdfff).contains(&num) || num > 0x10ffff {
        return Some("\u{fffd}".into());
    }
    // html._invalid_codepoints decode to nothing.
    let invalid = matches!(num, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef) || (num & 0xfffe) == 0xfffe;
    if invalid {
        return Some(String::new());
    }
    char::from_u32(num).map(String::from)
}

/// The character Windows-1252 gives byte 0x80..=0x9f ("sloppy": undefined bytes map to themselves).
fn windows_1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{2c6}', '\u{2030}', '\u{160}',
        '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}',
        '\u{2013}', '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
    ];
    match b {
        0x80..=0x9f => HIGH[usize::from(b - 0x80)],
        _ => char::from(b),
    }
}

/// ftfy `fix_c1_controls`.
fn c1_to_windows_1252(c: char) -> char {
    match u8::try_from(u32::from(c)) {
        Ok(b @ 0x80..=0x9f) => windows_1252(b),
        _ => c,
    }
}

/// ftfy `fix_latin_ligatures`.
fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// ftfy `fix_character_width`: U+3000 to a space, U+FF01..U+FFEF to their NFKC forms.
fn fix_character_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ffef}' => out.extend(std::iter::once(c).nfkc()),
            _ => out.push(c),
        }
    }
    out
}

/// ftfy `uncurl_quotes`.
fn uncurl(c: char) -> char {
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
        '\u{201c}'..='\u{201f}' => '"',
        _ => c,
    }
}

/// ftfy `fix_line_breaks`.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// ftfy `remove_terminal_escapes`: `\x1b[` digits/semicolons, then one ASCII letter.
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("\u{1b}[") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let params = after.bytes().take_while(|b| b.is_ascii_digit() || *b == b';').count();
        if after.as_bytes().get(params).is_some_and(u8::is_ascii_alphabetic) {
            rest = &after[params + 1..];
        } else {
            out.push('\u{1b}');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// ftfy `remove_control_chars`.
fn is_removed_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
        | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftfy_examples() {
        // Outputs of ftfy 6.3.1 fix_text.
        assert_eq!(fix_text("a\u{93}quoted\u{94} x"), "a\"quoted\" x");
        assert_eq!(fix_text("\u{1b}[31mred\u{1b}[0m text"), "red text");
        assert_eq!(fix_text("a\0b\u{7}c\u{feff}d\u{200b}e"), "abcd\u{200b}e");
        assert_eq!(fix_text("&amp;amp;amp;"), "&");
        assert_eq!(fix_text("a &amp; b\n<c> &amp;\nd &amp;"), "a & b\n<c> &amp;\nd &amp;");
        assert_eq!(fix_text("\u{2028}x\u{2029}y\u{85}z"), "\nx\ny\u{2026}z");
        assert_eq!(fix_text("ｶﾞｷﾞ"), "ガギ");
        assert_eq!(fix_text("ǈubljana ǲ"), "Ljubljana Dz");
        assert_eq!(
            fix_text("&EACUTE;COLE &NTILDE; &nTILDE; &#59; &#0; &#128; &#12abc; &#x1F600; &#1;x"),
            "ÉCOLE Ñ &nTILDE; &#59; \u{fffd} € &#12abc; 😀 x"
        );
        assert_eq!(fix_text("Broken text&hellip; it&#x2019;s ﬂubberiﬁc!"), "Broken text… it's flubberific!");
    }

    #[test]
    fn whitespace_and_case() {
        assert_eq!(clean("  A\t B\r\n\u{a0}C  "), "a b c");
        assert_eq!(clean(""), "");
        assert_eq!(clean("ΟΔΥΣΣΕΥΣ"), "οδυσσευς");
    }
}
