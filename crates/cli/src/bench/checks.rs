//! What the loop's checks add to each attempt at 1K, on a photograph (the checks do not depend
//! on what painted it): BRISQUE, a quoted text typeset and read back by PP-OCRv4 and by
//! Tesseract, and every check of one attempt together (`examine`).

use std::path::Path;

use anyhow::{Context, Result, ensure};
use image::imageops::FilterType;
use plantain_director::generate::{CheckKind, InstalledChecks, Plan, QuotedText, examine, set_text};

use super::Bench;

pub fn checks(b: &mut Bench, photo: &Path) -> Result<()> {
    let img = image::open(photo).with_context(|| format!("{} (run `bash scripts/setup.sh`)", photo.display()))?.to_rgb8();
    let img = image::imageops::resize(&img, 1024, 1024, FilterType::Lanczos3);
    let installed = InstalledChecks::new();
    let brisque = installed.quality().context("BRISQUE is not installed: run scripts/setup.sh")?;
    let reader = installed.reader().context("the OCR models are not installed: run scripts/setup.sh")?;
    let ts = installed.typesetter();
    eprintln!("checks at 1K");
    b.measure("checks_brisque_1k", "BRISQUE quality score of a 1024x1024 photograph", || {
        brisque.score(&img)?;
        Ok(())
    })?;
    for (key, text, reader_name) in
        [("checks_text_ppocr_1k", "GRAND OPENING", "PP-OCRv4"), ("checks_text_tesseract_1k", "Добро пожаловать", "Tesseract (rus)")]
    {
        let label = format!("\"{text}\" typeset into a 1024x1024 photograph and read back by {reader_name}");
        let quoted = QuotedText { text: text.to_string(), placement: None };
        b.measure(key, &label, || {
            let set = set_text(ts, Some(reader), &img, &quoted).map_err(anyhow::Error::msg)?;
            ensure!(set.reading.is_some_and(|r| r.matches), "\"{text}\" was not read back");
            Ok(())
        })?;
    }
    let plan = Plan::new("a photograph of an astronaut with the words \"FIRST STEPS\" at the top", None, 1024, 1024);
    b.measure("checks_all_1k", "every check of one attempt at 1024x1024 (size, not blank, text set + read back, BRISQUE)", || {
        let checks = examine(&plan, img.clone(), &installed.checkers(&plan)).checks;
        ensure!(checks.iter().any(|c| c.kind == CheckKind::Text && c.passed()), "the text check did not pass");
        Ok(())
    })
}
