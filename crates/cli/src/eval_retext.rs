//! Text replacement on synthetic posters: "replace the text 'OLD' with 'NEW'" on posters with a
//! few words in Latin (plain and with diacritics), Cyrillic, Greek and Chinese, at various
//! sizes, colours and angles, over flat, gradient and noisy grounds. The posters are set in
//! DejaVu and Noto Serif CJK; the edit sets its text in Noto Sans, so it has to match a face it
//! did not draw. Each task reports whether the old word was found (at the right place), the
//! new text was read back exactly, the old text is no longer read anywhere, and how many pixels
//! outside the plan's region changed (must be 0). `plantain eval text` calls [`run`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use plantain_director::edit::{Placing, TextTools, draw_text, replace_text};
use plantain_ocr::{PpOcr, Script, normalize};
use plantain_typeset::Typesetter;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What to run.
#[derive(Clone, Debug)]
pub struct RetextOptions {
    /// Replacement tasks (one poster each), spread over the scripts in turn.
    pub tasks: usize,
    pub seed: u64,
    /// Poster size in pixels.
    pub width: u32,
    pub height: u32,
    /// Write a before/after contact sheet of the first posters here (PNG).
    pub sheet: Option<PathBuf>,
    /// Only posters of this kind (else every kind in turn).
    pub only: Option<Kind>,
}

impl Default for RetextOptions {
    fn default() -> Self {
        RetextOptions { tasks: 30, seed: 0, width: 640, height: 480, sheet: None, only: None }
    }
}

/// The word lists, by kind of script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Latin,
    LatinDiacritics,
    Cyrillic,
    Greek,
    Chinese,
}

pub const KINDS: [Kind; 5] = [Kind::Latin, Kind::LatinDiacritics, Kind::Cyrillic, Kind::Greek, Kind::Chinese];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Latin => "Latin",
            Kind::LatinDiacritics => "Latin with diacritics",
            Kind::Cyrillic => "Cyrillic",
            Kind::Greek => "Greek",
            Kind::Chinese => "Chinese",
        }
    }

    /// Words of this kind; no word contains another.
    fn words(self) -> &'static [&'static str] {
        match self {
            Kind::Latin => {
                &["SALE", "SOLDES", "OPEN", "CLOSED", "Summer", "Winter", "FRESH", "Market", "COFFEE", "Bakery", "Today", "MUSIC", "Garden"]
            }
            Kind::LatinDiacritics => {
                &["Café", "Crème", "Straße", "Größe", "Niño", "Señor", "Fête", "Bücher", "Müller", "Façade", "Años", "Été"]
            }
            Kind::Cyrillic => &["ПРИВЕТ", "Москва", "СКИДКА", "Открыто", "ЗАКРЫТО", "Магазин", "Рынок", "Кофе", "Музыка", "ЛЕТО"],
            Kind::Greek => &["Καλημέρα", "ΑΘΗΝΑ", "Θάλασσα", "ΚΑΦΕΣ", "Ήλιος", "ΑΓΟΡΑ", "Μουσική", "Έκπτωση", "Νησί"],
            Kind::Chinese => &["大减价", "新年快乐", "欢迎光临", "咖啡", "夏季", "音乐节", "面包店", "开业"],
        }
    }
}

/// Corners: top-left, top-right, bottom-right, bottom-left.
type Quad = [[f32; 2]; 4];

/// A word drawn on a poster, and where.
#[derive(Clone, Debug)]
pub struct PosterWord {
    pub text: String,
    pub quad: [[f32; 2]; 4],
}

/// A synthetic poster.
#[derive(Clone, Debug)]
pub struct Poster {
    pub image: RgbImage,
    pub words: Vec<PosterWord>,
}

/// The poster typesetter: DejaVu Sans and Serif (Latin, Cyrillic, Greek) and Noto Serif CJK.
pub fn poster_typesetter() -> Result<Typesetter> {
    let fonts = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
        "/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc",
        "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    ];
    Typesetter::with_fonts(fonts).context("loading the poster fonts (DejaVu, Noto Serif CJK: scripts/setup-fonts.sh)")
}

/// A ground: flat, a linear or radial gradient between two colours, maybe with light noise.
fn ground(rng: &mut ChaCha8Rng, w: u32, h: u32) -> RgbImage {
    let a: [f32; 3] = std::array::from_fn(|_| rng.random_range(20.0..235.0));
    let b: [f32; 3] = std::array::from_fn(|c| (a[c] + rng.random_range(-90.0..90.0)).clamp(0.0, 255.0));
    let style = rng.random_range(0..3);
    let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let noise = if rng.random_bool(0.4) { rng.random_range(1.0..5.0) } else { 0.0 };
    let mut noise_rng = ChaCha8Rng::seed_from_u64(rng.random());
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32 - 0.5, y as f32 / h as f32 - 0.5);
        let t = match style {
            0 => 0.0,
            1 => (fx * angle.cos() + fy * angle.sin() + 0.7) / 1.4,
            _ => (fx * fx + fy * fy).sqrt() * 1.4,
        }
        .clamp(0.0, 1.0);
        let n = if noise > 0.0 { noise_rng.random_range(-noise..noise) } else { 0.0 };
        Rgb(std::array::from_fn(|c| (a[c] + (b[c] - a[c]) * t + n).round().clamp(0.0, 255.0) as u8))
    })
}

/// A colour that stands out from `under` (luminance difference at least 90 levels).
fn ink_for(rng: &mut ChaCha8Rng, under: [u8; 3]) -> [u8; 3] {
    let lum = |p: [u8; 3]| 0.2126 * f32::from(p[0]) + 0.7152 * f32::from(p[1]) + 0.0722 * f32::from(p[2]);
    for _ in 0..50 {
        let c: [u8; 3] = std::array::from_fn(|_| rng.random_range(0..=255));
        if (lum(c) - lum(under)).abs() >= 90.0 {
            return c;
        }
    }
    if lum(under) > 128.0 { [15, 15, 20] } else { [245, 245, 240] }
}

/// A poster of `kind`: 3 distinct words (the first is the one a task replaces), each at its
/// own size, colour and angle, none overlapping.
pub fn poster(ts: &Typesetter, kind: Kind, seed: u64, (w, h): (u32, u32)) -> Result<Poster> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut image = ground(&mut rng, w, h);
    let mut pool: Vec<&str> = kind.words().to_vec();
    let mut words: Vec<PosterWord> = Vec::new();
    let mut taken: Vec<(f32, f32, f32, f32)> = Vec::new();
    while words.len() < 3 && !pool.is_empty() {
        let text = pool.swap_remove(rng.random_range(0..pool.len()));
        let size = rng.random_range(30.0..72.0f32).min(h as f32 / 6.0);
        let angle = if rng.random_bool(0.5) { rng.random_range(-18.0..18.0f32) } else { 0.0 };
        let bold = rng.random_bool(0.7);
        let Some((centre, quad)) = place(ts, &mut rng, text, size, angle, bold, &taken, (w, h))? else { continue };
        let under = image.get_pixel(centre[0] as u32, centre[1] as u32).0;
        let colour = ink_for(&mut rng, under);
        let (drawn, quad_drawn) = draw_text(ts, &image, text, Placing { centre, angle_deg: angle, size_px: size, colour, bold })?;
        image = drawn;
        taken.push(bounds(&quad));
        words.push(PosterWord { text: text.to_string(), quad: quad_drawn });
    }
    Ok(Poster { image, words })
}

/// Axis-aligned bounds of a quad, grown by a margin.
fn bounds(q: &[[f32; 2]; 4]) -> (f32, f32, f32, f32) {
    let xs = q.map(|p| p[0]);
    let ys = q.map(|p| p[1]);
    let (x0, x1) = (xs.iter().copied().fold(f32::MAX, f32::min), xs.iter().copied().fold(f32::MIN, f32::max));
    let (y0, y1) = (ys.iter().copied().fold(f32::MAX, f32::min), ys.iter().copied().fold(f32::MIN, f32::max));
    let m = 0.4 * (y1 - y0).min(x1 - x0);
    (x0 - m, y0 - m, x1 + m, y1 + m)
}

/// A free place for a word: its centre and the quad it would take (drawn on a blank canvas to
/// measure), inside the poster with room for a longer replacement, apart from `taken`.
#[allow(clippy::too_many_arguments)]
fn place(
    ts: &Typesetter,
    rng: &mut ChaCha8Rng,
    text: &str,
    size: f32,
    angle: f32,
    bold: bool,
    taken: &[(f32, f32, f32, f32)],
    (w, h): (u32, u32),
) -> Result<Option<([f32; 2], Quad)>> {
    let blank = RgbImage::new(w, h);
    let at = Placing { centre: [w as f32 / 2.0, h as f32 / 2.0], angle_deg: angle, size_px: size, colour: [255; 3], bold };
    let (_, quad) = draw_text(ts, &blank, text, at)?;
    let (bx0, by0, bx1, by1) = bounds(&quad);
    let (half_w, half_h) = ((bx1 - bx0) / 2.0 + size, (by1 - by0) / 2.0);
    if 2.0 * half_w >= w as f32 || 2.0 * half_h >= h as f32 {
        return Ok(None);
    }
    for _ in 0..60 {
        let c = [rng.random_range(half_w..w as f32 - half_w), rng.random_range(half_h..h as f32 - half_h)];
        let (dx, dy) = (c[0] - w as f32 / 2.0, c[1] - h as f32 / 2.0);
        let mine = (bx0 + dx - size, by0 + dy, bx1 + dx + size, by1 + dy);
        if taken.iter().all(|t| mine.2 < t.0 || t.2 < mine.0 || mine.3 < t.1 || t.3 < mine.1) {
            return Ok(Some((c, quad.map(|p| [p[0] + dx, p[1] + dy]))));
        }
    }
    Ok(None)
}

/// One task's outcome.
#[derive(Clone, Debug)]
pub struct TaskResult {
    pub kind: Kind,
    pub old: String,
    pub new: String,
    /// Found, at the word's place.
    pub found: bool,
    pub read_back: bool,
    pub old_gone: bool,
    /// Pixels changed outside the plan's region (None: no edit made).
    pub outside_changed: Option<u64>,
    pub millis: f64,
    /// Why it was not found, or what was read back.
    pub detail: String,
}

/// The evaluation's figures.
#[derive(Clone, Debug)]
pub struct RetextReport {
    pub tasks: Vec<TaskResult>,
}

/// Counts of one set of tasks.
fn rates(tasks: &[&TaskResult]) -> String {
    let n = tasks.len().max(1) as f64;
    let pct = |k: usize| 100.0 * k as f64 / n;
    let found = tasks.iter().filter(|t| t.found).count();
    let read = tasks.iter().filter(|t| t.read_back).count();
    let gone = tasks.iter().filter(|t| t.old_gone).count();
    let zero = tasks.iter().filter(|t| t.outside_changed == Some(0)).count();
    format!(
        "{:>3} tasks  found {:>5.1}%  read back {:>5.1}%  old gone {:>5.1}%  0 outside {}/{}",
        tasks.len(),
        pct(found),
        pct(read),
        pct(gone),
        zero,
        tasks.iter().filter(|t| t.outside_changed.is_some()).count()
    )
}

impl RetextReport {
    pub fn median_ms(&self) -> f64 {
        let mut ms: Vec<f64> = self.tasks.iter().map(|t| t.millis).collect();
        ms.sort_by(f64::total_cmp);
        ms.get(ms.len() / 2).copied().unwrap_or(0.0)
    }

    #[cfg(test)]
    pub fn rate(&self, f: impl Fn(&TaskResult) -> bool) -> f64 {
        self.tasks.iter().filter(|t| f(t)).count() as f64 / self.tasks.len().max(1) as f64
    }
}

impl std::fmt::Display for RetextReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "text replacement on synthetic posters (found by OCR, removed, set, read back)")?;
        writeln!(f, "all:   {}  median {:.0} ms", rates(&self.tasks.iter().collect::<Vec<_>>()), self.median_ms())?;
        for kind in KINDS {
            let of: Vec<&TaskResult> = self.tasks.iter().filter(|t| t.kind == kind).collect();
            if !of.is_empty() {
                writeln!(f, "  {:<22} {}", kind.name(), rates(&of))?;
            }
        }
        for t in self.tasks.iter().filter(|t| !(t.found && t.read_back && t.old_gone && t.outside_changed == Some(0))) {
            writeln!(f, "  miss: {} \"{}\" → \"{}\": {}", t.kind.name(), t.old, t.new, t.detail)?;
        }
        Ok(())
    }
}

/// Runs the evaluation with the installed OCR models and fonts.
pub fn run(opts: &RetextOptions) -> Result<RetextReport> {
    let ocr = PpOcr::open_installed().context("the OCR models (scripts/setup.sh)")?;
    let typesetter = Typesetter::new();
    let posters = poster_typesetter()?;
    let tools = TextTools { reader: &ocr, typesetter: &typesetter };
    let mut tasks = Vec::with_capacity(opts.tasks);
    let mut sheet = Vec::new();
    for i in 0..opts.tasks {
        let kind = opts.only.unwrap_or(KINDS[i % KINDS.len()]);
        let seed = opts.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
        let poster = poster(&posters, kind, seed, (opts.width, opts.height))?;
        let new = pick_new(kind, &poster, seed);
        let (result, after) = task(&poster, kind, &new, tools)?;
        if sheet.len() < 6 {
            sheet.push((poster.image.clone(), after, format!("{} → {}", result.old, result.new), result.read_back));
        }
        tasks.push(result);
    }
    if let Some(path) = &opts.sheet {
        contact_sheet(&sheet, path, &typesetter)?;
    }
    Ok(RetextReport { tasks })
}

/// A new word of the same kind, not on the poster and not containing or contained in the old.
fn pick_new(kind: Kind, poster: &Poster, seed: u64) -> String {
    let on_poster = |w: &str| poster.words.iter().any(|p| p.text.contains(w) || w.contains(p.text.as_str()));
    let choices: Vec<&str> = kind.words().iter().copied().filter(|w| !on_poster(w)).collect();
    choices.get(seed as usize % choices.len().max(1)).unwrap_or(&"NEU").to_string()
}

/// Replaces the poster's first word by `new`; the result and the picture after.
fn task(poster: &Poster, kind: Kind, new: &str, tools: TextTools<'_>) -> Result<(TaskResult, RgbImage)> {
    let old = poster.words.first().context("a poster with no word")?;
    let mut result = TaskResult {
        kind,
        old: old.text.clone(),
        new: new.to_string(),
        found: false,
        read_back: false,
        old_gone: false,
        outside_changed: None,
        millis: 0.0,
        detail: String::new(),
    };
    let start = Instant::now();
    let planned = replace_text(&poster.image, &old.text, Some(new), tools);
    result.millis = start.elapsed().as_secs_f64() * 1000.0;
    let plan = match planned {
        Ok(plan) => plan,
        Err(e) => {
            result.detail = e.to_string();
            return Ok((result, poster.image.clone()));
        }
    };
    let edited = plan.finish(None)?;
    let edit = plan.text.as_ref().context("a text edit's plan has its text report")?;
    result.found = edit.occurrences.iter().any(|o| inside(&old.quad, centre(&o.quad)));
    result.read_back = edit.passed();
    result.outside_changed = edited.report.outside_changed;
    result.old_gone = old_gone(tools.reader, &edited.image, &old.text)?;
    result.detail = edit.occurrences.iter().map(|o| o.read_back.describe(false)).collect::<Vec<_>>().join("; ");
    if !result.found {
        result.detail = format!("found elsewhere: {:?}", edit.occurrences.iter().map(|o| centre(&o.quad)).collect::<Vec<_>>());
    }
    Ok((result, edited.image))
}

/// Whether the whole picture, read by the reader for `old`'s script, no longer shows `old`.
fn old_gone(ocr: &PpOcr, image: &RgbImage, old: &str) -> Result<bool> {
    let unspaced = Script::of(old).is_some_and(Script::unspaced);
    let verdict = plantain_ocr::verify(ocr, image, old)?;
    let want = normalize(old, unspaced);
    Ok(if unspaced {
        !verdict.read.contains(&want)
    } else {
        !verdict.read.split_whitespace().any(|w| w.trim_matches(|c: char| !c.is_alphanumeric()) == want)
    })
}

fn centre(q: &[[f32; 2]; 4]) -> [f32; 2] {
    [q.iter().map(|p| p[0]).sum::<f32>() / 4.0, q.iter().map(|p| p[1]).sum::<f32>() / 4.0]
}

/// Whether `p` lies in the convex quad `q`.
fn inside(q: &[[f32; 2]; 4], p: [f32; 2]) -> bool {
    let side = |a: [f32; 2], b: [f32; 2]| (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]);
    let s: Vec<f32> = (0..4).map(|i| side(q[i], q[(i + 1) % 4])).collect();
    s.iter().all(|v| *v >= 0.0) || s.iter().all(|v| *v <= 0.0)
}

/// Before and after, side by side, one poster a row, each with a caption strip.
fn contact_sheet(rows: &[(RgbImage, RgbImage, String, bool)], path: &Path, ts: &Typesetter) -> Result<()> {
    let Some((first, ..)) = rows.first() else { return Ok(()) };
    let (w, h) = (first.width() / 2, first.height() / 2);
    let caption = 28;
    let mut sheet = RgbImage::from_pixel(2 * w + 12, rows.len() as u32 * (h + caption + 6) + 6, Rgb([250, 250, 250]));
    for (k, (before, after, label, passed)) in rows.iter().enumerate() {
        let y = 6 + k as u32 * (h + caption + 6);
        for (j, img) in [before, after].into_iter().enumerate() {
            let small = image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle);
            image::imageops::replace(&mut sheet, &small, (4 + j as u32 * (w + 4)) as i64, y as i64);
        }
        let mark = if *passed { "read back" } else { "misread" };
        let spec = plantain_typeset::TextSpec {
            placement: plantain_typeset::Placement::Box(4, y + h + 2, 2 * w, caption - 4),
            max_lines: 1,
            size: None,
            colour: Some(Rgb([30, 30, 30])),
            language: None,
            bold: false,
            ..Default::default()
        };
        sheet = ts.set(&sheet, &format!("{label} ({mark})"), &spec).map(|t| t.image).unwrap_or(sheet);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    sheet.save(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_lists_have_no_word_inside_another() {
        for kind in KINDS {
            let words = kind.words();
            for a in words {
                for b in words.iter().filter(|b| *b != a) {
                    assert!(!b.contains(a), "{}: {a} is inside {b}", kind.name());
                }
            }
        }
    }

    #[test]
    fn quads_contain_their_centres_and_not_far_points() {
        let q = [[10.0, 10.0], [50.0, 20.0], [45.0, 40.0], [5.0, 30.0]];
        assert!(inside(&q, centre(&q)));
        assert!(!inside(&q, [100.0, 100.0]));
    }

    /// A short run with the installed models: posters are made, found, rewritten and read back,
    /// and no pixel outside the plan's region moves.
    #[test]
    fn a_short_run_replaces_and_reads_back() {
        let report =
            run(&RetextOptions { tasks: 5, seed: 7, ..RetextOptions::default() }).expect("OCR models and fonts (scripts/setup.sh)");
        assert_eq!(report.tasks.len(), 5);
        assert!(report.tasks.iter().all(|t| t.outside_changed.is_none_or(|o| o == 0)), "{report}");
        assert!(report.rate(|t| t.found) >= 0.6, "{report}");
        assert!(report.rate(|t| t.read_back) >= 0.6, "{report}");
        let printed = report.to_string();
        assert!(printed.contains("found") && printed.contains("median"), "{printed}");
    }

    /// The full run behind the figures in the README and `docs/text/replace.png`:
    /// `cargo test -p plantain-cli eval_retext::tests::full_run -- --ignored --nocapture`.
    #[test]
    #[ignore = "a diagnostic run on accented Latin alone"]
    fn accents_run() {
        let report = run(&RetextOptions { tasks: 8, seed: 1, only: Some(Kind::LatinDiacritics), ..RetextOptions::default() }).unwrap();
        println!("{report}");
        assert!(report.tasks.iter().all(|t| t.outside_changed.is_none_or(|o| o == 0)), "{report}");
    }

    #[test]
    #[ignore = "about three minutes; writes docs/text/replace.png"]
    fn full_run() {
        let sheet = Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/text/replace.png")));
        let report = run(&RetextOptions { tasks: 40, seed: 1, sheet, ..RetextOptions::default() }).expect("OCR models and fonts");
        println!("{report}");
        assert!(report.tasks.iter().all(|t| t.outside_changed.is_none_or(|o| o == 0)), "{report}");
        assert!(report.rate(|t| t.read_back) >= 0.7, "{report}");
    }
}
