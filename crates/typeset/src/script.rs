//! Which writing system a text is in: a small, local classification by code-point block
//! (plantain-ocr has its own; the two are to be unified later).

use std::fmt;

/// A writing system the typesetter knows a preferred font for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Script {
    Latin,
    Cyrillic,
    Greek,
    Arabic,
    Hebrew,
    Devanagari,
    Thai,
    /// Chinese characters (hanzi, kanji, hanja).
    Han,
    /// Japanese hiragana and katakana.
    Kana,
    Hangul,
}

impl Script {
    /// All scripts, in declaration order.
    pub const ALL: [Script; 10] = [
        Script::Latin,
        Script::Cyrillic,
        Script::Greek,
        Script::Arabic,
        Script::Hebrew,
        Script::Devanagari,
        Script::Thai,
        Script::Han,
        Script::Kana,
        Script::Hangul,
    ];

    /// Whether the script is written right to left.
    pub fn is_rtl(self) -> bool {
        matches!(self, Script::Arabic | Script::Hebrew)
    }

    /// Whether the script is one of the CJK family (set with a Noto Sans CJK face).
    pub fn is_cjk(self) -> bool {
        matches!(self, Script::Han | Script::Kana | Script::Hangul)
    }

    /// The script's English name.
    pub fn name(self) -> &'static str {
        match self {
            Script::Latin => "Latin",
            Script::Cyrillic => "Cyrillic",
            Script::Greek => "Greek",
            Script::Arabic => "Arabic",
            Script::Hebrew => "Hebrew",
            Script::Devanagari => "Devanagari",
            Script::Thai => "Thai",
            Script::Han => "Han",
            Script::Kana => "Japanese kana",
            Script::Hangul => "Hangul",
        }
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The script of one character; `None` for characters shared by scripts (spaces, digits,
/// punctuation, symbols, combining marks) and for scripts outside [`Script`].
pub fn script_of_char(c: char) -> Option<Script> {
    let u = c as u32;
    let script = match u {
        0x41..=0x5A | 0x61..=0x7A | 0xAA | 0xBA => Script::Latin,
        0xC0..=0x24F if u != 0xD7 && u != 0xF7 => Script::Latin,
        0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF | 0xAB30..=0xAB6F => Script::Latin,
        0xFF21..=0xFF3A | 0xFF41..=0xFF5A => Script::Latin,
        0x370..=0x3FF | 0x1F00..=0x1FFF => Script::Greek,
        0x400..=0x52F | 0x1C80..=0x1C8F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
        0x591..=0x5FF | 0xFB1D..=0xFB4F => Script::Hebrew,
        0x600..=0x6FF | 0x750..=0x77F | 0x8A0..=0x8FF => Script::Arabic,
        0xFB50..=0xFDFF | 0xFE70..=0xFEFF => Script::Arabic,
        0x900..=0x97F | 0xA8E0..=0xA8FF => Script::Devanagari,
        0xE00..=0xE7F => Script::Thai,
        0x3040..=0x309F | 0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Kana,
        0x1B000..=0x1B16F => Script::Kana,
        0x1100..=0x11FF | 0x3130..=0x318F | 0xA960..=0xA97F | 0xAC00..=0xD7FF => Script::Hangul,
        0xFFA0..=0xFFDC => Script::Hangul,
        0x2E80..=0x2FDF | 0x3005 | 0x3007 | 0x3021..=0x3029 | 0x3038..=0x303B => Script::Han,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF => Script::Han,
        _ => return None,
    };
    Some(script)
}

/// The scripts that occur in `text`, each once, in the order of [`Script`].
pub fn scripts_in(text: &str) -> Vec<Script> {
    let mut seen = [false; Script::ALL.len()];
    for script in text.chars().filter_map(script_of_char) {
        seen[script as usize] = true;
    }
    Script::ALL.into_iter().filter(|s| seen[*s as usize]).collect()
}

/// The main script of `text`: the one with the most letters, except that any kana makes a
/// text Japanese ([`Script::Kana`]: Japanese mixes kanji with kana, and kana marks it as
/// Japanese). `None` when no letter belongs to a known script.
pub fn script_of(text: &str) -> Option<Script> {
    let mut counts = [0usize; Script::ALL.len()];
    for script in text.chars().filter_map(script_of_char) {
        counts[script as usize] += 1;
    }
    if counts[Script::Kana as usize] > 0 {
        return Some(Script::Kana);
    }
    Script::ALL.into_iter().filter(|s| counts[*s as usize] > 0).max_by_key(|s| (counts[*s as usize], std::cmp::Reverse(*s as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_script() {
        let cases = [
            ("Café déjà vu", Script::Latin),
            ("Привет мир", Script::Cyrillic),
            ("Καλημέρα", Script::Greek),
            ("مرحبا بالعالم", Script::Arabic),
            ("שלום עולם", Script::Hebrew),
            ("नमस्ते दुनिया", Script::Devanagari),
            ("สวัสดีชาวโลก", Script::Thai),
            ("你好世界", Script::Han),
            ("こんにちは世界", Script::Kana),
            ("안녕하세요 세계", Script::Hangul),
        ];
        for (text, want) in cases {
            assert_eq!(script_of(text), Some(want), "{text}");
        }
    }

    #[test]
    fn kana_marks_japanese_even_when_kanji_dominate() {
        assert_eq!(script_of("東京都庁の前"), Some(Script::Kana));
        assert_eq!(script_of("東京都庁前"), Some(Script::Han));
    }

    #[test]
    fn shared_characters_have_no_script() {
        assert_eq!(script_of("123 !? — ×"), None);
        assert_eq!(script_of_char('\u{301}'), None);
        assert_eq!(scripts_in("Hi 你好 42"), vec![Script::Latin, Script::Han]);
    }

    #[test]
    fn ties_go_to_the_first_script() {
        assert_eq!(script_of("ab бв"), Some(Script::Latin));
    }
}
