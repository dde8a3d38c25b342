//! Messages a client (frontend) sends: the decoders the proxy needs to rename prepared
//! statements and read SQL text, and encoders for the messages the proxy itself sends to a
//! server.

use bytes::{BufMut, BytesMut};

use super::{Reader, WireError, put_cstr, put_msg};

pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const TERMINATE: u8 = b'X';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share this tag.
    pub const PASSWORD: u8 = b'p';
}

/// `Parse`: the statement name, and the rest of the body (query text, parameter types)
/// kept as bytes so that renaming the statement never re-encodes the query.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseMsg<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
    /// Everything after the name: query text with its NUL, then the parameter types.
    pub after_name: &'a [u8],
}

pub fn decode_parse(body: &[u8]) -> Result<ParseMsg<'_>, WireError> {
    let mut r = Reader::new(body, "Parse");
    let name = r.cstr()?;
    let after_name = r.rest();
    let mut r = Reader::new(after_name, "Parse");
    let query = r.cstr()?;
    let n = r.i16()?;
    if n < 0 {
        return Err(super::malformed("Parse"));
    }
    r.take(n as usize * 4)?;
    if !r.is_empty() {
        return Err(super::malformed("Parse"));
    }
    Ok(ParseMsg {
        name,
        query,
        after_name,
    })
}

/// `Bind`: portal and statement names; the parameters stay opaque bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct BindMsg<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    pub after_names: &'a [u8],
}

pub fn decode_bind(body: &[u8]) -> Result<BindMsg<'_>, WireError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let after_names = r.rest();
    validate_bind_tail(after_names)?;
    Ok(BindMsg {
        portal,
        statement,
        after_names,
    })
}

/// Walks the parameter section so that a malformed Bind is refused here rather than
/// forwarded; the server would refuse it too, but the proxy must never trust lengths.
fn validate_bind_tail(tail: &[u8]) -> Result<(), WireError> {
    let bad = || super::malformed("Bind");
    let mut r = Reader::new(tail, "Bind");
    let nfmt = r.i16()?;
    if nfmt < 0 {
        return Err(bad());
    }
    r.take(nfmt as usize * 2)?;
    let nparams = r.i16()?;
    if nparams < 0 {
        return Err(bad());
    }
    for _ in 0..nparams {
        let len = r.i32()?;
        if len >= 0 {
            r.take(len as usize)?;
        } else if len != -1 {
            return Err(bad());
        }
    }
    let nres = r.i16()?;
    if nres < 0 {
        return Err(bad());
    }
    r.take(nres as usize * 2)?;
    if r.is_empty() { Ok(()) } else { Err(bad()) }
}

/// `Execute`: the portal name and the most rows to return (0 = all).
pub fn decode_execute(body: &[u8]) -> Result<(&[u8], i32), WireError> {
    let mut r = Reader::new(body, "Execute");
    let portal = r.cstr()?;
    let max_rows = r.i32()?;
    if !r.is_empty() {
        return Err(super::malformed("Execute"));
    }
    Ok((portal, max_rows))
}

/// A Bind tail (after the portal and statement names) for a statement with `extra` more
/// result columns than the client's: when the client gave one format code per column,
/// the extra columns get text. Zero or one code already covers any number of columns.
pub fn bind_tail_with_extra_columns(tail: &[u8], extra: usize) -> Result<Vec<u8>, WireError> {
    let mut r = Reader::new(tail, "Bind");
    let nfmt = r.i16()?.max(0) as usize;
    r.take(nfmt * 2)?;
    let nparams = r.i16()?;
    for _ in 0..nparams.max(0) {
        let len = r.i32()?;
        if len > 0 {
            r.take(len as usize)?;
        }
    }
    let rest = r.rest();
    if rest.len() < 2 {
        return Err(super::malformed("Bind"));
    }
    let results_at = tail.len() - rest.len();
    let nres = i16::from_be_bytes([tail[results_at], tail[results_at + 1]]);
    if nres <= 1 || extra == 0 {
        return Ok(tail.to_vec());
    }
    let total = nres as usize + extra;
    let total = i16::try_from(total).map_err(|_| super::malformed("Bind"))?;
    let mut out = tail[..results_at].to_vec();
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&tail[results_at + 2..]);
    out.extend(std::iter::repeat_n([0u8, 0u8], extra).flatten());
    Ok(out)
}

/// `Describe` or `Close`: `S` for a statement or `P` for a portal, and its name.
pub fn decode_target<'a>(body: &'a [u8], what: &'static str) -> Result<(u8, &'a [u8]), WireError> {
    let mut r = Reader::new(body, what);
    let kind = r.u8()?;
    let name = r.cstr()?;
    if !matches!(kind, b'S' | b'P') || !r.is_empty() {
        return Err(super::malformed(what));
    }
    Ok((kind, name))
}

/// `Query`: the SQL text without its terminating NUL.
pub fn decode_query(body: &[u8]) -> Result<&[u8], WireError> {
    let mut r = Reader::new(body, "Query");
    let text = r.cstr()?;
    if !r.is_empty() {
        return Err(super::malformed("Query"));
    }
    Ok(text)
}

/// `SASLInitialResponse`: mechanism name and the client-first message.
pub fn decode_sasl_initial(body: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    let len = r.i32()?;
    let data = if len < 0 {
        &[][..]
    } else {
        r.take(len as usize)?
    };
    if !r.is_empty() {
        return Err(super::malformed("SASLInitialResponse"));
    }
    Ok((mechanism, data))
}

/// `PasswordMessage` (cleartext or md5): the password without its NUL.
pub fn decode_password(body: &[u8]) -> Result<&[u8], WireError> {
    let mut r = Reader::new(body, "PasswordMessage");
    let pw = r.cstr()?;
    if !r.is_empty() {
        return Err(super::malformed("PasswordMessage"));
    }
    Ok(pw)
}

pub fn encode_startup(out: &mut BytesMut, params: &[(&str, &str)]) {
    let at = out.len();
    out.put_i32(0);
    out.put_i32(super::PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(out, k.as_bytes());
        put_cstr(out, v.as_bytes());
    }
    out.put_u8(0);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn encode_cancel_request(out: &mut BytesMut, pid: i32, secret: i32) {
    out.put_i32(16);
    out.put_i32(80_877_102);
    out.put_i32(pid);
    out.put_i32(secret);
}

pub fn encode_password(out: &mut BytesMut, password: &[u8]) {
    put_msg(out, tag::PASSWORD, |b| put_cstr(b, password));
}

pub fn encode_sasl_initial(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    put_msg(out, tag::PASSWORD, |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn encode_sasl_response(out: &mut BytesMut, data: &[u8]) {
    put_msg(out, tag::PASSWORD, |b| b.put_slice(data));
}

pub fn encode_query(out: &mut BytesMut, sql: &str) {
    put_msg(out, tag::QUERY, |b| put_cstr(b, sql.as_bytes()));
}

/// A `Parse` under another statement name, reusing the original body after the name.
pub fn encode_parse(out: &mut BytesMut, name: &[u8], after_name: &[u8]) {
    put_msg(out, tag::PARSE, |b| {
        put_cstr(b, name);
        b.put_slice(after_name);
    });
}

pub fn encode_bind(out: &mut BytesMut, portal: &[u8], statement: &[u8], after_names: &[u8]) {
    put_msg(out, tag::BIND, |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        b.put_slice(after_names);
    });
}

pub fn encode_describe(out: &mut BytesMut, kind: u8, name: &[u8]) {
    put_msg(out, tag::DESCRIBE, |b| {
        b.put_u8(kind);
        put_cstr(b, name);
    });
}

pub fn encode_close(out: &mut BytesMut, kind: u8, name: &[u8]) {
    put_msg(out, tag::CLOSE, |b| {
        b.put_u8(kind);
        put_cstr(b, name);
    });
}

pub fn encode_execute(out: &mut BytesMut, portal: &[u8], max_rows: i32) {
    put_msg(out, tag::EXECUTE, |b| {
        put_cstr(b, portal);
        b.put_i32(max_rows);
    });
}

pub fn encode_sync(out: &mut BytesMut) {
    put_msg(out, tag::SYNC, |_| {});
}

pub fn encode_terminate(out: &mut BytesMut) {
    put_msg(out, tag::TERMINATE, |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::next_frame;

    fn body(mut b: BytesMut) -> Vec<u8> {
        next_frame(&mut b, 1 << 20)
            .unwrap()
            .unwrap()
            .body()
            .to_vec()
    }

    #[test]
    fn parse_round_trips_under_a_new_name() {
        let mut b = BytesMut::new();
        put_msg(&mut b, b'P', |b| {
            put_cstr(b, b"P_0");
            put_cstr(b, b"select $1");
            b.put_i16(1);
            b.put_i32(23);
        });
        let orig = body(b);
        let p = decode_parse(&orig).unwrap();
        assert_eq!((p.name, p.query), (&b"P_0"[..], &b"select $1"[..]));
        let mut out = BytesMut::new();
        encode_parse(&mut out, b"sg_1", p.after_name);
        let renamed = body(out);
        let q = decode_parse(&renamed).unwrap();
        assert_eq!((q.name, q.query), (&b"sg_1"[..], &b"select $1"[..]));
        assert!(decode_parse(b"P_0\0select\0\0\x02\0\0\0\x17").is_err());
    }

    #[test]
    fn bind_tails_get_format_codes_for_extra_columns() {
        // One param "7" (text), two result codes: binary, text.
        let mut tail = vec![0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 2, 0, 1, 0, 0];
        let out = bind_tail_with_extra_columns(&tail, 2).unwrap();
        assert_eq!(
            out,
            [0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 4, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        validate_bind_tail(&out).unwrap();
        // A single code covers every column.
        tail.truncate(9);
        tail.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(bind_tail_with_extra_columns(&tail, 2).unwrap(), tail);
        assert!(bind_tail_with_extra_columns(&[0, 0, 0, 0], 1).is_err());
        assert_eq!(
            decode_execute(&[b'p', 0, 0, 0, 0, 5]).unwrap(),
            (&b"p"[..], 5)
        );
    }

    #[test]
    fn bind_validates_every_length() {
        let mut good = BytesMut::new();
        put_cstr(&mut good, b"");
        put_cstr(&mut good, b"s1");
        good.put_i16(1);
        good.put_i16(1);
        good.put_i16(2);
        good.put_i32(4);
        good.put_i32(42);
        good.put_i32(-1);
        good.put_i16(0);
        let b = decode_bind(&good).unwrap();
        assert_eq!((b.portal, b.statement), (&b""[..], &b"s1"[..]));
        for cut in 0..good.len() {
            assert!(decode_bind(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut huge = good.clone();
        huge[12..16].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_bind(&huge).is_err());
    }

    #[test]
    fn targets_queries_and_sasl() {
        assert_eq!(
            decode_target(b"Sfoo\0", "Close").unwrap(),
            (b'S', &b"foo"[..])
        );
        assert!(decode_target(b"Xfoo\0", "Close").is_err());
        assert_eq!(decode_query(b"select 1\0").unwrap(), b"select 1");
        assert!(decode_query(b"select 1").is_err());
        assert_eq!(
            decode_sasl_initial(b"SCRAM-SHA-256\0\0\0\0\x03abc").unwrap(),
            (&b"SCRAM-SHA-256"[..], &b"abc"[..])
        );
        assert!(decode_sasl_initial(b"SCRAM-SHA-256\0\0\0\0\x09abc").is_err());
    }
}
