//! Turning a template's [`KeySpec`] into tenant keys: literals come from the statement,
//! parameters from the Bind, and each value is converted by the configured key type.

use shardgate_catalog::TenantKey;

use super::bind::BindParams;
use super::classifier::{KeyType, StatementInfo};
use super::template::{KeySpec, ValueRef};

/// The tenants a statement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValues {
    /// The statement names no tenant.
    None,
    /// The rows touched belong to these tenants (deduplicated, first-seen order). Empty when
    /// the statement can match no row at all (`key = ANY('{}')`).
    Keys(Vec<TenantKey>),
    /// INSERT … VALUES: the tenant of each row, in row order.
    PerRow(Vec<TenantKey>),
}

/// Why a key could not be read. The message is meant for the application developer: the
/// proxy sends it in an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the shard key from {from} is NULL; every statement on a sharded table needs a tenant")]
    Null { from: String },
    #[error("the shard key from {from} ({value:?}) is not a valid {expected}")]
    Invalid {
        from: String,
        value: String,
        expected: &'static str,
    },
    #[error("the shard key is parameter ${0}, but no value was bound for it")]
    MissingParam(u16),
    #[error("malformed {0}")]
    Malformed(String),
}

/// Resolves `spec` (usually `&info.template.key`, or `&info.template.key_write`) against one
/// statement's literals and, for `$n`, the Bind's parameters.
pub fn resolve(
    spec: &KeySpec,
    info: &StatementInfo,
    params: Option<&BindParams<'_>>,
    key_type: KeyType,
) -> Result<KeyValues, KeyError> {
    let one = |v: &ValueRef| scalar(v, info, params, key_type);
    Ok(match spec {
        KeySpec::None => KeyValues::None,
        KeySpec::One(v) => KeyValues::Keys(vec![one(v)?]),
        KeySpec::AnyOf(vs) => {
            let keys = vs.iter().map(one).collect::<Result<Vec<_>, _>>()?;
            KeyValues::Keys(dedup(keys))
        }
        KeySpec::AnyOfArray(v) => KeyValues::Keys(dedup(array(v, info, params, key_type)?)),
        KeySpec::Rows(vs) => KeyValues::PerRow(vs.iter().map(one).collect::<Result<_, _>>()?),
    })
}

impl StatementInfo {
    /// The statement's tenants by precedence: the key comment, else the SQL key.
    /// (The session GUC, the lowest source, is the caller's to apply when this is `None`.)
    pub fn keys(
        &self,
        params: Option<&BindParams<'_>>,
        key_type: KeyType,
    ) -> Result<KeyValues, KeyError> {
        if let Some(c) = &self.comment_key {
            return Ok(KeyValues::Keys(vec![parse_key(c, key_type, "a comment")?]));
        }
        resolve(&self.template.key, self, params, key_type)
    }
}

fn dedup(keys: Vec<TenantKey>) -> Vec<TenantKey> {
    let mut out: Vec<TenantKey> = Vec::with_capacity(keys.len());
    for k in keys {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

fn scalar(
    v: &ValueRef,
    info: &StatementInfo,
    params: Option<&BindParams<'_>>,
    key_type: KeyType,
) -> Result<TenantKey, KeyError> {
    match *v {
        ValueRef::Literal(i) => {
            let lit = info
                .literals
                .get(i)
                .ok_or_else(|| KeyError::Malformed(format!("statement: literal {i} is missing")))?;
            literal_key(&lit.text, lit.quoted, key_type)
        }
        ValueRef::Param(n) => params
            .ok_or(KeyError::MissingParam(n))?
            .scalar_key(n, key_type),
    }
}

fn array(
    v: &ValueRef,
    info: &StatementInfo,
    params: Option<&BindParams<'_>>,
    key_type: KeyType,
) -> Result<Vec<TenantKey>, KeyError> {
    match *v {
        ValueRef::Literal(i) => {
            let lit = info
                .literals
                .get(i)
                .ok_or_else(|| KeyError::Malformed(format!("statement: literal {i} is missing")))?;
            let source = format!("the array literal '{}'", lit.text);
            let elems = super::bind::parse_text_array(&lit.text, &source)?;
            elems
                .into_iter()
                .flatten()
                .map(|e| parse_key(&e, key_type, &source))
                .collect()
        }
        ValueRef::Param(n) => params
            .ok_or(KeyError::MissingParam(n))?
            .array_keys(n, key_type),
    }
}

/// A SQL literal as a key: bigint from a number or a quoted string of digits, uuid from its
/// text, text from a quoted string or a number's digits.
pub(crate) fn literal_key(
    text: &str,
    quoted: bool,
    key_type: KeyType,
) -> Result<TenantKey, KeyError> {
    let source = if quoted {
        format!("the literal '{text}'")
    } else {
        format!("the literal {text}")
    };
    if !quoted && key_type == KeyType::Uuid {
        return Err(invalid(&source, text, key_type));
    }
    parse_key(text, key_type, &source)
}

/// A key from its text form, as Postgres's input functions would read it.
pub(crate) fn parse_key(
    text: &str,
    key_type: KeyType,
    source: &str,
) -> Result<TenantKey, KeyError> {
    match key_type {
        KeyType::Bigint => parse_bigint(text)
            .map(TenantKey::Int)
            .ok_or_else(|| invalid(source, text, key_type)),
        KeyType::Text => Ok(TenantKey::Text(text.to_owned())),
        KeyType::Uuid => parse_uuid(text)
            .map(TenantKey::Uuid)
            .ok_or_else(|| invalid(source, text, key_type)),
    }
}

pub(crate) fn invalid(source: &str, value: &str, key_type: KeyType) -> KeyError {
    let mut value = value.to_owned();
    if value.len() > 64 {
        let cut = (0..=64)
            .rev()
            .find(|&i| value.is_char_boundary(i))
            .unwrap_or(0);
        value.truncate(cut);
        value.push('…');
    }
    KeyError::Invalid {
        from: source.to_owned(),
        value,
        expected: key_type.as_str(),
    }
}

/// `42`, ` -7 `, `1_000`, `0x1F`: what int8in accepts (no fractions, no exponents).
pub(crate) fn parse_bigint(text: &str) -> Option<i64> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let (neg, t) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = t.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &t[2..]),
        Some("0o") => (8, &t[2..]),
        Some("0b") => (2, &t[2..]),
        _ => (10, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut v: i128 = 0;
    for c in digits.chars().filter(|&c| c != '_') {
        v = v * radix as i128 + i128::from(c.to_digit(radix)?);
        if v > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    i64::try_from(if neg { -v } else { v }).ok()
}

/// The forms uuid_in accepts: 32 hex digits, optionally in braces, hyphens between groups.
pub(crate) fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let t = t
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(t);
    if t.starts_with('-') || t.ends_with('-') || t.contains("--") {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    for c in t.chars().filter(|&c| c != '-') {
        let d = c.to_digit(16)? as u8;
        if n >= 32 {
            return None;
        }
        out[n / 2] |= if n % 2 == 0 { d << 4 } else { d };
        n += 1;
    }
    (n == 32).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigint_forms() {
        assert_eq!(parse_bigint("42"), Some(42));
        assert_eq!(parse_bigint(" -7 "), Some(-7));
        assert_eq!(parse_bigint("+7"), Some(7));
        assert_eq!(parse_bigint("1_000"), Some(1000));
        assert_eq!(parse_bigint("0x1F"), Some(31));
        assert_eq!(parse_bigint("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_bigint("9223372036854775808"), None);
        for bad in [
            "",
            "-",
            "1.5",
            "1e3",
            "abc",
            "1__0",
            "_1",
            "0x",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_bigint(bad), None, "{bad}");
        }
    }

    #[test]
    fn uuid_forms() {
        let want = Some([
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ]);
        assert_eq!(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), want);
        assert_eq!(parse_uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), want);
        assert_eq!(parse_uuid("{a0eebc999c0b4ef8bb6d6bb9bd380a11}"), want);
        assert_eq!(parse_uuid("a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11"), want);
        for bad in [
            "",
            "a0eebc99",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
            "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0eebc999c0b4ef8bb6d6bb9bd380a1100",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn literal_conversion() {
        assert_eq!(
            literal_key("42", false, KeyType::Bigint),
            Ok(TenantKey::Int(42))
        );
        assert_eq!(
            literal_key("42", true, KeyType::Bigint),
            Ok(TenantKey::Int(42))
        );
        assert_eq!(
            literal_key("42", false, KeyType::Text),
            Ok(TenantKey::Text("42".into()))
        );
        assert_eq!(
            literal_key("acme", true, KeyType::Text),
            Ok(TenantKey::Text("acme".into()))
        );
        assert!(literal_key("42", false, KeyType::Uuid).is_err());
        let e = literal_key("abc", true, KeyType::Bigint).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the shard key from the literal 'abc' (\"abc\") is not a valid bigint"
        );
    }
}
