//! Colour for contrast: WCAG 2 relative luminance and contrast ratio, the text colour, and the
//! backing panel when no colour alone is legible.

use std::sync::LazyLock;

use image::Rgb;

/// The contrast ratio text must reach against the pixels under and around it (WCAG 2, AA for
/// normal text).
pub const MIN_CONTRAST: f32 = 4.5;

/// The share of background pixels, at each end of the luminance range, left out as outliers
/// when the worst contrast is measured (the 5th and 95th percentiles stand for the darkest and
/// lightest background).
pub const OUTLIER_SHARE: f32 = 0.05;

/// The least opacity of a backing panel: a fainter one would read as a smudge, not a panel.
const MIN_PANEL_OPACITY: f32 = 0.55;

/// The panel's opacity is chosen for this contrast, a little above [`MIN_CONTRAST`], so that
/// rounding the composited pixels to 8 bits cannot take it below.
const PANEL_TARGET: f32 = MIN_CONTRAST + 0.05;

pub(crate) const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
pub(crate) const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

static TO_LINEAR: LazyLock<[f32; 256]> = LazyLock::new(|| {
    std::array::from_fn(|i| {
        let v = i as f32 / 255.0;
        if v <= 0.04045 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
    })
});

/// An sRGB channel in linear light, 0 to 1.
pub(crate) fn to_linear(v: u8) -> f32 {
    TO_LINEAR[v as usize]
}

/// A linear-light channel (0 to 1) encoded as sRGB, rounded.
pub(crate) fn to_srgb(l: f32) -> u8 {
    let l = l.clamp(0.0, 1.0);
    let v = if l <= 0.003_130_8 { l * 12.92 } else { 1.055 * l.powf(1.0 / 2.4) - 0.055 };
    (v * 255.0).round() as u8
}

/// WCAG 2 relative luminance of an sRGB colour, 0 (black) to 1 (white).
pub fn relative_luminance(c: Rgb<u8>) -> f32 {
    let [r, g, b] = c.0.map(to_linear);
    0.2126 * r + 0.7152 * g + 0.0722 * b
}

/// WCAG 2 contrast ratio of two relative luminances, 1 to 21.
pub fn luminance_contrast(a: f32, b: f32) -> f32 {
    (a.max(b) + 0.05) / (a.min(b) + 0.05)
}

/// WCAG 2 contrast ratio of two colours, 1 to 21.
pub fn contrast_ratio(a: Rgb<u8>, b: Rgb<u8>) -> f32 {
    luminance_contrast(relative_luminance(a), relative_luminance(b))
}

/// The luminance range of a background with outliers left out: `lo` and `hi` are its
/// [`OUTLIER_SHARE`] and 1 − [`OUTLIER_SHARE`] quantiles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Spread {
    pub lo: f32,
    pub hi: f32,
}

impl Spread {
    /// The spread of some luminances (reordered in place); `None` when there are none.
    pub fn of(lums: &mut [f32]) -> Option<Spread> {
        if lums.is_empty() {
            return None;
        }
        let last = lums.len() - 1;
        let lo_i = (last as f32 * OUTLIER_SHARE).round() as usize;
        let hi_i = (last as f32 * (1.0 - OUTLIER_SHARE)).round() as usize;
        let lo = *lums.select_nth_unstable_by(lo_i, f32::total_cmp).1;
        let hi = *lums.select_nth_unstable_by(hi_i, f32::total_cmp).1;
        Some(Spread { lo, hi })
    }

    /// The lowest contrast between a colour of luminance `l` and any background luminance in
    /// the spread (1 when `l` lies inside it).
    pub fn worst_contrast(self, l: f32) -> f32 {
        if l < self.lo {
            luminance_contrast(l, self.lo)
        } else if l > self.hi {
            luminance_contrast(l, self.hi)
        } else {
            1.0
        }
    }
}

/// A backing panel: its colour and opacity (0 to 1, composited in linear light).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PanelPaint {
    pub colour: Rgb<u8>,
    pub opacity: f32,
}

/// What to draw with: the text colour and, when the colour alone is not legible, a panel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Choice {
    pub colour: Rgb<u8>,
    pub panel: Option<PanelPaint>,
}

/// Chooses the text colour for a background spread. The user's colour when given, else black
/// or white, whichever contrasts more; when that stays below [`MIN_CONTRAST`], a panel of black
/// or white (whichever contrasts more with the text) with the least opacity that brings the
/// contrast to it. Without a user colour, black and white text are both tried on a panel and
/// the one needing the fainter panel wins. Any colour reaches at least 4.58 against black or
/// white, so an opaque panel always suffices.
pub(crate) fn choose(spread: Spread, user: Option<Rgb<u8>>) -> Choice {
    let candidates = match user {
        Some(c) => vec![c],
        None => vec![BLACK, WHITE],
    };
    let plain = candidates.iter().copied().max_by(|a, b| {
        let ca = spread.worst_contrast(relative_luminance(*a));
        let cb = spread.worst_contrast(relative_luminance(*b));
        ca.total_cmp(&cb)
    });
    let plain = plain.expect("at least one candidate colour");
    if spread.worst_contrast(relative_luminance(plain)) >= MIN_CONTRAST {
        return Choice { colour: plain, panel: None };
    }
    candidates
        .into_iter()
        .map(|colour| Choice { colour, panel: Some(panel_for(spread, colour)) })
        .min_by(|a, b| opacity(a).total_cmp(&opacity(b)))
        .expect("at least one candidate colour")
}

fn opacity(choice: &Choice) -> f32 {
    choice.panel.map_or(0.0, |p| p.opacity)
}

/// The panel for text of `colour` over `spread`: black or white, at the least opacity (in
/// steps of 0.05, at least [`MIN_PANEL_OPACITY`]) that reaches the target contrast.
fn panel_for(spread: Spread, colour: Rgb<u8>) -> PanelPaint {
    let lc = relative_luminance(colour);
    let dark = luminance_contrast(lc, 0.0) >= luminance_contrast(lc, 1.0);
    let (panel, lp) = if dark { (BLACK, 0.0) } else { (WHITE, 1.0) };
    // Compositing in linear light mixes luminances linearly: l' = α·lp + (1 − α)·l.
    let needed = if dark {
        // Light text: the lightest background must come down to `max`.
        let max = (lc + 0.05) / PANEL_TARGET - 0.05;
        if spread.hi <= max { 0.0 } else { (spread.hi - max) / (spread.hi - lp) }
    } else {
        // Dark text: the darkest background must come up to `min`.
        let min = PANEL_TARGET * (lc + 0.05) - 0.05;
        if spread.lo >= min { 0.0 } else { (min - spread.lo) / (lp - spread.lo) }
    };
    let stepped = (needed * 20.0).ceil() / 20.0;
    PanelPaint { colour: panel, opacity: stepped.clamp(MIN_PANEL_OPACITY, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wcag_reference_values() {
        assert!((contrast_ratio(BLACK, WHITE) - 21.0).abs() < 1e-4);
        // #777777 on white is the classic just-failing grey (4.48).
        let grey = Rgb([0x77, 0x77, 0x77]);
        assert!((contrast_ratio(grey, WHITE) - 4.48).abs() < 0.01);
        assert!((relative_luminance(Rgb([255, 0, 0])) - 0.2126).abs() < 1e-4);
    }

    #[test]
    fn srgb_round_trips() {
        for v in 0..=255u8 {
            assert_eq!(to_srgb(to_linear(v)), v);
        }
    }

    #[test]
    fn spread_leaves_out_outliers() {
        let mut lums: Vec<f32> = (0..100).map(|i| i as f32 / 99.0).collect();
        let s = Spread::of(&mut lums).unwrap();
        assert!((s.lo - 5.0 / 99.0).abs() < 1e-6 && (s.hi - 94.0 / 99.0).abs() < 1e-6);
        assert_eq!(Spread::of(&mut []), None);
    }

    #[test]
    fn flat_backgrounds_get_the_opposite_colour_and_no_panel() {
        let light = Spread { lo: 0.9, hi: 0.9 };
        assert_eq!(choose(light, None), Choice { colour: BLACK, panel: None });
        let dark = Spread { lo: 0.02, hi: 0.03 };
        assert_eq!(choose(dark, None), Choice { colour: WHITE, panel: None });
    }

    #[test]
    fn busy_backgrounds_get_a_panel_that_reaches_the_target() {
        let busy = Spread { lo: 0.01, hi: 0.95 };
        let choice = choose(busy, None);
        let panel = choice.panel.expect("a panel");
        let lc = relative_luminance(choice.colour);
        let lp = relative_luminance(panel.colour);
        let a = panel.opacity;
        let after = Spread { lo: a * lp + (1.0 - a) * busy.lo, hi: a * lp + (1.0 - a) * busy.hi };
        assert!(after.worst_contrast(lc) >= MIN_CONTRAST, "{choice:?}");
        assert!(a < 1.0, "a semi-opaque panel suffices here: {choice:?}");
    }

    #[test]
    fn a_users_colour_is_kept_and_backed_when_it_fails() {
        let red = Rgb([220, 30, 30]);
        let light = Spread { lo: 0.8, hi: 0.9 };
        let choice = choose(light, Some(red));
        assert_eq!(choice.colour, red);
        // This red contrasts more with white (4.9) than with black (4.3): a light panel.
        let panel = choice.panel.expect("a panel");
        assert_eq!(panel.colour, WHITE);
        let lo = panel.opacity + (1.0 - panel.opacity) * light.lo;
        assert!(luminance_contrast(relative_luminance(red), lo) >= MIN_CONTRAST);
        let dark = Spread { lo: 0.0, hi: 0.001 };
        assert_eq!(choose(dark, Some(WHITE)), Choice { colour: WHITE, panel: None });
    }
}
