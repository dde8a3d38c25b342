//! The untagged first message of a connection: StartupMessage, SSLRequest, GSSENCRequest
//! or CancelRequest.

use bytes::BytesMut;

use super::{Reader, WireError, malformed};

pub const PROTOCOL_3_0: i32 = 196_608;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
/// Startup packets are small; Postgres itself caps them at 10000 bytes.
const MAX_STARTUP: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: i32 },
    Startup { params: Vec<(String, String)> },
}

/// Splits the first startup-phase packet off `buf`; `Ok(None)` while incomplete.
pub fn next_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, WireError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if !(8..=MAX_STARTUP as i32).contains(&len) {
        return Err(WireError::BadLength(len.into()));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let raw = buf.split_to(len);
    let mut r = Reader::new(&raw[4..], "startup");
    let code = r.i32()?;
    let packet = match code {
        SSL_REQUEST if r.is_empty() => StartupPacket::SslRequest,
        GSSENC_REQUEST if r.is_empty() => StartupPacket::GssEncRequest,
        CANCEL_REQUEST => {
            let pid = r.i32()?;
            let secret = r.i32()?;
            StartupPacket::Cancel { pid, secret }
        }
        _ if code >> 16 == 3 => {
            if code != PROTOCOL_3_0 {
                return Err(WireError::Version {
                    major: 3,
                    minor: code as u16,
                });
            }
            StartupPacket::Startup {
                params: parse_params(&mut r)?,
            }
        }
        _ => {
            return Err(WireError::Version {
                major: (code >> 16) as u16,
                minor: code as u16,
            });
        }
    };
    Ok(Some(packet))
}

fn parse_params(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, WireError> {
    let mut params = Vec::new();
    loop {
        let key = r.cstr()?;
        if key.is_empty() {
            break;
        }
        let value = r.cstr()?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| malformed("startup"));
        params.push((text(key)?, text(value)?));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn packet(code: i32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(8 + body.len() as i32);
        b.put_i32(code);
        b.put_slice(body);
        b
    }

    #[test]
    fn decodes_each_kind() {
        assert_eq!(
            next_startup(&mut packet(SSL_REQUEST, b"")).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        assert_eq!(
            next_startup(&mut packet(GSSENC_REQUEST, b"")).unwrap(),
            Some(StartupPacket::GssEncRequest)
        );
        assert_eq!(
            next_startup(&mut packet(CANCEL_REQUEST, &[0, 0, 0, 7, 0, 0, 0, 9])).unwrap(),
            Some(StartupPacket::Cancel { pid: 7, secret: 9 })
        );
        let mut b = packet(PROTOCOL_3_0, b"user\0app\0database\0db\0\0");
        b.extend_from_slice(b"extra");
        assert_eq!(
            next_startup(&mut b).unwrap(),
            Some(StartupPacket::Startup {
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "db".into())
                ]
            })
        );
        assert_eq!(&b[..], b"extra");
    }

    #[test]
    fn rejects_garbage() {
        assert!(next_startup(&mut packet(PROTOCOL_3_0, b"user\0app")).is_err());
        assert!(next_startup(&mut packet(0x0002_0000, b"")).is_err());
        assert!(next_startup(&mut packet(PROTOCOL_3_0 + 1, b"\0")).is_err());
        assert!(next_startup(&mut BytesMut::from(&[0u8, 0, 0, 2][..])).is_err());
        assert!(next_startup(&mut BytesMut::from(&[0x7fu8, 0, 0, 0][..])).is_err());
        assert_eq!(
            next_startup(&mut BytesMut::from(&[0u8, 0, 0, 9, 0][..])),
            Ok(None)
        );
    }
}
