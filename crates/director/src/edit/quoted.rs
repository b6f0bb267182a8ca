//! Reading edits of a text the picture shows: "replace the text 'SALE' with 'SOLDES'",
//! "change the word “Open” to “Closed”", "remove the word \"SALE\"". The texts are quoted
//! (straight or curly, single or double, «guillemets», „low-high“, 「corner brackets」); the
//! words around them say what to do. Case and spacing inside the quotes are kept as typed.

use super::words::Operation;

/// Opening and closing quote marks.
const QUOTES: [(char, char); 11] = [
    ('"', '"'),
    ('\'', '\''),
    ('\u{201C}', '\u{201D}'),
    ('\u{2018}', '\u{2019}'),
    ('\u{201E}', '\u{201C}'),
    ('\u{201E}', '\u{201D}'),
    ('\u{AB}', '\u{BB}'),
    ('\u{BB}', '\u{AB}'),
    ('\u{2039}', '\u{203A}'),
    ('\u{300C}', '\u{300D}'),
    ('\u{300E}', '\u{300F}'),
];

/// Verbs that rewrite a text; "substitute A for B" puts A where B was.
const REWRITE: &[&str] = &[
    "replace",
    "change",
    "swap",
    "turn",
    "rewrite",
    "edit",
    "update",
    "correct",
    "fix",
    "rename",
    "make",
    "substitute",
    "switch",
    "retype",
];
const REMOVE: &[&str] = &["remove", "delete", "erase", "clear", "rid", "eliminate", "hide", "scrub", "wipe"];
/// Words between the two texts that say the second replaces the first.
const LINKS: &[&str] = &["with", "to", "into", "by", "for", "as", "->", "→", "=>", "say", "says", "read", "reads"];

/// The text edit the words ask for, if they quote a text and ask to rewrite or remove it.
pub fn text_edit(text: &str) -> Option<Operation> {
    let quoted = quoted_spans(text);
    let words = |range: std::ops::Range<usize>| -> Vec<String> {
        text[range]
            .to_lowercase()
            .split(|c: char| c.is_whitespace() || ",.:;!?()".contains(c))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let has = |ws: &[String], set: &[&str]| ws.iter().any(|w| set.contains(&w.as_str()));
    match quoted.as_slice() {
        [first, second, ..] => {
            let before = words(0..first.start);
            let between = words(first.end..second.start);
            let linked = has(&between, LINKS) || between.is_empty();
            if !(linked && (has(&before, REWRITE) || has(&between, &["->", "→", "=>"]) || before.is_empty())) {
                return None;
            }
            let (a, b) = (first.text.clone(), second.text.clone());
            let substitute = before.iter().any(|w| w == "substitute") && between.iter().any(|w| w == "for");
            let (old, new) = if substitute { (b, a) } else { (a, b) };
            Some(Operation::ReplaceText { old, new })
        }
        [only] => {
            let before = words(0..only.start);
            let take_out = before.windows(2).any(|w| matches!((w[0].as_str(), w[1].as_str()), ("take", "out" | "away") | ("get", "rid")));
            (has(&before, REMOVE) || take_out).then(|| Operation::RemoveText { old: only.text.clone() })
        }
        [] => None,
    }
}

/// A quoted text: its bytes in the instruction (quotes included) and what is inside, trimmed.
#[derive(Debug, PartialEq)]
struct Quoted {
    start: usize,
    end: usize,
    text: String,
}

/// The quoted texts, in order. A quote mark opens at the start or after a space or bracket
/// (so the apostrophe of "don't" opens nothing) and closes before the end, a space or
/// punctuation; empty quotes are skipped.
fn quoted_spans(text: &str) -> Vec<Quoted> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        let opens = i == 0 || chars[i - 1].1.is_whitespace() || "([{:—–-".contains(chars[i - 1].1);
        let closers: Vec<char> = QUOTES.iter().filter(|(o, _)| *o == c).map(|(_, close)| *close).collect();
        if !opens || closers.is_empty() {
            i += 1;
            continue;
        }
        let close_at = (i + 1..chars.len()).find(|&j| {
            let ends = j + 1 == chars.len() || chars[j + 1].1.is_whitespace() || ",.;:!?)]}".contains(chars[j + 1].1);
            closers.contains(&chars[j].1) && ends
        });
        let Some(j) = close_at else {
            i += 1;
            continue;
        };
        let inner = text[start + c.len_utf8()..chars[j].0].trim();
        if !inner.is_empty() {
            found.push(Quoted { start, end: chars[j].0 + chars[j].1.len_utf8(), text: inner.to_string() });
        }
        i = j + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(old: &str, new: &str) -> Option<Operation> {
        Some(Operation::ReplaceText { old: old.into(), new: new.into() })
    }

    #[test]
    fn rewrites_in_usual_wordings() {
        assert_eq!(text_edit("replace the text 'SALE' with 'SOLDES'"), replace("SALE", "SOLDES"));
        assert_eq!(text_edit("change the word \"Open\" to \"Closed\""), replace("Open", "Closed"));
        assert_eq!(text_edit("Change the word \u{201C}Open\u{201D} to \u{201C}Closed\u{201D}."), replace("Open", "Closed"));
        assert_eq!(text_edit("replace \u{2018}SALE\u{2019} by \u{2018}SOLDES\u{2019} please"), replace("SALE", "SOLDES"));
        assert_eq!(text_edit("\"SALE\" → \"SOLDES\""), replace("SALE", "SOLDES"));
        assert_eq!(text_edit("make the sign say «ОТКРЫТО» instead of «ЗАКРЫТО»"), None, "order unclear: not guessed");
        assert_eq!(text_edit("change 'don't stop' to 'keep going'"), replace("don't stop", "keep going"));
        assert_eq!(text_edit("substitute 'B' for 'A'"), replace("A", "B"));
        assert_eq!(text_edit("rename „Straße“ to „Weg“"), replace("Straße", "Weg"));
        assert_eq!(text_edit("replace the title 「你好」 with 「再见」"), replace("你好", "再见"));
    }

    #[test]
    fn removals_and_non_text_edits() {
        assert_eq!(text_edit("remove the word 'SALE'"), Some(Operation::RemoveText { old: "SALE".into() }));
        assert_eq!(text_edit("take out the text \"50% OFF\""), Some(Operation::RemoveText { old: "50% OFF".into() }));
        assert_eq!(text_edit("replace the circle with a heart"), None);
        assert_eq!(text_edit("add the text 'SALE' at the top"), None);
        assert_eq!(text_edit("remove the cat's collar"), None);
        assert_eq!(text_edit("replace '' with 'x'"), None);
    }

    #[test]
    fn quotes_open_and_close_at_word_edges() {
        let spans = quoted_spans("it's 'a b' and \"c\"");
        assert_eq!(spans.iter().map(|q| q.text.as_str()).collect::<Vec<_>>(), ["a b", "c"]);
        assert!(quoted_spans("'unclosed").is_empty());
    }
}
