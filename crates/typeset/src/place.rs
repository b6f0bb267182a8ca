//! Where text goes: named places, the boxes they stand for, and the calmness score that picks
//! the place for [`Placement::Auto`].

use std::fmt;
use std::str::FromStr;

use image::RgbImage;

use crate::layout::IRect;

/// The margin kept between named places and the picture's edges, as a share of its shorter
/// side.
pub const MARGIN_SHARE: f32 = 0.04;

/// The width of the corner and side places (top-left, left, …) as a share of the width within
/// the margins.
pub const SIDE_WIDTH_SHARE: f32 = 0.6;

/// How much busier than the calmest place another may be and still count as calm:
/// `(relative, absolute)` slack, see [`about_as_calm`].
pub const CALM_SLACK: (f32, f32) = (0.1, 0.02);

/// Whether a place of calmness score `busyness` counts as calm as the calmest, `calmest`:
/// within 10% of it plus 0.02 ([`CALM_SLACK`]). Noise and texture vary that much from place
/// to place by chance; within it, [`Placement::Auto`] keeps to its order of preference.
pub fn about_as_calm(busyness: f32, calmest: f32) -> bool {
    busyness <= calmest * (1.0 + CALM_SLACK.0) + CALM_SLACK.1
}

/// Where to put the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Centred, left or right in the bottom, top or middle band, whichever needs the faintest
    /// backing panel (none, ideally), then is about as calm under the text as the calmest
    /// ([`calmness`], [`about_as_calm`]), then comes first in that order.
    #[default]
    Auto,
    /// A box: x, y, width, height in pixels; the text is centred in it.
    Box(u32, u32, u32, u32),
    Top,
    Bottom,
    Centre,
    Left,
    Right,
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

/// How text sits in its box, across and down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Start,
    Middle,
    End,
}

/// A box for the text and how the text sits in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub placement: Placement,
    pub rect: IRect,
    pub across: Align,
    pub down: Align,
}

const NAMES: [(&str, Placement); 10] = [
    ("auto", Placement::Auto),
    ("top", Placement::Top),
    ("bottom", Placement::Bottom),
    ("centre", Placement::Centre),
    ("left", Placement::Left),
    ("right", Placement::Right),
    ("top-left", Placement::TopLeft),
    ("top-right", Placement::TopRight),
    ("bottom-left", Placement::BottomLeft),
    ("bottom-right", Placement::BottomRight),
];

impl FromStr for Placement {
    type Err = String;

    /// A named place (`auto`, `top`, `bottom`, `centre` or `center`, `left`, `right`,
    /// `top-left`, `top-right`, `bottom-left`, `bottom-right`) or a box `x,y,w,h`.
    fn from_str(s: &str) -> Result<Placement, String> {
        let name = s.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        let name = if name == "center" { "centre".to_string() } else { name };
        if let Some((_, p)) = NAMES.iter().find(|(n, _)| *n == name) {
            return Ok(*p);
        }
        let parts: Vec<u32> =
            s.split(',').map(|p| p.trim().parse()).collect::<Result<_, _>>().map_err(|_| format!("not a place or a box x,y,w,h: {s:?}"))?;
        match parts[..] {
            [x, y, w, h] => Ok(Placement::Box(x, y, w, h)),
            _ => Err(format!("not a place or a box x,y,w,h: {s:?}")),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Box(x, y, w, h) => write!(f, "{x},{y},{w},{h}"),
            p => {
                let name = NAMES.iter().find(|(_, q)| q == p).map_or("?", |(n, _)| *n);
                f.write_str(name)
            }
        }
    }
}

/// The candidate regions for a placement on a `width` × `height` picture: one for a box or a
/// named place, nine for [`Placement::Auto`] (the bottom, top and middle bands, each with the
/// text centred, to the left and to the right). Bands are the thirds
/// of the picture within a margin of [`MARGIN_SHARE`] of its shorter side; corner and side
/// places take [`SIDE_WIDTH_SHARE`] of the band's width.
pub(crate) fn regions(placement: Placement, width: u32, height: u32) -> Vec<Region> {
    use Placement as P;
    let margin = (MARGIN_SHARE * width.min(height) as f32).round() as i32;
    let (w, h) = (width as i32 - 2 * margin, height as i32 - 2 * margin);
    let band = h / 3;
    let side = (SIDE_WIDTH_SHARE * w as f32).round() as i32;
    let region = |placement, across, down, x0: i32, w: i32| {
        let y0 = margin + band * down_index(down);
        Region { placement, rect: IRect { x0, y0, x1: x0 + w, y1: y0 + band }, across, down }
    };
    let (l, r) = (margin, margin + w - side);
    match placement {
        P::Auto => [P::Bottom, P::Top, P::Centre]
            .into_iter()
            .flat_map(|band| {
                let centred = regions(band, width, height)[0];
                let (left, right) = sides(band);
                let at = |placement, across| Region { placement, across, ..centred };
                [centred, at(left, Align::Start), at(right, Align::End)]
            })
            .collect(),
        P::Box(x, y, bw, bh) => {
            let (x0, y0) = (x as i32, y as i32);
            let rect = IRect { x0, y0, x1: x0 + bw as i32, y1: y0 + bh as i32 };
            vec![Region { placement, rect, across: Align::Middle, down: Align::Middle }]
        }
        P::Top => vec![region(placement, Align::Middle, Align::Start, margin, w)],
        P::Centre => vec![region(placement, Align::Middle, Align::Middle, margin, w)],
        P::Bottom => vec![region(placement, Align::Middle, Align::End, margin, w)],
        P::Left => vec![region(placement, Align::Start, Align::Middle, l, side)],
        P::Right => vec![region(placement, Align::End, Align::Middle, r, side)],
        P::TopLeft => vec![region(placement, Align::Start, Align::Start, l, side)],
        P::TopRight => vec![region(placement, Align::End, Align::Start, r, side)],
        P::BottomLeft => vec![region(placement, Align::Start, Align::End, l, side)],
        P::BottomRight => vec![region(placement, Align::End, Align::End, r, side)],
    }
}

/// The left and right places of a band.
fn sides(band: Placement) -> (Placement, Placement) {
    match band {
        Placement::Top => (Placement::TopLeft, Placement::TopRight),
        Placement::Bottom => (Placement::BottomLeft, Placement::BottomRight),
        _ => (Placement::Left, Placement::Right),
    }
}

fn down_index(down: Align) -> i32 {
    match down {
        Align::Start => 0,
        Align::Middle => 1,
        Align::End => 2,
    }
}

/// The shift that puts `ink` (in layout coordinates) where `region` wants it.
pub(crate) fn offset(region: &Region, ink: IRect) -> (i32, i32) {
    let place = |align, lo: i32, hi: i32, ink_lo: i32, ink_hi: i32| match align {
        Align::Start => lo - ink_lo,
        Align::Middle => (lo + hi - ink_lo - ink_hi).div_euclid(2),
        Align::End => hi - ink_hi,
    };
    let r = region.rect;
    (place(region.across, r.x0, r.x1, ink.x0, ink.x1), place(region.down, r.y0, r.y1, ink.y0, ink.y1))
}

/// How busy the picture is over `rect` (clipped to it): the mean absolute luma gradient (sum
/// of the horizontal and vertical differences of neighbouring pixels) plus the standard
/// deviation of luma, luma being Rec. 709 weights on sRGB values scaled to 0..1. Flat ground
/// scores 0; lower is calmer. Empty rectangles score infinity.
pub fn calmness(image: &RgbImage, rect: (u32, u32, u32, u32)) -> f32 {
    let (x, y, w, h) = rect;
    let r = IRect { x0: x as i32, y0: y as i32, x1: (x + w) as i32, y1: (y + h) as i32 };
    busyness(image, r.clip(image.width(), image.height()))
}

pub(crate) fn busyness(image: &RgbImage, r: IRect) -> f32 {
    if r.width() <= 0 || r.height() <= 0 {
        return f32::INFINITY;
    }
    let (w, h) = (r.width() as usize, r.height() as usize);
    // Luma of the rectangle, row by row, computed once.
    let luma: Vec<f32> = (r.y0..r.y1)
        .flat_map(|y| (r.x0..r.x1).map(move |x| (x, y)))
        .map(|(x, y)| {
            let p = image.get_pixel(x as u32, y as u32).0;
            (0.2126 * p[0] as f32 + 0.7152 * p[1] as f32 + 0.0722 * p[2] as f32) / 255.0
        })
        .collect();
    let n = luma.len() as f64;
    let mean = luma.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = luma.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
    let across: f64 = luma.chunks_exact(w).flat_map(|row| row.windows(2)).map(|p| (p[1] - p[0]).abs() as f64).sum();
    let down: f64 = luma.iter().zip(&luma[w.min(luma.len())..]).map(|(a, b)| (b - a).abs() as f64).sum();
    debug_assert_eq!(luma.len(), w * h);
    ((across + down) / n + var.sqrt()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn names_round_trip() {
        for (name, p) in NAMES {
            assert_eq!(name.parse::<Placement>(), Ok(p));
            assert_eq!(p.to_string(), name);
        }
        assert_eq!("Center".parse::<Placement>(), Ok(Placement::Centre));
        assert_eq!("1, 2,3,4".parse::<Placement>(), Ok(Placement::Box(1, 2, 3, 4)));
        assert!("middle-ish".parse::<Placement>().is_err());
        assert!("1,2,3".parse::<Placement>().is_err());
    }

    #[test]
    fn bands_tile_the_picture_within_margins() {
        let rs = regions(Placement::Auto, 1000, 700);
        let names: Vec<Placement> = rs.iter().map(|r| r.placement).collect();
        use Placement as P;
        let want = [P::Bottom, P::BottomLeft, P::BottomRight, P::Top, P::TopLeft, P::TopRight, P::Centre, P::Left, P::Right];
        assert_eq!(names, want);
        let m = 28; // 4% of 700
        let top = IRect { x0: m, y0: m, x1: 1000 - m, y1: m + (700 - 2 * m) / 3 };
        assert_eq!([rs[3].rect, rs[4].rect, rs[5].rect], [top; 3], "Auto's sides span the band");
        assert_eq!([rs[3].across, rs[4].across, rs[5].across], [Align::Middle, Align::Start, Align::End]);
        assert_eq!(rs[0].rect.y1, m + 3 * ((700 - 2 * m) / 3));
        let tr = regions(Placement::TopRight, 1000, 700)[0];
        assert_eq!((tr.rect.x1, tr.across), (1000 - m, Align::End));
    }

    #[test]
    fn offset_aligns_ink() {
        let region = Region {
            placement: Placement::BottomLeft,
            rect: IRect { x0: 10, y0: 100, x1: 60, y1: 200 },
            across: Align::Start,
            down: Align::End,
        };
        let ink = IRect { x0: 2, y0: -5, x1: 22, y1: 15 };
        assert_eq!(offset(&region, ink), (8, 185));
        let centred = Region { across: Align::Middle, down: Align::Middle, ..region };
        assert_eq!(offset(&centred, ink), (23, 145));
    }

    #[test]
    fn calmness_ranks_flat_below_stripes() {
        let mut img = RgbImage::from_pixel(40, 40, Rgb([120, 130, 140]));
        for y in 20..40 {
            for x in 0..40 {
                if x % 2 == 0 {
                    img.put_pixel(x, y, Rgb([250, 250, 250]));
                }
            }
        }
        assert_eq!(calmness(&img, (0, 0, 40, 20)), 0.0);
        assert!(calmness(&img, (0, 20, 40, 20)) > 0.5);
        assert_eq!(calmness(&img, (0, 0, 0, 5)), f32::INFINITY);
    }
}
