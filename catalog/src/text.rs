//! The model's values as text: how keys, states and settings are spelled in the catalog's
//! tables and on the command line, and how ring positions fit a Postgres `bigint`.
//!
//! The catalog stores a tenant's key as text so one column serves all three key types;
//! that only works if every key has exactly one spelling, so reading is strict
//! ([`KeyType::parse_canonical`]) while input from people is lenient ([`KeyType::parse`]).

use std::fmt;
use std::str::FromStr;

use crate::map::{ShardState, Strategy, TenantKey, TenantState};

/// The SQL type of the shard-key column (`[sharding] key_type`, catalog setting `key_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Bigint,
    Text,
    Uuid,
}

/// A value that is not a valid spelling of what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}{hint}")]
pub struct ParseError {
    pub what: &'static str,
    pub value: String,
    /// Extra words, e.g. the canonical spelling when only the spelling was wrong.
    pub hint: String,
}

impl ParseError {
    fn new(what: &'static str, value: &str) -> Self {
        ParseError {
            what,
            value: value.to_owned(),
            hint: String::new(),
        }
    }
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Bigint => "bigint",
            KeyType::Text => "text",
            KeyType::Uuid => "uuid",
        }
    }

    /// Whether `key` is a value of this type.
    pub fn matches(self, key: &TenantKey) -> bool {
        matches!(
            (self, key),
            (KeyType::Bigint, TenantKey::Int(_))
                | (KeyType::Text, TenantKey::Text(_))
                | (KeyType::Uuid, TenantKey::Uuid(_))
        )
    }

    /// A key as a person or a config file writes it: surrounding blanks, a `+` sign,
    /// upper-case hex, braces or a uuid without hyphens are accepted, as Postgres does.
    pub fn parse(self, s: &str) -> Result<TenantKey, ParseError> {
        match self {
            KeyType::Bigint => s
                .trim()
                .parse::<i64>()
                .map(TenantKey::Int)
                .map_err(|_| ParseError::new("bigint tenant id", s)),
            KeyType::Text => Ok(TenantKey::Text(s.to_owned())),
            KeyType::Uuid => parse_uuid(s.trim())
                .map(TenantKey::Uuid)
                .ok_or_else(|| ParseError::new("uuid tenant id", s)),
        }
    }

    /// A key as the catalog stores it: only the canonical text (what `Display` prints) is
    /// accepted, so that two rows can never name the same tenant.
    pub fn parse_canonical(self, s: &str) -> Result<TenantKey, ParseError> {
        let key = self.parse(s)?;
        let canonical = key.to_string();
        if canonical != s {
            return Err(ParseError {
                hint: format!(" (not canonical; it would be spelled {canonical:?})"),
                ..ParseError::new(
                    match self {
                        KeyType::Bigint => "bigint tenant id",
                        KeyType::Text => "text tenant id",
                        KeyType::Uuid => "uuid tenant id",
                    },
                    s,
                )
            });
        }
        Ok(key)
    }
}

/// Postgres's uuid input: 32 hex digits, optionally in braces, with a hyphen allowed after
/// any group of four digits.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let s = match s.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}')?,
        None => s,
    };
    let mut out = [0u8; 16];
    let mut digits = 0usize;
    let mut prev_hyphen = true; // no leading hyphen
    for c in s.chars() {
        if c == '-' {
            if prev_hyphen || digits % 4 != 0 || digits == 32 {
                return None;
            }
            prev_hyphen = true;
            continue;
        }
        let v = c.to_digit(16)? as u8;
        if digits == 32 {
            return None;
        }
        out[digits / 2] |= if digits % 2 == 0 { v << 4 } else { v };
        digits += 1;
        prev_hyphen = false;
    }
    (digits == 32 && !prev_hyphen).then_some(out)
}

/// A ring position as the catalog's `ring.vnode_hash bigint` holds it: the same 64 bits
/// read as signed, so the full u64 range fits and converts back unchanged.
pub fn ring_to_db(pos: u64) -> i64 {
    pos as i64
}

pub fn ring_from_db(v: i64) -> u64 {
    v as u64
}

macro_rules! names {
    ($ty:ty, $what:literal, $($variant:path => $name:literal),+ $(,)?) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($name => Ok($variant),)+
                    _ => Err(ParseError {
                        hint: format!(" (expected one of {})", [$($name),+].join(", ")),
                        ..ParseError::new($what, s)
                    }),
                }
            }
        }
    };
}

names!(Strategy, "strategy", Strategy::Hash => "hash", Strategy::Directory => "directory");
names!(
    ShardState, "shard state",
    ShardState::Active => "active",
    ShardState::Draining => "draining",
    ShardState::Offline => "offline",
);
names!(
    TenantState, "tenant state",
    TenantState::Active => "active",
    TenantState::Gated => "gated",
    TenantState::Moving => "moving",
    TenantState::Offboarding => "offboarding",
);

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "bigint" => Ok(KeyType::Bigint),
            "text" => Ok(KeyType::Text),
            "uuid" => Ok(KeyType::Uuid),
            _ => Err(ParseError {
                hint: " (expected one of bigint, text, uuid)".into(),
                ..ParseError::new("key type", s)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";

    #[test]
    fn canonical_text_round_trips_for_every_key_type() {
        for (ty, text) in [
            (KeyType::Bigint, "0"),
            (KeyType::Bigint, "-9223372036854775808"),
            (KeyType::Bigint, "9223372036854775807"),
            (KeyType::Text, ""),
            (KeyType::Text, " acme corp "),
            (KeyType::Text, "ünï-ċødé"),
            (KeyType::Uuid, U),
        ] {
            let key = ty.parse_canonical(text).unwrap();
            assert!(ty.matches(&key));
            assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn lenient_input_becomes_the_canonical_key() {
        let canon = KeyType::Uuid.parse_canonical(U).unwrap();
        for spelling in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b4ef8-bb6d6bb9-bd380a11",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\n",
        ] {
            assert_eq!(KeyType::Uuid.parse(spelling).unwrap(), canon, "{spelling}");
            assert!(
                KeyType::Uuid.parse_canonical(spelling).is_err(),
                "{spelling}"
            );
        }
        assert_eq!(KeyType::Bigint.parse(" +42 ").unwrap(), TenantKey::Int(42));
        let err = KeyType::Bigint.parse_canonical("042").unwrap_err();
        assert!(err.to_string().contains("\"42\""), "{err}");
    }

    #[test]
    fn garbage_is_refused_not_guessed() {
        for bad in ["", "abc", "1.5", "9223372036854775808", "0x10"] {
            assert!(KeyType::Bigint.parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eeb-c999c0b4ef8bb6d6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            assert!(KeyType::Uuid.parse(bad).is_err(), "{bad}");
        }
        let err = KeyType::Bigint.parse_canonical("abc").unwrap_err();
        assert_eq!(err.to_string(), "\"abc\" is not a valid bigint tenant id");
    }

    #[test]
    fn ring_positions_survive_the_bigint_column() {
        for pos in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(ring_from_db(ring_to_db(pos)), pos);
        }
        assert_eq!(ring_to_db(u64::MAX), -1);
        assert_eq!(ring_to_db(1 << 63), i64::MIN);
    }

    #[test]
    fn enum_names_round_trip() {
        for s in [Strategy::Hash, Strategy::Directory] {
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
        }
        for s in [
            ShardState::Active,
            ShardState::Draining,
            ShardState::Offline,
        ] {
            assert_eq!(s.to_string().parse::<ShardState>().unwrap(), s);
        }
        for s in [
            TenantState::Active,
            TenantState::Gated,
            TenantState::Moving,
            TenantState::Offboarding,
        ] {
            assert_eq!(s.to_string().parse::<TenantState>().unwrap(), s);
        }
        for k in [KeyType::Bigint, KeyType::Text, KeyType::Uuid] {
            assert_eq!(k.to_string().parse::<KeyType>().unwrap(), k);
        }
        let err = "Hash".parse::<Strategy>().unwrap_err().to_string();
        assert!(err.contains("expected one of hash, directory"), "{err}");
    }
}
