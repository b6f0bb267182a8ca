//! A reader for the YAML that OpenCV's `cv::FileStorage` writes, enough for the BRISQUE model and
//! range files: block mappings and sequences by indentation, flow sequences and mappings (which
//! may span lines), plain or quoted scalars, `!!opencv-matrix` style tags (dropped), and the
//! `%YAML:1.0` header. It is not a general YAML parser: anchors, multi-line plain scalars and
//! block scalars (`|`, `>`) are not supported, and OpenCV does not write them.

use std::fmt;

/// A node of the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// 1-based line of the document where reading stopped.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl Node {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        self.as_str()?.parse().ok()
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match self {
            Node::Seq(items) => Some(items),
            _ => None,
        }
    }
}

/// Reads a whole document; its top level is a mapping.
pub fn parse(text: &str) -> Result<Node, ParseError> {
    let lines: Vec<Line> = text.lines().enumerate().filter_map(|(i, raw)| Line::new(i + 1, raw)).collect();
    let mut parser = Parser { lines, pos: 0 };
    if parser.lines.is_empty() {
        return Ok(Node::Map(Vec::new()));
    }
    let indent = parser.lines[0].indent;
    let node = parser.block(indent)?;
    match parser.lines.get(parser.pos) {
        Some(line) => Err(line.error("unexpected indentation")),
        None => Ok(node),
    }
}

/// One meaningful line: its indentation and its content without comments.
#[derive(Debug, Clone)]
struct Line {
    number: usize,
    indent: usize,
    text: String,
}

impl Line {
    fn new(number: usize, raw: &str) -> Option<Line> {
        let content = strip_comment(raw).trim_end();
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('%') || trimmed == "---" || trimmed == "..." {
            return None;
        }
        Some(Line { number, indent: content.len() - trimmed.len(), text: trimmed.to_string() })
    }

    fn error(&self, message: &str) -> ParseError {
        ParseError { line: self.number, message: format!("{message}: {:?}", self.text) }
    }

    fn is_seq_item(&self) -> bool {
        self.text == "-" || self.text.starts_with("- ")
    }
}

/// The line up to a `#` that starts a comment (outside quotes, after a space or at the start).
fn strip_comment(raw: &str) -> &str {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in raw.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if prev.is_whitespace() => return &raw[..i],
            _ => {}
        }
        prev = c;
    }
    raw
}

struct Parser {
    lines: Vec<Line>,
    pos: usize,
}

impl Parser {
    fn current(&self) -> Option<&Line> {
        self.lines.get(self.pos)
    }

    /// A block (mapping or sequence) whose lines start at `indent`.
    fn block(&mut self, indent: usize) -> Result<Node, ParseError> {
        match self.current() {
            Some(line) if line.is_seq_item() => self.block_seq(indent),
            _ => self.block_map(indent),
        }
    }

    fn block_seq(&mut self, indent: usize) -> Result<Node, ParseError> {
        let mut items = Vec::new();
        while let Some(line) = self.current() {
            if line.indent != indent || !line.is_seq_item() {
                break;
            }
            let rest = line.text[1..].trim_start().to_string();
            if rest.is_empty() {
                self.pos += 1;
                items.push(self.nested(indent)?);
            } else {
                // "- value" or "- key: value": read the rest as if it stood on its own line,
                // indented past the dash.
                let inner = indent + (line.text.len() - rest.len());
                self.lines[self.pos] = Line { number: line.number, indent: inner, text: rest };
                items.push(self.item_at(inner)?);
            }
        }
        Ok(Node::Seq(items))
    }

    /// A sequence item whose first line (at `indent`) holds a value or the first key of a mapping.
    fn item_at(&mut self, indent: usize) -> Result<Node, ParseError> {
        let line = self.lines[self.pos].clone();
        if line.is_seq_item() {
            return self.block_seq(indent);
        }
        if split_key(&line.text).is_some() {
            return self.block_map(indent);
        }
        self.value_text(&line.text, line.number)
    }

    fn block_map(&mut self, indent: usize) -> Result<Node, ParseError> {
        let mut entries = Vec::new();
        while let Some(line) = self.current() {
            if line.indent != indent || line.is_seq_item() {
                break;
            }
            let line = line.clone();
            let (key, rest) = split_key(&line.text).ok_or_else(|| line.error("expected `key: value`"))?;
            let rest = strip_tag(rest);
            self.pos += 1;
            let value = if rest.is_empty() { self.nested_or_seq(indent)? } else { self.value_text(rest, line.number)? };
            entries.push((unquote(key).to_string(), value));
        }
        if entries.is_empty() {
            return Err(match self.current() {
                Some(line) => line.error("expected a mapping"),
                None => ParseError { line: 0, message: "unexpected end of document".into() },
            });
        }
        Ok(Node::Map(entries))
    }

    /// The value of `key:` with nothing after it: a block indented further, or a sequence at the
    /// same indentation, or (with neither) an empty scalar.
    fn nested_or_seq(&mut self, indent: usize) -> Result<Node, ParseError> {
        match self.current() {
            Some(line) if line.indent == indent && line.is_seq_item() => self.block_seq(indent),
            _ => self.nested(indent),
        }
    }

    fn nested(&mut self, indent: usize) -> Result<Node, ParseError> {
        match self.current() {
            Some(line) if line.indent > indent => {
                let inner = line.indent;
                self.block(inner)
            }
            _ => Ok(Node::Scalar(String::new())),
        }
    }

    /// A value written on the line (`number`): a scalar, or a flow collection that may go on over
    /// the following lines until its brackets close.
    fn value_text(&mut self, text: &str, number: usize) -> Result<Node, ParseError> {
        if !(text.starts_with('[') || text.starts_with('{')) {
            if self.pos < self.lines.len() && self.lines[self.pos].number == number {
                self.pos += 1;
            }
            return Ok(Node::Scalar(unquote(text).to_string()));
        }
        let mut flow = text.to_string();
        if self.pos < self.lines.len() && self.lines[self.pos].number == number {
            self.pos += 1;
        }
        while !brackets_closed(&flow) {
            let next = self.current().ok_or(ParseError { line: number, message: "unclosed flow collection".into() })?;
            flow.push(' ');
            flow.push_str(&next.text);
            self.pos += 1;
        }
        let mut reader = Flow { chars: flow.chars().collect(), pos: 0, line: number };
        let node = reader.value()?;
        reader.skip_space();
        if reader.pos != reader.chars.len() {
            return Err(reader.error("text after a flow collection"));
        }
        Ok(node)
    }
}

/// `key: value` split at the first `: ` (or a trailing `:`), outside quotes.
fn split_key(text: &str) -> Option<(&str, &str)> {
    let mut quote = None;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, ':') if i + 1 == bytes.len() || bytes[i + 1] == b' ' => {
                return Some((text[..i].trim(), text[i + 1..].trim()));
            }
            (None, '[' | '{') => return None,
            _ => {}
        }
    }
    None
}

/// The text without a leading `!tag` or `!!tag`.
fn strip_tag(text: &str) -> &str {
    if text.starts_with('!') { text.split_once(' ').map_or("", |(_, rest)| rest.trim_start()) } else { text }
}

fn unquote(text: &str) -> &str {
    let t = text.trim();
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return &t[1..t.len() - 1];
        }
    }
    t
}

fn brackets_closed(text: &str) -> bool {
    let mut depth = 0i64;
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// A flow collection: `[a, b, [c]]` or `{ key:value, key: value }`.
struct Flow {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Flow {
    fn error(&self, message: &str) -> ParseError {
        ParseError { line: self.line, message: format!("{message} at column {} of a flow collection", self.pos + 1) }
    }

    fn skip_space(&mut self) {
        while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn value(&mut self) -> Result<Node, ParseError> {
        self.skip_space();
        match self.peek() {
            Some('[') => self.seq(),
            Some('{') => self.map(),
            _ => Ok(Node::Scalar(unquote(&self.scalar(&[',', ']', '}'])).to_string())),
        }
    }

    /// Characters up to one of `ends` (outside quotes), trimmed.
    fn scalar(&mut self, ends: &[char]) -> String {
        let start = self.pos;
        let mut quote = None;
        while let Some(c) = self.peek() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), _) if c == q => quote = None,
                (None, _) if ends.contains(&c) => break,
                _ => {}
            }
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect::<String>().trim().to_string()
    }

    fn seq(&mut self) -> Result<Node, ParseError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                Some(']') => {
                    self.pos += 1;
                    return Ok(Node::Seq(items));
                }
                Some(',') if !items.is_empty() => self.pos += 1,
                Some(_) => items.push(self.value()?),
                None => return Err(self.error("unclosed `[`")),
            }
        }
    }

    fn map(&mut self) -> Result<Node, ParseError> {
        self.pos += 1;
        let mut entries = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    return Ok(Node::Map(entries));
                }
                Some(',') if !entries.is_empty() => self.pos += 1,
                Some(_) => entries.push(self.entry()?),
                None => return Err(self.error("unclosed `{`")),
            }
        }
    }

    /// `key:value` — OpenCV writes no space after the colon inside `{ }`.
    fn entry(&mut self) -> Result<(String, Node), ParseError> {
        let key = self.scalar(&[':', ',', '}']);
        if self.peek() != Some(':') {
            return Err(self.error("expected `:` after a key"));
        }
        self.pos += 1;
        Ok((unquote(&key).to_string(), self.value()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = "%YAML:1.0
---
opencv_ml_svm:
   format: 3
   svmType: EPS_SVR
   kernel:
      type: RBF
      gamma: 5.0000000000000003e-02
   term_criteria: { epsilon:1.0000000000000000e-03 }
   sv_total: 2
   support_vectors:
      - [ -5.97555935e-01, -1.39442384e-01,
          4.35729742e-01 ]
      - [ 1., 2., 3. ]
   decision_functions:
      -
         sv_count: 2
         rho: -1.4963506109127357e+02
         alpha: [ -1024., 6.2439085173495801e+02 ]
";

    #[test]
    fn reads_an_opencv_svm_model() {
        let doc = parse(MODEL).unwrap();
        let svm = doc.get("opencv_ml_svm").unwrap();
        assert_eq!(svm.get("svmType").unwrap().as_str(), Some("EPS_SVR"));
        assert_eq!(svm.get("kernel").unwrap().get("gamma").unwrap().as_f64(), Some(0.05));
        assert_eq!(svm.get("term_criteria").unwrap().get("epsilon").unwrap().as_f64(), Some(1e-3));
        let svs = svm.get("support_vectors").unwrap().as_seq().unwrap();
        assert_eq!(svs.len(), 2);
        assert_eq!(svs[0].as_seq().unwrap().len(), 3);
        assert_eq!(svs[1].as_seq().unwrap()[2].as_f64(), Some(3.0));
        let df = &svm.get("decision_functions").unwrap().as_seq().unwrap()[0];
        assert_eq!(df.get("rho").unwrap().as_f64(), Some(-149.63506109127357));
        assert_eq!(df.get("alpha").unwrap().as_seq().unwrap()[1].as_f64(), Some(624.390_851_734_958));
    }

    #[test]
    fn reads_a_tagged_matrix_and_inline_items() {
        let text = "%YAML:1.0\n---\nrange: !!opencv-matrix\n   rows: 2\n   cols: 1\n   dt: f\n   data: [ 1.5, \n       -2. ]\n\
                    list:\n- a: 1\n  b: \"x y\" # note\n- plain\n";
        let doc = parse(text).unwrap();
        let range = doc.get("range").unwrap();
        assert_eq!(range.get("dt").unwrap().as_str(), Some("f"));
        let data: Vec<f64> = range.get("data").unwrap().as_seq().unwrap().iter().map(|n| n.as_f64().unwrap()).collect();
        assert_eq!(data, vec![1.5, -2.0]);
        let list = doc.get("list").unwrap().as_seq().unwrap();
        assert_eq!(list[0].get("b").unwrap().as_str(), Some("x y"));
        assert_eq!(list[1].as_str(), Some("plain"));
    }

    #[test]
    fn reports_broken_documents() {
        assert!(parse("a: [1, 2\n").is_err());
        assert!(parse("a: 1\n  b: 2\n").is_err());
        assert!(parse("just text\n").is_err());
        assert!(parse("a: {x 1}\n").is_err());
    }
}
