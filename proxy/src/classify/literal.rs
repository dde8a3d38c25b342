//! A statement's literal values, owned compactly: a literal's text (numbers, short strings,
//! UUIDs, timestamps) is usually short enough to live inside the [`Literal`] itself, so the
//! literals of a statement cost one allocation (their list) rather than one each.

use std::fmt;
use std::ops::Deref;

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
        let mut bytes = [0; INLINE];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        LiteralText(Repr::Inline {
            len: s.len() as u8,
            bytes,
        })
    }

    /// The text of `bytes`, which are ASCII (a number as written): no validation needed here
    /// (`as_str` checks inline text all the same).
    pub(crate) fn from_ascii(bytes: &[u8]) -> Self {
        debug_assert!(bytes.is_ascii());
        if bytes.len() > INLINE {
            return Self::from_bytes(bytes);
        }
        let mut inline = [0; INLINE];
        inline[..bytes.len()].copy_from_slice(bytes);
        LiteralText(Repr::Inline {
            len: bytes.len() as u8,
            bytes: inline,
        })
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
