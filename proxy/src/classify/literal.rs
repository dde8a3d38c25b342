//! A statement's literal values: where a number, a string or a dollar-quoted string ends
//! and what its text is (escapes decoded), and how that text is kept. A literal's text
//! (numbers, short strings, UUIDs, timestamps) is usually short enough to live inside the
//! [`Literal`] itself, so the literals of a statement cost one allocation (their list)
//! rather than one each.

use std::fmt;
use std::ops::Deref;

use super::lexer::is_ident_byte;

/// One literal value of a statement, decoded (`'it''s'` is `it's`, `E'\x41'` is `A`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    pub text: LiteralText,
    /// True for string constants (`'…'`, `E'…'`, `$$…$$`), false for numbers.
    pub quoted: bool,
    /// Where the literal starts in the statement as written (byte offset), for the fallback
    /// parse that finds literals by position. Wire messages are under 2 GiB, so it fits;
    /// `u32::MAX` stands for "too far" all the same.
    pub(crate) offset: u32,
}

/// A literal's text: up to [`INLINE`] bytes are kept inline, longer ones on the heap.
/// Derefs to `str`.
#[derive(Clone)]
pub struct LiteralText(Repr);

/// Bytes of text kept inline: enough for a UUID (36) and for most timestamps, and the size
/// of the whole [`LiteralText`] is then 40 bytes.
const INLINE: usize = 38;

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]` is a copy of a `str` (see [`LiteralText::new`]).
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Box<str>),
}

impl LiteralText {
    pub(crate) fn new(s: &str) -> Self {
        if s.len() > INLINE {
            return LiteralText(Repr::Heap(s.into()));
        }
        Self::inline(s.as_bytes())
    }

    /// `bytes` (at most [`INLINE`] of them, valid UTF-8) kept inline.
    fn inline(bytes: &[u8]) -> Self {
        let mut inline = [0; INLINE];
        inline[..bytes.len()].copy_from_slice(bytes);
        LiteralText(Repr::Inline {
            len: bytes.len() as u8,
            bytes: inline,
        })
    }

    /// The text of `bytes`, which are ASCII (a number as written): no validation needed here
    /// (`as_str` checks inline text all the same).
    pub(crate) fn from_ascii(bytes: &[u8]) -> Self {
        debug_assert!(bytes.is_ascii());
        if bytes.len() > INLINE {
            return Self::from_bytes(bytes);
        }
        Self::inline(bytes)
    }

    /// The text of `bytes`, with invalid UTF-8 replaced as `String::from_utf8_lossy` does.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::new(s),
            Err(_) => LiteralText(Repr::Heap(String::from_utf8_lossy(bytes).into())),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Validation of a short copy of a `str`: cheap, and no `unsafe` needed.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("a copy of a str")
            }
            Repr::Heap(s) => s,
        }
    }
}

impl Deref for LiteralText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for LiteralText {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for LiteralText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for LiteralText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl PartialEq for LiteralText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for LiteralText {}

impl PartialEq<str> for LiteralText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for LiteralText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for LiteralText {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// The end of a numeric constant starting at `start`: `42`, `1_000`, `1.5e-3`, `.5`, `0x1F`.
pub(super) fn number_end(sql: &[u8], start: usize) -> usize {
    // Most numbers are plain decimal digits.
    let plain = start
        + sql[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
    if !matches!(
        sql.get(plain),
        Some(b'_' | b'.' | b'e' | b'E' | b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
    ) {
        return plain;
    }
    let digits = |from: usize, hex: bool| {
        from + sql[from..]
            .iter()
            .take_while(|&&b| b.is_ascii_digit() || b == b'_' || (hex && b.is_ascii_hexdigit()))
            .count()
    };
    if sql[start] == b'0'
        && matches!(
            sql.get(start + 1),
            Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
        )
    {
        let end = digits(start + 2, true);
        if end > start + 2 {
            return end;
        }
    }
    // (The plain digits are settled already; `_` may continue them.)
    let mut i = digits(plain, false);
    if sql.get(i) == Some(&b'.') && sql.get(i + 1) != Some(&b'.') {
        i = digits(i + 1, false);
    }
    if matches!(sql.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(sql.get(i + 1), Some(b'+' | b'-')));
        if sql.get(i + 1 + sign).is_some_and(|b| b.is_ascii_digit()) {
            i = digits(i + 1 + sign, false);
        }
    }
    i
}

/// Scans a string body; returns its text and the position after the closing quote, or
/// `None` when it is not closed.
pub(super) fn scan_string(sql: &[u8], body: usize, escapes: bool) -> Option<(LiteralText, usize)> {
    // Most strings hold no doubled quote and no escape: their text is the body as written.
    let rest = &sql[body..];
    let stop = if escapes {
        memchr::memchr2(b'\'', b'\\', rest)?
    } else {
        memchr::memchr(b'\'', rest)?
    };
    if rest[stop] == b'\'' && rest.get(stop + 1) != Some(&b'\'') {
        return Some((LiteralText::from_bytes(&rest[..stop]), body + stop + 1));
    }
    // (Room for a little more than what is already known, so that it does not grow at once.)
    let mut text = Vec::with_capacity((stop + 32).min(rest.len()));
    text.extend_from_slice(&rest[..stop]);
    let mut i = body + stop;
    while i < sql.len() {
        match sql[i] {
            b'\'' if sql.get(i + 1) == Some(&b'\'') => {
                text.push(b'\'');
                i += 2;
            }
            b'\'' => return Some((LiteralText::from_bytes(&text), i + 1)),
            b'\\' if escapes => i = unescape(sql, i, &mut text),
            b => {
                text.push(b);
                i += 1;
            }
        }
    }
    None
}

/// Decodes one backslash escape of an `E'…'` string at `at`; returns the position after it.
fn unescape(sql: &[u8], at: usize, text: &mut Vec<u8>) -> usize {
    let Some(&c) = sql.get(at + 1) else {
        return at + 1;
    };
    let hex_run = |from: usize, max: usize| {
        let n = sql[from.min(sql.len())..]
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let v = sql[from..from + n].iter().fold(0u32, |acc, &b| {
            acc * 16 + (b as char).to_digit(16).unwrap_or(0)
        });
        (v, n)
    };
    match c {
        b'b' => text.push(8),
        b'f' => text.push(12),
        b'n' => text.push(b'\n'),
        b'r' => text.push(b'\r'),
        b't' => text.push(b'\t'),
        b'x' => {
            let (v, n) = hex_run(at + 2, 2);
            if n == 0 {
                text.push(b'x');
                return at + 2;
            }
            text.push(v as u8);
            return at + 2 + n;
        }
        b'u' | b'U' => {
            let want = if c == b'u' { 4 } else { 8 };
            let (v, n) = hex_run(at + 2, want);
            if n == want {
                let ch = char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER);
                text.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                return at + 2 + n;
            }
            text.push(c);
        }
        b'0'..=b'7' => {
            let n = sql[at + 1..]
                .iter()
                .take(3)
                .take_while(|b| (b'0'..=b'7').contains(b))
                .count();
            let v = sql[at + 1..at + 1 + n]
                .iter()
                .fold(0u32, |acc, &b| acc * 8 + u32::from(b - b'0'));
            text.push(v as u8);
            return at + 1 + n;
        }
        other => text.push(other),
    }
    at + 2
}

/// `$tag$body$tag$` at `at`: the body's range and the end, or `None` when `at` does not open
/// a closed dollar quote.
pub(super) fn dollar_quote(sql: &[u8], at: usize) -> Option<((usize, usize), usize)> {
    let tag_len = sql[at + 1..]
        .iter()
        .take_while(|&&b| is_ident_byte(b) && b != b'$')
        .count();
    let close = at + 1 + tag_len;
    if sql.get(close) != Some(&b'$') {
        return None;
    }
    let tag = &sql[at..=close];
    let body = close + 1;
    let found = memchr::memmem::find(&sql[body..], tag)?;
    Some(((body, body + found), body + found + tag.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_inline_and_long_ones_on_the_heap() {
        assert_eq!(std::mem::size_of::<LiteralText>(), 40);
        for s in ["", "42", "é", &"u".repeat(INLINE), &"l".repeat(INLINE + 1)] {
            let t = LiteralText::new(s);
            assert_eq!(t, s);
            assert_eq!(t.len(), s.len());
            assert_eq!(matches!(t.0, Repr::Inline { .. }), s.len() <= INLINE);
        }
        assert_eq!(LiteralText::from_bytes(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(
            format!("{:?} {}", LiteralText::new("x"), LiteralText::new("y")),
            "\"x\" y"
        );
    }
}
