//! The error-correcting code: a rate 1/3, constraint length 9 convolutional code (the IS-95
//! generators 557, 663, 711 octal) with a zero tail, decoded by a soft-decision Viterbi decoder.

/// Constraint length.
const K: usize = 9;
const STATES: usize = 1 << (K - 1);
const GENERATORS: [u32; 3] = [0o557, 0o663, 0o711];

/// Number of coded bits for `info_bits` information bits.
pub const fn coded_len(info_bits: usize) -> usize {
    (info_bits + K - 1) * GENERATORS.len()
}

fn parity(x: u32) -> u8 {
    (x.count_ones() & 1) as u8
}

/// Encodes `bits` (0/1) followed by a zero tail of K-1 bits.
pub fn encode(bits: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(coded_len(bits.len()));
    let mut reg: u32 = 0;
    for &b in bits.iter().chain(std::iter::repeat_n(&0u8, K - 1)) {
        reg = ((reg << 1) | u32::from(b & 1)) & ((1 << K) - 1);
        for g in GENERATORS {
            out.push(parity(reg & g));
        }
    }
    out
}

/// Soft-decision Viterbi decoding. `soft[i] > 0` means coded bit i is more likely 1, `< 0` more
/// likely 0, `0` is an erasure; magnitudes are confidences. Returns `info_bits` bits.
pub fn decode(soft: &[f32], info_bits: usize) -> Vec<u8> {
    let n = GENERATORS.len();
    let steps = info_bits + K - 1;
    assert_eq!(soft.len(), steps * n, "soft input length");
    // Output bits of each (state, input) transition, as ±1.
    let mut outputs = [[[0f32; 3]; 2]; STATES];
    for (s, out) in outputs.iter_mut().enumerate() {
        for input in 0..2u32 {
            let reg = ((s as u32) << 1) | input;
            for (j, g) in GENERATORS.iter().enumerate() {
                out[input as usize][j] = if parity(reg & g) == 1 { 1.0 } else { -1.0 };
            }
        }
    }
    let mut metric = vec![f32::NEG_INFINITY; STATES];
    metric[0] = 0.0;
    let mut next = vec![f32::NEG_INFINITY; STATES];
    // survivors[step][state] = previous state (the input bit is the new state's low bit).
    let mut survivors = vec![[0u8; STATES]; steps];
    for (t, surv) in survivors.iter_mut().enumerate() {
        let r = &soft[t * n..t * n + n];
        next.fill(f32::NEG_INFINITY);
        let only_zero = t >= info_bits;
        for (s, &m) in metric.iter().enumerate() {
            if m == f32::NEG_INFINITY {
                continue;
            }
            for (input, o) in outputs[s].iter().enumerate() {
                if only_zero && input == 1 {
                    continue;
                }
                let bm = o[0] * r[0] + o[1] * r[1] + o[2] * r[2];
                let ns = ((s << 1) | input) & (STATES - 1);
                let cand = m + bm;
                if cand > next[ns] {
                    next[ns] = cand;
                    surv[ns] = s as u8;
                }
            }
        }
        std::mem::swap(&mut metric, &mut next);
    }
    // The tail drives the encoder back to state 0.
    let mut state = 0usize;
    let mut bits = vec![0u8; steps];
    for t in (0..steps).rev() {
        bits[t] = (state & 1) as u8;
        state = survivors[t][state] as usize;
    }
    bits.truncate(info_bits);
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits_of(seed: u64, n: usize) -> Vec<u8> {
        (0..n).map(|i| ((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(i as u32 % 64) >> 7) & 1) as u8).collect()
    }

    #[test]
    fn round_trip_clean_and_with_errors() {
        let info = bits_of(12345, 96);
        let coded = encode(&info);
        assert_eq!(coded.len(), coded_len(96));
        let mut soft: Vec<f32> = coded.iter().map(|&b| if b == 1 { 1.0 } else { -1.0 }).collect();
        assert_eq!(decode(&soft, 96), info);
        // Flip every 9th coded bit (11%) and erase every 7th: still decodes.
        for (i, s) in soft.iter_mut().enumerate() {
            if i % 9 == 4 {
                *s = -*s;
            } else if i % 7 == 2 {
                *s = 0.0;
            }
        }
        assert_eq!(decode(&soft, 96), info);
    }
}
