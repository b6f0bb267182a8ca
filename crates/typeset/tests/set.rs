//! Sets text in the ten scripts on busy and flat pictures with the system's Noto fonts
//! (scripts/setup-fonts.sh installs them; without them these tests fail, saying so).

use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use plantain_typeset::{MIN_CONTRAST, Placement, Script, TextSpec, Typeset, TypesetError, Typesetter, calmness, script_of};

const SAMPLES: [(&str, Script, &str); 10] = [
    ("Café déjà vu", Script::Latin, "Noto Sans"),
    ("Привет мир", Script::Cyrillic, "Noto Sans"),
    ("Καλημέρα", Script::Greek, "Noto Sans"),
    ("مرحبا بالعالم", Script::Arabic, "Noto Sans Arabic"),
    ("שלום עולם", Script::Hebrew, "Noto Sans Hebrew"),
    ("नमस्ते दुनिया", Script::Devanagari, "Noto Sans Devanagari"),
    ("สวัสดีชาวโลก", Script::Thai, "Noto Sans Thai"),
    ("你好世界", Script::Han, "Noto Sans CJK SC"),
    ("こんにちは世界", Script::Kana, "Noto Sans CJK JP"),
    ("안녕하세요 세계", Script::Hangul, "Noto Sans CJK KR"),
];

fn typesetter() -> &'static Typesetter {
    static TYPESETTER: OnceLock<Typesetter> = OnceLock::new();
    let t = TYPESETTER.get_or_init(Typesetter::new);
    let missing = t.missing_families();
    assert!(missing.is_empty(), "fonts missing: {missing:?}; run scripts/setup-fonts.sh (as root) to install them");
    t
}

/// Uniform noise over the whole colour range: no colour alone is legible on it.
fn noise(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut state = seed | 1;
    RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let [r, g, b, ..] = state.to_le_bytes();
        Rgb([r, g, b])
    })
}

fn flat(width: u32, height: u32, colour: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(width, height, Rgb(colour))
}

fn set(image: &RgbImage, text: &str, spec: &TextSpec) -> Typeset {
    match typesetter().set(image, text, spec) {
        Ok(t) => t,
        Err(e) => panic!("setting {text:?}: {e}"),
    }
}

/// The bbox is inside the picture, something changed inside it and nothing outside it.
fn assert_drawn_only_in_bbox(before: &RgbImage, t: &Typeset, what: &str) {
    let (x, y, w, h) = t.bbox;
    assert!(w > 0 && h > 0 && x + w <= before.width() && y + h <= before.height(), "{what}: bbox {:?}", t.bbox);
    let inside = |px: u32, py: u32| px >= x && px < x + w && py >= y && py < y + h;
    let mut changed_inside = 0;
    for (px, py, p) in before.enumerate_pixels() {
        let after = t.image.get_pixel(px, py);
        if inside(px, py) {
            changed_inside += usize::from(after != p);
        } else {
            assert_eq!(after, p, "{what}: pixel ({px}, {py}) outside the bbox {:?} changed", t.bbox);
        }
    }
    assert!(changed_inside > 50, "{what}: only {changed_inside} pixels drawn");
}

/// The laid-out lines hold exactly the text's characters, in order (spelled right).
fn assert_spelled(t: &Typeset, text: &str) {
    let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    assert_eq!(squeeze(&t.lines.concat()), squeeze(text), "lines {:?}", t.lines);
}

#[test]
fn every_script_on_flat_and_busy_pictures() {
    let pictures = [
        ("flat light", flat(640, 400, [235, 225, 200]), false),
        ("flat dark", flat(640, 400, [20, 30, 60]), false),
        ("noise", noise(640, 400, 7), true),
    ];
    for (text, script, family) in SAMPLES {
        assert_eq!(script_of(text), Some(script));
        for (name, picture, busy) in &pictures {
            let what = format!("{text} on {name}");
            let t = set(picture, text, &TextSpec::default());
            assert_spelled(&t, text);
            assert!(t.fonts.iter().any(|f| f == family), "{what}: fonts {:?}", t.fonts);
            assert!(t.contrast >= MIN_CONTRAST, "{what}: contrast {}", t.contrast);
            assert_eq!(t.panel.is_some(), *busy, "{what}: panel {:?}", t.panel);
            assert!(t.size_px >= 12.0 && t.size_px <= 40.0, "{what}: size {}", t.size_px);
            assert_drawn_only_in_bbox(picture, &t, &what);
        }
    }
}

#[test]
fn flat_pictures_get_the_opposite_colour() {
    let light = set(&flat(300, 200, [240, 240, 240]), "Hello", &TextSpec::default());
    assert_eq!(light.colour, Rgb([0, 0, 0]));
    let dark = set(&flat(300, 200, [10, 10, 10]), "Hello", &TextSpec::default());
    assert_eq!(dark.colour, Rgb([255, 255, 255]));
    assert!(light.contrast > 15.0 && dark.contrast > 15.0);
}

#[test]
fn right_to_left_scripts_run_right_to_left() {
    for text in ["مرحبا بالعالم", "שלום עולם"] {
        let t = set(&flat(800, 300, [200, 200, 200]), text, &TextSpec::default());
        let last = text.char_indices().last().unwrap().0;
        let first_x = t.glyphs.iter().find(|g| g.range.contains(&0)).unwrap().x;
        let last_x = t.glyphs.iter().find(|g| g.range.contains(&last)).unwrap().x;
        assert!(first_x > last_x, "{text}: first at {first_x}, last at {last_x}");
        assert!(t.glyphs.iter().filter(|g| !text[g.range.clone()].trim().is_empty()).all(|g| g.rtl));
    }
    let t = set(&flat(800, 300, [200, 200, 200]), "Café", &TextSpec::default());
    let x = |i: usize| t.glyphs.iter().find(|g| g.range.contains(&i)).unwrap().x;
    assert!(x(0) < x(3), "Latin runs left to right");
}

#[test]
fn devanagari_forms_conjuncts() {
    // स्ते (sa, virama, ta, e) shapes to a half sa, ta and the vowel sign: fewer glyphs than
    // characters. Without shaping there would be one glyph per character.
    let text = "नमस्ते";
    let t = set(&flat(600, 300, [230, 230, 230]), text, &TextSpec::default());
    assert!(t.glyphs.len() < text.chars().count(), "{} glyphs", t.glyphs.len());
}

#[test]
fn cjk_face_follows_the_language() {
    let picture = flat(400, 300, [230, 230, 230]);
    let spec = TextSpec { language: Some("ja".into()), ..TextSpec::default() };
    assert_eq!(set(&picture, "東京", &spec).fonts, ["Noto Sans CJK JP"]);
    assert_eq!(set(&picture, "東京", &TextSpec::default()).fonts, ["Noto Sans CJK SC"]);
    let tw = TextSpec { language: Some("zh-TW".into()), ..TextSpec::default() };
    assert_eq!(set(&picture, "臺北", &tw).fonts, ["Noto Sans CJK TC"]);
}

#[test]
fn mixed_scripts_use_each_scripts_font() {
    let t = set(&flat(900, 300, [230, 230, 230]), "Hello مرحبا 你好", &TextSpec::default());
    for family in ["Noto Sans", "Noto Sans Arabic", "Noto Sans CJK SC"] {
        assert!(t.fonts.iter().any(|f| f == family), "{:?}", t.fonts);
    }
}

#[test]
fn too_long_text_in_a_small_box_is_refused() {
    let picture = flat(400, 300, [230, 230, 230]);
    let spec = TextSpec { placement: Placement::Box(10, 10, 80, 30), ..TextSpec::default() };
    let long = "The quick brown fox jumps over the lazy dog, twice over";
    match typesetter().set(&picture, long, &spec) {
        Err(TypesetError::TooLong { chars, area, .. }) => {
            assert_eq!((chars, area), (long.chars().count(), (10, 10, 80, 30)));
        }
        other => panic!("expected TooLong, got {:?}", other.map(|t| t.lines)),
    }
    // The same box takes a short word.
    assert_eq!(set(&picture, "Hi", &spec).lines, ["Hi"]);
}

#[test]
fn bad_boxes_and_empty_text_are_refused() {
    let picture = flat(200, 100, [230, 230, 230]);
    for placement in [Placement::Box(150, 0, 100, 50), Placement::Box(0, 0, 10, 0)] {
        let spec = TextSpec { placement, ..TextSpec::default() };
        let err = typesetter().set(&picture, "Hi", &spec).map(|t| t.lines).unwrap_err();
        assert!(matches!(err, TypesetError::BadBox { .. }), "{err}");
    }
    let err = typesetter().set(&picture, "  ", &TextSpec::default()).map(|t| t.lines).unwrap_err();
    assert!(matches!(err, TypesetError::Empty), "{err}");
}

#[test]
fn a_script_without_a_font_is_refused_not_drawn_as_boxes() {
    let latin_only = Typesetter::with_fonts(["/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"])
        .unwrap_or_else(|e| panic!("{e}; run scripts/setup-fonts.sh"));
    let picture = flat(400, 200, [230, 230, 230]);
    match latin_only.set(&picture, "Hello 你好", &TextSpec::default()) {
        Err(TypesetError::NoFont { script, character }) => {
            assert_eq!((script.as_str(), character), ("Han", '你'));
        }
        other => panic!("expected NoFont, got {:?}", other.map(|t| t.fonts)),
    }
    assert!(latin_only.set(&picture, "Hello", &TextSpec::default()).is_ok());
    assert!(Typesetter::with_fonts(["/nonexistent/font.ttf"]).is_err());
}

#[test]
fn auto_placement_takes_the_calmest_band() {
    // Noise everywhere but one band, which is flat: centred there (ties go to the centre).
    let (w, h) = (600, 600);
    for (calm_rows, want) in [(400..600, Placement::Bottom), (0..200, Placement::Top), (200..400, Placement::Centre)] {
        let mut picture = noise(w, h, 3);
        for y in calm_rows.clone() {
            for x in 0..w {
                picture.put_pixel(x, y, Rgb([40, 90, 140]));
            }
        }
        let t = set(&picture, "Calm here", &TextSpec::default());
        assert_eq!(t.placement, want, "calm rows {calm_rows:?}");
        assert!(t.panel.is_none(), "flat ground needs no panel");
        let (_, y, _, bh) = t.text_bbox;
        assert!(calm_rows.contains(&y) && calm_rows.contains(&(y + bh - 1)), "{:?}", t.text_bbox);
    }
}

#[test]
fn auto_placement_prefers_a_band_that_needs_no_panel() {
    // The middle band is calm (broad bars) but mid-grey bars of 0.1 and 0.3 luminance defeat
    // both black and white; the top and bottom bands are busier, dark fine noise where white
    // text reads well.
    let (w, h) = (600, 600);
    let mut picture = noise(w, h, 11);
    for (x, y, p) in picture.enumerate_pixels_mut() {
        if (200..400).contains(&y) {
            let v = if (x / 40) % 2 == 0 { 89 } else { 149 };
            *p = Rgb([v, v, v]);
        } else {
            p.0 = p.0.map(|c| c / 5);
        }
    }
    let busy = |y| calmness(&picture, (0, y, w, 200));
    assert!(busy(200) < busy(0) && busy(200) < busy(400), "the middle is the calmest");
    let t = set(&picture, "Dark ground", &TextSpec::default());
    assert_eq!(t.colour, Rgb([255, 255, 255]));
    let middle_band = [Placement::Centre, Placement::Left, Placement::Right];
    assert!(!middle_band.contains(&t.placement), "{}", t.placement);
    assert!(t.panel.is_none(), "{:?}", t.panel);
    // Placed in the middle, the same text needs a panel.
    let middle = set(&picture, "Dark ground", &TextSpec { placement: Placement::Centre, ..TextSpec::default() });
    assert!(middle.panel.is_some());
}

#[test]
fn named_places_and_boxes_hold_the_text_and_its_panel() {
    let within = |t: &Typeset, (x0, y0, x1, y1): (u32, u32, u32, u32)| {
        let (x, y, w, h) = t.bbox;
        x >= x0 && y >= y0 && x + w <= x1 && y + h <= y1
    };
    let cases = [
        (Placement::TopLeft, (0, 0, 400, 200)),
        (Placement::BottomRight, (400, 400, 800, 600)),
        (Placement::Top, (0, 0, 800, 200)),
        (Placement::Centre, (0, 200, 800, 400)),
        (Placement::Box(500, 100, 250, 120), (500, 100, 750, 220)),
    ];
    for (picture, panel) in [(flat(800, 600, [230, 230, 230]), false), (noise(800, 600, 5), true)] {
        for (placement, area) in cases {
            let t = set(&picture, "Plantain", &TextSpec { placement, ..TextSpec::default() });
            assert_eq!(t.placement, placement);
            assert_eq!(t.panel.is_some(), panel);
            assert!(within(&t, area), "{placement}: drawn over {:?}", t.bbox);
        }
    }
}

#[test]
fn long_text_wraps_to_max_lines_and_sizes_down() {
    let picture = flat(600, 600, [230, 230, 230]);
    let text = "A picture is worth a thousand words, they say";
    let two = set(&picture, text, &TextSpec::default());
    assert_eq!(two.lines.len(), 2, "{:?}", two.lines);

    let one = set(&picture, text, &TextSpec { max_lines: 1, ..TextSpec::default() });
    assert_eq!(one.lines.len(), 1);
    assert!(one.size_px < two.size_px, "{} vs {}", one.size_px, two.size_px);
    let forced = set(&picture, "one\ntwo", &TextSpec::default());
    assert_eq!(forced.lines, ["one", "two"]);
    let g = forced.glyphs.iter().find(|g| g.range.start == 4).unwrap();
    assert_eq!(g.line, 1, "the byte after the line feed is on the second line");
}

#[test]
fn wrapped_lines_are_balanced() {
    // At the largest size (40 px here) this takes a line and a bit: greedy wrapping would
    // leave a short second line.
    let picture = flat(1000, 400, [230, 230, 230]);
    let t = set(&picture, "The quick brown fox jumps over the lazy dog again and again", &TextSpec::default());
    assert_eq!((t.lines.len(), t.size_px), (2, 40.0), "{:?}", t.lines);
    let lengths: Vec<usize> = t.lines.iter().map(|l| l.chars().count()).collect();
    assert!(lengths[0].min(lengths[1]) * 10 >= lengths[0].max(lengths[1]) * 7, "unbalanced: {:?}", t.lines);
}

#[test]
fn a_users_colour_and_size_are_kept() {
    let picture = flat(600, 300, [250, 250, 250]);
    let navy = Rgb([10, 20, 90]);
    let spec = TextSpec { size: Some(30.0), colour: Some(navy), ..TextSpec::default() };
    let t = set(&picture, "Navy", &spec);
    assert_eq!((t.colour, t.size_px, t.panel.is_none()), (navy, 30.0, true));
    // Yellow on white is illegible: it keeps its colour on a dark panel.
    let yellow = Rgb([255, 230, 0]);
    let t = set(&picture, "Yellow", &TextSpec { colour: Some(yellow), ..TextSpec::default() });
    assert_eq!(t.colour, yellow);
    assert_eq!(t.panel.as_ref().map(|p| p.colour), Some(Rgb([0, 0, 0])));
    assert!(t.contrast >= MIN_CONTRAST);
    assert_drawn_only_in_bbox(&picture, &t, "yellow");
}
