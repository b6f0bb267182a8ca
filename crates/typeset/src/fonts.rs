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

/// The style of the faces a text is set in: Noto Sans (the default) or Noto Serif (and Noto
/// Naskh Arabic), whose letters differ in form — a second chance for a reader that misreads
/// one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Face {
    #[default]
    Sans,
    Serif,
}

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
    fn family(self, face: Face) -> &'static str {
        match (self, face) {
            (Cjk::Sc, Face::Sans) => "Noto Sans CJK SC",
            (Cjk::Tc, Face::Sans) => "Noto Sans CJK TC",
            (Cjk::Hk, Face::Sans) => "Noto Sans CJK HK",
            (Cjk::Jp, Face::Sans) => "Noto Sans CJK JP",
            (Cjk::Kr, Face::Sans) => "Noto Sans CJK KR",
            (Cjk::Sc, Face::Serif) => "Noto Serif CJK SC",
            (Cjk::Tc, Face::Serif) => "Noto Serif CJK TC",
            (Cjk::Hk, Face::Serif) => "Noto Serif CJK HK",
            (Cjk::Jp, Face::Serif) => "Noto Serif CJK JP",
            (Cjk::Kr, Face::Serif) => "Noto Serif CJK KR",
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

/// The family letters without a script of their own (digits, signs) start in.
pub(crate) fn base_family(face: Face) -> &'static str {
    match face {
        Face::Sans => "Noto Sans",
        Face::Serif => "Noto Serif",
    }
}

/// The preferred family for letters of `script`.
pub(crate) fn family_for(script: Script, cjk: Cjk, face: Face) -> &'static str {
    match (script, face) {
        (Script::Latin | Script::Cyrillic | Script::Greek, _) => base_family(face),
        (Script::Arabic, Face::Sans) => "Noto Sans Arabic",
        (Script::Arabic, Face::Serif) => "Noto Naskh Arabic",
        (Script::Hebrew, Face::Sans) => "Noto Sans Hebrew",
        (Script::Hebrew, Face::Serif) => "Noto Serif Hebrew",
        (Script::Devanagari, Face::Sans) => "Noto Sans Devanagari",
        (Script::Devanagari, Face::Serif) => "Noto Serif Devanagari",
        (Script::Thai, Face::Sans) => "Noto Sans Thai",
        (Script::Thai, Face::Serif) => "Noto Serif Thai",
        (Script::Han | Script::Kana | Script::Hangul, _) => cjk.family(face),
    }
}

/// Splits `text` into runs, each with the preferred family of its letters. Characters shared by
/// scripts (spaces, digits, punctuation, marks) join the run before them, or the first run
/// when the text starts with them; a text without letters is one run in Noto Sans. What a
/// family lacks is found by cosmic-text's fallback.
pub(crate) fn family_runs(text: &str, cjk: Cjk, face: Face) -> Vec<(&str, &'static str)> {
    let mut runs: Vec<(usize, &'static str)> = Vec::new();
    for (i, c) in text.char_indices() {
        let Some(script) = script_of_char(c) else {
            continue;
        };
        let family = family_for(script, cjk, face);
        match runs.last() {
            Some((_, last)) if *last == family => {}
            None => runs.push((0, family)),
            Some(_) => runs.push((i, family)),
        }
    }
    if runs.is_empty() {
        runs.push((0, base_family(face)));
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
        let runs = family_runs("«Hi» مرحبا 你好!", Cjk::Sc, Face::Sans);
        assert_eq!(runs, vec![("«Hi» ", "Noto Sans"), ("مرحبا ", "Noto Sans Arabic"), ("你好!", "Noto Sans CJK SC")]);
        assert_eq!(runs.iter().map(|r| r.0).collect::<String>(), "«Hi» مرحبا 你好!");
        assert_eq!(family_runs("123", Cjk::Jp, Face::Sans), vec![("123", "Noto Sans")]);
    }
}
