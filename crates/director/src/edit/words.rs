//! Reading an edit instruction: words become a typed [`Instruction`] — one operation, what it
//! applies to ([`Selector`]), and the regions to keep unchanged. Rule-based on purpose: every
//! decision can be printed (`--explain`) and every refusal names what is supported.

use plantain_core::ImageSize;
use plantain_world::{ColorName, Shape};
use serde::Serialize;

/// Light and colour changes done as exact image maths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Adjustment {
    Warmer,
    Cooler,
    Brighter,
    Darker,
    MoreContrast,
    LessContrast,
    MoreSaturation,
    LessSaturation,
    BlackAndWhite,
    Sepia,
    FilmGrain,
    Vignette,
    /// Day for night: darker and bluer.
    Night,
    /// A colour cast over the region ("make it red").
    Tint(ColorName),
}

/// Where a light or colour change applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Whole,
    Subject,
    Background,
}

/// A named place in the picture (thirds of its width and height).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Position {
    /// 0 = left, 1 = centre, 2 = right; None: any column.
    pub column: Option<u8>,
    /// 0 = top, 1 = middle, 2 = bottom; None: any row.
    pub row: Option<u8>,
}

impl Position {
    pub const CENTRE: Position = Position { column: Some(1), row: Some(1) };

    /// The words for it ("top left", "left", "centre").
    pub fn describe(self) -> String {
        let col = self.column.map(|c| ["left", "centre", "right"][c as usize]);
        let row = self.row.map(|r| ["top", "middle", "bottom"][r as usize]);
        match (row, col) {
            (Some("middle"), Some("centre")) => "centre".into(),
            (Some(r), Some(c)) => format!("{r} {c}"),
            (Some(r), None) => r.into(),
            (None, Some(c)) => c.into(),
            (None, None) => "anywhere".into(),
        }
    }
}

/// Which of several objects: "the biggest", "the small one".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Extreme {
    Largest,
    Smallest,
}

/// What an instruction points at, in words.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Selector {
    pub color: Option<ColorName>,
    pub shape: Option<Shape>,
    /// A noun that is neither a colour nor a shape of the synthetic world ("cup").
    pub noun: Option<String>,
    pub position: Option<Position>,
    pub extreme: Option<Extreme>,
    /// The words it was read from.
    pub words: String,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.color.is_none() && self.shape.is_none() && self.noun.is_none() && self.position.is_none() && self.extreme.is_none()
    }
}

/// Which part of the background.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackgroundPart {
    All,
    Sky,
    Ground,
}

/// One operation an instruction asks for.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    Adjust {
        adjustment: Adjustment,
        scope: Scope,
    },
    BlurBackground,
    Recolor {
        target: Selector,
        color: ColorName,
    },
    RecolorBackground {
        part: BackgroundPart,
        color: ColorName,
    },
    ReplaceBackground {
        prompt: String,
    },
    Remove {
        target: Selector,
    },
    Add {
        prompt: String,
        color: Option<ColorName>,
        shape: Option<Shape>,
        position: Position,
        large: Option<bool>,
    },
    Replace {
        target: Selector,
        prompt: String,
    },
    Restyle {
        style: String,
    },
    Outpaint,
    /// The background made transparent: the subject's mask becomes the alpha channel.
    CutOut,
    /// The whole picture enlarged by a super-resolution model to a size of the table (2K, 4K;
    /// None: the request's size, else 2K).
    Upscale {
        size: Option<ImageSize>,
    },
    Fuse {
        subjects: Vec<usize>,
        into: usize,
        position: Position,
        large: Option<bool>,
    },
    /// The quoted text `old`, wherever the picture shows it, rewritten as `new`.
    ReplaceText {
        old: String,
        new: String,
    },
    /// The quoted text `old` taken out of the picture, the ground behind it rebuilt.
    RemoveText {
        old: String,
    },
    /// Words no rule reads, for a model that edits by instruction (FLUX.2 [klein]): the whole
    /// picture is its to change, after the words as given; only the pixels it actually changed
    /// are kept.
    Instruct,
}

impl Operation {
    /// Its name in plans and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Adjust { .. } => "adjust",
            Operation::BlurBackground => "blur background",
            Operation::Recolor { .. } => "recolour",
            Operation::RecolorBackground { .. } => "recolour background",
            Operation::ReplaceBackground { .. } => "replace background",
            Operation::Remove { .. } => "remove",
            Operation::Add { .. } => "add",
            Operation::Replace { .. } => "replace",
            Operation::Restyle { .. } => "restyle",
            Operation::Outpaint => "outpaint",
            Operation::Upscale { .. } => "upscale",
            Operation::CutOut => "cut out",
            Operation::Fuse { .. } => "fuse",
            Operation::ReplaceText { .. } => "replace text",
            Operation::RemoveText { .. } => "remove text",
            Operation::Instruct => "instruction",
        }
    }
}

/// An instruction as understood.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Instruction {
    pub operation: Operation,
    /// "keep X unchanged": regions no operation may touch.
    pub keep: Vec<Selector>,
    pub text: String,
}

/// What the planner can do, for refusals.
pub const SUPPORTED: &str = "supported edits: change or replace the background (\"make the background green\", \
\"replace the background with a beach\"); light and colour (warmer, cooler, brighter, darker, more or less contrast, \
more or less saturation, black and white, sepia, film grain, vignette — on the whole picture, the subject or the \
background); blur the background; recolour an object (\"make the red circle blue\"); remove an object (\"remove the \
star on the left\"); add an object at a place (\"add a blue square at the top right\"); replace an object (\"replace \
the circle with a heart\"); restyle the whole picture (\"in the style of a watercolour\"); extend to another aspect \
ratio (\"extend the scene\" with a new aspect ratio); remove the background (a transparent cut-out); upscale to 2K or 4K \
(\"upscale to 4K\"); with several images, \"put the subject of image 1 into image 2 \
on the left\"; rewrite or remove a text the picture shows, quoted (\"replace the text 'SALE' with 'SOLDES'\", \
\"remove the word 'SALE'\"); and \"keep X unchanged\" to protect a region";

/// Why an instruction could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    #[error("the edit instruction is empty; {SUPPORTED}")]
    Empty,
    #[error("could not tell what to do from \"{0}\"; {SUPPORTED}")]
    Unsupported(String),
    #[error("\"{text}\": {reason}")]
    Incomplete { text: String, reason: String },
}

fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace("black and white", "black_and_white")
        .replace("black & white", "black_and_white")
        .replace("film grain", "film_grain")
        .replace("depth of field", "depth_of_field")
        .replace("super resolution", "super_resolution")
        .replace("super-resolution", "super_resolution")
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '\''))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn color_word(t: &str) -> Option<ColorName> {
    ColorName::ALL.into_iter().find(|c| c.all_words().any(|w| w == t))
}

fn shape_word(t: &str) -> Option<Shape> {
    let singular = t.strip_suffix('s').filter(|s| s.len() > 2).unwrap_or(t);
    Shape::ALL.into_iter().find(|s| s.all_words().any(|w| w == t || w == singular))
}

const STOP: &[&str] = &[
    "the", "a", "an", "one", "object", "thing", "shape", "picture", "image", "photo", "of", "in", "on", "at", "to", "from", "please",
    "and", "that", "this", "it", "is", "with", "into", "its", "side", "corner", "part", "there", "which", "by", "some", "color", "colour",
    "so", "looks", "look", "entire", "whole", "can", "you", "me", "for", "just", "only",
];
const POSITION_WORDS: &[&str] = &[
    "left",
    "right",
    "top",
    "bottom",
    "upper",
    "lower",
    "middle",
    "centre",
    "center",
    "central",
    "above",
    "below",
    "leftmost",
    "rightmost",
];

/// Position words among `t`: "top left", "on the right", "in the middle", "bottom".
fn position(t: &[String]) -> Option<Position> {
    let has = |w: &str| t.iter().any(|x| x == w);
    let column = if has("left") || has("leftmost") {
        Some(0)
    } else if has("right") || has("rightmost") {
        Some(2)
    } else {
        None
    };
    let row = if has("top") || has("upper") {
        Some(0)
    } else if has("bottom") || has("lower") {
        Some(2)
    } else {
        None
    };
    let centre = has("middle") || has("centre") || has("center") || has("central");
    match (column, row, centre) {
        (None, None, false) => None,
        (None, None, true) => Some(Position::CENTRE),
        (c, None, true) => Some(Position { column: c, row: Some(1) }),
        (None, r, true) => Some(Position { column: Some(1), row: r }),
        (c, r, _) => Some(Position { column: c, row: r }),
    }
}

fn extreme(t: &[String]) -> Option<Extreme> {
    let any = |ws: &[&str]| t.iter().any(|x| ws.contains(&x.as_str()));
    if any(&["biggest", "largest", "big", "large", "huge"]) {
        Some(Extreme::Largest)
    } else if any(&["smallest", "small", "tiny", "little"]) {
        Some(Extreme::Smallest)
    } else {
        None
    }
}

/// Words for the picture's main object: "the subject" means the largest candidate.
const MAIN: &[&str] = &["subject", "foreground", "main", "person", "figure", "protagonist"];

/// Reads a noun phrase: "the red circle on the left", "the biggest one", "the cup".
pub fn selector(t: &[String]) -> Selector {
    let size_words = ["biggest", "largest", "big", "large", "huge", "smallest", "small", "tiny", "little", "one", "ones"];
    let noun = t
        .iter()
        .rfind(|w| {
            !STOP.contains(&w.as_str())
                && !POSITION_WORDS.contains(&w.as_str())
                && !size_words.contains(&w.as_str())
                && !MAIN.contains(&w.as_str())
                && color_word(w).is_none()
                && shape_word(w).is_none()
        })
        .cloned();
    Selector {
        color: t.iter().find_map(|w| color_word(w)),
        shape: t.iter().find_map(|w| shape_word(w)),
        noun,
        position: position(t),
        extreme: extreme(t).or_else(|| has_any(t, MAIN).then_some(Extreme::Largest)),
        words: t.join(" "),
    }
}

/// Splits "..., keep the blue square unchanged" into the instruction and its protected parts.
fn split_keep(t: &[String]) -> (Vec<String>, Vec<Selector>) {
    let ends = ["unchanged", "untouched", "intact", "same", "alone", "as_is"];
    let mut main = Vec::new();
    let mut keep = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let starts =
            matches!(t[i].as_str(), "keep" | "preserve" | "protect") || (t[i] == "don't" && t.get(i + 1).is_some_and(|x| x == "touch"));
        if starts {
            let skip = if t[i] == "don't" { 2 } else { 1 };
            let mut j = i + skip;
            let mut words = Vec::new();
            while j < t.len() && !ends.contains(&t[j].as_str()) && t[j] != "and" && t[j] != "but" {
                words.push(t[j].clone());
                j += 1;
            }
            if j < t.len() && ends.contains(&t[j].as_str()) {
                j += 1;
            }
            let s = selector(&words);
            if !s.is_empty() {
                keep.push(s);
            }
            i = j;
            continue;
        }
        main.push(t[i].clone());
        i += 1;
    }
    while main.last().is_some_and(|w| w == "and" || w == "but" || w == "while") {
        main.pop();
    }
    (main, keep)
}

/// Reads an instruction. `images` is how many pictures came with it (fusion needs two or more).
pub fn read(text: &str, images: usize) -> Result<Instruction, WordsError> {
    let all = tokens(text);
    if all.is_empty() {
        return Err(WordsError::Empty);
    }
    if let Some(operation) = super::quoted::text_edit(text) {
        return Ok(Instruction { operation, keep: vec![], text: text.trim().to_string() });
    }
    let (t, keep) = split_keep(&all);
    let operation = operation(&t, text, images)?.ok_or_else(|| WordsError::Unsupported(text.trim().to_string()))?;
    Ok(Instruction { operation, keep, text: text.trim().to_string() })
}

/// Reads one kind of operation from the words (None: not this kind).
type Matcher = fn(&[String], usize) -> Option<Operation>;

fn operation(t: &[String], text: &str, images: usize) -> Result<Option<Operation>, WordsError> {
    let matchers: [Matcher; 11] =
        [fuse, upscale, cut_out, restyle, outpaint, blur_background, background, adjust, remove, replace_or_recolor, add];
    for m in matchers {
        if let Some(op) = m(t, images) {
            return check_complete(op, text).map(Some);
        }
    }
    Ok(None)
}

fn check_complete(op: Operation, text: &str) -> Result<Operation, WordsError> {
    let missing = match &op {
        Operation::Remove { target } | Operation::Recolor { target, .. } | Operation::Replace { target, .. } if target.is_empty() => {
            Some("say which object (a colour, a shape, a position or a size: \"the red circle on the left\")")
        }
        Operation::Add { prompt, .. } if prompt.is_empty() => Some("say what to add (\"add a blue square at the top right\")"),
        _ => None,
    };
    match missing {
        Some(reason) => Err(WordsError::Incomplete { text: text.trim().into(), reason: reason.into() }),
        None => Ok(op),
    }
}

fn has(t: &[String], w: &str) -> bool {
    t.iter().any(|x| x == w)
}

fn has_any(t: &[String], ws: &[&str]) -> bool {
    t.iter().any(|x| ws.contains(&x.as_str()))
}

/// Index of the first word of `ws`.
fn find(t: &[String], ws: &[&str]) -> Option<usize> {
    t.iter().position(|x| ws.contains(&x.as_str()))
}

/// "image 2", "picture 1", "the second image" → 0-based index.
fn image_refs(t: &[String]) -> Vec<usize> {
    let ordinals = ["first", "second", "third", "fourth", "fifth"];
    let mut refs = Vec::new();
    for (i, w) in t.iter().enumerate() {
        if matches!(w.as_str(), "images" | "pictures" | "photos") {
            let numbers = t[i + 1..].iter().take_while(|n| n.parse::<usize>().is_ok() || *n == "and");
            refs.extend(numbers.filter_map(|n| n.parse::<usize>().ok()).filter(|&n| n >= 1).map(|n| n - 1));
        } else if matches!(w.as_str(), "image" | "picture" | "photo" | "img") {
            if let Some(n) = t.get(i + 1).and_then(|n| n.parse::<usize>().ok()).filter(|&n| n >= 1) {
                refs.push(n - 1);
            } else if let Some(k) = i.checked_sub(1).and_then(|j| ordinals.iter().position(|o| *o == t[j])) {
                refs.push(k);
            }
        }
    }
    refs
}

fn fuse(t: &[String], images: usize) -> Option<Operation> {
    if images < 2 {
        return None;
    }
    let refs = image_refs(t);
    let verbs = ["put", "place", "insert", "add", "combine", "merge", "fuse", "move", "bring", "paste"];
    // The scene is the image named after "into/onto/in" (else the last one named, else the
    // last image); the subjects are the others named (else every other image).
    let into_at = find(t, &["into", "onto", "inside"]).or_else(|| find(t, &["in", "on", "to"]));
    let named_after = |i: usize| image_refs(&t[i..]).first().copied();
    let into = match into_at.and_then(named_after) {
        Some(k) => k,
        None if refs.len() >= 2 => *refs.last()?,
        None if refs.is_empty() && !has_any(t, &verbs) => return None,
        None => images - 1,
    };
    let mut subjects: Vec<usize> = refs.iter().copied().filter(|&k| k != into).collect();
    subjects.dedup();
    if subjects.is_empty() {
        subjects = (0..images).filter(|&k| k != into).collect();
    }
    let after_into = into_at.map(|i| &t[i..]).unwrap_or(t);
    let position = position(after_into).unwrap_or(Position::CENTRE);
    let large = extreme(t).map(|e| e == Extreme::Largest);
    Some(Operation::Fuse { subjects, into, position, large })
}

fn restyle(t: &[String], _: usize) -> Option<Operation> {
    let styles = [
        "watercolor",
        "watercolour",
        "oil",
        "sketch",
        "cartoon",
        "anime",
        "pixel",
        "impressionist",
        "cubist",
        "pencil",
        "comic",
        "ukiyo",
        "pastel",
        "charcoal",
        "mosaic",
        "lego",
        "claymation",
        "vaporwave",
        "cyberpunk",
        "baroque",
        "painting",
        "drawing",
    ];
    let style_at = find(t, &["style", "restyle"]);
    let style_word = find(t, &styles);
    if style_at.is_none() && style_word.is_none() {
        return None;
    }
    let start = match (style_at, style_word) {
        (Some(i), _) if t.get(i + 1).is_some_and(|w| w == "of") => i + 2,
        (Some(i), _) => i + 1,
        (None, Some(j)) => j.saturating_sub(1),
        (None, None) => return None,
    };
    let style: Vec<&str> =
        t[start.min(t.len())..].iter().map(String::as_str).filter(|w| !matches!(*w, "a" | "an" | "the" | "as")).collect();
    let style = if style.is_empty() { t.join(" ") } else { style.join(" ") };
    Some(Operation::Restyle { style })
}

/// "remove the background", "make the background transparent", "cut out the subject".
fn cut_out(t: &[String], _: usize) -> Option<Operation> {
    let backgrounds = ["background", "backdrop", "bg"];
    let transparent = has_any(t, &["transparent", "transparency"]);
    // What is removed is the background itself ("remove the background"), not an object in it.
    let removal = find(t, &["remove", "delete", "erase", "strip"])
        .and_then(|i| t[i + 1..].iter().find(|w| !matches!(w.as_str(), "the" | "its" | "this" | "that" | "whole")))
        .is_some_and(|w| backgrounds.contains(&w.as_str()));
    let cut = (has(t, "cut") && has(t, "out")) || has_any(t, &["cutout", "isolate"]);
    (transparent || removal || cut).then_some(Operation::CutOut)
}

/// "upscale to 4K", "enlarge it", "increase the resolution", "make it 2K", "super-resolution".
fn upscale(t: &[String], _: usize) -> Option<Operation> {
    let size = t.iter().find_map(|w| match w.as_str() {
        "2k" => Some(ImageSize::S2K),
        "4k" | "uhd" => Some(ImageSize::S4K),
        _ => None,
    });
    let verb = has_any(t, &["upscale", "upscaled", "upsample", "enlarge", "superresolution", "super_resolution", "upres"]);
    let resolution =
        has_any(t, &["resolution", "res"]) && has_any(t, &["increase", "higher", "raise", "boost", "more", "enhance", "improve"]);
    let made_size = size.is_some() && has_any(t, &["make", "turn", "convert", "to", "at", "in"]);
    (verb || resolution || made_size).then_some(Operation::Upscale { size })
}

fn outpaint(t: &[String], _: usize) -> Option<Operation> {
    has_any(t, &["extend", "outpaint", "expand", "widen", "uncrop", "zoom"]).then_some(Operation::Outpaint)
}

fn blur_background(t: &[String], _: usize) -> Option<Operation> {
    let blur = has_any(t, &["blur", "blurred", "blurry", "bokeh", "defocus", "depth_of_field"]);
    (blur && (has(t, "background") || has(t, "bokeh") || has(t, "depth_of_field"))).then_some(Operation::BlurBackground)
}

/// "make the background green", "replace the background with a snowy mountain", "make the sky
/// pink" — unless the words ask for light or colour maths ("make the background darker").
fn background(t: &[String], _: usize) -> Option<Operation> {
    let at = find(t, &["background", "backdrop", "sky", "ground", "floor"])?;
    if adjustment(t).is_some() {
        return None;
    }
    let part = match t[at].as_str() {
        "sky" => BackgroundPart::Sky,
        "ground" | "floor" => BackgroundPart::Ground,
        _ => BackgroundPart::All,
    };
    // Words after "with/to/into/for" (or after the background word) say what it becomes.
    let rest_from = find(t, &["with", "to", "into", "for", "by"]).filter(|&i| i > at).map(|i| i + 1).unwrap_or(at + 1);
    let rest: Vec<String> = t[rest_from.min(t.len())..].iter().filter(|w| !STOP.contains(&w.as_str())).cloned().collect();
    let color_before = t[..at].iter().find_map(|w| color_word(w));
    let only_color = rest.iter().all(|w| color_word(w).is_some() || w == "background" || w == "plain" || w == "solid");
    match (rest.iter().find_map(|w| color_word(w)).or(color_before), only_color) {
        (Some(color), true) => Some(Operation::RecolorBackground { part, color }),
        _ if !rest.is_empty() => Some(Operation::ReplaceBackground { prompt: rest.join(" ") }),
        _ => None,
    }
}

fn adjustment(t: &[String]) -> Option<Adjustment> {
    let table: [(&[&str], Adjustment); 12] = [
        (&["black_and_white", "grayscale", "greyscale", "monochrome", "b&w"], Adjustment::BlackAndWhite),
        (&["sepia", "vintage"], Adjustment::Sepia),
        (&["film_grain", "grain", "grainy", "noise"], Adjustment::FilmGrain),
        (&["vignette", "vignetting"], Adjustment::Vignette),
        (&["warmer", "warm", "warmth", "sunset", "cozier", "cosier"], Adjustment::Warmer),
        (&["cooler", "cool", "colder", "cold", "chilly"], Adjustment::Cooler),
        (&["desaturate", "desaturated", "muted", "washed", "duller", "dull", "faded"], Adjustment::LessSaturation),
        (&["saturated", "saturation", "vivid", "vibrant", "punchier", "colourful", "colorful", "saturate"], Adjustment::MoreSaturation),
        (&["contrast", "contrasty"], Adjustment::MoreContrast),
        (&["brighter", "brighten", "lighten", "lighter", "bright", "exposure"], Adjustment::Brighter),
        (&["darker", "darken", "dim", "dimmer", "dark", "moodier"], Adjustment::Darker),
        (&["flatter", "flat"], Adjustment::LessContrast),
    ];
    if has_any(t, &["night", "nighttime", "midnight", "moonlit", "moonlight"]) {
        return Some(Adjustment::Night);
    }
    let less = has_any(t, &["less", "lower", "reduce", "decrease", "softer", "lessen"]);
    let found = table.iter().find(|(words, _)| has_any(t, words)).map(|(_, a)| *a)?;
    Some(match (found, less) {
        (Adjustment::MoreContrast, true) => Adjustment::LessContrast,
        (Adjustment::MoreSaturation, true) => Adjustment::LessSaturation,
        (Adjustment::Brighter, true) if has(t, "exposure") => Adjustment::Darker,
        (a, _) => a,
    })
}

/// "make it red", "make the whole picture blue", "give it a green tint": a colour cast.
fn tint(t: &[String]) -> Option<Adjustment> {
    let color = t.iter().rev().find_map(|w| color_word(w))?;
    let whole = ["it", "everything", "picture", "image", "photo", "scene", "all", "tint", "cast", "tone", "hue", "wash"];
    let others = t.iter().filter(|w| {
        !STOP.contains(&w.as_str())
            && color_word(w).is_none()
            && !whole.contains(&w.as_str())
            && !matches!(w.as_str(), "make" | "turn" | "give" | "add" | "tinted" | "more")
    });
    (others.count() == 0 && has_any(t, &whole)).then_some(Adjustment::Tint(color))
}

fn adjust(t: &[String], _: usize) -> Option<Operation> {
    let adjustment = adjustment(t).or_else(|| tint(t))?;
    let scope = if has_any(t, &["background", "backdrop", "surroundings"]) {
        Scope::Background
    } else if has_any(t, &["subject", "foreground", "objects", "object", "person", "shapes"]) {
        Scope::Subject
    } else {
        Scope::Whole
    };
    Some(Operation::Adjust { adjustment, scope })
}

fn remove(t: &[String], _: usize) -> Option<Operation> {
    let verbs = ["remove", "delete", "erase", "eliminate", "drop", "clear", "rid", "lose", "ditch"];
    let at = find(t, &verbs).or_else(|| {
        let take = t.iter().position(|w| w == "take" || w == "cut")?;
        t.get(take + 1).filter(|w| *w == "away" || *w == "out").map(|_| take + 1)
    })?;
    Some(Operation::Remove { target: selector(&t[at + 1..]) })
}

/// "replace X with Y", "swap X for Y", "turn X into Y", "make X blue", "change X to blue".
fn replace_or_recolor(t: &[String], _: usize) -> Option<Operation> {
    let verb = find(
        t,
        &[
            "replace",
            "swap",
            "exchange",
            "substitute",
            "turn",
            "make",
            "change",
            "paint",
            "colour",
            "color",
            "recolour",
            "recolor",
            "convert",
            "transform",
        ],
    )?;
    let link = t[verb + 1..].iter().position(|w| matches!(w.as_str(), "with" | "for" | "into" | "to" | "by")).map(|i| i + verb + 1);
    let (target_words, new_words) = match link {
        Some(l) => (&t[verb + 1..l], &t[l + 1..]),
        None => {
            // "make the circle blue": the last colour word is the new colour.
            let last = t.iter().rposition(|w| color_word(w).is_some()).filter(|&i| i > verb + 1)?;
            (&t[verb + 1..last], &t[last..])
        }
    };
    let new: Vec<String> = new_words.iter().filter(|w| !STOP.contains(&w.as_str())).cloned().collect();
    let target = selector(target_words);
    if new.is_empty() {
        return None;
    }
    let only_color = new.iter().all(|w| color_word(w).is_some());
    if only_color {
        let color = new.iter().rev().find_map(|w| color_word(w))?;
        return Some(Operation::Recolor { target, color });
    }
    Some(Operation::Replace { target, prompt: new.join(" ") })
}

fn add(t: &[String], _: usize) -> Option<Operation> {
    let at = find(t, &["add", "put", "place", "insert", "draw", "include", "paint"])?;
    let rest = &t[at + 1..];
    // What is added ends where its place begins.
    let place_at = rest.iter().position(|w| matches!(w.as_str(), "at" | "on" | "in" | "to" | "near" | "towards")).unwrap_or(rest.len());
    let what: Vec<String> = rest[..place_at].iter().filter(|w| !STOP.contains(&w.as_str())).cloned().collect();
    let place = position(&rest[place_at..]).or_else(|| position(rest)).unwrap_or(Position::CENTRE);
    let what_sel = selector(&rest[..place_at]);
    let prompt: Vec<String> =
        what.iter().filter(|w| !matches!(w.as_str(), "big" | "large" | "small" | "tiny" | "little" | "huge")).cloned().collect();
    Some(Operation::Add {
        prompt: prompt.join(" "),
        color: what_sel.color,
        shape: what_sel.shape,
        position: place,
        large: what_sel.extreme.map(|e| e == Extreme::Largest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(text: &str) -> Operation {
        read(text, 1).unwrap_or_else(|e| panic!("{text}: {e}")).operation
    }

    #[test]
    fn backgrounds() {
        assert_eq!(op("make the background green"), Operation::RecolorBackground { part: BackgroundPart::All, color: ColorName::Green });
        assert_eq!(op("Change the sky to pink."), Operation::RecolorBackground { part: BackgroundPart::Sky, color: ColorName::Pink });
        assert_eq!(op("a blue background please"), Operation::RecolorBackground { part: BackgroundPart::All, color: ColorName::Blue });
        assert_eq!(op("replace the background with a snowy mountain"), Operation::ReplaceBackground { prompt: "snowy mountain".into() });
        assert_eq!(op("make the background darker"), Operation::Adjust { adjustment: Adjustment::Darker, scope: Scope::Background });
        assert_eq!(op("blur the background"), Operation::BlurBackground);
    }

    #[test]
    fn light_and_colour() {
        assert_eq!(op("make it warmer"), Operation::Adjust { adjustment: Adjustment::Warmer, scope: Scope::Whole });
        assert_eq!(op("make the lighting warmer"), Operation::Adjust { adjustment: Adjustment::Warmer, scope: Scope::Whole });
        assert_eq!(op("reduce the contrast"), Operation::Adjust { adjustment: Adjustment::LessContrast, scope: Scope::Whole });
        assert_eq!(op("black and white"), Operation::Adjust { adjustment: Adjustment::BlackAndWhite, scope: Scope::Whole });
        assert_eq!(op("brighten the subject"), Operation::Adjust { adjustment: Adjustment::Brighter, scope: Scope::Subject });
        assert_eq!(op("make it red"), Operation::Adjust { adjustment: Adjustment::Tint(ColorName::Red), scope: Scope::Whole });
        assert_eq!(op("make it night"), Operation::Adjust { adjustment: Adjustment::Night, scope: Scope::Whole });
    }

    #[test]
    fn objects() {
        let Operation::Remove { target } = op("remove the cup on the left") else { panic!() };
        assert_eq!((target.noun.as_deref(), target.position), (Some("cup"), Some(Position { column: Some(0), row: None })));
        let Operation::Recolor { target, color } = op("make the red circle blue") else { panic!() };
        assert_eq!((target.color, target.shape, color), (Some(ColorName::Red), Some(Shape::Circle), ColorName::Blue));
        let Operation::Recolor { target, color } = op("turn the biggest one yellow") else { panic!() };
        assert_eq!((target.extreme, color), (Some(Extreme::Largest), ColorName::Yellow));
        let Operation::Replace { target, prompt } = op("replace the circle with a green heart") else { panic!() };
        assert_eq!((target.shape, prompt.as_str()), (Some(Shape::Circle), "green heart"));
        let Operation::Add { color, shape, position, .. } = op("add a blue square at the top right") else { panic!() };
        assert_eq!((color, shape, position), (Some(ColorName::Blue), Some(Shape::Square), Position { column: Some(2), row: Some(0) }));
        let i = read("remove the star, keep the blue square unchanged", 1).unwrap();
        assert_eq!(i.keep.len(), 1);
        assert_eq!(i.keep[0].shape, Some(Shape::Square));
    }

    #[test]
    fn upscaling() {
        assert_eq!(op("upscale to 4K"), Operation::Upscale { size: Some(ImageSize::S4K) });
        assert_eq!(op("Upscale this to 2k please"), Operation::Upscale { size: Some(ImageSize::S2K) });
        assert_eq!(op("enlarge it"), Operation::Upscale { size: None });
        assert_eq!(op("increase the resolution"), Operation::Upscale { size: None });
        assert_eq!(op("make it 4K"), Operation::Upscale { size: Some(ImageSize::S4K) });
        assert_eq!(op("super-resolution"), Operation::Upscale { size: None });
        // Other words that mention size are not upscales.
        assert!(matches!(op("add a large blue square at the top right"), Operation::Add { .. }));
        assert_eq!(op("make it warmer"), Operation::Adjust { adjustment: Adjustment::Warmer, scope: Scope::Whole });
    }

    #[test]
    fn fusion_restyle_outpaint_and_refusals() {
        let f = read("put the subject of image 1 into the scene of image 2, on the left", 2).unwrap().operation;
        assert_eq!(f, Operation::Fuse { subjects: vec![0], into: 1, position: Position { column: Some(0), row: None }, large: None });
        let f = read("combine them: the shapes of images 1 and 2 into image 3", 3).unwrap().operation;
        assert!(matches!(f, Operation::Fuse { ref subjects, into: 2, .. } if subjects == &[0, 1]), "{f:?}");
        assert!(matches!(op("in the style of a watercolour painting"), Operation::Restyle { .. }));
        assert_eq!(op("extend the scene"), Operation::Outpaint);
        assert!(matches!(read("", 1), Err(WordsError::Empty)));
        assert!(matches!(read("sing me a song", 1), Err(WordsError::Unsupported(_))));
        assert!(matches!(read("remove it", 1), Err(WordsError::Incomplete { .. })));
        assert_eq!(op("remove the background"), Operation::CutOut);
        assert_eq!(op("make the background transparent"), Operation::CutOut);
        assert_eq!(op("cut out the subject"), Operation::CutOut);
        assert!(matches!(op("remove the red circle"), Operation::Remove { .. }));
        assert!(matches!(op("remove the star from the background"), Operation::Remove { .. }));
        let Operation::Recolor { target, .. } = op("make the subject blue") else { panic!() };
        assert_eq!((target.noun, target.extreme), (None, Some(Extreme::Largest)));
    }
}
