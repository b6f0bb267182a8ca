//! `plantain eval text`: is typeset text read back exactly? The committed strings
//! (`data/text-eval.tsv`: 316 strings in 13 languages over 10 scripts) are each set, by the
//! loop's own text stage ([`set_text`]: typeset, read back, set again differently on a wrong
//! reading), into pictures plantain-nano generated at several sizes and aspect ratios, and read
//! back by the reader the text's script gets (PP-OCRv4 or Tesseract with its language packs).
//! Reported: exact-match rate per script (against the targets), per language and per
//! reader, first-try rate, time per text, and every miss with what was read. Then the
//! text-replacement job on synthetic posters ([`crate::eval_retext`]).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use plantain_director::generate::{InstalledChecks, QuotedText, TextReader, Typesetter, set_text};
use plantain_engine::pipeline::GenerateRequest;
use plantain_world::{Split, caption_plain, sample_scene};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::generate::{LoadSpec, load_pipeline, resolve_model};

/// The committed strings: `language<TAB>text` per line, `#` comments.
const STRINGS: &str = include_str!("../data/text-eval.tsv");

#[derive(clap::Args)]
pub struct Args {
    /// The model that paints the pictures the text is set into.
    #[arg(long, short, default_value = "plantain-nano")]
    pub model: String,
    /// Picture sizes, WIDTHxHEIGHT; each string goes on `--per-string` of them in turn.
    #[arg(long, value_delimiter = ',', default_value = "512x512,768x512,576x1024,1024x576")]
    pub sizes: Vec<String>,
    /// Pictures each string is set on.
    #[arg(long, default_value_t = 2)]
    pub per_string: usize,
    /// Different generated pictures per size.
    #[arg(long, default_value_t = 3)]
    pub backgrounds: usize,
    /// Only these languages (en, de, fr, es, ru, el, ar, he, hi, th, zh, ja, ko).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// At most this many strings per language (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Write a contact sheet of the first text of each language on each size here (PNG/JPEG).
    #[arg(long)]
    pub sheet: Option<std::path::PathBuf>,
    /// Text-replacement tasks on synthetic posters ("replace the text 'A' with 'B'": found by
    /// OCR, removed, set again, read back); 0 skips them.
    #[arg(long, default_value_t = 40)]
    pub replace: usize,
    /// Write a before/after sheet of the first replacement posters here (PNG).
    #[arg(long)]
    pub replace_sheet: Option<std::path::PathBuf>,
}

/// A string of the list and its language.
struct Entry {
    language: String,
    text: String,
}

/// One text set on one picture.
struct Trial {
    language: String,
    size: (u32, u32),
    text: String,
    /// The reader's name, or "—" when the text could not be set.
    reader: String,
    read: String,
    matched: bool,
    tries: usize,
    secs: f64,
    image: Option<RgbImage>,
}

pub fn run(a: Args) -> Result<()> {
    if a.per_string > 0 {
        read_back(&a)?;
    }
    if a.replace > 0 {
        let opts =
            crate::eval_retext::RetextOptions { tasks: a.replace, seed: a.seed, sheet: a.replace_sheet.clone(), ..Default::default() };
        println!("\n{}", crate::eval_retext::run(&opts)?);
    }
    Ok(())
}

/// The committed strings set into generated pictures and read back.
fn read_back(a: &Args) -> Result<()> {
    let entries = strings(&a.only, a.limit)?;
    let sizes = a.sizes.iter().map(|s| parse_size(s)).collect::<Result<Vec<_>>>()?;
    let pictures = backgrounds(a, &sizes)?;
    let checks = InstalledChecks::new();
    let reader = checks.reader().context("the OCR models are not installed: run scripts/setup.sh")?;
    let ts = checks.typesetter();
    let bar = ProgressBar::new((entries.len() * a.per_string) as u64).with_style(
        ProgressStyle::with_template("text [{bar:30}] {pos}/{len} settings, {elapsed} elapsed, eta {eta}")?.progress_chars("=> "),
    );
    let mut trials = Vec::new();
    let mut kept: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        for j in 0..a.per_string {
            let (size, picture) = pick(&pictures, sizes.len(), a.backgrounds, i, j);
            let mut t = trial(ts, reader, e, size, picture);
            // Only the pictures the contact sheet shows are kept.
            let n = kept.entry(e.language.clone()).or_default();
            if a.sheet.is_some() && *n < sizes.len() && t.image.is_some() {
                *n += 1;
            } else {
                t.image = None;
            }
            trials.push(t);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    println!("{}", report(&trials, a, &sizes));
    if let Some(path) = &a.sheet {
        contact_sheet(&trials).save(path).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("contact sheet: {}", path.display());
    }
    Ok(())
}

/// The committed strings, filtered.
fn strings(only: &[String], limit: usize) -> Result<Vec<Entry>> {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for line in STRINGS.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (language, text) = line.split_once('\t').with_context(|| format!("bad line in data/text-eval.tsv: {line:?}"))?;
        if !only.is_empty() && !only.iter().any(|o| o == language) {
            continue;
        }
        let n = per.entry(language.to_string()).or_default();
        *n += 1;
        if limit == 0 || *n <= limit {
            out.push(Entry { language: language.to_string(), text: text.to_string() });
        }
    }
    if out.is_empty() {
        bail!("no strings for the languages {only:?}");
    }
    Ok(out)
}

fn parse_size(s: &str) -> Result<(u32, u32)> {
    let (w, h) = s.split_once('x').with_context(|| format!("a size is WIDTHxHEIGHT, not {s:?}"))?;
    let (w, h): (u32, u32) = (w.trim().parse()?, h.trim().parse()?);
    if !(64..=4096).contains(&w) || !(64..=4096).contains(&h) {
        bail!("sizes are 64 to 4096 pixels a side, not {s}");
    }
    Ok((w, h))
}

/// `backgrounds` pictures per size, painted by the model from the synthetic world's captions
/// at its canvas and resized to the size (as every request is).
fn backgrounds(a: &Args, sizes: &[(u32, u32)]) -> Result<Vec<Vec<RgbImage>>> {
    let resolved = resolve_model(&a.model)?;
    let load = LoadSpec { threads: a.threads, ..Default::default() };
    let pipeline = load_pipeline(&resolved, &load)?;
    let native = pipeline.native_resolution();
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed ^ 0x7e47);
    let mut out = Vec::new();
    for &(w, h) in sizes {
        let mut row = Vec::new();
        for b in 0..a.backgrounds.max(1) {
            let mut req = GenerateRequest::new(caption_plain(&sample_scene(&mut rng, Split::Train)), native, native);
            req.seed = a.seed.wrapping_add(b as u64);
            req.steps = resolved.defaults.steps as usize;
            let g = pipeline.generate(&req, &mut |_| std::ops::ControlFlow::Continue(()))?;
            row.push(image::imageops::resize(&g.image, w, h, image::imageops::FilterType::Lanczos3));
        }
        out.push(row);
    }
    Ok(out)
}

/// The picture the `j`th setting of string `i` goes on: sizes in turn, backgrounds in turn.
fn pick(pictures: &[Vec<RgbImage>], sizes: usize, backgrounds: usize, i: usize, j: usize) -> ((u32, u32), &RgbImage) {
    let s = (i + j) % sizes;
    let b = (i / sizes + j) % backgrounds.max(1);
    let p = &pictures[s][b];
    (p.dimensions(), p)
}

fn trial(ts: &Typesetter, reader: &dyn TextReader, e: &Entry, size: (u32, u32), picture: &RgbImage) -> Trial {
    let t0 = Instant::now();
    let quoted = QuotedText { text: e.text.clone(), placement: None };
    let set = set_text(ts, Some(reader), picture, &quoted);
    let secs = t0.elapsed().as_secs_f64();
    let base = Trial {
        language: e.language.clone(),
        size,
        text: e.text.clone(),
        reader: "—".into(),
        read: String::new(),
        matched: false,
        tries: 0,
        secs,
        image: None,
    };
    match set {
        Ok(s) => {
            let r = s.reading.unwrap_or_else(|| plantain_director::generate::Reading {
                read: String::new(),
                matches: false,
                reader: "none".into(),
            });
            Trial { reader: r.reader, read: r.read, matched: r.matches, tries: s.tries, image: Some(s.image), ..base }
        }
        Err(why) => Trial { read: format!("not set: {why}"), ..base },
    }
}

/// The script a language of the list is written in, and the target for it (%).
fn script_of(language: &str) -> (&'static str, f64) {
    match language {
        "en" | "de" | "fr" | "es" => ("Latin", 99.0),
        "ru" => ("Cyrillic", 99.0),
        "el" => ("Greek", 99.0),
        "zh" => ("Chinese", 97.0),
        "ja" => ("Japanese", 97.0),
        "ko" => ("Korean", 97.0),
        "ar" => ("Arabic", 95.0),
        "he" => ("Hebrew", 95.0),
        "hi" => ("Devanagari", 95.0),
        "th" => ("Thai", 95.0),
        _ => ("other", 95.0),
    }
}

/// Tallies of one group of trials.
#[derive(Default)]
struct Tally {
    n: usize,
    exact: usize,
    first: usize,
    secs: Vec<f64>,
    readers: BTreeMap<String, usize>,
}

impl Tally {
    fn add(&mut self, t: &Trial) {
        self.n += 1;
        self.exact += usize::from(t.matched);
        self.first += usize::from(t.matched && t.tries == 1);
        self.secs.push(t.secs);
        *self.readers.entry(t.reader.clone()).or_default() += 1;
    }
    fn pct(k: usize, n: usize) -> f64 {
        100.0 * k as f64 / n.max(1) as f64
    }
    fn median(&self) -> f64 {
        let mut v = self.secs.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
}

fn report(trials: &[Trial], a: &Args, sizes: &[(u32, u32)]) -> String {
    let sizes: Vec<String> = sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect();
    let mut out = format!(
        "text read back exactly: {} settings of {} strings, each on {} of the sizes {} ({} pictures per size painted by {})\n\n",
        trials.len(),
        trials.len() / a.per_string.max(1),
        a.per_string,
        sizes.join(", "),
        a.backgrounds,
        a.model
    );
    out += &group_table("script", trials, |t| script_of(&t.language).0.to_string(), true);
    out += "\n";
    out += &group_table("language", trials, |t| t.language.clone(), false);
    out += "\n";
    out += &group_table("reader", trials, |t| t.reader.clone(), false);
    let misses: Vec<&Trial> = trials.iter().filter(|t| !t.matched).collect();
    out += &format!("\nmisses ({}):\n", misses.len());
    for t in misses {
        out += &format!("- [{}] {}x{} {:?} → {:?} ({})\n", t.language, t.size.0, t.size.1, t.text, t.read, t.reader);
    }
    out
}

fn group_table(name: &str, trials: &[Trial], key: impl Fn(&Trial) -> String, targets: bool) -> String {
    let mut groups: BTreeMap<String, Tally> = BTreeMap::new();
    for t in trials {
        groups.entry(key(t)).or_default().add(t);
    }
    let mut out = format!(
        "| {name} | settings | exact | first try |{} median s | readers |\n|---|---|---|---|{}---|---|\n",
        if targets { " target |" } else { "" },
        if targets { "---|" } else { "" }
    );
    for (k, g) in &groups {
        let target = trials.iter().find(|t| key(t) == *k).map_or(0.0, |t| script_of(&t.language).1);
        let readers: Vec<String> = g.readers.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
        out += &format!(
            "| {k} | {} | {:.1}% ({}/{}) | {:.1}% |{} {:.2} | {} |\n",
            g.n,
            Tally::pct(g.exact, g.n),
            g.exact,
            g.n,
            Tally::pct(g.first, g.n),
            if targets {
                format!(" {target:.0}% {} |", if Tally::pct(g.exact, g.n) >= target { "met" } else { "missed" })
            } else {
                String::new()
            },
            g.median(),
            readers.join(", ")
        );
    }
    out
}

/// One row per language: its first settings on each size.
fn contact_sheet(trials: &[Trial]) -> RgbImage {
    let mut rows: BTreeMap<&str, Vec<RgbImage>> = BTreeMap::new();
    for t in trials {
        let row = rows.entry(t.language.as_str()).or_default();
        if let Some(im) = &t.image {
            row.push(im.clone());
        }
    }
    crate::eval_photos::sheet(&rows.into_values().collect::<Vec<_>>(), 160)
}
