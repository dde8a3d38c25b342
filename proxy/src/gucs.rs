//! Session settings (GUCs) a client has established, and what it takes to give a pooled
//! server connection the same settings.
//!
//! In transaction pooling a client meets a different server connection for each
//! transaction, so the proxy remembers the client's session-level settings (startup
//! parameters and `SET`s) and, before a server connection serves the client, replays the
//! difference. Each server connection remembers what the proxy applied to it, so a
//! connection that last served a client with the same settings costs nothing.

use std::collections::BTreeMap;
use std::fmt::Write;

/// How a setting's value was given, which decides how it is replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GucValue {
    /// A string, as a startup parameter gives it; replayed with `set_config()`, which parses
    /// list settings such as `search_path = 'a, b'` the way a startup parameter is parsed.
    Str(String),
    /// The SQL text after `SET name TO`, replayed verbatim (`SET name TO <raw>`), so
    /// `SET search_path TO a, "B"` keeps its list and quoting.
    Raw(String),
}

/// Settings by lower-cased name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gucs {
    by_name: BTreeMap<String, GucValue>,
    /// How many names are custom (`prefix.name`). The tenant setting is one and is looked up
    /// for every routed statement, while most sessions set no custom setting at all: then
    /// the lookup is settled without searching the map.
    custom: usize,
}

impl Gucs {
    pub fn set(&mut self, name: &str, value: GucValue) {
        let name = name.to_ascii_lowercase();
        let custom = is_custom(&name);
        if self.by_name.insert(name, value).is_none() && custom {
            self.custom += 1;
        }
    }

    pub fn remove(&mut self, name: &str) {
        if self.by_name.remove(lowercase(name).as_ref()).is_some() && is_custom(name) {
            self.custom -= 1;
        }
    }

    /// A name that is lower-case already, as configured names are, is looked up without a
    /// copy.
    pub fn get(&self, name: &str) -> Option<&GucValue> {
        if self.custom == 0 && is_custom(name) {
            return None;
        }
        self.by_name.get(lowercase(name).as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &GucValue)> {
        self.by_name.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The SQL that turns a server connection with settings `self` into one with
    /// `wanted`, or `None` when they already agree (the common case, checked first).
    pub fn sync_sql(&self, wanted: &Gucs) -> Option<String> {
        if self == wanted {
            return None;
        }
        let mut sql = String::new();
        for (name, value) in &wanted.by_name {
            if self.by_name.get(name) == Some(value) {
                continue;
            }
            match value {
                GucValue::Str(v) => {
                    let _ = write!(
                        sql,
                        "SELECT pg_catalog.set_config({}, {}, false);",
                        quote_literal(name),
                        quote_literal(v)
                    );
                }
                GucValue::Raw(v) => {
                    let _ = write!(sql, "SET {} TO {v};", quote_ident(name));
                }
            }
        }
        for name in self
            .by_name
            .keys()
            .filter(|n| !wanted.by_name.contains_key(*n))
        {
            let _ = write!(sql, "RESET {};", quote_ident(name));
        }
        Some(sql)
    }
}

fn is_custom(name: &str) -> bool {
    name.contains('.')
}

fn lowercase(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// A SQL string literal; standard_conforming_strings is on by default (and the proxy never
/// turns it off), so doubling quotes is enough.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A setting name, quoted only where needed (`app.tenant_id` stays bare: custom settings are
/// written `prefix.name`, and each part is an identifier).
pub fn quote_ident(name: &str) -> String {
    let plain = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !p.as_bytes()[0].is_ascii_digit()
    };
    name.split('.')
        .map(|p| {
            if plain(p) {
                p.to_owned()
            } else {
                format!("\"{}\"", p.replace('"', "\"\""))
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gucs(items: &[(&str, GucValue)]) -> Gucs {
        let mut g = Gucs::default();
        for (k, v) in items {
            g.set(k, v.clone());
        }
        g
    }

    #[test]
    fn equal_settings_need_nothing() {
        let a = gucs(&[("DateStyle", GucValue::Str("ISO".into()))]);
        assert_eq!(a.sync_sql(&a.clone()), None);
        assert_eq!(Gucs::default().sync_sql(&Gucs::default()), None);
    }

    #[test]
    fn sets_changed_and_resets_extra_settings() {
        let server = gucs(&[
            ("application_name", GucValue::Str("psql".into())),
            ("search_path", GucValue::Raw("a".into())),
            ("statement_timeout", GucValue::Raw("5".into())),
        ]);
        let client = gucs(&[
            ("application_name", GucValue::Str("it's".into())),
            ("search_path", GucValue::Raw("a".into())),
            ("app.tenant_id", GucValue::Raw("42".into())),
        ]);
        assert_eq!(
            server.sync_sql(&client).unwrap(),
            "SET app.tenant_id TO 42;\
             SELECT pg_catalog.set_config('application_name', 'it''s', false);\
             RESET statement_timeout;"
        );
    }

    #[test]
    fn custom_settings_are_found_until_removed() {
        let mut g = gucs(&[("search_path", GucValue::Raw("a".into()))]);
        assert_eq!(g.get("app.tenant_id"), None);
        g.set("App.Tenant_ID", GucValue::Raw("7".into()));
        g.set("app.tenant_id", GucValue::Raw("42".into()));
        assert_eq!(g.get("APP.tenant_id"), Some(&GucValue::Raw("42".into())));
        g.remove("app.TENANT_id");
        assert_eq!(g.get("app.tenant_id"), None);
        g.remove("app.tenant_id");
        g.set("app.tenant_id", GucValue::Raw("1".into()));
        assert_eq!(g.get("app.tenant_id"), Some(&GucValue::Raw("1".into())));
        assert_eq!(g.get("search_path"), Some(&GucValue::Raw("a".into())));
    }

    #[test]
    fn quotes_identifiers_only_when_needed() {
        assert_eq!(quote_ident("app.tenant_id"), "app.tenant_id");
        assert_eq!(quote_ident("Weird\"Name"), "\"Weird\"\"Name\"");
        assert_eq!(quote_ident("1x"), "\"1x\"");
    }
}
