//! plantain's shared request vocabulary: the aspect ratios and image sizes the Gemini image API
//! accepts, the exact output pixels it answers with, the canvas a diffusion model should draw
//! at before the picture is resized to those pixels ([`canvas_for`]), the model families
//! ([`Family`]) and the generation defaults every front end shares ([`DEFAULT_STRENGTH`], ...).
//! No ML, no IO.
//!
//! The table is the one in `api-spec.md` (Gemini 3.1 Flash Image). Every column is the 1K
//! column scaled (x0.5, x2, x4), but it is kept cell by cell because clients compare against
//! Google's published numbers, not a formula.

mod canvas;
mod defaults;
mod family;
pub mod time;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use canvas::{NATIVE_RATIO_TOLERANCE, canvas_for, native_canvas};
pub use defaults::{DEFAULT_GUIDANCE, DEFAULT_IMAGE_GUIDANCE, DEFAULT_STEPS, DEFAULT_STRENGTH};
pub use family::{Family, KLEIN_CLASS};

/// A rejected `aspectRatio` / `imageSize` string; the message lists what is accepted, so it can
/// go back to API clients as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unsupported aspect ratio {0:?}; accepted: {ACCEPTED_RATIOS}")]
    AspectRatio(String),
    #[error("unsupported image size {0:?}; accepted: {ACCEPTED_SIZES}")]
    ImageSize(String),
}

/// The accepted aspect ratios, as error messages list them.
pub const ACCEPTED_RATIOS: &str = "1:1, 1:4, 1:8, 2:3, 3:2, 3:4, 4:1, 4:3, 4:5, 5:4, 8:1, 9:16, 16:9, 21:9";
/// The accepted image sizes, as error messages list them.
pub const ACCEPTED_SIZES: &str = "512 (or 0.5K), 1K, 2K, 4K (a lowercase k is accepted too)";

/// The 14 aspect ratios (width:height) of Gemini 3.1 Flash Image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum AspectRatio {
    #[default]
    R1x1,
    R1x4,
    R1x8,
    R2x3,
    R3x2,
    R3x4,
    R4x1,
    R4x3,
    R4x5,
    R5x4,
    R8x1,
    R9x16,
    R16x9,
    R21x9,
}

impl AspectRatio {
    /// All ratios, in the table's order.
    pub const ALL: [AspectRatio; 14] = [
        Self::R1x1,
        Self::R1x4,
        Self::R1x8,
        Self::R2x3,
        Self::R3x2,
        Self::R3x4,
        Self::R4x1,
        Self::R4x3,
        Self::R4x5,
        Self::R5x4,
        Self::R8x1,
        Self::R9x16,
        Self::R16x9,
        Self::R21x9,
    ];

    /// `(width, height)` terms: `(16, 9)` for 16:9.
    pub const fn terms(self) -> (u32, u32) {
        match self {
            Self::R1x1 => (1, 1),
            Self::R1x4 => (1, 4),
            Self::R1x8 => (1, 8),
            Self::R2x3 => (2, 3),
            Self::R3x2 => (3, 2),
            Self::R3x4 => (3, 4),
            Self::R4x1 => (4, 1),
            Self::R4x3 => (4, 3),
            Self::R4x5 => (4, 5),
            Self::R5x4 => (5, 4),
            Self::R8x1 => (8, 1),
            Self::R9x16 => (9, 16),
            Self::R16x9 => (16, 9),
            Self::R21x9 => (21, 9),
        }
    }

    /// The API spelling, `"16:9"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::R1x1 => "1:1",
            Self::R1x4 => "1:4",
            Self::R1x8 => "1:8",
            Self::R2x3 => "2:3",
            Self::R3x2 => "3:2",
            Self::R3x4 => "3:4",
            Self::R4x1 => "4:1",
            Self::R4x3 => "4:3",
            Self::R4x5 => "4:5",
            Self::R5x4 => "5:4",
            Self::R8x1 => "8:1",
            Self::R9x16 => "9:16",
            Self::R16x9 => "16:9",
            Self::R21x9 => "21:9",
        }
    }

    /// width / height.
    pub fn value(self) -> f64 {
        let (w, h) = self.terms();
        f64::from(w) / f64::from(h)
    }

    /// The supported ratio closest to `width x height` (by log-ratio), e.g. to map an OpenAI
    /// `size` such as `1536x1024` (3:2) onto the table. Zero sides count as 1.
    pub fn nearest(width: u32, height: u32) -> AspectRatio {
        let r = (f64::from(width.max(1)) / f64::from(height.max(1))).ln();
        let mut best = Self::R1x1;
        for candidate in Self::ALL {
            if (candidate.value().ln() - r).abs() < (best.value().ln() - r).abs() {
                best = candidate;
            }
        }
        best
    }
}

impl fmt::Display for AspectRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AspectRatio {
    type Err = ParseError;

    /// Exactly the API spelling (`"16:9"`), surrounding whitespace ignored. Other spellings
    /// (`"16x9"`, `"32:18"`) are rejected so that a typo does not silently pick a shape.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let t = s.trim();
        Self::ALL.into_iter().find(|r| r.as_str() == t).ok_or_else(|| ParseError::AspectRatio(s.to_owned()))
    }
}

/// Gemini's `imageSize`.
///
/// Leniency: Google accepts only `"512"`, `"1K"`, `"2K"`, `"4K"` (uppercase K) and rejects
/// `"1k"`. plantain is lenient: it also takes `"0.5K"` (which some clients send), a lowercase
/// `k`, and surrounding whitespace. It always writes the canonical form (`"512"`, `"1K"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ImageSize {
    /// `"512"` (`"0.5K"`).
    S512,
    /// `"1K"`, the API default.
    #[default]
    S1K,
    /// `"2K"`.
    S2K,
    /// `"4K"`.
    S4K,
}

impl ImageSize {
    /// All sizes, smallest first.
    pub const ALL: [ImageSize; 4] = [Self::S512, Self::S1K, Self::S2K, Self::S4K];

    /// The canonical API spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::S512 => "512",
            Self::S1K => "1K",
            Self::S2K => "2K",
            Self::S4K => "4K",
        }
    }

    /// Output tokens Gemini 3.1 Flash Image bills per generated image at this size
    /// (for `usageMetadata`).
    pub const fn output_tokens(self) -> u32 {
        match self {
            Self::S512 => 747,
            Self::S1K => 1120,
            Self::S2K => 1680,
            Self::S4K => 2520,
        }
    }

    const fn column(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageSize {
    type Err = ParseError;

    /// See the type's docs for what is accepted.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.trim() {
            "512" | "0.5K" | "0.5k" => Ok(Self::S512),
            "1K" | "1k" => Ok(Self::S1K),
            "2K" | "2k" => Ok(Self::S2K),
            "4K" | "4k" => Ok(Self::S4K),
            _ => Err(ParseError::ImageSize(s.to_owned())),
        }
    }
}

macro_rules! serde_as_str {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        /// Parses with `FromStr`, so JSON gets the same leniency and error text.
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_str!(AspectRatio);
serde_as_str!(ImageSize);

/// Output pixels (width, height) per ratio, in `AspectRatio::ALL` order, for 512 / 1K / 2K / 4K.
/// From api-spec.md; 21:9 at 512 is 792x336 (Google's page prints 792x168, a typo).
const OUTPUT_PIXELS: [[(u32, u32); 4]; 14] = [
    [(512, 512), (1024, 1024), (2048, 2048), (4096, 4096)], // 1:1
    [(256, 1024), (512, 2048), (1024, 4096), (2048, 8192)], // 1:4
    [(192, 1536), (384, 3072), (768, 6144), (1536, 12288)], // 1:8
    [(424, 632), (848, 1264), (1696, 2528), (3392, 5056)],  // 2:3
    [(632, 424), (1264, 848), (2528, 1696), (5056, 3392)],  // 3:2
    [(448, 600), (896, 1200), (1792, 2400), (3584, 4800)],  // 3:4
    [(1024, 256), (2048, 512), (4096, 1024), (8192, 2048)], // 4:1
    [(600, 448), (1200, 896), (2400, 1792), (4800, 3584)],  // 4:3
    [(464, 576), (928, 1152), (1856, 2304), (3712, 4608)],  // 4:5
    [(576, 464), (1152, 928), (2304, 1856), (4608, 3712)],  // 5:4
    [(1536, 192), (3072, 384), (6144, 768), (12288, 1536)], // 8:1
    [(384, 688), (768, 1376), (1536, 2752), (3072, 5504)],  // 9:16
    [(688, 384), (1376, 768), (2752, 1536), (5504, 3072)],  // 16:9
    [(792, 336), (1584, 672), (3168, 1344), (6336, 2688)],  // 21:9
];

/// The exact (width, height) Gemini answers with for this ratio and size.
pub fn output_pixels(ratio: AspectRatio, size: ImageSize) -> (u32, u32) {
    OUTPUT_PIXELS[ratio as usize][size.column()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The api-spec.md table, transcribed independently of OUTPUT_PIXELS.
    const SPEC: &str = "\
1:1 | 512x512 | 1024x1024 | 2048x2048 | 4096x4096
1:4 | 256x1024 | 512x2048 | 1024x4096 | 2048x8192
1:8 | 192x1536 | 384x3072 | 768x6144 | 1536x12288
2:3 | 424x632 | 848x1264 | 1696x2528 | 3392x5056
3:2 | 632x424 | 1264x848 | 2528x1696 | 5056x3392
3:4 | 448x600 | 896x1200 | 1792x2400 | 3584x4800
4:1 | 1024x256 | 2048x512 | 4096x1024 | 8192x2048
4:3 | 600x448 | 1200x896 | 2400x1792 | 4800x3584
4:5 | 464x576 | 928x1152 | 1856x2304 | 3712x4608
5:4 | 576x464 | 1152x928 | 2304x1856 | 4608x3712
8:1 | 1536x192 | 3072x384 | 6144x768 | 12288x1536
9:16 | 384x688 | 768x1376 | 1536x2752 | 3072x5504
16:9 | 688x384 | 1376x768 | 2752x1536 | 5504x3072
21:9 | 792x336 | 1584x672 | 3168x1344 | 6336x2688";

    #[test]
    fn every_table_cell() {
        let mut rows = 0;
        for line in SPEC.lines() {
            let cells: Vec<&str> = line.split(" | ").collect();
            let ratio: AspectRatio = cells[0].parse().unwrap();
            for (size, cell) in ImageSize::ALL.into_iter().zip(&cells[1..]) {
                let (w, h) = cell.split_once('x').unwrap();
                let want = (w.parse().unwrap(), h.parse().unwrap());
                assert_eq!(output_pixels(ratio, size), want, "{ratio} {size}");
            }
            rows += 1;
        }
        assert_eq!(rows, 14);
        assert_eq!(output_pixels(AspectRatio::R21x9, ImageSize::S512), (792, 336));
    }

    #[test]
    fn columns_scale_and_keep_the_ratio() {
        for ratio in AspectRatio::ALL {
            let (w, h) = output_pixels(ratio, ImageSize::S1K);
            assert_eq!(output_pixels(ratio, ImageSize::S512), (w / 2, h / 2));
            assert_eq!(output_pixels(ratio, ImageSize::S2K), (w * 2, h * 2));
            assert_eq!(output_pixels(ratio, ImageSize::S4K), (w * 4, h * 4));
            let err = (f64::from(w) / f64::from(h) / ratio.value() - 1.0).abs();
            assert!(err < 0.02, "{ratio}: {w}x{h}");
            assert_eq!(AspectRatio::nearest(w, h), ratio);
        }
    }

    #[test]
    fn parse_ratios() {
        for ratio in AspectRatio::ALL {
            assert_eq!(ratio.as_str().parse::<AspectRatio>(), Ok(ratio));
            assert_eq!(ratio.to_string(), ratio.as_str());
        }
        assert_eq!(" 16:9 ".parse(), Ok(AspectRatio::R16x9));
        let listed: Vec<&str> = AspectRatio::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(ACCEPTED_RATIOS, listed.join(", "));
        for bad in ["16x9", "32:18", "", "7:3", "16 : 9"] {
            let err = bad.parse::<AspectRatio>().unwrap_err();
            assert_eq!(err, ParseError::AspectRatio(bad.into()));
            assert!(err.to_string().contains("1:1, 1:4") && err.to_string().contains("21:9"));
        }
    }

    #[test]
    fn parse_sizes_leniently() {
        for (s, want) in [
            ("512", ImageSize::S512),
            ("0.5K", ImageSize::S512),
            ("0.5k", ImageSize::S512),
            ("1K", ImageSize::S1K),
            ("1k", ImageSize::S1K),
            (" 2K", ImageSize::S2K),
            ("2k", ImageSize::S2K),
            ("4K", ImageSize::S4K),
            ("4k", ImageSize::S4K),
        ] {
            assert_eq!(s.parse(), Ok(want), "{s}");
        }
        assert_eq!(ImageSize::default(), ImageSize::S1K);
        for size in ImageSize::ALL {
            assert_eq!(size.to_string().parse(), Ok(size));
        }
        for bad in ["1024", "8K", "1", "K", "", "1 K", "0.5"] {
            let err = bad.parse::<ImageSize>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("512") && msg.contains("1K") && msg.contains("4K"), "{msg}");
        }
        assert_eq!(ImageSize::S1K.output_tokens(), 1120);
    }

    #[test]
    fn serde_uses_the_api_strings() {
        let json = serde_json::to_string(&(AspectRatio::R21x9, ImageSize::S512)).unwrap();
        assert_eq!(json, r#"["21:9","512"]"#);
        let back: (AspectRatio, ImageSize) = serde_json::from_str(r#"["9:16","0.5k"]"#).unwrap();
        assert_eq!(back, (AspectRatio::R9x16, ImageSize::S512));
        let err = serde_json::from_str::<ImageSize>(r#""3K""#).unwrap_err();
        assert!(err.to_string().contains("accepted"), "{err}");
        assert!(serde_json::from_str::<AspectRatio>("5").is_err());
    }
}
