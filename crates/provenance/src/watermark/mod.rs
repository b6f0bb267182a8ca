//! A keyed, tiled spread-spectrum watermark in the luma (and a blue-yellow chroma copy) of an
//! image.
//!
//! # Design
//! - **Payload**: 64 bits ([`Payload`]: generator id, key/instance id, nonce) plus a 32-bit
//!   HMAC-SHA256 tag over them under the key = 96 information bits, encoded with a rate 1/3, K=9
//!   convolutional code (312 coded bits, soft-decision Viterbi decoding).
//! - **Carrier**: a tile of 32 x 32 cells. A keyed permutation (ChaCha20 seeded by HMAC-SHA256 of
//!   the key) makes 256 cells a known ±1 *sync* pattern and spreads the 312 coded bits over the
//!   other 768 cells (2–3 cells per bit), each with a keyed ±1 sign. Cell values are rendered as a
//!   smooth (raised-cosine interpolated) field, so the pattern has no edges and most of its energy
//!   sits in a mid-frequency band that survives JPEG and downscaling.
//! - **Scale**: a cell is 4 px for images whose long side is 256..=1024 px, 2 px below that, and
//!   `4 * long_side / 1024` px above (a 4K frame has 15 px cells), so the detector sees the same
//!   pattern after reducing any image to at most 1024 px.
//! - **Strength**: a luma change (spread over R, G, B in proportion to the luma weights, the
//!   cheapest way to move luma per squared error), scaled by local activity (stronger in texture,
//!   weaker on flat areas), with a global cap on the RMS change ([`EmbedOptions::max_rms`]) that
//!   keeps PSNR above 40 dB.
//! - **Chroma copy**: the same cell pattern is also added along a zero-luma blue-yellow RGB
//!   direction ([`CHROMA_U`]: the eye's least sensitive axis for fine detail), only where the
//!   local luma deviation hides it (none below 2 levels, full from 8: flat areas get none). It
//!   takes the PSNR budget luma leaves, and half of the budget where luma alone would not survive
//!   JPEG 50: the embedder runs JPEG 50 on the luma-only result in memory (the `image` crate's
//!   encoder) and reads it as the detector would. Strong JPEG erases most of the chroma copy,
//!   which is why pictures whose luma survives it keep their luma budget.
//! - **Embedding is informed**: the detector's reading of the cover itself is measured per cell
//!   and each cell's amplitude raised where the picture works against it, lowered where it
//!   helps (improved spread spectrum). Up to 2048 px the finished mark is then put through the
//!   same in-memory JPEG 50 and read again; the cell amplitudes move towards cancelling what
//!   interferes after it (picture and codec), twice, and the candidate that reads best (both
//!   unattacked and after the JPEG) is kept.
//! - **Detection** (blind, needs only the key): luma → at most 1024 px → a locally normalised
//!   high-pass residual (luma minus a 5x5 tent blur, divided by the local 9x9 RMS). The tiling
//!   puts the watermark on spectral lines; the autocorrelation of the whitened spectrum peaks on
//!   the tile lattice, and searching it over period (scale) and angle (±6°) undoes resizing and
//!   rotation (the lattice is searched in the chroma residual as well). The chroma residual is
//!   taken along [`CHROMA_W`], the grey-free part of the chroma copy's direction: a grey picture
//!   has nothing on it, so there the mark is read almost free of interference, and it also
//!   carries the luma change (whose RGB direction is not grey) with the same sign. The luma and
//!   chroma residuals are folded modulo the tile and combined by maximal-ratio combining (each scaled to
//!   unit noise and weighted by how far its best sync peak stands out), so an erased or unmarked
//!   channel adds nothing. Then the sync pattern is found by FFT
//!   cross-correlation (undoes cropping and translation), and the data cells are read,
//!   Viterbi-decoded and the tag checked.
//! - **False positives**: a detection requires the 32-bit tag to match; each decoding attempt on
//!   an unwatermarked image passes with probability 2^-32, so the false positive probability is
//!   at most `attempts * 2^-32` (3.5e-9 for the at most 15 attempts the detector makes: 3 lattice
//!   estimates + 2 unattacked periods, 3 sync peaks each), reported in
//!   [`Detection::false_positive_probability`].
//! - **Limits** (measured with the benchmark harness on the 20 scikit-image photographs, attacks
//!   none / JPEG 50 / WebP 80 / resize 50% / crop 25% only, not yet the full run): found
//!   100 / 100 / 85 / 100 / 100%, PSNR mean 42.9 dB, min 40.8. The JPEG 50 figure is the same
//!   encoder the embedder simulates; another codec (WebP 80) still loses close-up texture (grass,
//!   gravel) and a clipped black-and-white silhouette (horse). Detailed thumbnails need about
//!   200 px a side (smooth ones work from 64 px). Embedding is O(pixels); up to 2048 px it
//!   encodes and decodes JPEG about four times, above that it does not simulate.

mod code;
mod dsp;

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rustfft::num_complex::Complex32;
use sha2::{Digest, Sha256};

use dsp::Plane;

/// Payload bits carried by the watermark.
pub const PAYLOAD_BITS: usize = 64;
const TAG_BITS: usize = 32;
const INFO_BITS: usize = PAYLOAD_BITS + TAG_BITS;
const CODED_BITS: usize = code::coded_len(INFO_BITS);
/// Cells per tile side, cells per tile, sync cells per tile.
const CELLS: usize = 32;
const NCELLS: usize = CELLS * CELLS;
const SYNC_CELLS: usize = 256;
/// Cell size and tile size in the detector's nominal frame (pixels).
const CELL: f32 = 4.0;
const TILE: usize = 128;
/// Largest side the detector works at.
const WORK_SIDE: f32 = 1024.0;
/// Lattice period search range (working pixels) and angle range (degrees).
const P_MIN: f32 = 36.0;
const P_MAX: f32 = 330.0;
const MAX_ANGLE_DEG: f32 = 6.0;
/// Lattice estimates screened by their sync peak, and decoded.
const LATTICE_SCAN: usize = 12;
const LATTICE_CANDIDATES: usize = 3;
/// Sync peaks tried per lattice hypothesis.
const PEAKS_PER_HYPOTHESIS: usize = 3;

/// Errors of key handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("watermark key file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("watermark key file {path}: expected 64 hex digits (a 256-bit key)")]
    Format { path: String },
}

/// The secret that keys the watermark. Without it the watermark can be neither read nor forged.
#[derive(Clone, PartialEq, Eq)]
pub struct WatermarkKey {
    secret: [u8; 32],
}

impl fmt::Debug for WatermarkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WatermarkKey(id {})", self.fingerprint())
    }
}

impl WatermarkKey {
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        WatermarkKey { secret }
    }

    /// A fresh random key (OS randomness).
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        WatermarkKey { secret }
    }

    /// A key derived from a passphrase (tests, demos); prefer [`WatermarkKey::generate`].
    pub fn from_passphrase(pass: &str) -> Self {
        WatermarkKey { secret: Sha256::digest(format!("plantain-wm/v1/passphrase/{pass}")).into() }
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s.trim()).ok()?;
        Some(WatermarkKey { secret: bytes.try_into().ok()? })
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.secret)
    }

    /// A public 16-bit id of the key (a hash; reveals nothing usable about the secret), meant for
    /// [`Payload::key_id`].
    pub fn key_id(&self) -> u16 {
        let d = Sha256::digest([b"plantain-wm/v1/key-id/".as_slice(), &self.secret].concat());
        u16::from_be_bytes([d[0], d[1]])
    }

    /// A public 64-bit fingerprint of the key, in hex.
    pub fn fingerprint(&self) -> String {
        let d = Sha256::digest([b"plantain-wm/v1/key-id/".as_slice(), &self.secret].concat());
        hex::encode(&d[..8])
    }

    /// Reads the key file (64 hex digits); `Ok(None)` when it does not exist (nothing is created).
    pub fn load(path: &Path) -> Result<Option<Self>, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(Self::from_hex(&text).ok_or_else(|| KeyError::Format { path: path.display().to_string() })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyError::Io { path: path.display().to_string(), source }),
        }
    }

    /// Reads the key file (64 hex digits), or creates it with a new random key (mode 0600 on
    /// Unix) when it does not exist. Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        let io = |source| KeyError::Io { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::from_hex(&text).ok_or_else(|| KeyError::Format { path: path.display().to_string() })?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let key = Self::generate();
                crate::write_private(path, format!("{}\n", key.to_hex()).as_bytes()).map_err(io)?;
                Ok((key, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn prf(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

/// The 64 bits a watermark carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Payload {
    /// Which generator made the image ([`Payload::PLANTAIN`] for plantain).
    pub generator: u16,
    /// The key id ([`WatermarkKey::key_id`]) or an instance id.
    pub key_id: u16,
    /// A per-image nonce, e.g. random, or an index into the operator's generation log.
    pub nonce: u32,
}

impl Payload {
    /// Generator id of plantain ("PL").
    pub const PLANTAIN: u16 = 0x504c;

    /// plantain's payload for `key` with a random nonce.
    pub fn new_random(key: &WatermarkKey) -> Self {
        Payload { generator: Self::PLANTAIN, key_id: key.key_id(), nonce: rand::rng().next_u32() }
    }

    /// plantain's payload for `key` with a nonce derived from the picture and the key (keyed
    /// HMAC-SHA256 of the pixels): the same picture stamped twice carries the same payload, so
    /// the same job (model, prompt, seed, settings) gives the same output file, bit for bit,
    /// while different pictures get nonces no one without the key can predict.
    pub fn for_image(key: &WatermarkKey, img: &RgbImage) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.secret).expect("HMAC takes any key length");
        mac.update(b"plantain watermark nonce v1");
        mac.update(&img.width().to_le_bytes());
        mac.update(&img.height().to_le_bytes());
        mac.update(img.as_raw());
        let d = mac.finalize().into_bytes();
        Payload { generator: Self::PLANTAIN, key_id: key.key_id(), nonce: u32::from_le_bytes([d[0], d[1], d[2], d[3]]) }
    }

    pub fn to_u64(self) -> u64 {
        (u64::from(self.generator) << 48) | (u64::from(self.key_id) << 32) | u64::from(self.nonce)
    }

    pub fn from_u64(v: u64) -> Self {
        Payload { generator: (v >> 48) as u16, key_id: (v >> 32) as u16, nonce: v as u32 }
    }

    /// The payload as 16 hex digits (how it is printed and put in the C2PA soft binding).
    pub fn to_hex(self) -> String {
        format!("{:016x}", self.to_u64())
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        u64::from_str_radix(s, 16).ok().map(Self::from_u64)
    }

    /// Number of differing bits between two payloads.
    pub fn bit_errors(self, other: Payload) -> u32 {
        (self.to_u64() ^ other.to_u64()).count_ones()
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Embedding settings.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    /// Multiplies the activity-adaptive amplitude (1.0 = default).
    pub strength: f32,
    /// Cap on the RMS change per channel in 8-bit levels (2.3 keeps PSNR ≥ 40 dB with rounding).
    pub max_rms: f32,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions { strength: 1.0, max_rms: 2.3 }
    }
}

/// What [`detect`] found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Detection {
    /// The watermark was found and its authentication tag verified under the key.
    pub present: bool,
    /// The payload, when present.
    pub payload: Option<Payload>,
    /// When not present: the decoder's best unauthenticated guess (for bit-accuracy measurements
    /// only; it means nothing on its own). When present: equal to `payload`.
    pub best_guess: Option<Payload>,
    /// Fraction of the 312 coded bits whose hard decision agrees with the decoded codeword (1.0 =
    /// no channel errors, 0.5 = chance); 0 when not present.
    pub confidence: f32,
    /// Coded bits in error that the code corrected, when present.
    pub corrected_bit_errors: Option<u32>,
    /// Probability that an image without this watermark yields a detection in this call:
    /// `attempts * 2^-32`.
    pub false_positive_probability: f64,
    /// Decoding attempts made.
    pub attempts: u32,
    /// Strength of the sync correlation peak used (z-score over all offsets).
    pub sync_z: f32,
    /// Tile period found, in pixels of the examined image (128 for an unresized image of 256 to
    /// 1024 px), and the rotation found, in degrees.
    pub tile_period_px: f32,
    pub rotation_deg: f32,
}

/// Embeds `payload` with default options. The output has the input's size.
pub fn embed(img: &RgbImage, payload: &Payload, key: &WatermarkKey) -> RgbImage {
    embed_with(img, payload, key, &EmbedOptions::default())
}

/// Cell size in image pixels for an image with this long side.
fn cell_px(long_side: u32) -> f32 {
    if long_side < 256 {
        CELL / 2.0
    } else if long_side <= WORK_SIDE as u32 {
        CELL
    } else {
        CELL * long_side as f32 / WORK_SIDE
    }
}

/// The keyed assignment of cells to sync/data.
struct Layout {
    /// ±1 sync sign per cell, 0 for data cells.
    sync: Vec<f32>,
    /// Coded bit index per cell (`usize::MAX` for sync cells) and its ±1 sign.
    bit: Vec<usize>,
    sign: Vec<f32>,
}

impl Layout {
    fn new(key: &WatermarkKey) -> Self {
        let mut rng = ChaCha20Rng::from_seed(key.prf(b"plantain-wm/v1/layout", &[]));
        let mut perm: Vec<usize> = (0..NCELLS).collect();
        perm.shuffle(&mut rng);
        let mut sync = vec![0f32; NCELLS];
        let mut bit = vec![usize::MAX; NCELLS];
        let mut sign = vec![0f32; NCELLS];
        let coin = |rng: &mut ChaCha20Rng| if rng.next_u32() & 1 == 1 { 1.0 } else { -1.0 };
        for (j, &cell) in perm.iter().enumerate() {
            if j < SYNC_CELLS {
                sync[cell] = coin(&mut rng);
            } else {
                bit[cell] = (j - SYNC_CELLS) % CODED_BITS;
                sign[cell] = coin(&mut rng);
            }
        }
        Layout { sync, bit, sign }
    }

    fn cell_values(&self, coded: &[u8]) -> Vec<f32> {
        (0..NCELLS)
            .map(|c| if self.bit[c] == usize::MAX { self.sync[c] } else { self.sign[c] * if coded[self.bit[c]] == 1 { 1.0 } else { -1.0 } })
            .collect()
    }
}

fn tag(key: &WatermarkKey, payload: Payload) -> u32 {
    let d = key.prf(b"plantain-wm/v1/tag", &payload.to_u64().to_be_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn info_bits(key: &WatermarkKey, payload: Payload) -> Vec<u8> {
    let p = payload.to_u64();
    let t = tag(key, payload);
    let mut bits: Vec<u8> = (0..PAYLOAD_BITS).map(|i| ((p >> (63 - i)) & 1) as u8).collect();
    bits.extend((0..TAG_BITS).map(|i| ((t >> (31 - i)) & 1) as u8));
    bits
}

/// Per coordinate along one axis: the two neighbouring cells (mod CELLS) and their weights.
fn axis_weights(n: usize, cell: f32) -> Vec<(usize, usize, f32, f32)> {
    (0..n)
        .map(|x| {
            let c = (x as f32 + 0.5) / cell - 0.5;
            let i0 = c.floor();
            let t = c - i0;
            let w1 = 0.5 - 0.5 * (std::f32::consts::PI * t).cos();
            let i0 = (i0 as i64).rem_euclid(CELLS as i64) as usize;
            (i0, (i0 + 1) % CELLS, 1.0 - w1, w1)
        })
        .collect()
}

/// Embeds `payload` into `img`.
///
/// Informed embedding: the detector's per-cell reading of the cover itself (host interference) is
/// measured, and each cell's amplitude is raised where the host works against it and lowered
/// where it helps (as in improved spread spectrum), before the RMS cap is applied. Up to
/// [`SIM_MAX_SIDE`] px the embedder then runs JPEG quality [`SIM_JPEG_QUALITY`] on its own
/// result (the `image` crate's encoder, in memory) and reads it as the detector would: that
/// decides whether the chroma copy takes a share of the budget from luma, and the same measure
/// is repeated on the finished mark to refine the cell amplitudes against what survives it.
pub fn embed_with(img: &RgbImage, payload: &Payload, key: &WatermarkKey, opts: &EmbedOptions) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return img.clone();
    }
    let y = Plane::luma(img);
    let embedding = Embedding::new(img, &y, payload, key, opts);
    let (mut amp, delta, luma_ber) = embedding.informed_amplitudes(&y);
    drop(y);
    // The simulated JPEG decides the chroma share and refines the amplitudes; large pictures
    // go without it.
    let simulate = embedding.long <= SIM_MAX_SIDE && w.min(h) >= 64;
    let share = embedding.chroma_share(simulate, luma_ber, &delta);
    let (delta, cdelta) = embedding.changes(&amp, Some(delta), share);
    let out = compose(img, &delta, &cdelta);
    drop((delta, cdelta));
    if simulate { embedding.refine_against_jpeg(out, &mut amp, share) } else { out }
}

/// One payload's embedding into one picture: the code it writes, the lattice it writes it on,
/// the per-pixel amplitudes, and the detector's reading at that lattice.
struct Embedding<'a> {
    img: &'a RgbImage,
    /// The picture's longer side in pixels.
    long: u32,
    layout: Layout,
    info: Vec<u8>,
    coded: Vec<u8>,
    /// Each cell's ±1 value (sync sign or coded bit).
    values: Vec<f32>,
    /// Per-pixel amplitude of the luma mark and of the chroma copy.
    alpha: Vec<f32>,
    alpha_c: Vec<f32>,
    xs: Vec<(usize, usize, f32, f32)>,
    ys: Vec<(usize, usize, f32, f32)>,
    /// The luma mark's RMS range.
    rms_range: (f32, f32),
    /// The PSNR budget shared by luma and chroma (mean squared change summed over channels).
    budget: f64,
    /// The detector's downscale factor and fold period at the embedding's lattice.
    g: f32,
    p0: f32,
    /// The sync template's FFT, for the combined reading.
    template: Vec<Complex32>,
}

impl<'a> Embedding<'a> {
    /// The embedding of `payload` into `img`, whose luma is `y`.
    fn new(img: &'a RgbImage, y: &Plane, payload: &Payload, key: &WatermarkKey, opts: &EmbedOptions) -> Self {
        let long = img.width().max(img.height());
        let cell = cell_px(long);
        let layout = Layout::new(key);
        let info = info_bits(key, *payload);
        let coded = code::encode(&info);
        let values = layout.cell_values(&coded);
        let (alpha, alpha_c) = activity_amplitudes(y, cell, opts.strength);
        let g = (long as f32 / WORK_SIDE).max(1.0);
        let mut template: Vec<Complex32> = sync_template(&layout).into_iter().map(|v| Complex32::new(v, 0.0)).collect();
        dsp::fft2(&mut template, TILE, TILE, false);
        Embedding {
            img,
            long,
            layout,
            info,
            coded,
            values,
            alpha,
            alpha_c,
            xs: axis_weights(y.w, cell),
            ys: axis_weights(y.h, cell),
            // Thumbnails (< 256 px) have too few pixels to be choosy: they use the whole PSNR budget.
            rms_range: (if long < 256 { 0.9 * opts.max_rms } else { 0.0 }, opts.max_rms),
            budget: 3.0 * f64::from(opts.max_rms).powi(2),
            g,
            p0: cell * CELLS as f32 / g,
            template,
        }
    }

    /// What the detector reads per cell from a luma plane alone.
    fn luma_readings(&self, luma: &Plane) -> Vec<f32> {
        cell_readings(&fold(&residual(&luma.downscale(self.g)), self.p0, 0.0), 0, 0)
    }

    /// The detector's combined (luma + chroma) cell readings of a picture.
    fn read(&self, im: &RgbImage) -> Vec<f32> {
        let fl = fold(&residual(&Plane::luma(im).downscale(self.g)), self.p0, 0.0);
        let fc = fold(&residual(&Plane::project(im, CHROMA_W).downscale(self.g)), self.p0, 0.0);
        cell_readings(&combine(fl, Some(fc), &self.template), 0, 0)
    }

    /// Whether these cell readings decode to the payload, and the coded-bit errors.
    fn judge(&self, cells: &[f32]) -> (bool, usize) {
        judge(cells, &self.layout, &self.coded, &self.info)
    }

    /// The luma change for these cell amplitudes.
    fn render_luma(&self, amp: &[f32]) -> Vec<f32> {
        render(&self.values, amp, &self.alpha, &self.xs, &self.ys, self.rms_range)
    }

    /// Informed embedding against the host: the cell amplitudes, the luma change rendered for
    /// them, and the coded-bit error rate of that luma change alone, unattacked (how hard the
    /// picture is; none below 32 px).
    fn informed_amplitudes(&self, y: &Plane) -> (Vec<f32>, Vec<f32>, Option<f32>) {
        let host = self.luma_readings(y);
        let mut amp = vec![1f32; NCELLS];
        let mut delta = self.render_luma(&amp);
        if y.w.min(y.h) < 32 {
            return (amp, delta, None);
        }
        let marked = Plane { w: y.w, h: y.h, data: y.data.iter().zip(&delta).map(|(a, d)| (a + d).clamp(0.0, 255.0)).collect() };
        let with = self.luma_readings(&marked);
        let (_, errors) = self.judge(&with);
        let luma_ber = Some(errors as f32 / CODED_BITS as f32);
        // Mean response to the unit-amplitude pattern, in reading units.
        let gamma = with.iter().zip(&host).zip(&self.values).map(|((a, b), v)| (a - b) * v).sum::<f32>() / NCELLS as f32;
        if gamma > 0.0 {
            for ((a, hst), v) in amp.iter_mut().zip(&host).zip(&self.values) {
                *a = (1.0 - 0.8 * hst * v / gamma).clamp(0.25, 3.0);
            }
            delta = self.render_luma(&amp);
        }
        (amp, delta, luma_ber)
    }

    /// The share of the PSNR budget the chroma copy (zero luma, along CHROMA_U) takes from
    /// luma; it always gets what luma left over. With the simulation: half where luma (this
    /// `delta`) would not survive the simulated JPEG anyway (strong JPEG erases most of the
    /// chroma copy, so pictures whose luma survives it keep their luma budget). Without it
    /// (large images): a quarter or half when luma alone reads weakly even unattacked (error
    /// rate over 2.5% / 6%).
    fn chroma_share(&self, simulate: bool, luma_ber: Option<f32>, delta: &[f32]) -> f64 {
        match (simulate, luma_ber) {
            (true, _) => match simulated_jpeg(&compose(self.img, delta, &[])) {
                Some(att) if self.judge(&self.read(&att)).0 => 0.0,
                _ => 0.5,
            },
            (false, Some(b)) if b > 0.06 => 0.5,
            (false, Some(b)) if b > 0.025 => 0.25,
            (false, Some(_)) => 0.0,
            (false, None) => 0.25,
        }
    }

    /// The luma and chroma changes for these cell amplitudes (`delta`: the luma change already
    /// rendered for them), within the budget, the chroma copy taking `share` of it.
    fn changes(&self, amp: &[f32], delta: Option<Vec<f32>>, share: f64) -> (Vec<f32>, Vec<f32>) {
        let budget = self.budget;
        let mut delta = delta.unwrap_or_else(|| self.render_luma(amp));
        let mut cdelta = render(&self.values, amp, &self.alpha_c, &self.xs, &self.ys, (0.0, f32::MAX));
        let n = delta.len().max(1) as f64;
        let e_c = cdelta.iter().map(|d| f64::from(d * d)).sum::<f64>() / n;
        let e_l = delta.iter().map(|d| f64::from(d * d)).sum::<f64>() / n / f64::from(LUMA_W2);
        let give = e_c.min((budget - e_l).max(share * budget));
        if e_l + give > budget {
            let gl = ((budget - give) / e_l.max(1e-12)).sqrt() as f32;
            delta.iter_mut().for_each(|d| *d *= gl);
        }
        let gc = (give / e_c.max(1e-12)).sqrt() as f32;
        cdelta.iter_mut().for_each(|d| *d *= gc);
        (delta, cdelta)
    }

    /// Refinement against the simulated JPEG: the reading of every cell after it, less the
    /// mark's fitted share, is the interference (host plus codec) that informed embedding
    /// works against; the amplitudes move halfway to the values that would cancel it. The
    /// candidate that reads best (unattacked and after the JPEG both decoding, then fewest
    /// coded-bit errors after the JPEG) is kept; the first one is `out`, the plain embedding.
    fn refine_against_jpeg(&self, mut out: RgbImage, amp: &mut [f32], share: f64) -> RgbImage {
        let mut best: Option<((u8, usize), RgbImage)> = None;
        for step in 0..=REFINE_STEPS {
            let Some(att) = simulated_jpeg(&out) else { break };
            let after = self.read(&att);
            let (ok_jpeg, errors) = self.judge(&after);
            let (ok_clean, _) = self.judge(&self.read(&out));
            let score = (u8::from(ok_jpeg) + u8::from(ok_clean), errors);
            if best.as_ref().is_none_or(|(b, _)| score.0 > b.0 || (score.0 == b.0 && score.1 < b.1)) {
                best = Some((score, out.clone()));
            }
            if step == REFINE_STEPS || (ok_jpeg && errors == 0) {
                break;
            }
            let num: f32 = after.iter().zip(amp.iter()).zip(&self.values).map(|((r, a), v)| r * a * v).sum();
            let den: f32 = amp.iter().map(|a| a * a).sum();
            let gamma = num / den.max(1e-12);
            if gamma.is_nan() || gamma <= 0.0 {
                break;
            }
            for ((a, r), v) in amp.iter_mut().zip(&after).zip(&self.values) {
                let interference = r - gamma * *a * v;
                *a = 0.5 * *a + 0.5 * (1.0 - 0.8 * interference * v / gamma).clamp(0.25, 3.0);
            }
            let (delta, cdelta) = self.changes(amp, None, share);
            out = compose(self.img, &delta, &cdelta);
        }
        best.map_or(out, |(_, b)| b)
    }
}

/// Per-pixel amplitudes from local activity at the cell scale (standard deviation around a
/// local mean) of the luma `y`: the luma mark's, and the chroma copy's, which goes only where
/// luma texture hides it (none on flat areas).
fn activity_amplitudes(y: &Plane, cell: f32, strength: f32) -> (Vec<f32>, Vec<f32>) {
    let r = (cell.round() as usize).max(2);
    let mean = y.box_blur(r);
    let dev = Plane { w: y.w, h: y.h, data: y.data.iter().zip(&mean.data).map(|(a, m)| (a - m) * (a - m)).collect() };
    let sd: Vec<f32> = dev.box_blur(r).data.iter().map(|v| v.max(0.0).sqrt()).collect();
    drop((mean, dev));
    let alpha = sd.iter().map(|s| (0.85 + 0.3 * s).clamp(0.85, 6.0) * strength).collect();
    let alpha_c = sd.iter().map(|s| ((s - CHROMA_TEX.0) / (CHROMA_TEX.1 - CHROMA_TEX.0)).clamp(0.0, 1.0) * CHROMA_AMP * strength).collect();
    (alpha, alpha_c)
}

/// The embedder's JPEG simulation: quality [`SIM_JPEG_QUALITY`] with the `image` crate's
/// encoder, in memory.
fn simulated_jpeg(im: &RgbImage) -> Option<RgbImage> {
    crate::attacks::jpeg(im, SIM_JPEG_QUALITY).ok()
}

/// Adds the luma change `delta` (along [`RGB_FOR_LUMA`]) and the chroma change `cdelta` (along
/// [`CHROMA_U`]; may be empty) to `img`.
fn compose(img: &RgbImage, delta: &[f32], cdelta: &[f32]) -> RgbImage {
    let mut out = img.clone();
    for (i, (px, d)) in out.as_mut().chunks_exact_mut(3).zip(delta).enumerate() {
        let dc = cdelta.get(i).copied().unwrap_or(0.0);
        for ((c, k), u) in px.iter_mut().zip(RGB_FOR_LUMA).zip(CHROMA_U) {
            *c = (f32::from(*c) + d * k + dc * u).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Whether cell readings decode to `info`, and how many of the coded bits' hard decisions are
/// wrong.
fn judge(cells: &[f32], layout: &Layout, coded: &[u8], info: &[u8]) -> (bool, usize) {
    let soft = soft_from_cells(cells, layout);
    let errors = coded.iter().zip(&soft).filter(|&(&c, &s)| (c == 1) != (s > 0.0)).count();
    (code::decode(&soft, INFO_BITS) == info, errors)
}

/// Unit RGB direction with zero BT.601 luma along the blue-yellow (tritan) axis, where the eye is
/// least sensitive to fine detail: the chroma copy is added along it (yellow for a positive cell).
const CHROMA_U: [f32; 3] = [0.126_6, 0.126_6, -0.983_8];
/// The detector's chroma axis: [`CHROMA_U`] less its grey component, unit length ((R+G)/2 - B).
/// Grey has no component on it, so on grey and near-grey pictures it reads the mark with almost
/// no interference from the picture; it also picks up the luma change, whose RGB direction
/// ([`RGB_FOR_LUMA`]) is not grey (0.60 per luma level, with the chroma copy's sign).
const CHROMA_W: [f32; 3] = [0.408_2, 0.408_2, -0.816_5];
/// Amplitude of the chroma copy (RGB levels along [`CHROMA_U`] per unit cell value) where the
/// local luma deviation reaches the upper end of [`CHROMA_TEX`], before the PSNR budget is
/// applied; it falls linearly to nothing at the lower end.
const CHROMA_AMP: f32 = 3.0;
const CHROMA_TEX: (f32, f32) = (2.0, 8.0);
/// The embedder's JPEG simulation: quality, largest long side it runs on, refinement steps.
const SIM_JPEG_QUALITY: u8 = 50;
const SIM_MAX_SIDE: u32 = 2048;
const REFINE_STEPS: usize = 2;

/// The RGB change that moves BT.601 luma by 1 with the least squared change (proportional to the
/// luma weights): 25% less MSE than changing R, G and B equally.
const RGB_FOR_LUMA: [f32; 3] = [0.299 / LUMA_W2, 0.587 / LUMA_W2, 0.114 / LUMA_W2];
const LUMA_W2: f32 = 0.299 * 0.299 + 0.587 * 0.587 + 0.114 * 0.114;

type AxisWeights = [(usize, usize, f32, f32)];

/// The luma change: cell values times per-cell amplitudes, interpolated, times the per-pixel
/// amplitude, scaled into `min_rms..=max_rms`.
fn render(values: &[f32], amp: &[f32], alpha: &[f32], xs: &AxisWeights, ys: &AxisWeights, (min_rms, max_rms): (f32, f32)) -> Vec<f32> {
    let vals: Vec<f32> = values.iter().zip(amp).map(|(v, a)| v * a).collect();
    let w = xs.len();
    let mut delta = vec![0f32; w * ys.len()];
    let mut energy = 0f64;
    for (yy, &(j0, j1, v0, v1)) in ys.iter().enumerate() {
        let row0 = &vals[j0 * CELLS..(j0 + 1) * CELLS];
        let row1 = &vals[j1 * CELLS..(j1 + 1) * CELLS];
        let out = &mut delta[yy * w..(yy + 1) * w];
        let al = &alpha[yy * w..(yy + 1) * w];
        let mut e = 0f32;
        for ((d, &a), &(i0, i1, u0, u1)) in out.iter_mut().zip(al).zip(xs) {
            let p = v0 * (u0 * row0[i0] + u1 * row0[i1]) + v1 * (u0 * row1[i0] + u1 * row1[i1]);
            *d = a * p;
            e += *d * *d;
        }
        energy += f64::from(e);
    }
    // RMS of the RGB change per channel.
    let rms = (energy / delta.len().max(1) as f64 / (3.0 * f64::from(LUMA_W2))).sqrt() as f32;
    if rms > max_rms || rms < min_rms {
        let gain = rms.clamp(min_rms, max_rms) / rms.max(1e-6);
        delta.iter_mut().for_each(|d| *d *= gain);
    }
    delta
}

/// The locally normalised band-pass residual the detector works on.
fn residual(y: &Plane) -> Plane {
    let low = y.box_blur(1).box_blur(1);
    let mut r = Plane { w: y.w, h: y.h, data: y.data.iter().zip(&low.data).map(|(a, b)| a - b).collect() };
    let sq = Plane { w: y.w, h: y.h, data: r.data.iter().map(|v| v * v).collect() };
    let var = sq.box_blur(4);
    for (v, s) in r.data.iter_mut().zip(&var.data) {
        *v = (*v / (s.max(0.0) + 1.0).sqrt()).clamp(-3.0, 3.0);
    }
    r
}

/// Candidate (period, angle in radians) of the tile lattice from the residual's autocorrelation.
fn lattice_candidates(r: &Plane) -> Vec<(f32, f32)> {
    if r.w < 2 * P_MIN as usize || r.h < 2 * P_MIN as usize {
        return Vec::new();
    }
    let pad = P_MAX as usize + 8;
    let (fw, fh) = (dsp::fft_size(r.w + pad), dsp::fft_size(r.h + pad));
    let mut buf = vec![Complex32::new(0.0, 0.0); fw * fh];
    for y in 0..r.h {
        for x in 0..r.w {
            buf[y * fw + x].re = r.at(x, y);
        }
    }
    dsp::fft2(&mut buf, fw, fh, false);
    // Whitened power spectrum: the tiling puts the watermark on spectral lines, the picture has a
    // smooth spectrum; dividing by a local average keeps the lines and flattens the picture.
    let power = Plane { w: fw, h: fh, data: buf.iter().map(|v| v.norm_sqr()).collect() };
    let smooth = power.box_blur_cyclic(4);
    let (lo_x, lo_y) = (fw as f32 / 40.0, fh as f32 / 40.0);
    for (i, v) in buf.iter_mut().enumerate() {
        let (x, y) = (i % fw, i / fw);
        let fx = x.min(fw - x) as f32 / lo_x;
        let fy = y.min(fh - y) as f32 / lo_y;
        // Keep 1/40 .. 1/4 cycles per pixel: below is picture, above is JPEG blocking and
        // interpolation artefacts (a rotated image has its own lattice at 1/sin(angle)).
        let r2 = fx * fx + fy * fy;
        let white = if !(1.0..=100.0).contains(&r2) { 0.0 } else { power.data[i] / (smooth.data[i] + 1e-9) - 1.0 };
        *v = Complex32::new(white, 0.0);
    }
    dsp::fft2(&mut buf, fw, fh, true);
    let zero = buf[0].re.max(1e-6);
    let acf = |x: f32, y: f32| -> f32 {
        // Bilinear lookup with cyclic (= signed lag) indexing.
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let at = |dx: i64, dy: i64| {
            let xi = (x0 as i64 + dx).rem_euclid(fw as i64) as usize;
            let yi = (y0 as i64 + dy).rem_euclid(fh as i64) as usize;
            buf[yi * fw + xi].re
        };
        let top = at(0, 0) * (1.0 - fx) + at(1, 0) * fx;
        let bot = at(0, 1) * (1.0 - fx) + at(1, 1) * fx;
        (top * (1.0 - fy) + bot * fy) / zero
    };
    // The lattice fits only where a lag is shorter than the image.
    let max_p = P_MAX.min(r.w.min(r.h) as f32 * 0.75);
    let score = |p: f32, th: f32| -> f32 {
        let (c, s) = (th.cos(), th.sin());
        // A peak, not a ridge: straight edges (a rotated image's borders) make ridges through the
        // origin; subtract the mean of four neighbours along and across the lag.
        let d = (p / 40.0).max(3.0);
        let peak = |x: f32, y: f32| {
            acf(x, y)
                - 0.25 * (acf(x + d * c, y + d * s) + acf(x - d * c, y - d * s) + acf(x - d * s, y + d * c) + acf(x + d * s, y - d * c))
        };
        let a = (p * c, p * s);
        let b = (-p * s, p * c);
        peak(a.0, a.1) + peak(b.0, b.1) + 0.5 * (peak(a.0 + b.0, a.1 + b.1) + peak(a.0 - b.0, a.1 - b.1))
    };
    let mut best: Vec<(f32, f32, f32)> = Vec::new();
    let max_th = MAX_ANGLE_DEG.to_radians();
    let mut p = P_MIN;
    while p <= max_p {
        let step = 0.4 / p;
        let mut th = -max_th;
        while th <= max_th {
            let sc = score(p, th);
            best.push((sc, p, th));
            th += step;
        }
        p += 0.5;
    }
    best.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out: Vec<(f32, f32)> = Vec::new();
    for &(_, p, th) in &best {
        if out.iter().all(|&(q, t)| (p / q - 1.0).abs() > 0.03 || (th - t).abs() > 1f32.to_radians()) {
            // Prefer the fundamental period when half of it also scores.
            let half = p / 2.0;
            let p = if half >= P_MIN && score(half, th) > 0.5 * score(p, th) { half } else { p };
            out.push((p, th));
        }
        if out.len() == LATTICE_SCAN {
            break;
        }
    }
    out
}

/// Template of the sync cells over one nominal tile.
fn sync_template(layout: &Layout) -> Vec<f32> {
    let aw = axis_weights(TILE, CELL);
    let mut t = vec![0f32; TILE * TILE];
    for (y, &(j0, j1, v0, v1)) in aw.iter().enumerate() {
        for (x, &(i0, i1, u0, u1)) in aw.iter().enumerate() {
            let s = &layout.sync;
            t[y * TILE + x] =
                v0 * (u0 * s[j0 * CELLS + i0] + u1 * s[j0 * CELLS + i1]) + v1 * (u0 * s[j1 * CELLS + i0] + u1 * s[j1 * CELLS + i1]);
        }
    }
    t
}

/// Folds the residual modulo the nominal tile, sampling along the lattice (period `p` working
/// pixels, angle `th`). Returns the mean per tile position.
fn fold(r: &Plane, p: f32, th: f32) -> Vec<f32> {
    let s = p / TILE as f32;
    let (c, sn) = (th.cos() * s, th.sin() * s);
    // Nominal-frame bounding box of the image: inverse-map the corners.
    let inv = |x: f32, y: f32| ((c * x + sn * y) / (s * s), (-sn * x + c * y) / (s * s));
    let corners = [inv(0.0, 0.0), inv(r.w as f32, 0.0), inv(0.0, r.h as f32), inv(r.w as f32, r.h as f32)];
    let (umin, umax) = corners.iter().fold((f32::MAX, f32::MIN), |acc, q| (acc.0.min(q.0), acc.1.max(q.0)));
    let (vmin, vmax) = corners.iter().fold((f32::MAX, f32::MIN), |acc, q| (acc.0.min(q.1), acc.1.max(q.1)));
    let mut acc = vec![0f32; TILE * TILE];
    let mut cnt = vec![0u32; TILE * TILE];
    for v in (vmin.floor() as i64)..=(vmax.ceil() as i64) {
        let row = v.rem_euclid(TILE as i64) as usize * TILE;
        let (base_x, base_y) = (-sn * v as f32, c * v as f32);
        for u in (umin.floor() as i64)..=(umax.ceil() as i64) {
            let (uf, col) = (u as f32, u.rem_euclid(TILE as i64) as usize);
            if let Some(val) = r.sample(c * uf + base_x, sn * uf + base_y) {
                acc[row + col] += val;
                cnt[row + col] += 1;
            }
        }
    }
    acc.iter().zip(&cnt).map(|(a, &n)| if n > 0 { a / n as f32 } else { 0.0 }).collect()
}

/// Cyclic cross-correlation of the folded tile with the sync template, its mean and standard
/// deviation over all offsets.
fn sync_corr(folded: &[f32], template_fft: &[Complex32]) -> (Vec<f32>, f32, f32) {
    let mut f: Vec<Complex32> = folded.iter().map(|&v| Complex32::new(v, 0.0)).collect();
    dsp::fft2(&mut f, TILE, TILE, false);
    for (a, b) in f.iter_mut().zip(template_fft) {
        *a *= b.conj();
    }
    dsp::fft2(&mut f, TILE, TILE, true);
    let corr: Vec<f32> = f.iter().map(|v| v.re).collect();
    let n = corr.len() as f32;
    let mean = corr.iter().sum::<f32>() / n;
    let sd = (corr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt().max(1e-12);
    (corr, mean, sd)
}

/// Combines the luma and chroma folded tiles (maximal-ratio combining): each is scaled to unit
/// noise (the spread of its sync correlation over all offsets) and weighted by how far its best
/// sync peak stands out of that noise, so a channel the attack erased (chroma after strong JPEG)
/// or that never carried the mark (an unmarked grey image) adds nothing.
fn combine(fl: Vec<f32>, fc: Option<Vec<f32>>, template_fft: &[Complex32]) -> Vec<f32> {
    let Some(fc) = fc else { return fl };
    let stats = |f: &[f32]| {
        let (corr, mean, sd) = sync_corr(f, template_fft);
        let top = corr.iter().fold(f32::MIN, |a, &b| a.max(b));
        (sd, (top - mean) / sd)
    };
    let (sl, zl) = stats(&fl);
    let (sc, zc) = stats(&fc);
    let wl = (zl - 4.0).max(0.0) + 0.05;
    let wc = if sc > 1e-9 { (zc - 4.0).max(0.0) } else { 0.0 };
    fl.iter().zip(&fc).map(|(l, c)| wl * l / sl + wc * c / sc.max(1e-12)).collect()
}

/// Cyclic cross-correlation of the folded tile with the template; the best few offsets with
/// their z-scores.
fn sync_peaks(folded: &[f32], template_fft: &[Complex32]) -> Vec<(usize, usize, f32)> {
    let (corr, mean, sd) = sync_corr(folded, template_fft);
    let mut idx: Vec<usize> = (0..corr.len()).collect();
    idx.sort_by(|&a, &b| corr[b].total_cmp(&corr[a]));
    let mut peaks: Vec<(usize, usize, f32)> = Vec::new();
    for i in idx {
        let (x, y) = (i % TILE, i / TILE);
        let near = |a: usize, b: usize| {
            let d = a.abs_diff(b);
            d.min(TILE - d) <= 2
        };
        if peaks.iter().all(|&(px, py, _)| !(near(px, x) && near(py, y))) {
            peaks.push((x, y, (corr[i] - mean) / sd));
        }
        if peaks.len() == PEAKS_PER_HYPOTHESIS {
            break;
        }
    }
    peaks
}

/// The matched-filter reading of every cell from the folded tile with the pattern origin at
/// (dx, dy).
fn cell_readings(folded: &[f32], dx: usize, dy: usize) -> Vec<f32> {
    let aw = axis_weights(TILE, CELL);
    let mut cells = vec![0f32; NCELLS];
    for (y, &(j0, j1, v0, v1)) in aw.iter().enumerate() {
        let row = ((y + dy) % TILE) * TILE;
        for (x, &(i0, i1, u0, u1)) in aw.iter().enumerate() {
            let a = folded[row + (x + dx) % TILE];
            cells[j0 * CELLS + i0] += a * v0 * u0;
            cells[j0 * CELLS + i1] += a * v0 * u1;
            cells[j1 * CELLS + i0] += a * v1 * u0;
            cells[j1 * CELLS + i1] += a * v1 * u1;
        }
    }
    cells
}

/// Soft values of the coded bits from the folded tile with the pattern origin at (dx, dy).
fn soft_bits(folded: &[f32], dx: usize, dy: usize, layout: &Layout) -> Vec<f32> {
    soft_from_cells(&cell_readings(folded, dx, dy), layout)
}

/// Soft values of the coded bits from the cell readings, scaled to unit RMS.
fn soft_from_cells(cells: &[f32], layout: &Layout) -> Vec<f32> {
    let mut soft = vec![0f32; CODED_BITS];
    for (c, &v) in cells.iter().enumerate() {
        if layout.bit[c] != usize::MAX {
            soft[layout.bit[c]] += layout.sign[c] * v;
        }
    }
    let rms = (soft.iter().map(|v| v * v).sum::<f32>() / CODED_BITS as f32).sqrt().max(1e-12);
    soft.iter_mut().for_each(|v| *v /= rms);
    soft
}

fn bits_to_u64(bits: &[u8]) -> u64 {
    bits.iter().fold(0u64, |acc, &b| (acc << 1) | u64::from(b))
}

/// A lattice hypothesis: period, angle, folded tile, sync peaks.
type Hypothesis = (f32, f32, Vec<f32>, Vec<(usize, usize, f32)>);

/// Looks for the watermark of `key` in `img` (blind: the payload is not needed).
pub fn detect(img: &RgbImage, key: &WatermarkKey) -> Detection {
    let mut det = Detection {
        present: false,
        payload: None,
        best_guess: None,
        confidence: 0.0,
        corrected_bit_errors: None,
        false_positive_probability: 0.0,
        attempts: 0,
        sync_z: 0.0,
        tile_period_px: 0.0,
        rotation_deg: 0.0,
    };
    let (w, h) = (img.width(), img.height());
    if w < 16 || h < 16 {
        return det;
    }
    let long = w.max(h) as f32;
    let g = (long / WORK_SIDE).max(1.0);
    let r = residual(&Plane::luma(img).downscale(g));
    let rc = Some(residual(&Plane::project(img, CHROMA_W).downscale(g)));
    let layout = Layout::new(key);
    let mut template: Vec<Complex32> = sync_template(&layout).into_iter().map(|v| Complex32::new(v, 0.0)).collect();
    dsp::fft2(&mut template, TILE, TILE, false);
    let folded_both = |p: f32, th: f32| combine(fold(&r, p, th), rc.as_ref().map(|rc| fold(rc, p, th)), &template);
    // Hypotheses: the unattacked periods, then the lattice estimates that the sync pattern
    // confirms best (screening does not decode, so it does not add to the false positive bound).
    let identity = [(TILE as f32, 0.0f32), (TILE as f32 / 2.0, 0.0)];
    let mut hyps: Vec<Hypothesis> = identity
        .iter()
        .map(|&(p, th)| {
            let folded = folded_both(p, th);
            let peaks = sync_peaks(&folded, &template);
            (p, th, folded, peaks)
        })
        .collect();
    let mut lattice = lattice_candidates(&r);
    if let Some(rc) = rc.as_ref().filter(|rc| rc.data.iter().map(|v| v * v).sum::<f32>() > 1e-3 * rc.data.len() as f32) {
        lattice.extend(lattice_candidates(rc));
    }
    let mut screened: Vec<_> = lattice
        .into_iter()
        .filter(|&(q, t)| identity.iter().all(|&(p, _)| (q - p).abs() > 1.0 || t.abs() > 0.2f32.to_radians()))
        .map(|(p, th)| {
            let folded = folded_both(p, th);
            let peaks = sync_peaks(&folded, &template);
            (p, th, folded, peaks)
        })
        .collect();
    let top_z = |h: &Hypothesis| h.3.first().map_or(f32::MIN, |pk| pk.2);
    screened.sort_by(|a, b| top_z(b).total_cmp(&top_z(a)));
    hyps.extend(screened.into_iter().take(LATTICE_CANDIDATES));
    let mut best_z = f32::MIN;
    for (p, th, folded, peaks) in hyps {
        for (dx, dy, z) in peaks {
            det.attempts += 1;
            let soft = soft_bits(&folded, dx, dy, &layout);
            let bits = code::decode(&soft, INFO_BITS);
            let payload = Payload::from_u64(bits_to_u64(&bits[..PAYLOAD_BITS]));
            if z > best_z {
                best_z = z;
                det.best_guess = Some(payload);
                det.sync_z = z;
            }
            if bits_to_u64(&bits[PAYLOAD_BITS..]) as u32 == tag(key, payload) {
                let coded = code::encode(&bits);
                let agree = coded.iter().zip(&soft).filter(|&(&c, &s)| (c == 1) == (s > 0.0)).count();
                det.present = true;
                det.payload = Some(payload);
                det.best_guess = Some(payload);
                det.sync_z = z;
                det.confidence = agree as f32 / CODED_BITS as f32;
                det.corrected_bit_errors = Some((CODED_BITS - agree) as u32);
                det.tile_period_px = p * g;
                det.rotation_deg = th.to_degrees();
                det.false_positive_probability = f64::from(det.attempts) * 2f64.powi(-(TAG_BITS as i32));
                return det;
            }
        }
    }
    det.false_positive_probability = f64::from(det.attempts) * 2f64.powi(-(TAG_BITS as i32));
    det
}

pub use plantain_imageio::composite::psnr;

#[cfg(test)]
mod tests;

/// Diagnostics for tuning: coded-bit error rate at the identity lattice and offset 0, and the
/// sync z-score found there.
#[doc(hidden)]
pub fn diagnose(img: &RgbImage, key: &WatermarkKey, payload: &Payload) -> (f32, Vec<(usize, usize, f32)>) {
    let long = img.width().max(img.height()) as f32;
    let g = (long / WORK_SIDE).max(1.0);
    let r = residual(&Plane::luma(img).downscale(g));
    let layout = Layout::new(key);
    let mut template: Vec<Complex32> = sync_template(&layout).into_iter().map(|v| Complex32::new(v, 0.0)).collect();
    dsp::fft2(&mut template, TILE, TILE, false);
    let p = cell_px(img.width().max(img.height())) * CELLS as f32 / g;
    let folded = fold(&r, p, 0.0);
    let soft = soft_bits(&folded, 0, 0, &layout);
    let coded = code::encode(&info_bits(key, *payload));
    let err = coded.iter().zip(&soft).filter(|&(&c, &s)| (c == 1) != (s > 0.0)).count();
    (err as f32 / CODED_BITS as f32, sync_peaks(&folded, &template))
}

/// Diagnostics for tuning: the lattice candidates (period in working pixels, degrees).
#[doc(hidden)]
pub fn lattice_debug(img: &RgbImage) -> Vec<(f32, f32)> {
    let g = (img.width().max(img.height()) as f32 / WORK_SIDE).max(1.0);
    lattice_candidates(&residual(&Plane::luma(img).downscale(g))).into_iter().map(|(p, t)| (p, t.to_degrees())).collect()
}
