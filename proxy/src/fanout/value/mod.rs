//! Column values decoded by type OID, in either wire format, into a [`SortValue`] whose `Ord`
//! is Postgres's default btree order for the type, so rows from several shards merge into the
//! order one Postgres would have produced.
//!
//! Supported types and their order:
//! - `int2`, `int4`, `int8`, `oid`: numeric order (all widths compare with each other, and
//!   with `numeric` values exactly, for HAVING literals such as `count(*) > 2.5`).
//! - `numeric`: exact decimal order, `-Infinity` < finite < `Infinity` < `NaN` (Postgres 14+).
//! - `float4`, `float8`: `-Infinity` < finite < `Infinity` < `NaN`; `-0 == 0`; NaN equals NaN.
//! - `text`, `varchar`, `name`, `bpchar`: byte order, which is Postgres's order only under the
//!   "C" collation (the proxy documents the caveat); `bpchar` ignores trailing spaces.
//! - `bool`: false < true. `uuid`: by its 16 bytes.
//! - `date`, `timestamp`, `timestamptz`: chronological (`-infinity` first, `infinity` last);
//!   `timestamptz` by instant, whatever UTC offset each row's text carries. Text values must
//!   be in the ISO DateStyle (Postgres's default, and what `DateStyle = 'ISO, ...'` prints).
//!
//! It also prints floats the way `float4out`/`float8out` do (`extra_float_digits` = 1, the
//! default since Postgres 12): [`float4_out`], [`float8_out`].

use std::cmp::Ordering;

use super::decimal::Decimal;

mod datetime;
mod float;

pub use float::{PgFloat, float4_out, float8_out};

use datetime::{parse_date, parse_timestamp};
use float::{float_literal_in_range, parse_float4, parse_float8};

/// Type OIDs (`pg_type.oid`) this layer knows.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
}

/// A column's wire format (RowDescription / Bind format code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Binary,
}

impl Format {
    /// 1 is binary; 0 (and anything else, which the wire layer rejects earlier) is text.
    pub fn from_code(code: i16) -> Format {
        if code == 1 {
            Format::Binary
        } else {
            Format::Text
        }
    }

    /// The wire format code.
    pub fn code(self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
        }
    }
}

/// Why a value cannot be decoded, parsed or combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The type (or the operation on it) is not one the merge supports.
    #[error("cross-shard {what} is not supported for type OID {oid}")]
    UnsupportedType { oid: u32, what: &'static str },
    /// The bytes or text are not a valid value of the type.
    #[error("malformed value of type OID {oid}: {detail}")]
    Malformed { oid: u32, detail: String },
    /// Postgres's own out-of-range error (SQLSTATE 22003), message verbatim, e.g. "bigint out
    /// of range" for an int8 sum that overflows.
    #[error("{message}")]
    OutOfRange { oid: u32, message: &'static str },
    /// `division by zero` (SQLSTATE 22012).
    #[error("division by zero")]
    DivisionByZero,
}

impl ValueError {
    /// The SQLSTATE Postgres reports for the same failure.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ValueError::UnsupportedType { .. } => "0A000",
            ValueError::Malformed { .. } => "22P02",
            ValueError::OutOfRange { .. } => "22003",
            ValueError::DivisionByZero => "22012",
        }
    }
}

/// A value decoded for ordering. `Ord` equals Postgres's default btree order for the type.
///
/// One column has one type, so values of different variants meet only through
/// [`parse_literal`]: an integer and a numeric compare by value; other mixes order by variant
/// (an arbitrary but consistent order).
#[derive(Debug, Clone)]
pub enum SortValue {
    Bool(bool),
    /// `int2`, `int4`, `int8`, `oid`.
    Int(i64),
    /// `float4`, `float8`.
    Float(PgFloat),
    Numeric(Decimal),
    /// `text`, `varchar`, `name` bytes; `bpchar` without its trailing spaces.
    Text(Vec<u8>),
    /// Days since 2000-01-01; `i32::MIN`/`i32::MAX` are `-infinity`/`infinity`.
    Date(i32),
    /// Microseconds since 2000-01-01 00:00; `i64::MIN`/`i64::MAX` are `-infinity`/`infinity`.
    Timestamp(i64),
    /// Microseconds since 2000-01-01 00:00 UTC; `i64::MIN`/`i64::MAX` as for `Timestamp`.
    TimestampTz(i64),
    Uuid([u8; 16]),
}

impl SortValue {
    fn rank(&self) -> u8 {
        match self {
            SortValue::Bool(_) => 0,
            SortValue::Int(_) | SortValue::Numeric(_) => 1,
            SortValue::Float(_) => 2,
            SortValue::Text(_) => 3,
            SortValue::Date(_) => 4,
            SortValue::Timestamp(_) => 5,
            SortValue::TimestampTz(_) => 6,
            SortValue::Uuid(_) => 7,
        }
    }
}

impl PartialEq for SortValue {
    fn eq(&self, other: &SortValue) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SortValue {}

impl PartialOrd for SortValue {
    fn partial_cmp(&self, other: &SortValue) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SortValue {
    fn cmp(&self, other: &SortValue) -> Ordering {
        use SortValue::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            (Int(a), Numeric(b)) => Decimal::from_i64(*a).cmp(b),
            (Numeric(a), Int(b)) => a.cmp(&Decimal::from_i64(*b)),
            (Numeric(a), Numeric(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.cmp(b),
            (Text(a), Text(b)) => a.cmp(b),
            (Date(a), Date(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (TimestampTz(a), TimestampTz(b)) => a.cmp(b),
            (Uuid(a), Uuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Whether [`decode`] and [`parse_literal`] know the type.
pub fn supports(type_oid: u32) -> bool {
    use oid::*;
    matches!(
        type_oid,
        INT2 | INT4
            | INT8
            | OID
            | NUMERIC
            | FLOAT4
            | FLOAT8
            | TEXT
            | VARCHAR
            | BPCHAR
            | NAME
            | BOOL
            | DATE
            | TIMESTAMP
            | TIMESTAMPTZ
            | UUID
    )
}

/// Decodes one DataRow column value (not NULL) of type `type_oid` in `format`.
pub fn decode(type_oid: u32, format: Format, bytes: &[u8]) -> Result<SortValue, ValueError> {
    use oid::*;
    let bad = |detail: String| ValueError::Malformed {
        oid: type_oid,
        detail,
    };
    let text = || std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".to_owned()));
    match (type_oid, format) {
        (TEXT | VARCHAR | NAME, _) => Ok(SortValue::Text(bytes.to_vec())),
        (BPCHAR, _) => Ok(SortValue::Text(trim_bpchar(bytes).to_vec())),
        (INT2 | INT4 | INT8 | OID, Format::Text) => {
            parse_int(type_oid, text()?).map(SortValue::Int)
        }
        (INT2, Format::Binary) => {
            let v = i16::from_be_bytes(fixed(type_oid, bytes)?);
            Ok(SortValue::Int(v.into()))
        }
        (INT4, Format::Binary) => {
            let v = i32::from_be_bytes(fixed(type_oid, bytes)?);
            Ok(SortValue::Int(v.into()))
        }
        (OID, Format::Binary) => {
            let v = u32::from_be_bytes(fixed(type_oid, bytes)?);
            Ok(SortValue::Int(v.into()))
        }
        (INT8, Format::Binary) => {
            let v = i64::from_be_bytes(fixed(type_oid, bytes)?);
            Ok(SortValue::Int(v))
        }
        (NUMERIC, Format::Text) => Decimal::parse(text()?).map(SortValue::Numeric),
        (NUMERIC, Format::Binary) => Decimal::from_binary(bytes).map(SortValue::Numeric),
        (FLOAT4, Format::Text) => parse_float4(text()?)
            .map(|f| SortValue::Float(PgFloat(f64::from(f))))
            .ok_or_else(|| {
                bad(format!(
                    "invalid float4 {:?}",
                    String::from_utf8_lossy(bytes)
                ))
            }),
        (FLOAT8, Format::Text) => parse_float8(text()?)
            .map(|f| SortValue::Float(PgFloat(f)))
            .ok_or_else(|| {
                bad(format!(
                    "invalid float8 {:?}",
                    String::from_utf8_lossy(bytes)
                ))
            }),
        (FLOAT4, Format::Binary) => {
            let f = f32::from_be_bytes(fixed(type_oid, bytes)?);
            Ok(SortValue::Float(PgFloat(f64::from(f))))
        }
        (FLOAT8, Format::Binary) => {
            let f = f64::from_be_bytes(fixed(type_oid, bytes)?);
            Ok(SortValue::Float(PgFloat(f)))
        }
        (BOOL, Format::Text) => match bytes {
            b"t" => Ok(SortValue::Bool(true)),
            b"f" => Ok(SortValue::Bool(false)),
            _ => Err(bad(format!("bool {:?}", String::from_utf8_lossy(bytes)))),
        },
        // boolrecv: any non-zero byte is true.
        (BOOL, Format::Binary) => Ok(SortValue::Bool(fixed::<1>(type_oid, bytes)?[0] != 0)),
        (UUID, Format::Text) => parse_uuid(text()?)
            .map(SortValue::Uuid)
            .ok_or_else(|| bad(format!("uuid {:?}", String::from_utf8_lossy(bytes)))),
        (UUID, Format::Binary) => Ok(SortValue::Uuid(fixed(type_oid, bytes)?)),
        (DATE, Format::Text) => parse_date(text()?, false)
            .map(SortValue::Date)
            .ok_or_else(|| bad(not_iso(bytes))),
        (DATE, Format::Binary) => Ok(SortValue::Date(i32::from_be_bytes(fixed(type_oid, bytes)?))),
        (TIMESTAMP | TIMESTAMPTZ, Format::Text) => {
            let tz = type_oid == TIMESTAMPTZ;
            let ts = parse_timestamp(text()?, tz, false).ok_or_else(|| bad(not_iso(bytes)))?;
            Ok(if tz {
                SortValue::TimestampTz(ts)
            } else {
                SortValue::Timestamp(ts)
            })
        }
        (TIMESTAMP | TIMESTAMPTZ, Format::Binary) => {
            let ts = i64::from_be_bytes(fixed(type_oid, bytes)?);
            Ok(if type_oid == TIMESTAMPTZ {
                SortValue::TimestampTz(ts)
            } else {
                SortValue::Timestamp(ts)
            })
        }
        _ => Err(ValueError::UnsupportedType {
            oid: type_oid,
            what: "ordering (ORDER BY, min, max)",
        }),
    }
}

/// Parses a SQL literal's text (from a HAVING clause, already unquoted) as a value to compare
/// with a column of type `type_oid`, the way Postgres would coerce it:
/// - integer columns: an integer literal, or else any numeric literal (`2.5`, `1e30`), which
///   Postgres compares as `numeric`, so the result is then [`SortValue::Numeric`];
/// - `numeric`: `numeric_in`'s syntax; floats: `float8in`'s (out-of-range is an error);
/// - text-like: the text itself (`bpchar` without trailing spaces); `bool`: `boolin`'s words;
///   `uuid`: `uuid_in`'s forms;
/// - `date`: `YYYY-MM-DD` (optionally ` BC`); `timestamp`: that plus `HH:MM[:SS[.frac]]`
///   (space or `T`), a zone being ignored as Postgres does; `timestamptz`: the same with an
///   explicit UTC offset (`+01`, `-03:30`, `+0530`, `Z`), since without one the value would
///   depend on the session's TimeZone. All three take `infinity` and `-infinity`.
pub fn parse_literal(type_oid: u32, text: &str) -> Result<SortValue, ValueError> {
    use oid::*;
    let bad = || ValueError::Malformed {
        oid: type_oid,
        detail: format!("cannot read literal {text:?} as this type"),
    };
    let trimmed = text.trim_matches(is_c_space);
    match type_oid {
        INT2 | INT4 | INT8 | OID => match trimmed.parse::<i64>() {
            Ok(v) => Ok(SortValue::Int(v)),
            Err(_) => Decimal::parse(trimmed)
                .map(SortValue::Numeric)
                .map_err(|_| bad()),
        },
        NUMERIC => Decimal::parse(trimmed).map(SortValue::Numeric),
        FLOAT4 => parse_float4(trimmed)
            .filter(|f| float_literal_in_range(trimmed, f.is_infinite(), *f == 0.0))
            .map(|f| SortValue::Float(PgFloat(f64::from(f))))
            .ok_or_else(bad),
        FLOAT8 => parse_float8(trimmed)
            .filter(|f| float_literal_in_range(trimmed, f.is_infinite(), *f == 0.0))
            .map(|f| SortValue::Float(PgFloat(f)))
            .ok_or_else(bad),
        TEXT | VARCHAR | NAME => Ok(SortValue::Text(text.as_bytes().to_vec())),
        BPCHAR => Ok(SortValue::Text(trim_bpchar(text.as_bytes()).to_vec())),
        BOOL => parse_bool_literal(trimmed)
            .map(SortValue::Bool)
            .ok_or_else(bad),
        UUID => parse_uuid(trimmed).map(SortValue::Uuid).ok_or_else(bad),
        DATE => parse_date(trimmed, true)
            .map(SortValue::Date)
            .ok_or_else(bad),
        TIMESTAMP => parse_timestamp(trimmed, false, true)
            .map(SortValue::Timestamp)
            .ok_or_else(bad),
        TIMESTAMPTZ => parse_timestamp(trimmed, true, true)
            .map(SortValue::TimestampTz)
            .ok_or_else(|| ValueError::Malformed {
                oid: type_oid,
                detail: format!(
                    "cannot read literal {text:?} as timestamptz (an ISO timestamp with an \
                     explicit UTC offset is needed)"
                ),
            }),
        _ => Err(ValueError::UnsupportedType {
            oid: type_oid,
            what: "HAVING comparison",
        }),
    }
}

fn not_iso(bytes: &[u8]) -> String {
    format!(
        "{:?} is not in the ISO DateStyle",
        String::from_utf8_lossy(bytes)
    )
}

/// A fixed-width binary value: `bytes` if it is exactly `N` long.
fn fixed<const N: usize>(type_oid: u32, bytes: &[u8]) -> Result<[u8; N], ValueError> {
    bytes.try_into().map_err(|_| ValueError::Malformed {
        oid: type_oid,
        detail: format!("binary value of {} bytes, expected {N}", bytes.len()),
    })
}

/// `bpchar` compares without its trailing spaces (`bcTruncLen`).
fn trim_bpchar(b: &[u8]) -> &[u8] {
    let len = b.len() - b.iter().rev().take_while(|&&c| c == b' ').count();
    &b[..len]
}

/// The characters C's `isspace` accepts, which Postgres's input functions skip.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// An integer column's text, range-checked for its type.
fn parse_int(type_oid: u32, s: &str) -> Result<i64, ValueError> {
    let v: i64 = s
        .trim_matches(is_c_space)
        .parse()
        .map_err(|_| ValueError::Malformed {
            oid: type_oid,
            detail: format!("invalid integer {s:?}"),
        })?;
    let (lo, hi) = match type_oid {
        oid::INT2 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        oid::INT4 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        oid::OID => (0, i64::from(u32::MAX)),
        _ => (i64::MIN, i64::MAX),
    };
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(ValueError::Malformed {
            oid: type_oid,
            detail: format!("{v} out of range for the type"),
        })
    }
}

/// `parse_bool_with_len`: `t`, `true`, `yes`, `on`, `1` and the false words, any unique
/// prefix of the spelled-out ones, any case.
fn parse_bool_literal(s: &str) -> Option<bool> {
    let l = s.to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| l.len() >= min && word.starts_with(l.as_str());
    match l.as_bytes().first()? {
        b't' if prefix_of("true", 1) => Some(true),
        b'f' if prefix_of("false", 1) => Some(false),
        b'y' if prefix_of("yes", 1) => Some(true),
        b'n' if prefix_of("no", 1) => Some(false),
        b'o' if prefix_of("on", 2) => Some(true),
        b'o' if prefix_of("off", 2) => Some(false),
        b'1' if l == "1" => Some(true),
        b'0' if l == "0" => Some(false),
        _ => None,
    }
}

/// `uuid_in`: 32 hex digits, optionally in braces, optionally with a hyphen after any group
/// of four.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let s = match s.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}')?,
        None => s,
    };
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    let mut i = 0;
    for (n, byte) in out.iter_mut().enumerate() {
        let hi = (*b.get(i)? as char).to_digit(16)?;
        let lo = (*b.get(i + 1)? as char).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
        i += 2;
        if n % 2 == 1 && n < 15 && b.get(i) == Some(&b'-') {
            i += 1;
        }
    }
    (i == b.len()).then_some(out)
}

#[cfg(test)]
mod tests;
