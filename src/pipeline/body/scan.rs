//! A validating JSON scanner that finds where values start and end without building them.
//!
//! It accepts exactly what `serde_json` accepts when it skips a value (RFC 8259 on UTF-8 text, any depth;
//! like serde's skipping, and like `JSON.parse`, it does not pair `\u` surrogate escapes). Strings, the
//! bulk of a chat body and escape-rich, are crossed with the block masks of `strings` rather than byte by
//! byte, which makes it several times faster than serde's skipping.

use std::borrow::Cow;

use super::strings::{self, Block};

/// The byte span (within the scanned text) of every element of an array or value of an object.
pub(super) type Span = (usize, usize);

pub(super) struct Scanner<'a> {
    /// The whole text's bytes up to the end of the scanned part.
    b: &'a [u8],
    /// The position in `b`; spans handed out are relative to `base`, where the scanned part starts.
    i: usize,
    base: usize,
    /// The masks of the whole text: a part of an already scanned body reuses its parent's.
    blocks: Cow<'a, [Block]>,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Scanner { b: text.as_bytes(), i: 0, base: 0, blocks: Cow::Owned(strings::blocks(text.as_bytes())) }
    }

    /// `part`, a slice of `whole` (whose masks `blocks` are), scanned without computing masks again: spans
    /// are relative to `part`. Masks are the same for any slice that starts outside a string (a message,
    /// a tool, a content part); a `part` that is not a slice of `whole` gets masks of its own.
    pub(super) fn part(whole: &'a str, blocks: &'a [Block], part: &'a str) -> Self {
        let from = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
        if from > whole.len() || part.len() > whole.len() - from {
            return Scanner::new(part);
        }
        Scanner { b: &whole.as_bytes()[..from + part.len()], i: from, base: from, blocks: Cow::Borrowed(blocks) }
    }

    /// The masks, for scanning parts of this text later ([`Scanner::part`]).
    pub(super) fn into_blocks(self) -> Vec<Block> {
        self.blocks.into_owned()
    }

    pub(super) fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// Consume `c` (after whitespace) or fail.
    pub(super) fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Only whitespace is left.
    pub(super) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// A string token (quotes included) starting at the next non-whitespace byte.
    pub(super) fn string(&mut self) -> Option<Span> {
        self.ws();
        let start = self.i;
        if self.b.get(start) != Some(&b'"') {
            return None;
        }
        // The closing quote: the next quote no backslash escapes.
        let from = start + 1;
        let mut k = from / 64;
        let mut quotes = self.blocks.get(k)?.quote & (!0u64 << (from % 64));
        while quotes == 0 {
            k += 1;
            quotes = self.blocks.get(k)?.quote;
        }
        let end = k * 64 + quotes.trailing_zeros() as usize;
        // A part's masks go on past its end: a string cut there ends beyond it.
        if end >= self.b.len() || !self.valid_inside(from, end) {
            return None;
        }
        self.i = end + 1;
        Some((start - self.base, self.i - self.base))
    }

    /// No control character, no invalid escape, and four hex digits after every `\u` in `from..to`.
    fn valid_inside(&self, from: usize, to: usize) -> bool {
        if from >= to {
            return true;
        }
        let (first, last) = (from / 64, (to - 1) / 64);
        for k in first..=last {
            let mut range = !0u64;
            if k == first {
                range &= !0u64 << (from % 64);
            }
            if k == last {
                range &= !0u64 >> (63 - (to - 1) % 64);
            }
            let block = self.blocks[k];
            if block.bad & range != 0 {
                return false;
            }
            let mut unicode = block.unicode & range;
            while unicode != 0 {
                let at = k * 64 + unicode.trailing_zeros() as usize;
                if !self.b.get(at + 1..at + 5).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                unicode &= unicode - 1;
            }
        }
        true
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let digits = |s: &mut Self| {
            let from = s.i;
            while s.b.get(s.i).is_some_and(u8::is_ascii_digit) {
                s.i += 1;
            }
            (s.i > from).then_some(())
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => digits(self)?,
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            digits(self)?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            digits(self)?;
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(word).then(|| self.i += word.len())
    }

    /// One value of any kind and depth (an explicit stack, no recursion); its span.
    pub(super) fn value(&mut self) -> Option<Span> {
        // Open containers: true for an object (whose next item is a key), false for an array.
        let mut open = Open::default();
        self.ws();
        let start = self.i;
        loop {
            // A value.
            match *self.b.get(self.i)? {
                b'"' => {
                    self.string()?;
                }
                b'{' => {
                    self.i += 1;
                    if self.peek()? == b'}' {
                        self.i += 1;
                    } else {
                        open.push(true);
                        self.key()?;
                        continue;
                    }
                }
                b'[' => {
                    self.i += 1;
                    if self.peek()? == b']' {
                        self.i += 1;
                    } else {
                        open.push(false);
                        continue;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // After a value: `,` for the next item, or close containers.
            loop {
                let Some(is_object) = open.last() else {
                    return Some((start - self.base, self.i - self.base));
                };
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if is_object {
                            self.key()?;
                        } else {
                            self.ws();
                        }
                        break;
                    }
                    b'}' if is_object => {
                        self.i += 1;
                        open.pop();
                    }
                    b']' if !is_object => {
                        self.i += 1;
                        open.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key" :` and the whitespace before the value.
    fn key(&mut self) -> Option<Span> {
        let key = self.string()?;
        self.eat(b':')?;
        self.ws();
        Some(key)
    }

    /// The elements of the array starting at the next non-whitespace byte.
    pub(super) fn array(&mut self) -> Option<Vec<Span>> {
        self.eat(b'[')?;
        // A conversation's messages: growing from 4 would reallocate several times.
        let mut items = Vec::with_capacity(16);
        if self.peek()? == b']' {
            self.i += 1;
            return Some(items);
        }
        loop {
            items.push(self.value()?);
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(items);
                }
                _ => return None,
            }
        }
    }

    /// The (key, value) spans of the object starting at the next non-whitespace byte, and the position of
    /// its closing `}`.
    pub(super) fn object(&mut self) -> Option<(Vec<(Span, Span)>, usize)> {
        let mut fields = Vec::new();
        let mut first = true;
        while let Some(key) = self.next_key(std::mem::take(&mut first))? {
            fields.push((key, self.value()?));
        }
        Some((fields, self.i - 1 - self.base))
    }

    /// Step over `{` / `,` and the next key of an object: `Some(Some(key span))`, `Some(None)` at its end.
    pub(super) fn next_key(&mut self, first: bool) -> Option<Option<Span>> {
        if first {
            self.eat(b'{')?;
            if self.peek()? == b'}' {
                self.i += 1;
                return Some(None);
            }
        } else {
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(None);
                }
                _ => return None,
            }
        }
        self.key().map(Some)
    }
}

/// The stack of open containers (true: an object), in a word up to depth 64: a body's values are rarely
/// deeper, and a `Vec` here was an allocation per message.
#[derive(Default)]
struct Open {
    bits: u64,
    depth: usize,
    deeper: Vec<bool>,
}

impl Open {
    fn push(&mut self, is_object: bool) {
        if self.depth < 64 {
            self.bits = (self.bits & !(1 << self.depth)) | (u64::from(is_object) << self.depth);
        } else {
            self.deeper.push(is_object);
        }
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.depth -= 1;
        if self.depth >= 64 {
            self.deeper.pop();
        }
    }

    fn last(&self) -> Option<bool> {
        match self.depth {
            0 => None,
            d if d <= 64 => Some(self.bits >> (d - 1) & 1 == 1),
            _ => self.deeper.last().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> bool {
        let mut s = Scanner::new(text);
        s.value().is_some() && s.at_end()
    }

    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    #[test]
    fn accepts_what_serde_accepts_on_valid_and_broken_texts() {
        let valid = [
            r#"{"a":[1,-0,0.5,-1.5e+10,2E-3,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9\ud800"],"b":{},"c":[],"d":{"e":[[]]}}"#,
            " [ 1 , { \"k\" : \"v\" } ] ",
            "\"just a string\"",
            "0",
            "-12",
            "null",
        ];
        for text in valid {
            assert!(accepts(text) && serde_accepts(text), "{text}");
        }
        let invalid = [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "tru",
            "nul",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"a\nb\"",
            "\"\t\"",
            "\"unterminated",
            "[\"\\\"]",
            "{\"a\":}",
            "[}",
            "{]",
            "1 2",
            "NaN",
            "[1]]",
            "{\"a\":1}}",
            "'a'",
        ];
        for text in invalid {
            assert!(!accepts(text), "{text:?} accepted");
            assert!(!serde_accepts(text), "{text:?} accepted by serde");
        }
        // Depth is not limited when skipping, in both.
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(accepts(&deep) && serde_accepts(&deep));
    }

    #[test]
    fn a_part_scanned_with_its_parents_masks_reads_as_the_part_alone() {
        let body = String::from_utf8(super::super::tests::opencode_body(24 * 1024)).unwrap();
        let mut whole = Scanner::new(&body);
        let mut first = true;
        let mut messages = None;
        while let Some((a, b)) = whole.next_key(std::mem::take(&mut first)).unwrap() {
            if &body[a..b] == "\"messages\"" {
                messages = Some(whole.array().unwrap());
            } else {
                whole.value().unwrap();
            }
        }
        let messages = messages.expect("the body has messages");
        let blocks = whole.into_blocks();
        assert!(messages.len() > 3);
        let mut cuts = 0;
        for &(a, b) in &messages {
            let message = &body[a..b];
            // Whole, and cut anywhere (a cut inside a string must not run on into the parent's text).
            for end in (1..=message.len()).filter(|&e| message.is_char_boundary(e)).step_by(29).chain([message.len()]) {
                let part = &message[..end];
                let mut alone = Scanner::new(part);
                let mut shared = Scanner::part(&body, &blocks, part);
                assert_eq!(shared.value(), alone.value(), "{part:?}");
                assert_eq!(shared.at_end(), alone.at_end(), "{part:?}");
                let (mut alone, mut shared) = (Scanner::new(part), Scanner::part(&body, &blocks, part));
                assert_eq!(shared.object().map(|o| o.1), alone.object().map(|o| o.1), "{part:?}");
                cuts += 1;
            }
        }
        assert!(cuts > 100);
        // Not a slice of the body: scanned on its own.
        let other = String::from("{\"role\":\"user\"}");
        assert_eq!(Scanner::part(&body, &blocks, &other).value(), Some((0, other.len())));
    }

    #[test]
    fn containers_deeper_than_the_inline_stack_close_in_order() {
        for depth in [63, 64, 65, 130] {
            let mixed: String = (0..depth).map(|i| if i % 3 == 0 { "{\"k\":" } else { "[" }).collect();
            let closing: String = (0..depth).rev().map(|i| if i % 3 == 0 { "}" } else { "]" }).collect();
            let text = format!("{mixed}1{closing}");
            assert!(accepts(&text) && serde_accepts(&text), "depth {depth}");
            // Closed in the wrong order at the deepest level: refused.
            let swapped = format!("{mixed}1{}", closing.replacen(']', "}", 1));
            assert!(!accepts(&swapped) && !serde_accepts(&swapped), "depth {depth}, swapped");
        }
    }

    #[test]
    fn agrees_with_serde_on_thousands_of_damaged_bodies() {
        let body = String::from_utf8(super::super::tests::opencode_body(4 * 1024)).unwrap();
        let bytes = body.as_bytes();
        let specials =
            [b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'\n', b'0', b'-', b'e', b'.', b' ', b'u', b'x'];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..5000 {
            let mut v = bytes.to_vec();
            for _ in 0..(next() % 3 + 1) {
                let at = (next() as usize) % v.len();
                match next() % 3 {
                    0 => v[at] = specials[(next() as usize) % specials.len()],
                    1 => {
                        v.remove(at);
                    }
                    _ => v.insert(at, specials[(next() as usize) % specials.len()]),
                }
            }
            let Ok(text) = std::str::from_utf8(&v) else {
                continue;
            };
            let ours = accepts(text);
            assert_eq!(ours, serde_accepts(text), "{text}");
            if ours {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        assert!(accepted > 100 && rejected > 1000, "both outcomes exercised: {accepted} / {rejected}");
    }
}
