//! Sans-IO Postgres protocol v3 codec, both directions.
//!
//! Frames stay raw `Bytes` wherever the proxy only forwards them; the decoders here borrow
//! from a frame body and are used only on the few messages the proxy must inspect. Nothing
//! in this module performs I/O or imports anything else of the crate.

mod backend;
mod frame;
mod frontend;
mod startup;

pub use backend::*;
pub use frame::{Frame, FrameRef, frame_len, next_frame};
pub use frontend::*;
pub use startup::{PROTOCOL_3_0, StartupPacket, next_startup};

/// Why bytes from a peer could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message length {0} is invalid")]
    BadLength(i64),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
    #[error("unsupported protocol version {major}.{minor}")]
    Version { major: u16, minor: u16 },
}

pub(crate) fn malformed(what: &'static str) -> WireError {
    WireError::Malformed { what }
}

/// A cursor over a message body that never panics: every read checks its bounds.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    pub(crate) fn cstr(&mut self) -> Result<&'a [u8], WireError> {
        let end = memchr::memchr(0, self.buf).ok_or(malformed(self.what))?;
        let (s, rest) = self.buf.split_at(end);
        self.buf = &rest[1..];
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self.buf.split_first().ok_or(malformed(self.what))?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(malformed(self.what));
        }
        let (s, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(s)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Appends one tagged message: tag, a length placeholder, the body `f` writes, then the
/// length filled in.
pub(crate) fn put_msg(out: &mut bytes::BytesMut, tag: u8, f: impl FnOnce(&mut bytes::BytesMut)) {
    use bytes::BufMut;
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    f(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub(crate) fn put_cstr(out: &mut bytes::BytesMut, s: &[u8]) {
    out.extend_from_slice(s);
    out.extend_from_slice(&[0]);
}
