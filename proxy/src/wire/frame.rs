//! Splitting a byte stream into tagged messages (`tag`, `i32 length`, body).

use bytes::{Bytes, BytesMut};

use super::WireError;

/// One complete message, header included, exactly as it was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub bytes: Bytes,
}

impl Frame {
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }
}

/// One complete message borrowed from a receive buffer, for messages handled in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    pub tag: u8,
    pub bytes: &'a [u8],
}

impl<'a> FrameRef<'a> {
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[5..]
    }
}

/// The total length (header included) of the first message in `buf` once it is complete;
/// `Ok(None)` while more bytes are needed. The declared length is checked before the body
/// arrives, so an oversized message is refused without buffering it.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, WireError> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let declared = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if declared < 4 {
        return Err(WireError::BadLength(declared.into()));
    }
    let total = declared as usize + 1;
    if total > max {
        return Err(WireError::TooLarge { len: total, max });
    }
    Ok((buf.len() >= total).then_some(total))
}

/// Splits the first complete message off `buf`.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, WireError> {
    Ok(frame_len(buf, max)?.map(|len| {
        let bytes = buf.split_to(len).freeze();
        Frame {
            tag: bytes[0],
            bytes,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_frames_only() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x09abcd\0S\0\0"[..]);
        let f = next_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert_eq!(f.body(), b"abcd\0");
        assert_eq!(next_frame(&mut buf, 1024).unwrap(), None);
        buf.extend_from_slice(b"\0\x04");
        assert_eq!(next_frame(&mut buf, 1024).unwrap().unwrap().body(), b"");
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_bad_and_oversized_lengths_before_the_body() {
        assert_eq!(
            frame_len(b"Q\0\0\0\x03", 1024),
            Err(WireError::BadLength(3))
        );
        assert_eq!(
            frame_len(b"Q\xff\xff\xff\xff", 1024),
            Err(WireError::BadLength(-1))
        );
        assert_eq!(
            frame_len(b"Q\0\x01\0\0", 1024),
            Err(WireError::TooLarge {
                len: 65537,
                max: 1024
            })
        );
    }
}
