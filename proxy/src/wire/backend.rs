//! Messages a server (backend) sends: decoders for the few the proxy inspects and encoders
//! for the ones the proxy answers itself.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use super::{Reader, WireError, put_cstr, put_msg};

pub mod btag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const NO_DATA: u8 = b'n';
    pub const DATA_ROW: u8 = b'D';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const EMPTY_QUERY: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const COPY_IN: u8 = b'G';
    pub const COPY_OUT: u8 = b'H';
    pub const COPY_BOTH: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL: u8 = b'v';
}

/// What an `Authentication*` message asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5 { salt: [u8; 4] },
    Sasl { mechanisms: Vec<&'a [u8]> },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    Unsupported(i32),
}

pub fn decode_auth(body: &[u8]) -> Result<AuthRequest<'_>, WireError> {
    let mut r = Reader::new(body, "Authentication");
    Ok(match r.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => AuthRequest::Md5 {
            salt: r.take(4)?.try_into().expect("4 bytes"),
        },
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => AuthRequest::SaslContinue(r.rest()),
        12 => AuthRequest::SaslFinal(r.rest()),
        other => AuthRequest::Unsupported(other),
    })
}

/// `ParameterStatus`: name and value.
pub fn decode_parameter_status(body: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let mut r = Reader::new(body, "ParameterStatus");
    Ok((r.cstr()?, r.cstr()?))
}

/// `BackendKeyData`: process id and secret key.
pub fn decode_backend_key(body: &[u8]) -> Result<(i32, i32), WireError> {
    let mut r = Reader::new(body, "BackendKeyData");
    Ok((r.i32()?, r.i32()?))
}

/// `CommandComplete`: the command tag, e.g. `SELECT 1`.
pub fn decode_command_tag(body: &[u8]) -> &[u8] {
    body.strip_suffix(&[0]).unwrap_or(body)
}

/// `DataRow`: the column values (`None` is NULL), as raw bytes.
pub fn decode_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, WireError> {
    let mut r = Reader::new(body, "DataRow");
    let n = r.i16()?;
    let mut values = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = r.i32()?;
        values.push(if len < 0 {
            None
        } else {
            Some(r.take(len as usize)?)
        });
    }
    Ok(values)
}

/// The fields of an `ErrorResponse` or `NoticeResponse` that the proxy looks at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

pub fn decode_error(body: &[u8]) -> ErrorFields {
    let mut f = ErrorFields::default();
    let mut r = Reader::new(body, "ErrorResponse");
    while let Ok(kind) = r.u8() {
        if kind == 0 {
            break;
        }
        let Ok(value) = r.cstr() else { break };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'V' => f.severity = value,
            b'S' if f.severity.is_empty() => f.severity = value,
            b'C' => f.code = value,
            b'M' => f.message = value,
            _ => {}
        }
    }
    f
}

/// An error or notice the proxy raises itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: Cow<'static, str>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Warning => "WARNING",
        }
    }
}

impl PgError {
    pub fn error(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn fatal(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Fatal,
            ..Self::error(code, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let tag = match self.severity {
            Severity::Warning => btag::NOTICE_RESPONSE,
            _ => btag::ERROR_RESPONSE,
        };
        put_msg(out, tag, |b| {
            for (k, v) in [
                (b'S', self.severity.as_str()),
                (b'V', self.severity.as_str()),
                (b'C', self.code.as_ref()),
                (b'M', &self.message),
            ] {
                b.put_u8(k);
                put_cstr(b, v.as_bytes());
            }
            for (k, v) in [(b'D', &self.detail), (b'H', &self.hint)] {
                if let Some(v) = v {
                    b.put_u8(k);
                    put_cstr(b, v.as_bytes());
                }
            }
            b.put_u8(0);
        });
    }
}

pub fn encode_auth_ok(out: &mut BytesMut) {
    put_msg(out, btag::AUTHENTICATION, |b| b.put_i32(0));
}

pub fn encode_auth_md5(out: &mut BytesMut, salt: [u8; 4]) {
    put_msg(out, btag::AUTHENTICATION, |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

pub fn encode_auth_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    put_msg(out, btag::AUTHENTICATION, |b| {
        b.put_i32(10);
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn encode_auth_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    put_msg(out, btag::AUTHENTICATION, |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn encode_auth_sasl_final(out: &mut BytesMut, data: &[u8]) {
    put_msg(out, btag::AUTHENTICATION, |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn encode_parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    put_msg(out, btag::PARAMETER_STATUS, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

pub fn encode_backend_key(out: &mut BytesMut, pid: i32, secret: i32) {
    put_msg(out, btag::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn encode_ready_for_query(out: &mut BytesMut, status: u8) {
    put_msg(out, btag::READY_FOR_QUERY, |b| b.put_u8(status));
}

pub fn encode_command_complete(out: &mut BytesMut, tag: &str) {
    put_msg(out, btag::COMMAND_COMPLETE, |b| put_cstr(b, tag.as_bytes()));
}

pub fn encode_parse_complete(out: &mut BytesMut) {
    put_msg(out, btag::PARSE_COMPLETE, |_| {});
}

pub fn encode_bind_complete(out: &mut BytesMut) {
    put_msg(out, btag::BIND_COMPLETE, |_| {});
}

pub fn encode_no_data(out: &mut BytesMut) {
    put_msg(out, btag::NO_DATA, |_| {});
}

pub fn encode_close_complete(out: &mut BytesMut) {
    put_msg(out, btag::CLOSE_COMPLETE, |_| {});
}

/// Type OID of `text`, the type of every column the proxy produces itself.
pub const TEXT_OID: u32 = 25;

/// A RowDescription of text columns in text format.
pub fn encode_text_row_description(out: &mut BytesMut, columns: &[&str]) {
    put_msg(out, btag::ROW_DESCRIPTION, |b| {
        b.put_i16(columns.len() as i16);
        for name in columns {
            put_cstr(b, name.as_bytes());
            b.put_u32(0); // table oid
            b.put_i16(0); // column number
            b.put_u32(TEXT_OID);
            b.put_i16(-1); // type size: variable
            b.put_i32(-1); // type modifier
            b.put_i16(0); // text format
        }
    });
}

/// A DataRow of text values; `None` is NULL.
pub fn encode_data_row(out: &mut BytesMut, values: &[Option<&str>]) {
    put_msg(out, btag::DATA_ROW, |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// One column of a `RowDescription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDesc {
    pub name: Vec<u8>,
    pub table_oid: u32,
    pub column: i16,
    pub type_oid: u32,
    pub type_len: i16,
    pub type_mod: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

impl FieldDesc {
    /// Same name, type and format: what must agree when several shards describe one
    /// result (table OIDs and column numbers differ from cluster to cluster).
    pub fn same_shape(&self, other: &FieldDesc) -> bool {
        self.name == other.name
            && self.type_oid == other.type_oid
            && self.type_len == other.type_len
            && self.type_mod == other.type_mod
            && self.format == other.format
    }
}

pub fn decode_row_description(body: &[u8]) -> Result<Vec<FieldDesc>, WireError> {
    let mut r = Reader::new(body, "RowDescription");
    let n = r.i16()?;
    let mut fields = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        fields.push(FieldDesc {
            name: r.cstr()?.to_vec(),
            table_oid: r.i32()? as u32,
            column: r.i16()?,
            type_oid: r.i32()? as u32,
            type_len: r.i16()?,
            type_mod: r.i32()?,
            format: r.i16()?,
        });
    }
    if !r.is_empty() {
        return Err(super::malformed("RowDescription"));
    }
    Ok(fields)
}

pub fn encode_row_description(out: &mut BytesMut, fields: &[FieldDesc]) {
    put_msg(out, btag::ROW_DESCRIPTION, |b| {
        b.put_i16(fields.len() as i16);
        for f in fields {
            put_cstr(b, &f.name);
            b.put_u32(f.table_oid);
            b.put_i16(f.column);
            b.put_u32(f.type_oid);
            b.put_i16(f.type_len);
            b.put_i32(f.type_mod);
            b.put_i16(f.format);
        }
    });
}

/// A DataRow of raw column values (any format); `None` is NULL.
pub fn encode_data_row_raw<V: AsRef<[u8]>>(out: &mut BytesMut, values: &[Option<V>]) {
    put_msg(out, btag::DATA_ROW, |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    let v = v.as_ref();
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::next_frame;

    #[test]
    fn row_descriptions_and_raw_rows_round_trip() {
        let fields = vec![
            FieldDesc {
                name: b"id".to_vec(),
                table_oid: 16384,
                column: 1,
                type_oid: 20,
                type_len: 8,
                type_mod: -1,
                format: 1,
            },
            FieldDesc {
                name: b"note".to_vec(),
                table_oid: 0,
                column: 0,
                type_oid: 25,
                type_len: -1,
                type_mod: -1,
                format: 0,
            },
        ];
        let mut out = BytesMut::new();
        encode_row_description(&mut out, &fields);
        encode_data_row_raw(&mut out, &[Some(&b"\0\0\0\0\0\0\0\x07"[..]), None]);
        let f = next_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(decode_row_description(f.body()).unwrap(), fields);
        let f = next_frame(&mut out, 1 << 20).unwrap().unwrap();
        let row = decode_data_row(f.body()).unwrap();
        assert_eq!(row, vec![Some(&b"\0\0\0\0\0\0\0\x07"[..]), None]);
        assert!(fields[0].same_shape(&FieldDesc {
            table_oid: 99,
            column: 3,
            ..fields[0].clone()
        }));
        assert!(decode_row_description(&[0, 1]).is_err());
    }

    #[test]
    fn errors_round_trip_through_the_decoder() {
        let mut out = BytesMut::new();
        PgError::error("SG001", "cross-shard write refused")
            .with_hint("add tenant_id")
            .encode(&mut out);
        let f = next_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(f.tag, b'E');
        let e = decode_error(f.body());
        assert_eq!(
            (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
            ("ERROR", "SG001", "cross-shard write refused")
        );
        assert_eq!(decode_error(b"Cxx").code, "");
    }

    #[test]
    fn decodes_auth_requests() {
        assert_eq!(decode_auth(&[0, 0, 0, 0]).unwrap(), AuthRequest::Ok);
        assert_eq!(
            decode_auth(&[0, 0, 0, 5, 1, 2, 3, 4]).unwrap(),
            AuthRequest::Md5 { salt: [1, 2, 3, 4] }
        );
        assert!(decode_auth(&[0, 0, 0, 5, 1]).is_err());
        assert_eq!(
            decode_auth(b"\0\0\0\x0aSCRAM-SHA-256\0\0").unwrap(),
            AuthRequest::Sasl {
                mechanisms: vec![&b"SCRAM-SHA-256"[..]]
            }
        );
        assert_eq!(
            decode_auth(&[0, 0, 0, 7]).unwrap(),
            AuthRequest::Unsupported(7)
        );
    }
}
