//! Sets text into a picture: spelled right by construction (the characters given are shaped,
//! never drawn by a model), in any script, legible and placed well.
//!
//! - **Shaping and layout** by cosmic-text: HarfRust shaping (Arabic joining, Devanagari
//!   conjuncts, Thai marks), Unicode bidi (right-to-left lines run right to left), word
//!   wrapping to at most [`TextSpec::max_lines`] lines, font fallback; glyphs rasterised by swash.
//! - **Fonts**: Noto per script ([`PREFERRED_FAMILIES`]); Chinese characters in the regional
//!   Noto Sans CJK face the text implies (kana → JP, Hangul → KR, else SC; a language hint
//!   overrides). A character no font has is refused ([`TypesetError::NoFont`]), never drawn as
//!   a box.
//! - **Size**: the largest that fits the box, from [`MIN_SIZE_PX`] up to [`MAX_SIZE_SHARE`] of
//!   the picture's shorter side, found by bisection on the glyphs' ink.
//! - **Place**: a box, a named place, or [`Placement::Auto`]: centred, left or right in the
//!   bottom, top or middle band, whichever needs the faintest backing panel (none, ideally),
//!   then has about the calmest ground under the text ([`calmness`], [`about_as_calm`]), then
//!   comes first in that order.
//! - **Colour**: the text colour reaches a WCAG 2 contrast ratio of [`MIN_CONTRAST`] against the
//!   pixels under and around the glyphs, robust to outliers ([`OUTLIER_SHARE`]); when neither the
//!   user's colour nor black nor white does, a rounded panel is drawn behind the text.
//! - Glyphs and panel are composited in linear light; pixels outside [`Typeset::bbox`] are
//!   left as they were.

mod colour;
mod draw;
mod fonts;
mod layout;
mod place;
mod script;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use cosmic_text::fontdb::Database;
use cosmic_text::{Align as LineAlign, Weight};
use image::{Rgb, RgbImage};

pub use colour::{MIN_CONTRAST, OUTLIER_SHARE, contrast_ratio, luminance_contrast, relative_luminance};
pub use fonts::{Face, PREFERRED_FAMILIES};
pub use layout::{LINE_HEIGHT, MIN_SIZE_PX};
pub use place::{CALM_SLACK, MARGIN_SHARE, Placement, SIDE_WIDTH_SHARE, about_as_calm, calmness};
pub use script::{Script, script_of, script_of_char, scripts_in};

use colour::{Choice, Spread};
use draw::Coverage;
use fonts::Cjk;
use layout::{Engine, Fit, IRect, Laid, Missing, PANEL_PAD_EM, pad_px};
use place::{Align, Region};

/// Where [`Typesetter::new`] looks for fonts (Debian's font packages install under it).
pub const FONT_DIR: &str = "/usr/share/fonts";

/// The largest automatic size, as a share of the picture's shorter side.
pub const MAX_SIZE_SHARE: f32 = 0.1;

/// How far around the glyphs, in ems, the ground the text is read against reaches.
const GROUND_EM: f32 = 0.08;

/// A rectangle in pixels: x, y, width, height.
pub type Rect = (u32, u32, u32, u32);

/// How to set a text.
#[derive(Clone, Debug, PartialEq)]
pub struct TextSpec {
    pub placement: Placement,
    /// Lines the text may wrap to (forced line breaks count); default 2.
    pub max_lines: usize,
    /// Font size in pixels (at least [`MIN_SIZE_PX`]); `None`: as large as fits.
    pub size: Option<f32>,
    /// Text colour; `None`: black or white, whichever contrasts more.
    pub colour: Option<Rgb<u8>>,
    /// A BCP 47 language tag (`ja`, `zh-TW`, …); it picks the regional CJK face.
    pub language: Option<String>,
    /// Bold (the default: it holds up better on pictures) or regular.
    pub bold: bool,
    /// Sans (the default) or serif faces.
    pub face: Face,
}

impl Default for TextSpec {
    fn default() -> TextSpec {
        TextSpec { placement: Placement::Auto, max_lines: 2, size: None, colour: None, language: None, bold: true, face: Face::Sans }
    }
}

/// The panel drawn behind text that no colour alone made legible.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub rect: Rect,
    pub colour: Rgb<u8>,
    /// 0 to 1, composited in linear light.
    pub opacity: f32,
}

/// Where one glyph was drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacedGlyph {
    /// The bytes of the text it draws (line breaks in the text counted as one byte, `\n`).
    pub range: Range<usize>,
    /// The line it is on, from 0 at the top.
    pub line: usize,
    /// Its pen position (left edge of its advance) and baseline, in picture pixels.
    pub x: f32,
    pub baseline: f32,
    pub advance: f32,
    pub rtl: bool,
    /// Index into [`Typeset::fonts`].
    pub font: usize,
}

/// A picture with text set into it, and how it was set.
#[derive(Clone, Debug)]
pub struct Typeset {
    pub image: RgbImage,
    /// What was drawn on: the text's ink and the panel, if any. Every pixel outside is as it was.
    pub bbox: Rect,
    /// The text's ink alone.
    pub text_bbox: Rect,
    /// Where the text went (for [`Placement::Auto`], the band chosen).
    pub placement: Placement,
    /// The laid-out lines, top to bottom, in logical order.
    pub lines: Vec<String>,
    pub size_px: f32,
    pub colour: Rgb<u8>,
    /// The WCAG 2 contrast ratio between the text colour and its ground (panel included), the
    /// worst case after leaving out [`OUTLIER_SHARE`] of the ground's pixels at each end.
    pub contrast: f32,
    pub panel: Option<Panel>,
    /// The font families used, sorted.
    pub fonts: Vec<String>,
    pub glyphs: Vec<PlacedGlyph>,
}

#[derive(Debug, thiserror::Error)]
pub enum TypesetError {
    #[error("the text is empty")]
    Empty,
    #[error("{chars} characters do not fit in {max_lines} line(s) in the box {area:?} at {MIN_SIZE_PX} px or more")]
    TooLong { chars: usize, max_lines: usize, area: Rect },
    #[error("no installed font has a glyph for {character:?} ({script}); scripts/setup-fonts.sh installs the Noto fonts")]
    NoFont { script: String, character: char },
    #[error("bad box {area:?} on a {width}x{height} picture: {reason}")]
    BadBox { area: Rect, width: u32, height: u32, reason: &'static str },
    #[error("bad text spec: {0}")]
    BadSpec(String),
    #[error("cannot load fonts from {path}: {source}")]
    Fonts { path: PathBuf, source: std::io::Error },
}

/// Sets text into pictures. Loading fonts takes a while: make one and share it (it is
/// `Send + Sync`; calls to [`Typesetter::set`] take turns on its font system).
pub struct Typesetter {
    engine: Mutex<Engine>,
}

impl Default for Typesetter {
    fn default() -> Typesetter {
        Typesetter::new()
    }
}

impl Typesetter {
    /// A typesetter with the fonts installed under [`FONT_DIR`].
    pub fn new() -> Typesetter {
        let mut db = Database::new();
        db.load_fonts_dir(FONT_DIR);
        tracing::debug!(faces = db.len(), dir = FONT_DIR, "fonts loaded");
        Typesetter { engine: Mutex::new(Engine::new(db)) }
    }

    /// A typesetter with only the given fonts: files (.ttf, .otf, .ttc) or folders of them.
    pub fn with_fonts<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Result<Typesetter, TypesetError> {
        let mut db = Database::new();
        for path in paths {
            let path = path.as_ref();
            let loaded = match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {
                    db.load_fonts_dir(path);
                    Ok(())
                }
                Ok(_) => db.load_font_file(path),
                Err(e) => Err(e),
            };
            loaded.map_err(|source| TypesetError::Fonts { path: path.to_owned(), source })?;
        }
        Ok(Typesetter { engine: Mutex::new(Engine::new(db)) })
    }

    /// The [`PREFERRED_FAMILIES`] that are not installed.
    pub fn missing_families(&self) -> Vec<&'static str> {
        let engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
        let db = engine.db();
        let has = |name: &str| db.faces().any(|f| f.families.iter().any(|(n, _)| n == name));
        PREFERRED_FAMILIES.into_iter().filter(|f| !has(f)).collect()
    }

    /// Sets `text` into a copy of `image` as `spec` says.
    pub fn set(&self, image: &RgbImage, text: &str, spec: &TextSpec) -> Result<Typeset, TypesetError> {
        validate(image, text, spec)?;
        let text = normalise(text);
        let (width, height) = image.dimensions();
        let regions = place::regions(spec.placement, width, height);
        let (laid, families) = self.lay_out(&text, spec, &regions[0], (width, height))?;
        Ok(compose(image, &text, spec, &regions, Composed { laid, families }))
    }

    /// Shapes, checks and fits the text to a region's size; returns the layout and, per glyph
    /// face, its family.
    fn lay_out(
        &self,
        text: &str,
        spec: &TextSpec,
        region: &Region,
        (width, height): (u32, u32),
    ) -> Result<(Laid, Vec<(cosmic_text::fontdb::ID, String)>), TypesetError> {
        let mut engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
        let first = text.chars().find(|c| !c.is_whitespace()).unwrap_or(' ');
        if engine.db().is_empty() {
            let script = layout::missing_script(first);
            return Err(TypesetError::NoFont { script, character: first });
        }
        let cjk = Cjk::for_text(text, spec.language.as_deref());
        let weight = if spec.bold { Weight::BOLD } else { Weight::NORMAL };
        let mut buffer = engine.buffer(text, (cjk, spec.face), weight, line_align(region.across));
        if let Some(Missing(character)) = engine.missing(&mut buffer) {
            let script = layout::missing_script(character);
            return Err(TypesetError::NoFont { script, character });
        }
        let most = (MAX_SIZE_SHARE * width.min(height) as f32).max(MIN_SIZE_PX);
        let fit = Fit {
            width: region.rect.width().max(0) as f32,
            height: region.rect.height().max(0) as f32,
            max_lines: spec.max_lines,
            sizes: spec.size.map_or(MIN_SIZE_PX..most, |s| s..s),
        };
        let laid = engine.fit(&mut buffer, &fit).map(|laid| engine.balance(&mut buffer, laid, &fit));
        let families = laid.as_ref().map(|l| layout::families(&engine, l));
        engine.clear_cache();
        let area = rect_tuple(region.rect);
        let too_long = || TypesetError::TooLong { chars: text.chars().count(), max_lines: spec.max_lines, area };
        laid.zip(families).ok_or_else(too_long)
    }
}

fn validate(image: &RgbImage, text: &str, spec: &TextSpec) -> Result<(), TypesetError> {
    let (width, height) = image.dimensions();
    let bad_box = |area, reason| TypesetError::BadBox { area, width, height, reason };
    if width == 0 || height == 0 {
        return Err(bad_box((0, 0, width, height), "the picture is empty"));
    }
    if text.trim().is_empty() {
        return Err(TypesetError::Empty);
    }
    if spec.max_lines == 0 {
        return Err(TypesetError::BadSpec("max_lines is 0".into()));
    }
    if let Some(size) = spec.size.filter(|s| !(s.is_finite() && *s >= MIN_SIZE_PX)) {
        return Err(TypesetError::BadSpec(format!("size {size} px is below the legible {MIN_SIZE_PX} px")));
    }
    if let Placement::Box(x, y, w, h) = spec.placement {
        let area = (x, y, w, h);
        if w == 0 || h == 0 {
            return Err(bad_box(area, "the box is empty"));
        }
        let inside = x.checked_add(w).is_some_and(|r| r <= width) && y.checked_add(h).is_some_and(|b| b <= height);
        if !inside {
            return Err(bad_box(area, "the box leaves the picture"));
        }
    }
    Ok(())
}

/// The text with every paragraph separator (CR LF, CR, U+001C–U+001E, U+0085, U+2029) made a
/// line feed, so that byte offsets match the lines cosmic-text lays out.
fn normalise(text: &str) -> String {
    text.replace("\r\n", "\n").replace(['\r', '\u{1C}', '\u{1D}', '\u{1E}', '\u{85}', '\u{2029}'], "\n")
}

fn line_align(across: Align) -> LineAlign {
    match across {
        Align::Start => LineAlign::Left,
        Align::Middle => LineAlign::Center,
        Align::End => LineAlign::Right,
    }
}

fn rect_tuple(r: IRect) -> Rect {
    (r.x0.max(0) as u32, r.y0.max(0) as u32, r.width().max(0) as u32, r.height().max(0) as u32)
}

/// The text at one candidate place: where its ink goes and what colour (and panel) it needs
/// there.
struct Candidate<'r> {
    region: &'r Region,
    offset: (i32, i32),
    cov: Coverage,
    choice: Choice,
    spread: Spread,
    busyness: f32,
}

/// The text at `region`: its coverage, ground, colour and the busyness of the ground a panel
/// would cover.
fn candidate<'r>(image: &RgbImage, region: &'r Region, laid: &Laid, spec: &TextSpec) -> Candidate<'r> {
    let (width, height) = image.dimensions();
    // The box holds the text with room for a panel around it.
    let inner = Region { rect: region.rect.pad(-pad_px(laid.size)), ..*region };
    let offset = place::offset(&inner, laid.ink);
    let cov = Coverage::of(laid, offset, width, height);
    let spread = ground_spread(image, &cov, reach_px(laid.size));
    let choice = colour::choose(spread, spec.colour);
    let ground = cov.rect.pad(pad_px(laid.size)).clip(width, height);
    let busyness = place::busyness(image, ground);
    Candidate { region, offset, cov, choice, spread, busyness }
}

/// The best place among `regions` (one, or Auto's nine): of those where the text needs the
/// faintest panel (none, ideally), the first listed (Auto lists the bottom, top and middle
/// bands, each centred, left, right) that is about as calm as the calmest ([`about_as_calm`]).
fn best<'r>(image: &RgbImage, regions: &'r [Region], laid: &Laid, spec: &TextSpec) -> Candidate<'r> {
    let candidates: Vec<Candidate<'r>> = regions.iter().map(|r| candidate(image, r, laid, spec)).collect();
    let opacity = |c: &Candidate<'_>| c.choice.panel.map_or(0.0, |p| p.opacity);
    let faintest = candidates.iter().map(opacity).fold(f32::INFINITY, f32::min);
    let fewest: Vec<Candidate<'r>> = candidates.into_iter().filter(|c| opacity(c) == faintest).collect();
    let calmest = fewest.iter().map(|c| c.busyness).fold(f32::INFINITY, f32::min);
    fewest.into_iter().find(|c| about_as_calm(c.busyness, calmest)).expect("at least one region")
}

struct Composed {
    laid: Laid,
    families: Vec<(cosmic_text::fontdb::ID, String)>,
}

/// Draws the laid-out text at the best place (and a panel when needed) on a copy of `image`.
fn compose(image: &RgbImage, text: &str, spec: &TextSpec, regions: &[Region], c: Composed) -> Typeset {
    let (width, height) = image.dimensions();
    let laid = &c.laid;
    let place = best(image, regions, laid, spec);
    tracing::debug!(placement = %place.region.placement, size = laid.size, lines = laid.lines.len(), "placed");
    let mut out = image.clone();
    let panel = place.choice.panel.map(|paint| {
        let rect = place.cov.rect.pad(pad_px(laid.size));
        draw::draw_panel(&mut out, rect, PANEL_PAD_EM * laid.size, paint);
        let rect = rect_tuple(rect.clip(width, height));
        Panel { rect, colour: paint.colour, opacity: paint.opacity }
    });
    // With a panel, the ground is measured again as drawn.
    let spread = match panel {
        Some(_) => ground_spread(&out, &place.cov, reach_px(laid.size)),
        None => place.spread,
    };
    let colour = place.choice.colour;
    let contrast = spread.worst_contrast(relative_luminance(colour));
    draw::draw_text(&mut out, &place.cov, colour);
    let ink = place.cov.rect;
    let bbox = panel.as_ref().map_or(ink, |p| ink.union(tuple_rect(p.rect)));
    let fonts = unique_families(&c.families);
    Typeset {
        image: out,
        bbox: rect_tuple(bbox),
        text_bbox: rect_tuple(ink),
        placement: place.region.placement,
        lines: laid.lines.clone(),
        size_px: laid.size,
        colour,
        contrast,
        panel,
        glyphs: placed_glyphs(text, laid, place.offset, &c.families, &fonts),
        fonts,
    }
}

fn reach_px(size: f32) -> i32 {
    (GROUND_EM * size).round().max(1.0) as i32
}

fn tuple_rect((x, y, w, h): Rect) -> IRect {
    IRect { x0: x as i32, y0: y as i32, x1: (x + w) as i32, y1: (y + h) as i32 }
}

fn ground_spread(image: &RgbImage, cov: &Coverage, reach: i32) -> Spread {
    let mut lums = draw::ground_luminances(image, cov, reach);
    // No inked pixel at all (cannot happen for a text that fits): assume the worst ground.
    Spread::of(&mut lums).unwrap_or(Spread { lo: 0.0, hi: 1.0 })
}

fn unique_families(families: &[(cosmic_text::fontdb::ID, String)]) -> Vec<String> {
    let mut names: Vec<String> = families.iter().map(|(_, n)| n.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// The glyphs in picture coordinates, their ranges in bytes of the whole text.
fn placed_glyphs(
    text: &str,
    laid: &Laid,
    (dx, dy): (i32, i32),
    families: &[(cosmic_text::fontdb::ID, String)],
    fonts: &[String],
) -> Vec<PlacedGlyph> {
    let para_starts: Vec<usize> = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
    let font_index = |id| {
        let name = families.iter().find(|(f, _)| *f == id).map(|(_, n)| n);
        name.and_then(|n| fonts.iter().position(|f| f == n)).unwrap_or(0)
    };
    laid.glyphs
        .iter()
        .map(|g| {
            let start = para_starts.get(g.para).copied().unwrap_or(0);
            PlacedGlyph {
                range: start + g.range.start..start + g.range.end,
                line: g.line,
                x: g.x + dx as f32,
                baseline: g.baseline + dy as f32,
                advance: g.advance,
                rtl: g.rtl,
                font: font_index(g.font),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typesetter_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Typesetter>();
    }

    #[test]
    fn line_breaks_become_line_feeds() {
        assert_eq!(normalise("a\r\nb\rc\u{2029}d"), "a\nb\nc\nd");
    }

    #[test]
    fn validation_refuses_bad_input() {
        let img = RgbImage::new(100, 50);
        let spec = |placement| TextSpec { placement, ..TextSpec::default() };
        let bad = |r: Result<(), TypesetError>| r.unwrap_err().to_string();
        assert!(bad(validate(&img, " \n", &TextSpec::default())).contains("empty"));
        assert!(bad(validate(&img, "a", &spec(Placement::Box(90, 0, 20, 10)))).contains("leaves"));
        assert!(bad(validate(&img, "a", &spec(Placement::Box(0, 0, 0, 10)))).contains("empty"));
        let huge = Placement::Box(u32::MAX, 0, 2, 2);
        assert!(bad(validate(&img, "a", &spec(huge))).contains("leaves"));
        let tiny = TextSpec { size: Some(6.0), ..TextSpec::default() };
        assert!(matches!(validate(&img, "a", &tiny), Err(TypesetError::BadSpec(_))));
        assert!(validate(&img, "a", &spec(Placement::Box(0, 0, 100, 50))).is_ok());
        assert!(bad(validate(&RgbImage::new(0, 5), "a", &TextSpec::default())).contains("empty"));
    }
}
