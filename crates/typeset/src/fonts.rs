//! Which font family sets which part of a text: Noto per script, and for Chinese characters the
//! regional Noto Sans CJK face that the text's language implies.

use crate::script::{Script, script_of_char, scripts_in};

/// The families the typesetter prefers, all from Debian's fonts-noto-core and fonts-noto-cjk
/// (`scripts/setup-fonts.sh`).
pub const PREFERRED_FAMILIES: [&str; 8] = [
    "Noto Sans",
    "Noto Sans Arabic",
    "Noto Sans Hebrew",
    "Noto Sans Devanagari",
    "Noto Sans Thai",
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK KR",
];

/// The regional face of Noto Sans CJK (the same characters differ in form by region).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cjk {
    Sc,
    Tc,
    Hk,
    Jp,
    Kr,
}

impl Cjk {
    fn family(self) -> &'static str {
        match self {
            Cjk::Sc => "Noto Sans CJK SC",
            Cjk::Tc => "Noto Sans CJK TC",
            Cjk::Hk => "Noto Sans CJK HK",
            Cjk::Jp => "Noto Sans CJK JP",
            Cjk::Kr => "Noto Sans CJK KR",
        }
    }

    /// The face for `text`: the language hint when it names a CJK language (ja, ko, zh-TW or
    /// zh-Hant, zh-HK, other zh), else kana → JP, Hangul → KR, else SC.
    pub(crate) fn for_text(text: &str, language: Option<&str>) -> Cjk {
        if let Some(cjk) = language.and_then(Cjk::from_language) {
            return cjk;
        }
        let scripts = scripts_in(text);
        if scripts.contains(&Script::Kana) {
            Cjk::Jp
        } else if scripts.contains(&Script::Hangul) {
            Cjk::Kr
        } else {
            Cjk::Sc
        }
    }

    fn from_language(tag: &str) -> Option<Cjk> {
        let tag = tag.to_ascii_lowercase().replace('_', "-");
        let mut parts = tag.split('-');
        let cjk = match parts.next()? {
            "ja" | "jpn" => Cjk::Jp,
            "ko" | "kor" => Cjk::Kr,
            "zh" | "zho" | "chi" | "yue" | "cmn" => {
                let rest: Vec<&str> = parts.collect();
                if rest.contains(&"hk") || rest.contains(&"mo") {
                    Cjk::Hk
                } else if rest.contains(&"tw") || rest.contains(&"hant") {
                    Cjk::Tc
                } else {
                    Cjk::Sc
                }
            }
            _ => return None,
        };
        Some(cjk)
    }
}

/// The preferred family for letters of `script`.
pub(crate) fn family_for(script: Script, cjk: Cjk) -> &'static str {
    match script {
        Script::Latin | Script::Cyrillic | Script::Greek => "Noto Sans",
        Script::Arabic => "Noto Sans Arabic",
        Script::Hebrew => "Noto Sans Hebrew",
        Script::Devanagari => "Noto Sans Devanagari",
        Script::Thai => "Noto Sans Thai",
        Script::Han | Script::Kana | Script::Hangul => cjk.family(),
    }
}

/// Splits `text` into runs, each with the preferred family of its letters. Characters shared by
/// scripts (spaces, digits, punctuation, marks) join the run before them, or the first run
/// when the text starts with them; a text without letters is one run in Noto Sans. What a
/// family lacks is found by cosmic-text's fallback.
pub(crate) fn family_runs(text: &str, cjk: Cjk) -> Vec<(&str, &'static str)> {
    let mut runs: Vec<(usize, &'static str)> = Vec::new();
    for (i, c) in text.char_indices() {
        let Some(script) = script_of_char(c) else {
            continue;
        };
        let family = family_for(script, cjk);
        match runs.last() {
            Some((_, last)) if *last == family => {}
            None => runs.push((0, family)),
            Some(_) => runs.push((i, family)),
        }
    }
    if runs.is_empty() {
        runs.push((0, "Noto Sans"));
    }
    let ends = runs.iter().skip(1).map(|(start, _)| *start).chain([text.len()]);
    runs.iter().zip(ends).map(|((start, family), end)| (&text[*start..end], *family)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_face_follows_the_text_and_the_hint() {
        assert_eq!(Cjk::for_text("你好世界", None), Cjk::Sc);
        assert_eq!(Cjk::for_text("こんにちは世界", None), Cjk::Jp);
        assert_eq!(Cjk::for_text("안녕하세요 世界", None), Cjk::Kr);
        assert_eq!(Cjk::for_text("東京", Some("ja-JP")), Cjk::Jp);
        assert_eq!(Cjk::for_text("台北", Some("zh-Hant-TW")), Cjk::Tc);
        assert_eq!(Cjk::for_text("香港", Some("zh_HK")), Cjk::Hk);
        assert_eq!(Cjk::for_text("你好", Some("en")), Cjk::Sc);
    }

    #[test]
    fn runs_split_by_family_and_keep_shared_characters() {
        let runs = family_runs("«Hi» مرحبا 你好!", Cjk::Sc);
        assert_eq!(runs, vec![("«Hi» ", "Noto Sans"), ("مرحبا ", "Noto Sans Arabic"), ("你好!", "Noto Sans CJK SC")]);
        assert_eq!(runs.iter().map(|r| r.0).collect::<String>(), "«Hi» مرحبا 你好!");
        assert_eq!(family_runs("123", Cjk::Jp), vec![("123", "Noto Sans")]);
    }
}
