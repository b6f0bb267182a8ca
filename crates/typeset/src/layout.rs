//! Shaping, line breaking and rasterising with cosmic-text, and the search for the largest size
//! that fits a box.

use std::collections::BTreeSet;
use std::ops::Range;

use cosmic_text::fontdb::{Database, ID};
use cosmic_text::{Align, Attrs, Buffer, Family, FontSystem, LayoutRun, Metrics, Shaping, SwashCache, SwashContent, Weight, Wrap};

use crate::fonts::{Cjk, Face, base_family, family_runs};
use crate::script::script_of_char;

/// The smallest size, in pixels, text is set at: below it text on a picture stops being legible.
pub const MIN_SIZE_PX: f32 = 12.0;

/// Line spacing, as a multiple of the font size (room for Devanagari's and Thai's marks).
pub const LINE_HEIGHT: f32 = 1.3;

/// The backing panel's padding around the text's ink, and its corner radius, in ems. Boxes
/// keep this room around the text whether or not a panel is drawn.
pub const PANEL_PAD_EM: f32 = 0.3;

/// The panel's padding in whole pixels at a font size (at least 2).
pub(crate) fn pad_px(size: f32) -> i32 {
    (PANEL_PAD_EM * size).round().max(2.0) as i32
}

/// The size search stops when the bounds are this close, in pixels.
const SIZE_TOLERANCE_PX: f32 = 0.5;

/// A rectangle in pixels, from `x0, y0` (inclusive) to `x1, y1` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IRect {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl IRect {
    pub fn width(self) -> i32 {
        self.x1 - self.x0
    }

    pub fn height(self) -> i32 {
        self.y1 - self.y0
    }

    pub fn union(self, o: IRect) -> IRect {
        IRect { x0: self.x0.min(o.x0), y0: self.y0.min(o.y0), x1: self.x1.max(o.x1), y1: self.y1.max(o.y1) }
    }

    pub fn translate(self, dx: i32, dy: i32) -> IRect {
        IRect { x0: self.x0 + dx, y0: self.y0 + dy, x1: self.x1 + dx, y1: self.y1 + dy }
    }

    pub fn pad(self, p: i32) -> IRect {
        IRect { x0: self.x0 - p, y0: self.y0 - p, x1: self.x1 + p, y1: self.y1 + p }
    }

    pub fn clip(self, w: u32, h: u32) -> IRect {
        let (w, h) = (w as i32, h as i32);
        IRect { x0: self.x0.clamp(0, w), y0: self.y0.clamp(0, h), x1: self.x1.clamp(0, w), y1: self.y1.clamp(0, h) }
    }
}

/// One rasterised glyph: its coverage (0 to 255) over `rect`, row by row.
pub(crate) struct GlyphMask {
    pub rect: IRect,
    pub coverage: Vec<u8>,
}

/// Where one glyph went, in the layout's coordinates.
#[derive(Clone, Debug)]
pub(crate) struct GlyphPos {
    /// Bytes of the paragraph `para` (the text between line breaks) the glyph draws.
    pub range: Range<usize>,
    pub para: usize,
    /// The laid-out line, counting from 0 at the top.
    pub line: usize,
    pub x: f32,
    pub baseline: f32,
    pub advance: f32,
    pub rtl: bool,
    pub font: ID,
}

/// A text laid out and rasterised at one size, in the layout's coordinates (origin at the top
/// left of the line box; `ink` is where the glyphs put ink).
pub(crate) struct Laid {
    pub size: f32,
    pub ink: IRect,
    pub masks: Vec<GlyphMask>,
    pub glyphs: Vec<GlyphPos>,
    pub lines: Vec<String>,
}

/// What the search looks for: a layout of at most `max_lines` lines whose ink, padded by
/// [`PANEL_PAD_EM`], fits `width` × `height`, at a size in `sizes` (a single size when the user fixed it).
pub(crate) struct Fit {
    pub width: f32,
    pub height: f32,
    pub max_lines: usize,
    pub sizes: Range<f32>,
}

/// A character no installed font has a glyph for.
pub(crate) struct Missing(pub char);

/// The font system and glyph cache; one per typesetter, used under its lock.
pub(crate) struct Engine {
    fonts: FontSystem,
    swash: SwashCache,
}

impl Engine {
    pub fn new(db: Database) -> Engine {
        // A fixed locale: which regional CJK face to use is decided per text (fonts::Cjk), not
        // by the machine's locale.
        let fonts = FontSystem::new_with_locale_and_db("en-US".to_string(), db);
        Engine { fonts, swash: SwashCache::new() }
    }

    pub fn db(&self) -> &Database {
        self.fonts.db()
    }

    /// The family name of a face.
    pub fn family(&self, id: ID) -> String {
        let face = self.fonts.db().face(id);
        face.and_then(|f| f.families.first()).map_or_else(String::new, |f| f.0.clone())
    }

    /// A buffer holding `text`, each script's run in its preferred family, lines aligned by
    /// `align`, wrapped at word boundaries.
    pub fn buffer(&mut self, text: &str, (cjk, face): (Cjk, Face), weight: Weight, align: Align) -> Buffer {
        let mut buffer = Buffer::new_empty(Metrics::new(MIN_SIZE_PX, MIN_SIZE_PX * LINE_HEIGHT));
        let default = Attrs::new().family(Family::Name(base_family(face))).weight(weight);
        let spans = family_runs(text, cjk, face).into_iter().map(|(run, family)| (run, default.clone().family(Family::Name(family))));
        buffer.set_rich_text(spans, &default, Shaping::Advanced, Some(align));
        buffer.set_wrap(Wrap::Word);
        buffer
    }

    /// The first character that shaped to the missing glyph (.notdef) in every font tried;
    /// default-ignorable and space characters are let through.
    pub fn missing(&mut self, buffer: &mut Buffer) -> Option<Missing> {
        buffer.set_size(None, None);
        buffer.shape_until_scroll(&mut self.fonts, false);
        buffer.layout_runs().find_map(|run| {
            run.glyphs.iter().filter(|g| g.glyph_id == 0).find_map(|g| {
                let c = run.text[g.start..].chars().next()?;
                (!is_ignorable(c)).then_some(Missing(c))
            })
        })
    }

    /// The largest size in `fit.sizes` whose layout fits, found by bisection; `None` when even
    /// the smallest does not fit.
    pub fn fit(&mut self, buffer: &mut Buffer, fit: &Fit) -> Option<Laid> {
        let (mut lo, mut hi) = (fit.sizes.start, fit.sizes.end);
        let mut best = self.lay(buffer, lo, fit.width);
        if !fits(&best, fit) {
            return None;
        }
        if hi <= lo {
            return Some(best);
        }
        let top = self.lay(buffer, hi, fit.width);
        if fits(&top, fit) {
            return Some(top);
        }
        while hi - lo > SIZE_TOLERANCE_PX {
            let mid = (lo + hi) / 2.0;
            let laid = self.lay(buffer, mid, fit.width);
            if fits(&laid, fit) {
                (lo, best) = (mid, laid);
            } else {
                hi = mid;
            }
        }
        Some(best)
    }

    /// The same text at the same size, wrapped to the narrowest width that keeps its number of
    /// lines: lines of even length rather than a full one and a short one.
    pub fn balance(&mut self, buffer: &mut Buffer, laid: Laid, fit: &Fit) -> Laid {
        let lines = laid.lines.len();
        if lines < 2 {
            return laid;
        }
        let metrics = Metrics::new(laid.size, laid.size * LINE_HEIGHT);
        let mut count = |width: f32| {
            buffer.set_metrics_and_size(metrics, Some(width), None);
            buffer.shape_until_scroll(&mut self.fonts, false);
            buffer.layout_runs().count()
        };
        let (mut lo, mut hi) = (fit.width / lines as f32, fit.width);
        while hi - lo > 1.0 {
            let mid = (lo + hi) / 2.0;
            if count(mid) <= lines { hi = mid } else { lo = mid }
        }
        self.lay(buffer, laid.size, hi)
    }

    /// Lays `buffer` out at `size`, wrapped to `width`, and rasterises it.
    pub fn lay(&mut self, buffer: &mut Buffer, size: f32, width: f32) -> Laid {
        buffer.set_metrics_and_size(Metrics::new(size, size * LINE_HEIGHT), Some(width), None);
        buffer.shape_until_scroll(&mut self.fonts, false);
        let runs: Vec<LayoutRun<'_>> = buffer.layout_runs().collect();
        let mut laid = Laid {
            size,
            ink: IRect { x0: i32::MAX, y0: i32::MAX, x1: i32::MIN, y1: i32::MIN },
            masks: Vec::new(),
            glyphs: Vec::new(),
            lines: runs.iter().map(line_text).collect(),
        };
        for (line, run) in runs.iter().enumerate() {
            for glyph in run.glyphs {
                laid.glyphs.push(GlyphPos {
                    range: glyph.start..glyph.end,
                    para: run.line_i,
                    line,
                    x: glyph.x,
                    baseline: run.line_y,
                    advance: glyph.w,
                    rtl: glyph.level.is_rtl(),
                    font: glyph.font_id,
                });
                let physical = glyph.physical((0.0, run.line_y), 1.0);
                if let Some(mask) = self.rasterise(physical) {
                    laid.ink = laid.ink.union(mask.rect);
                    laid.masks.push(mask);
                }
            }
        }
        laid
    }

    fn rasterise(&mut self, glyph: cosmic_text::PhysicalGlyph) -> Option<GlyphMask> {
        let image = self.swash.get_image(&mut self.fonts, glyph.cache_key).as_ref()?;
        let p = image.placement;
        if p.width == 0 || p.height == 0 {
            return None;
        }
        let x0 = glyph.x + p.left;
        let y0 = glyph.y - p.top;
        let rect = IRect { x0, y0, x1: x0 + p.width as i32, y1: y0 + p.height as i32 };
        let coverage = match image.content {
            SwashContent::Mask => image.data.clone(),
            // Colour glyphs (emoji) are drawn as silhouettes in the text colour.
            SwashContent::Color => image.data.chunks_exact(4).map(|px| px[3]).collect(),
            SwashContent::SubpixelMask => {
                image.data.chunks_exact(4).map(|px| ((px[0] as u16 + px[1] as u16 + px[2] as u16) / 3) as u8).collect()
            }
        };
        Some(GlyphMask { rect, coverage })
    }

    /// Forgets the rasterised glyphs (every size tried leaves its own in the cache).
    pub fn clear_cache(&mut self) {
        self.swash.image_cache.clear();
    }
}

/// Whether a layout's ink, with a panel's padding around it, fits the box, in at most
/// `max_lines` lines.
fn fits(laid: &Laid, fit: &Fit) -> bool {
    let room = 2 * pad_px(laid.size);
    laid.lines.len() <= fit.max_lines
        && !laid.masks.is_empty()
        && (laid.ink.width() + room) as f32 <= fit.width
        && (laid.ink.height() + room) as f32 <= fit.height
}

/// The text of one laid-out line, from its first character to its last, spaces at the ends
/// trimmed.
fn line_text(run: &LayoutRun<'_>) -> String {
    let start = run.glyphs.iter().map(|g| g.start).min().unwrap_or(0);
    let end = run.glyphs.iter().map(|g| g.end).max().unwrap_or(0);
    run.text[start..end].trim().to_string()
}

/// Characters whose missing glyph draws nothing: spaces, controls and format characters
/// (joiners, marks of direction).
fn is_ignorable(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '\u{AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}')
        || matches!(c, '\u{2060}'..='\u{206F}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}')
}

/// The script name of a missing character, for the error: its script, or its code point when
/// it is outside [`crate::Script`].
pub(crate) fn missing_script(c: char) -> String {
    script_of_char(c).map_or_else(|| format!("U+{:04X}", c as u32), |s| s.to_string())
}

/// The faces a layout used, each once, with their family names.
pub(crate) fn families(engine: &Engine, laid: &Laid) -> Vec<(ID, String)> {
    let ids: BTreeSet<ID> = laid.glyphs.iter().map(|g| g.font).collect();
    ids.into_iter().map(|id| (id, engine.family(id))).collect()
}
