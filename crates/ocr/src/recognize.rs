//! Turning the recogniser's output into text: PaddleOCR's `CTCLabelDecode`, greedy.

use ndarray::ArrayView2;

/// The recogniser's alphabet: the model's `character` metadata, one character a line, with the
/// CTC blank before it (index 0) and a space after it (the last index), as PaddleOCR adds them.
#[derive(Clone, Debug)]
pub(crate) struct Charset(Vec<String>);

impl Charset {
    pub fn from_metadata(character: &str) -> Charset {
        let mut symbols = vec![String::new()];
        // Python's `splitlines`, which RapidOCR uses, also splits at \r, \x0b, \x0c, \x1c-\x1e,
        // \x85, \u2028 and \u2029; none of them is in the PP-OCR lists, so lines are lines.
        symbols.extend(character.split('\n').map(|s| s.strip_suffix('\r').unwrap_or(s).to_string()));
        if character.ends_with('\n') {
            symbols.pop();
        }
        symbols.push(" ".to_string());
        Charset(symbols)
    }

    /// Classes including the blank and the space.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Greedy CTC decoding of a `steps × classes` probability matrix: the most likely class at
    /// each step, repeats merged, blanks dropped. The confidence is the mean probability of the
    /// kept steps (0 when nothing is kept).
    pub fn decode(&self, probs: ArrayView2<f32>) -> (String, f32) {
        let (mut text, mut sum, mut kept, mut previous) = (String::new(), 0.0f64, 0usize, None);
        for row in probs.rows() {
            let Some((class, &p)) = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else { continue };
            if class != 0 && previous != Some(class) {
                text.push_str(self.0.get(class).map_or("", String::as_str));
                sum += f64::from(p);
                kept += 1;
            }
            previous = Some(class);
        }
        let confidence = if kept == 0 { 0.0 } else { (sum / kept as f64) as f32 };
        (text, confidence)
    }

    /// The same greedy decoding, keeping where each symbol was read: the run of time steps
    /// (first and last, inclusive) over which the recogniser gave its class.
    pub fn decode_steps(&self, probs: ArrayView2<f32>) -> Vec<Symbol> {
        let mut symbols: Vec<Symbol> = Vec::new();
        let mut previous = None;
        for (t, row) in probs.rows().into_iter().enumerate() {
            let Some((class, &p)) = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else { continue };
            match symbols.last_mut() {
                Some(last) if previous == Some(class) && class != 0 => last.last = t,
                _ if class != 0 => {
                    let text = self.0.get(class).cloned().unwrap_or_default();
                    symbols.push(Symbol { text, first: t, last: t, probability: p });
                }
                _ => {}
            }
            previous = Some(class);
        }
        symbols.retain(|s| !s.text.is_empty());
        symbols
    }
}

/// One symbol of a greedy CTC decoding and the time steps it spans.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Symbol {
    pub text: String,
    pub first: usize,
    pub last: usize,
    /// The probability at its first step.
    pub probability: f32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// Probability rows where each step puts `0.9` (or the given value) on one class.
    fn steps(classes: usize, picks: &[(usize, f32)]) -> Array2<f32> {
        let mut probs = Array2::from_elem((picks.len(), classes), 0.01);
        for (t, &(c, p)) in picks.iter().enumerate() {
            probs[[t, c]] = p;
        }
        probs
    }

    #[test]
    fn charset_adds_blank_and_space() {
        let charset = Charset::from_metadata("a\nb\nc");
        assert_eq!(charset.0, ["", "a", "b", "c", " "]);
        assert_eq!(Charset::from_metadata("a\r\nb\n").0, ["", "a", "b", " "]);
    }

    #[test]
    fn decode_merges_repeats_and_drops_blanks() {
        let charset = Charset::from_metadata("a\nb\nc");
        // a a _ a b b _ space c -> "aab c"
        let picks = [(1, 0.9), (1, 0.8), (0, 0.99), (1, 0.7), (2, 0.6), (2, 0.9), (0, 0.9), (4, 0.5), (3, 0.5)];
        let (text, confidence) = charset.decode(steps(5, &picks).view());
        assert_eq!(text, "aab c");
        assert!((confidence - (0.9 + 0.7 + 0.6 + 0.5 + 0.5) / 5.0).abs() < 1e-6, "{confidence}");
        let (empty, zero) = charset.decode(steps(5, &[(0, 0.9), (0, 0.9)]).view());
        assert_eq!((empty.as_str(), zero), ("", 0.0));
        // A class past the alphabet (a mismatched model) is skipped, not a panic.
        assert_eq!(charset.decode(steps(7, &[(6, 0.9), (2, 0.9)]).view()).0, "b");
    }

    #[test]
    fn decode_steps_keeps_each_symbols_run() {
        let charset = Charset::from_metadata("a\nb\nc");
        // a a _ a b b _ space c
        let picks = [(1, 0.9), (1, 0.8), (0, 0.99), (1, 0.7), (2, 0.6), (2, 0.9), (0, 0.9), (4, 0.5), (3, 0.5)];
        let symbols = charset.decode_steps(steps(5, &picks).view());
        let runs: Vec<(&str, usize, usize)> = symbols.iter().map(|s| (s.text.as_str(), s.first, s.last)).collect();
        assert_eq!(runs, [("a", 0, 1), ("a", 3, 3), ("b", 4, 5), (" ", 7, 7), ("c", 8, 8)]);
        let text: String = symbols.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(text, charset.decode(steps(5, &picks).view()).0);
    }
}
