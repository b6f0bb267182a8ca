//! The plan of a picture: what the prompt asks for, in parts the loop can act on and check.

use serde::Serialize;

use super::world::{WorldPrompt, read_world_prompt};

/// Text the prompt quotes, to be set into the picture (not drawn by the model).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuotedText {
    pub text: String,
    /// Where the prompt puts it ("top", "bottom", "centre"), if it says.
    pub placement: Option<String>,
}

/// A prompt, planned.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The prompt as given.
    pub prompt: String,
    /// What the model is asked to draw: the prompt without its quoted text.
    pub draw_prompt: String,
    pub negative: Option<String>,
    /// The output's exact pixels.
    pub size: (u32, u32),
    /// The scene, when the prompt is in the synthetic world's words.
    pub world: Option<WorldPrompt>,
    pub texts: Vec<QuotedText>,
}

/// Words before a quotation that only introduce it ("with the text", "that says").
const TEXT_INTRODUCERS: &[&str] = &[
    "with the text",
    "with the words",
    "with text",
    "that says",
    "that reads",
    "which says",
    "saying",
    "reading",
    "the text",
    "text",
    "says",
    "reads",
    "with",
];
/// Placement words after (or before) a quotation.
const TEXT_PLACES: &[(&str, &str)] = &[
    ("at the top", "top"),
    ("across the top", "top"),
    ("at the bottom", "bottom"),
    ("across the bottom", "bottom"),
    ("in the middle", "centre"),
    ("in the center", "centre"),
    ("in the centre", "centre"),
];

impl Plan {
    /// Plans `prompt` for a `width` x `height` output.
    pub fn new(prompt: &str, negative: Option<&str>, width: u32, height: u32) -> Plan {
        let (draw_prompt, texts) = split_quotes(prompt);
        let world = if texts.is_empty() { read_world_prompt(prompt) } else { read_world_prompt(&draw_prompt) };
        Plan { prompt: prompt.to_string(), draw_prompt, negative: negative.map(str::to_string), size: (width, height), world, texts }
    }

    /// The plan in words (`--explain`, thought parts, text parts).
    pub fn explain(&self) -> String {
        let mut lines = vec![format!("prompt: \"{}\"", self.prompt)];
        if self.draw_prompt != self.prompt {
            lines.push(format!("the model draws: \"{}\"", self.draw_prompt));
        }
        lines.push(format!("output: {}x{} pixels exactly", self.size.0, self.size.1));
        match &self.world {
            Some(w) => lines.push(format!("scene (the synthetic world's words): {}", describe_scene(w))),
            None => lines.push("scene: free text (the world's scene checker does not apply)".into()),
        }
        for t in &self.texts {
            let place = t.placement.as_deref().unwrap_or("the calmest region");
            lines.push(format!("text to set: \"{}\" at {place} (typeset, then read back by OCR)", t.text));
        }
        if let Some(n) = &self.negative {
            lines.push(format!("avoid: {n}"));
        }
        lines.join("\n")
    }
}

fn describe_scene(w: &WorldPrompt) -> String {
    let objects: Vec<String> = w
        .scene
        .objects
        .iter()
        .zip(&w.stated.absolute)
        .map(|(o, &abs)| {
            let place = if abs { format!(" at {:?}-{:?}", o.v, o.h).to_lowercase() } else { String::new() };
            format!("{} {} {}{place}", o.size.word(), o.color.word(), o.shape.word())
        })
        .collect();
    let background = match w.scene.background {
        plantain_world::Background::Solid(c) => format!("{} background", c.word()),
        plantain_world::Background::Split { sky, ground } => format!("{} sky, {} ground", sky.word(), ground.word()),
    };
    let relations =
        if w.stated.relations.is_empty() { String::new() } else { format!("; {} stated relation(s)", w.stated.relations.len()) };
    format!("{}; {background}{relations}", objects.join(", "))
}

/// The prompt without its quotations (and the words that introduce them), and the quotations.
fn split_quotes(prompt: &str) -> (String, Vec<QuotedText>) {
    let mut rest = String::new();
    let mut texts = Vec::new();
    let mut chars = prompt.char_indices().peekable();
    let mut last = 0;
    while let Some((i, c)) = chars.next() {
        let close = match c {
            '"' => '"',
            '“' => '”',
            '«' => '»',
            '「' => '」',
            _ => continue,
        };
        let Some((j, _)) = chars.by_ref().find(|&(_, d)| d == close) else { break };
        let text = prompt[i + c.len_utf8()..j].trim().to_string();
        let before = strip_introducer(&prompt[last..i]);
        let after_start = j + close.len_utf8();
        let (placement, skip) = place_after(&prompt[after_start..]);
        rest.push_str(before.trim_end());
        rest.push(' ');
        last = after_start + skip;
        if !text.is_empty() {
            texts.push(QuotedText { text, placement });
        }
    }
    rest.push_str(&prompt[last..]);
    let draw = rest.split_whitespace().collect::<Vec<_>>().join(" ");
    let draw = draw.replace(" ,", ",").trim_matches(|c: char| c == ',' || c.is_whitespace()).to_string();
    (draw, texts)
}

fn strip_introducer(s: &str) -> &str {
    let t = s.trim_end();
    let lower = t.to_lowercase();
    for w in TEXT_INTRODUCERS {
        if lower.ends_with(w) && (lower.len() == w.len() || lower[..lower.len() - w.len()].ends_with(' ')) {
            return &t[..t.len() - w.len()];
        }
    }
    t
}

/// A placement phrase right after a quotation: its name and the bytes it spans.
fn place_after(s: &str) -> (Option<String>, usize) {
    let lead = s.len() - s.trim_start().len();
    let lower = s.trim_start().to_lowercase();
    for (phrase, name) in TEXT_PLACES {
        if lower.starts_with(phrase) {
            return (Some((*name).to_string()), lead + phrase.len());
        }
    }
    (None, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_is_set_not_drawn() {
        let p = Plan::new("a poster of a beach with the text \"SUMMER SALE\" at the top, 35mm photo", None, 1024, 768);
        assert_eq!(p.draw_prompt, "a poster of a beach, 35mm photo");
        assert_eq!(p.texts, vec![QuotedText { text: "SUMMER SALE".into(), placement: Some("top".into()) }]);
        let p = Plan::new("a café sign that says “Crème brûlée” and a cat", None, 512, 512);
        assert_eq!(p.texts[0].text, "Crème brûlée");
        assert_eq!(p.draw_prompt, "a café sign and a cat");
        let p = Plan::new("a red star on a blue background", None, 256, 256);
        assert!(p.texts.is_empty() && p.world.is_some());
        assert!(p.explain().contains("scene (the synthetic world's words)"));
    }
}
