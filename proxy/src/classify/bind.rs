//! Bind parameters as shard keys: the parameter section of a Bind message, and the decoding
//! of one parameter (text or binary format) or one array parameter (`key = ANY($n)`) into
//! tenant keys. Every length is checked: a hostile Bind yields an error, never a panic.

use shardgate_catalog::TenantKey;

use super::classifier::KeyType;
use super::resolve::{KeyError, invalid, parse_key};

/// Type OIDs the decoders know.
mod oid {
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const INT8: u32 = 20;
    pub const TEXT: u32 = 25;
    pub const VARCHAR: u32 = 1043;
    pub const BPCHAR: u32 = 1042;
    pub const NAME: u32 = 19;
    pub const UUID: u32 = 2950;
}

/// A Bind's parameters, borrowed from the message body.
#[derive(Debug, Clone, Default)]
pub struct BindParams<'a> {
    /// Format codes as sent: none (all text), one (for all), or one per parameter.
    pub formats: Vec<i16>,
    /// Parameter values; `None` is NULL.
    pub values: Vec<Option<&'a [u8]>>,
    /// Parameter type OIDs from the Parse (may be shorter than `values`, or empty; 0 = unknown).
    pub param_types: &'a [u32],
}

impl<'a> BindParams<'a> {
    /// Reads the part of a Bind body after the portal and statement names (the layout that
    /// `wire::decode_bind` calls `after_names`): `i16 nfmt, i16 × nfmt, i16 nparams,
    /// (i32 len, bytes) × nparams, i16 nres, i16 × nres`.
    pub fn parse(after_names: &'a [u8], param_types: &'a [u32]) -> Result<Self, KeyError> {
        let mut r = Reader(after_names);
        let nfmt = r.count()?;
        let formats = (0..nfmt).map(|_| r.i16()).collect::<Result<Vec<_>, _>>()?;
        let nparams = r.count()?;
        if nfmt > 1 && nfmt != nparams {
            return Err(malformed(format!(
                "Bind: {nfmt} format codes for {nparams} parameters"
            )));
        }
        let mut values = Vec::with_capacity(nparams.min(after_names.len() / 4));
        for _ in 0..nparams {
            values.push(r.value()?);
        }
        let nres = r.count()?;
        r.take(nres * 2)?;
        if !r.0.is_empty() {
            return Err(malformed("Bind: trailing bytes".into()));
        }
        Ok(BindParams {
            formats,
            values,
            param_types,
        })
    }

    /// The format code of parameter `i` (0-based): 0 text, 1 binary.
    pub fn format(&self, i: usize) -> i16 {
        match self.formats.len() {
            0 => 0,
            1 => self.formats[0],
            _ => self.formats.get(i).copied().unwrap_or(0),
        }
    }

    fn type_oid(&self, i: usize) -> u32 {
        self.param_types.get(i).copied().unwrap_or(0)
    }

    /// The value of `$n` and what describes it in errors.
    fn get(&self, n: u16) -> Result<(&'a [u8], i16, u32, String), KeyError> {
        let i = usize::from(n)
            .checked_sub(1)
            .ok_or(KeyError::MissingParam(n))?;
        let source = format!("parameter ${n}");
        match self.values.get(i) {
            None => Err(KeyError::MissingParam(n)),
            Some(None) => Err(KeyError::Null { from: source }),
            Some(Some(v)) => Ok((v, self.format(i), self.type_oid(i), source)),
        }
    }

    /// `$n` as one key.
    pub fn scalar_key(&self, n: u16, key_type: KeyType) -> Result<TenantKey, KeyError> {
        let (v, format, oid, source) = self.get(n)?;
        match format {
            0 => parse_key(&utf8(v, &source)?, key_type, &source),
            1 => binary_key(v, oid, key_type, &source),
            f => Err(malformed(format!("Bind: format code {f} for {source}"))),
        }
    }

    /// `$n` as an array of keys (NULL elements, which match nothing, are left out).
    pub fn array_keys(&self, n: u16, key_type: KeyType) -> Result<Vec<TenantKey>, KeyError> {
        let (v, format, _, source) = self.get(n)?;
        match format {
            0 => parse_text_array(&utf8(v, &source)?, &source)?
                .into_iter()
                .flatten()
                .map(|e| parse_key(&e, key_type, &source))
                .collect(),
            1 => binary_array(v, key_type, &source),
            f => Err(malformed(format!("Bind: format code {f} for {source}"))),
        }
    }
}

fn malformed(what: String) -> KeyError {
    KeyError::Malformed(what)
}

fn utf8(v: &[u8], source: &str) -> Result<String, KeyError> {
    std::str::from_utf8(v)
        .map(str::to_owned)
        .map_err(|_| malformed(format!("{source}: text is not valid UTF-8")))
}

/// One binary-format value as a key. The type comes from the Parse when the client gave
/// one; otherwise a bigint key is read from the value's width (8, 4 or 2 bytes).
fn binary_key(
    v: &[u8],
    type_oid: u32,
    key_type: KeyType,
    source: &str,
) -> Result<TenantKey, KeyError> {
    let int = |v: &[u8]| -> Option<i64> {
        match (type_oid, v.len()) {
            (oid::INT8 | 0, 8) => Some(i64::from_be_bytes(v.try_into().ok()?)),
            (oid::INT4 | 0, 4) => Some(i64::from(i32::from_be_bytes(v.try_into().ok()?))),
            (oid::INT2 | 0, 2) => Some(i64::from(i16::from_be_bytes(v.try_into().ok()?))),
            _ => None,
        }
    };
    let texty = matches!(type_oid, oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME);
    let bad = || {
        let shown = v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let what = format!("{source} (binary, type oid {type_oid}, {} bytes)", v.len());
        invalid(&what, &shown, key_type)
    };
    match key_type {
        KeyType::Bigint if texty => parse_key(&utf8(v, source)?, key_type, source),
        KeyType::Bigint => int(v).map(TenantKey::Int).ok_or_else(bad),
        KeyType::Text if matches!(type_oid, oid::INT8 | oid::INT4 | oid::INT2) => int(v)
            .map(|i| TenantKey::Text(i.to_string()))
            .ok_or_else(bad),
        KeyType::Text => Ok(TenantKey::Text(utf8(v, source)?)),
        KeyType::Uuid if texty => parse_key(&utf8(v, source)?, key_type, source),
        KeyType::Uuid if matches!(type_oid, oid::UUID | 0) && v.len() == 16 => {
            Ok(TenantKey::Uuid(v.try_into().map_err(|_| bad())?))
        }
        KeyType::Uuid => Err(bad()),
    }
}

/// Postgres's binary array format: `i32 ndim, i32 has_nulls, u32 elem_oid, (i32 len,
/// i32 lbound) × ndim, (i32 len, bytes) × elements`. One dimension (or none: empty).
fn binary_array(v: &[u8], key_type: KeyType, source: &str) -> Result<Vec<TenantKey>, KeyError> {
    let bad = |why: &str| malformed(format!("{source}: binary array {why}"));
    let mut r = Reader(v);
    let ndim = r.i32()?;
    let _has_nulls = r.i32()?;
    let elem_oid = r.i32()? as u32;
    match ndim {
        0 => return Ok(Vec::new()),
        1 => {}
        _ => return Err(bad("must have one dimension")),
    }
    let len = usize::try_from(r.i32()?).map_err(|_| bad("has a negative length"))?;
    let _lbound = r.i32()?;
    if len > r.0.len() / 4 {
        return Err(bad("is shorter than its length says"));
    }
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        if let Some(e) = r.value()? {
            out.push(binary_key(e, elem_oid, key_type, source)?);
        }
    }
    if !r.0.is_empty() {
        return Err(bad("has trailing bytes"));
    }
    Ok(out)
}

/// Postgres's array text form, one dimension: `{1,2,3}`, `{"a","b c",NULL}`, `[0:1]={1,2}`.
/// `None` elements are NULLs.
pub(crate) fn parse_text_array(text: &str, source: &str) -> Result<Vec<Option<String>>, KeyError> {
    let bad = |why: &str| malformed(format!("{source}: array text {why}"));
    let mut s = text.trim_start();
    if s.starts_with('[') {
        // Explicit bounds: skip them up to the `=`.
        let eq = s.find('=').ok_or_else(|| bad("has bounds without '='"))?;
        s = s[eq + 1..].trim_start();
    }
    let body = s
        .strip_prefix('{')
        .ok_or_else(|| bad("must start with '{'"))?;
    let mut chars = body.char_indices().peekable();
    let mut out = Vec::new();
    loop {
        while chars.next_if(|(_, c)| c.is_ascii_whitespace()).is_some() {}
        match chars.peek().map(|&(_, c)| c) {
            Some('}') if out.is_empty() => {
                chars.next();
                break;
            }
            Some('{') => return Err(bad("must have one dimension")),
            Some('"') => {
                chars.next();
                out.push(Some(
                    quoted_element(&mut chars).ok_or_else(|| bad("has an open quote"))?,
                ));
            }
            Some(_) => match unquoted_element(&mut chars) {
                Some(e) if e.is_empty() => return Err(bad("has an empty element")),
                e => out.push(e),
            },
            None => return Err(bad("is not closed")),
        }
        while chars.next_if(|(_, c)| c.is_ascii_whitespace()).is_some() {}
        match chars.next().map(|(_, c)| c) {
            Some(',') => continue,
            Some('}') => break,
            _ => return Err(bad("has a bad separator")),
        }
    }
    if chars.any(|(_, c)| !c.is_ascii_whitespace()) {
        return Err(bad("has trailing characters"));
    }
    Ok(out)
}

type Chars<'s> = std::iter::Peekable<std::str::CharIndices<'s>>;

fn quoted_element(chars: &mut Chars<'_>) -> Option<String> {
    let mut e = String::new();
    loop {
        match chars.next()?.1 {
            '"' => return Some(e),
            '\\' => e.push(chars.next()?.1),
            c => e.push(c),
        }
    }
}

fn unquoted_element(chars: &mut Chars<'_>) -> Option<String> {
    let mut e = String::new();
    while let Some(&(_, c)) = chars.peek() {
        if c == ',' || c == '}' {
            break;
        }
        chars.next();
        if c == '\\' {
            if let Some((_, n)) = chars.next() {
                e.push(n);
            }
            continue;
        }
        e.push(c);
    }
    let e = e.trim_end().to_owned();
    (!e.eq_ignore_ascii_case("null")).then_some(e)
}

/// Checked big-endian reads over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KeyError> {
        if n > self.0.len() {
            return Err(malformed(
                "Bind: a length runs past the end of the message".into(),
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, KeyError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, KeyError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-negative i16 count.
    fn count(&mut self) -> Result<usize, KeyError> {
        usize::try_from(self.i16()?).map_err(|_| malformed("Bind: a negative count".into()))
    }

    /// `i32 len` then that many bytes; -1 is NULL.
    fn value(&mut self) -> Result<Option<&'a [u8]>, KeyError> {
        match self.i32()? {
            -1 => Ok(None),
            n if n < 0 => Err(malformed(format!("Bind: value length {n}"))),
            n => self.take(n as usize).map(Some),
        }
    }
}

#[cfg(test)]
#[path = "bind_tests.rs"]
mod tests;
