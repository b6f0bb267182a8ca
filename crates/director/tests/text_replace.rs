//! Rewriting a text the picture shows ("replace the text 'SALE' with 'SOLDES'") with the
//! installed OCR models and fonts (scripts/setup.sh installs them): the words are found by OCR,
//! taken out, set again at their size, colour and angle, read back, and no pixel outside the
//! region moves. Posters are drawn in DejaVu; the edit sets its text in Noto Sans.

use image::{Rgb, RgbImage};
use plantain_director::edit::{EditError, EditOptions, EditPlan, Placing, draw_text, installed_tools, plan};
use plantain_typeset::Typesetter;

fn poster_fonts() -> Typesetter {
    let fonts = ["/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"];
    Typesetter::with_fonts(fonts).expect("DejaVu fonts (scripts/setup-fonts.sh)")
}

/// A warm diagonal gradient.
fn ground(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(250 - x * 60 / w) as u8, (200 - y * 80 / h) as u8, (60 + (x + y) * 40 / (w + h)) as u8]))
}

/// A text, its centre, angle (degrees), size (px) and colour.
type Word<'a> = (&'a str, [f32; 2], f32, f32, [u8; 3]);

/// The texts drawn on the ground.
fn poster(texts: &[Word<'_>]) -> RgbImage {
    let ts = poster_fonts();
    let mut image = ground(640, 400);
    for &(text, centre, angle_deg, size_px, colour) in texts {
        image = draw_text(&ts, &image, text, Placing { centre, angle_deg, size_px, colour, bold: true }).expect("drawn").0;
    }
    image
}

fn edit(image: &RgbImage, words: &str) -> Result<EditPlan, EditError> {
    assert!(installed_tools().is_ok(), "the OCR models are not installed: run scripts/setup.sh");
    plan(words, std::slice::from_ref(image), &EditOptions::default(), None)
}

/// The plan's text edit passed its read-back, and nothing outside its region changed.
fn check_done(plan: &EditPlan, image: &RgbImage, occurrences: usize) -> RgbImage {
    let text = plan.text.as_ref().expect("a text report");
    assert_eq!(text.occurrences.len(), occurrences, "{}", plan.explain());
    assert!(text.passed(), "{}", plan.explain());
    let edited = plan.finish(None).expect("exact work");
    assert_eq!(edited.report.outside_changed, Some(0));
    assert!(edited.report.changed.unwrap_or(0) > 100, "{}", plan.explain());
    // Far from every changed pixel, the bytes are the input's (checked directly, not by the plan's own count).
    let (w, h) = image.dimensions();
    let kept = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).filter(|&(x, y)| plan.alpha.get_pixel(x, y).0[0] == 0);
    assert!(kept.clone().all(|(x, y)| edited.image.get_pixel(x, y) == image.get_pixel(x, y)));
    assert!(kept.count() as u64 > u64::from(w * h) / 2, "the region is the words, not the picture");
    edited.image
}

#[test]
fn sale_becomes_soldes_and_the_rest_is_untouched() {
    let image = poster(&[("SALE", [320.0, 150.0], 0.0, 80.0, [200, 20, 30]), ("50% OFF", [320.0, 300.0], 0.0, 40.0, [30, 30, 90])]);
    let plan = edit(&image, "replace the text 'SALE' with 'SOLDES'").expect("planned");
    let explained = plan.explain();
    assert!(explained.contains("read back exactly by PP-OCRv4") && explained.contains("operation: replace text"), "{explained}");
    let set = plan.text.as_ref().unwrap().occurrences[0].set.clone().expect("set");
    // The old text's size (cap height 0.73 em in DejaVu Sans Bold, in Noto Sans Bold 0.714 em) and colour.
    assert!((70.0..92.0).contains(&set.size_px), "{set:?}");
    let dist = set.colour.iter().zip([200u8, 20, 30]).map(|(a, b)| a.abs_diff(b)).max().unwrap();
    assert!(dist <= 25, "{set:?}");
    let after = check_done(&plan, &image, 1);
    // The other text is still there, byte for byte.
    let ocr = installed_tools().unwrap().reader;
    let read: Vec<String> = ocr.read(&after).unwrap().into_iter().map(|l| l.text).collect();
    assert!(read.iter().any(|t| t.contains("50% OFF")), "{read:?}");
    assert!(!read.iter().any(|t| t.split_whitespace().any(|w| w == "SALE")), "{read:?}");
}

#[test]
fn a_word_inside_a_line_is_rewritten_alone() {
    let image = poster(&[("SUMMER SALE NOW", [320.0, 200.0], 0.0, 56.0, [250, 250, 250])]);
    let plan = edit(&image, "change the word \u{201C}SALE\u{201D} to \u{201C}SOLDES\u{201D}").expect("planned");
    let after = check_done(&plan, &image, 1);
    let ocr = installed_tools().unwrap().reader;
    let read = ocr.read(&after).unwrap().into_iter().map(|l| l.text).collect::<Vec<_>>().join(" ");
    let words: Vec<&str> = read.split_whitespace().collect();
    assert!(words.contains(&"SUMMER") && words.contains(&"NOW") && !words.contains(&"SALE"), "{read}");
}

#[test]
fn text_that_is_not_there_is_an_answer_naming_what_is() {
    let image = poster(&[("SALE", [320.0, 200.0], 0.0, 70.0, [20, 20, 20])]);
    let err = edit(&image, "replace the text \"WINTER\" with \"SUMMER\"").unwrap_err();
    assert!(matches!(err, EditError::NotFound(_)) && err.is_answer(), "{err:?}");
    assert!(err.to_string().contains("\"SALE\""), "{err}");
    let blank = ground(300, 200);
    let err = edit(&blank, "replace the text 'SALE' with 'SOLDES'").unwrap_err();
    assert!(err.to_string().contains("finds no text"), "{err}");
}

#[test]
fn cyrillic_is_found_and_read_back_by_tesseract() {
    let image = poster(&[("ЗАКРЫТО", [320.0, 200.0], 0.0, 64.0, [20, 40, 120])]);
    let plan = edit(&image, "replace the text «ЗАКРЫТО» with «ОТКРЫТО»").expect("planned");
    assert!(plan.explain().contains("Tesseract (rus)"), "{}", plan.explain());
    check_done(&plan, &image, 1);
}

#[test]
fn slanted_text_is_set_at_its_angle() {
    let image = poster(&[("OPEN", [300.0, 200.0], -14.0, 72.0, [10, 90, 40])]);
    let plan = edit(&image, "change the text \"OPEN\" to \"CLOSED\"").expect("planned");
    let o = &plan.text.as_ref().unwrap().occurrences[0];
    assert!((o.angle_deg + 14.0).abs() < 3.0, "angle {}", o.angle_deg);
    check_done(&plan, &image, 1);
}

#[test]
fn every_occurrence_is_rewritten_and_removal_leaves_ground() {
    let image = poster(&[("SALE", [160.0, 120.0], 0.0, 60.0, [250, 250, 250]), ("SALE", [460.0, 280.0], 8.0, 48.0, [20, 20, 120])]);
    let plan = edit(&image, "replace 'SALE' with 'PROMO'").expect("planned");
    check_done(&plan, &image, 2);
    assert!(plan.notes.iter().any(|n| n.contains("every occurrence")), "{:?}", plan.notes);
    let removed = edit(&image, "remove the text 'SALE'").expect("planned");
    let after = check_done(&removed, &image, 2);
    // Where the letters were, the ground is back: close to the gradient everywhere.
    let truth = ground(640, 400);
    let worst = after.pixels().zip(truth.pixels()).map(|(a, b)| (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap()).max().unwrap();
    assert!(worst <= 6, "worst difference from the bare ground {worst}");
}
