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

/// A `float4`/`float8` under Postgres's btree order: NaN equals NaN and sorts after
/// everything, `-0 == 0`. `float4` values are held widened (exactly) to `f64`.
#[derive(Debug, Clone, Copy)]
pub struct PgFloat(pub f64);

impl PartialEq for PgFloat {
    fn eq(&self, other: &PgFloat) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PgFloat {}

impl PartialOrd for PgFloat {
    fn partial_cmp(&self, other: &PgFloat) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PgFloat {
    /// `float8_cmp_internal`.
    fn cmp(&self, other: &PgFloat) -> Ordering {
        match (self.0.is_nan(), other.0.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal),
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

/// `float8in`'s text (what `float8out` prints, and the usual spellings of the specials).
fn parse_float8(s: &str) -> Option<f64> {
    let s = s.trim_matches(is_c_space);
    match special_float(s) {
        Some(f) => Some(f),
        None if looks_decimal(s) => s.parse().ok(),
        None => None,
    }
}

/// `float4in`'s text, rounded once, straight to single precision, as `strtof` does.
fn parse_float4(s: &str) -> Option<f32> {
    let s = s.trim_matches(is_c_space);
    match special_float(s) {
        Some(f) => Some(f as f32),
        None if looks_decimal(s) => s.parse().ok(),
        None => None,
    }
}

/// `float4in`/`float8in` reject a number that overflows to infinity or underflows to zero.
fn float_literal_in_range(s: &str, is_inf: bool, is_zero: bool) -> bool {
    if special_float(s).is_some() {
        return true;
    }
    let nonzero_digits = s
        .split(['e', 'E'])
        .next()
        .is_some_and(|m| m.bytes().any(|c| (b'1'..=b'9').contains(&c)));
    if is_inf {
        return false;
    }
    !(is_zero && nonzero_digits)
}

fn special_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Digits, a point and an exponent only: Rust's parser also takes `inf`-like words, which
/// [`special_float`] has already handled the way Postgres does.
fn looks_decimal(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E'))
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

// ---- Dates and times (ISO DateStyle) ----

const USECS_PER_DAY: i64 = 86_400_000_000;
/// Days from 1970-01-01 to 2000-01-01, Postgres's epoch.
const PG_EPOCH_DAYS: i64 = 10_957;

/// A byte cursor over date/time text.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, s: &str) -> bool {
        if self.b[self.i..].starts_with(s.as_bytes()) {
            self.i += s.len();
            true
        } else {
            false
        }
    }

    /// Between `min` and `max` digits: their value and how many there were.
    fn digits(&mut self, min: usize, max: usize) -> Option<(i64, usize)> {
        let start = self.i;
        let mut v: i64 = 0;
        while self.i - start < max
            && let Some(c @ b'0'..=b'9') = self.peek()
        {
            v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
            self.i += 1;
        }
        let n = self.i - start;
        (n >= min).then_some((v, n))
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (astronomical year: 0 is 1 BC).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count from March, so the leap day ends a year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD`: the year as printed (BC not applied yet), month, day.
fn date_fields(c: &mut Cursor<'_>) -> Option<(i64, i64, i64)> {
    let (year, _) = c.digits(1, 9)?;
    if !c.eat(b'-') {
        return None;
    }
    let (month, _) = c.digits(2, 2)?;
    if !c.eat(b'-') {
        return None;
    }
    let (day, _) = c.digits(2, 2)?;
    Some((year, month, day))
}

/// Days since 2000-01-01 of a printed year (1.. with `bc`), month and day, validated.
fn epoch_days(year: i64, month: i64, day: i64, bc: bool) -> Option<i64> {
    if year < 1 || !(1..=12).contains(&month) {
        return None;
    }
    let year = if bc { 1 - year } else { year };
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) - PG_EPOCH_DAYS)
}

/// `infinity` / `-infinity`.
fn infinity(s: &str) -> Option<bool> {
    match s {
        "infinity" | "+infinity" => Some(true),
        "-infinity" => Some(false),
        _ => None,
    }
}

/// A date in ISO form (`2026-01-05`, `0044-03-15 BC`, `infinity`) as days since 2000-01-01.
fn parse_date(s: &str, literal: bool) -> Option<i32> {
    let s = if literal {
        s.trim_matches(is_c_space)
    } else {
        s
    };
    if let Some(pos) = infinity(&s.to_ascii_lowercase()) {
        return Some(if pos { i32::MAX } else { i32::MIN });
    }
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    let (year, month, day) = date_fields(&mut c)?;
    let bc = c.eat_str(" BC");
    if !c.done() {
        return None;
    }
    let days = epoch_days(year, month, day, bc)?;
    // Leave the two sentinels to the infinities.
    i32::try_from(days)
        .ok()
        .filter(|d| *d != i32::MIN && *d != i32::MAX)
}

/// A timestamp in ISO form as microseconds since 2000-01-01 (UTC for `with_tz`).
///
/// Output form (`literal` false): `YYYY-MM-DD HH:MM:SS[.ffffff]`, then for timestamptz the
/// offset `±HH[:MM[:SS]]`, then ` BC` for years before 1. A literal may also use `T`, omit
/// the seconds (or the whole time), carry more fractional digits (rounded to microseconds as
/// Postgres does), write the offset as `±HHMM` or `Z`; timestamp ignores an offset, and
/// timestamptz requires one.
fn parse_timestamp(s: &str, with_tz: bool, literal: bool) -> Option<i64> {
    if let Some(pos) = infinity(&s.to_ascii_lowercase()) {
        return Some(if pos { i64::MAX } else { i64::MIN });
    }
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    let (year, month, day) = date_fields(&mut c)?;
    let mut usecs: i64 = 0;
    let has_time = c.eat(b' ') || (literal && c.eat(b'T'));
    if has_time {
        let (h, _) = c.digits(2, 2)?;
        if !c.eat(b':') {
            return None;
        }
        let (m, _) = c.digits(2, 2)?;
        let mut sec = 0;
        let mut frac = 0;
        if c.eat(b':') {
            sec = c.digits(2, 2)?.0;
            if c.eat(b'.') {
                frac = fraction_usecs(&mut c, literal)?;
            }
        } else if !literal {
            return None;
        }
        let hour_ok = h < 24 || (literal && h == 24 && m == 0 && sec == 0 && frac == 0);
        if !hour_ok || m > 59 || sec > if literal { 60 } else { 59 } {
            return None;
        }
        usecs = ((h * 60 + m) * 60 + sec) * 1_000_000 + frac;
    } else if !literal || with_tz {
        return None;
    }
    let offset = if has_time {
        utc_offset(&mut c, literal)?
    } else {
        None
    };
    let bc = c.eat_str(" BC");
    if !c.done() || (with_tz && offset.is_none()) || (!literal && !with_tz && offset.is_some()) {
        return None;
    }
    let days = epoch_days(year, month, day, bc)?;
    let mut ts = days.checked_mul(USECS_PER_DAY)?.checked_add(usecs)?;
    if with_tz {
        ts = ts.checked_sub(offset.unwrap_or(0).checked_mul(1_000_000)?)?;
    }
    (ts != i64::MIN && ts != i64::MAX).then_some(ts)
}

/// Fractional seconds after the point, in microseconds: up to 6 digits in output form; a
/// literal's longer fraction is rounded half to even (`rint`).
fn fraction_usecs(c: &mut Cursor<'_>, literal: bool) -> Option<i64> {
    let start = c.i;
    while let Some(b'0'..=b'9') = c.peek() {
        c.i += 1;
    }
    let digits = &c.b[start..c.i];
    if digits.is_empty() || (!literal && digits.len() > 6) {
        return None;
    }
    let mut us = 0i64;
    for k in 0..6 {
        us = us * 10 + digits.get(k).map_or(0, |d| i64::from(d - b'0'));
    }
    if digits.len() > 6 {
        let rest = &digits[6..];
        let up = match rest[0] {
            b'6'..=b'9' => true,
            b'5' => rest[1..].iter().any(|&d| d != b'0') || us % 2 == 1,
            _ => false,
        };
        us += i64::from(up);
    }
    Some(us)
}

/// An optional UTC offset, in seconds east of Greenwich.
fn utc_offset(c: &mut Cursor<'_>, literal: bool) -> Option<Option<i64>> {
    if literal && c.eat(b'Z') {
        return Some(Some(0));
    }
    let neg = match c.peek() {
        Some(b'+') => false,
        Some(b'-') => true,
        _ => return Some(None),
    };
    c.i += 1;
    let (h, n) = c.digits(2, if literal { 4 } else { 2 })?;
    let (mut h, mut m, mut s) = (h, 0, 0);
    if n == 4 {
        (h, m) = (h / 100, h % 100);
    } else if n != 2 {
        return None;
    } else if c.eat(b':') {
        m = c.digits(2, 2)?.0;
        if c.eat(b':') {
            s = c.digits(2, 2)?.0;
        }
    }
    if m > 59 || s > 59 || h > 15 {
        return None;
    }
    let secs = (h * 60 + m) * 60 + s;
    Some(Some(if neg { -secs } else { secs }))
}

// ---- Float output (float4out / float8out) ----

/// `float8out` with `extra_float_digits` = 1 (the default since Postgres 12): the shortest
/// digits that read back as the same double, fixed-point for decimal exponents -4..14 and
/// `d.ddde±XX` otherwise (`1e+20`, `1.5e-05`); `NaN`, `Infinity`, `-Infinity`, `-0`.
pub fn float8_out(v: f64) -> String {
    float_out(v.to_bits(), 52, 11, 15)
}

/// `float4out` with `extra_float_digits` = 1: as [`float8_out`] for single precision, with
/// fixed-point for decimal exponents -4..5.
pub fn float4_out(v: f32) -> String {
    float_out(u64::from(v.to_bits()), 23, 8, 6)
}

/// Prints the IEEE value in `bits` as Postgres's Ryu-based output does: the shortest decimal
/// strictly inside the interval of values that round to it (bounds excluded), the closest to
/// the exact value among those (ties to even), then fixed-point when the decimal exponent is
/// in `-4..fixed_below`, else scientific with at least two exponent digits.
fn float_out(bits: u64, mant_bits: u32, exp_bits: u32, fixed_below: i32) -> String {
    let negative = (bits >> (mant_bits + exp_bits)) & 1 == 1;
    let ieee_mant = bits & ((1u64 << mant_bits) - 1);
    let ieee_exp = ((bits >> mant_bits) & ((1u64 << exp_bits) - 1)) as i32;
    let sign = if negative { "-" } else { "" };
    if ieee_exp == (1 << exp_bits) - 1 {
        return if ieee_mant != 0 {
            "NaN".to_owned()
        } else {
            format!("{sign}Infinity")
        };
    }
    if ieee_exp == 0 && ieee_mant == 0 {
        return format!("{sign}0");
    }
    let bias = (1 << (exp_bits - 1)) - 1;
    // The value is mv * 2^e2; the values rounding to it lie strictly between mm and mp (the
    // half-way points to its neighbours, closer below at a power of two).
    let (m2, e2) = if ieee_exp == 0 {
        (ieee_mant, 1 - bias - mant_bits as i32 - 2)
    } else {
        (
            ieee_mant | (1u64 << mant_bits),
            ieee_exp - bias - mant_bits as i32 - 2,
        )
    };
    let mm_shift = u64::from(ieee_mant != 0 || ieee_exp <= 1);
    let mv = 4 * m2;
    let (mm, mp) = (mv - 1 - mm_shift, mv + 2);
    let (digits, exp10) = shortest_digits(mm, mv, mp, e2);
    let len = digits.len() as i32;
    // Decimal exponent of the first digit.
    let exp = exp10 + len - 1;
    let ds: String = digits.iter().map(|&d| char::from(b'0' + d)).collect();
    let mut out = sign.to_owned();
    if (-4..fixed_below).contains(&exp) {
        if exp10 >= 0 {
            out.push_str(&ds);
            out.extend(std::iter::repeat_n('0', exp10 as usize));
        } else if exp >= 0 {
            let point = (exp + 1) as usize;
            out.push_str(&ds[..point]);
            out.push('.');
            out.push_str(&ds[point..]);
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&ds);
        }
    } else {
        out.push_str(&ds[..1]);
        if len > 1 {
            out.push('.');
            out.push_str(&ds[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
    }
    out
}

/// The shortest decimal digits `d` (and exponent `k`, value `d * 10^k`, no trailing zeros)
/// strictly between `mm * 2^e2` and `mp * 2^e2`, closest to `mv * 2^e2`, ties to even.
/// Computed exactly on decimal digit strings.
fn shortest_digits(mm: u64, mv: u64, mp: u64, e2: i32) -> (Vec<u8>, i32) {
    // Scale all three to integers: x * 2^e2 = (x * 5^-e2) * 10^e2 for e2 < 0.
    let scale = (-e2).max(0);
    let to_dec = |x: u64| {
        let mut big = BigDec::from_u64(x);
        if e2 >= 0 {
            big.mul_pow(2, e2 as u32);
        } else {
            big.mul_pow(5, (-e2) as u32);
        }
        big.to_digits()
    };
    let (lo, mid, hi) = (to_dec(mm), to_dec(mv), to_dec(mp));
    let n = hi.len();
    let pad = |d: Vec<u8>| {
        let mut v = vec![0; n - d.len()];
        v.extend(d);
        v
    };
    let (lo, mid) = (pad(lo), pad(mid));
    let mut hi_m1 = hi;
    dec_decrement(&mut hi_m1);
    // The most trailing digits r that can go: some c * 10^r lies in (lo, hi), i.e.
    // floor((hi - 1) / 10^r) > floor(lo / 10^r).
    let mut r = 0;
    while r < n && hi_m1[..n - r - 1] > lo[..n - r - 1] {
        r += 1;
    }
    let keep = n - r;
    // Candidates with a spare leading digit for a carry.
    let widen = |d: &[u8]| {
        let mut v = vec![0];
        v.extend_from_slice(d);
        v
    };
    let (lo_p, hi_p) = (widen(&lo[..keep]), widen(&hi_m1[..keep]));
    let down = widen(&mid[..keep]);
    let mut up = down.clone();
    dec_increment(&mut up);
    let rest = &mid[keep..];
    let round_up = match rest.first() {
        None => false,
        Some(&d) if d > 5 => true,
        Some(&5) => rest[1..].iter().any(|&d| d != 0) || down.last().is_some_and(|d| d % 2 == 1),
        Some(_) => false,
    };
    let inside = |c: &Vec<u8>| *c > lo_p && *c <= hi_p;
    let (first, second) = if round_up { (up, down) } else { (down, up) };
    let mut c = if inside(&first) { first } else { second };
    let lead = c.iter().take_while(|&&d| d == 0).count();
    c.drain(..lead);
    let trailing = c.iter().rev().take_while(|&&d| d == 0).count();
    c.truncate(c.len() - trailing);
    (c, r as i32 - scale + trailing as i32)
}

fn dec_decrement(d: &mut [u8]) {
    for x in d.iter_mut().rev() {
        if *x > 0 {
            *x -= 1;
            return;
        }
        *x = 9;
    }
}

fn dec_increment(d: &mut [u8]) {
    for x in d.iter_mut().rev() {
        if *x < 9 {
            *x += 1;
            return;
        }
        *x = 0;
    }
}

/// A non-negative integer in little-endian base-10^9 limbs, for exact float printing.
struct BigDec(Vec<u64>);

impl BigDec {
    const BASE: u64 = 1_000_000_000;

    fn from_u64(mut x: u64) -> BigDec {
        let mut limbs = Vec::new();
        while x > 0 {
            limbs.push(x % Self::BASE);
            x /= Self::BASE;
        }
        BigDec(limbs)
    }

    fn mul_small(&mut self, k: u64) {
        let mut carry = 0;
        for limb in &mut self.0 {
            let p = *limb * k + carry;
            *limb = p % Self::BASE;
            carry = p / Self::BASE;
        }
        while carry > 0 {
            self.0.push(carry % Self::BASE);
            carry /= Self::BASE;
        }
    }

    /// `self *= base^n` for base 2 or 5, in chunks that keep every product within u64.
    fn mul_pow(&mut self, base: u64, mut n: u32) {
        let chunk = if base == 2 { 30 } else { 13 };
        while n > 0 {
            let step = n.min(chunk);
            self.mul_small(base.pow(step));
            n -= step;
        }
    }

    /// Decimal digits, most significant first ("0" is `[0]`).
    fn to_digits(&self) -> Vec<u8> {
        let Some((top, rest)) = self.0.split_last() else {
            return vec![0];
        };
        let mut s = top.to_string();
        for limb in rest.iter().rev() {
            s.push_str(&format!("{limb:09}"));
        }
        s.bytes().map(|c| c - b'0').collect()
    }
}

#[cfg(test)]
#[path = "value_tests.rs"]
mod tests;
