//! What the proxy remembers about one client between transactions: its settings and its
//! named prepared statements (which live on whichever server connection serves it next).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::FastMap;
use crate::classify::{SessionCommand, StatementInfo};
use crate::gucs::{GucValue, Gucs};

/// A prepared statement as the proxy names it on servers. Two clients that prepare the same
/// text with the same parameter types share one, so a server connection prepares it once
/// for all of them.
#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    /// `sg<id>`: the name servers know it by.
    pub server_name: Bytes,
    /// The Parse body after the name: query text and parameter types.
    pub parse_tail: Bytes,
    /// Session commands the statement runs (a prepared `SET`), noted at each Bind.
    pub commands: Vec<SessionCommand>,
    /// Parameter types the client declared in its Parse (0 = unspecified).
    pub param_types: Vec<u32>,
    /// What the statement is and where its shard key comes from, classified once; `None`
    /// when the Parse held no statement.
    pub classified: Option<StatementInfo>,
}

/// Interns statements by their Parse body so equal statements get one id. Bounded: when
/// full it starts over, which only costs re-preparing (ids are never reused, so a stale id
/// can never name another statement).
#[derive(Debug, Default)]
pub struct StatementRegistry {
    by_body: Mutex<FastMap<Bytes, Arc<Statement>>>,
    next: AtomicU64,
}

impl StatementRegistry {
    /// The statement for a Parse body; `classify` runs only for a body not seen before.
    pub fn intern(
        &self,
        parse_tail: &[u8],
        classify: impl FnOnce(&[u8]) -> Option<StatementInfo>,
    ) -> Arc<Statement> {
        let mut map = crate::lock(&self.by_body);
        if let Some(s) = map.get(parse_tail) {
            return s.clone();
        }
        if map.len() >= REGISTRY_CAP {
            map.clear();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let tail = Bytes::copy_from_slice(parse_tail);
        let (query, param_types) = split_parse_tail(&tail);
        let stmt = Arc::new(Statement {
            id,
            server_name: Bytes::from(format!("sg{id}")),
            parse_tail: tail.clone(),
            commands: crate::classify::scan_session_commands(query).commands,
            param_types,
            classified: classify(query),
        });
        map.insert(tail, stmt.clone());
        stmt
    }

    pub fn len(&self) -> usize {
        crate::lock(&self.by_body).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const REGISTRY_CAP: usize = 20_000;

/// Query text and declared parameter types of a Parse body (already validated by the wire
/// decoder; anything short is read as no types).
fn split_parse_tail(tail: &[u8]) -> (&[u8], Vec<u32>) {
    let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
    let rest = tail.get(end + 1..).unwrap_or_default();
    let n = rest
        .get(..2)
        .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize);
    let types = rest
        .get(2..2 + 4 * n)
        .map(|b| {
            b.chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .unwrap_or_default();
    (&tail[..end], types)
}

/// Startup parameters that are not settings.
const NOT_SETTINGS: [&str; 4] = ["user", "database", "replication", "options"];

pub struct ClientSession {
    pub user: String,
    pub database: String,
    /// Settings from the startup packet: what `RESET` returns to.
    pub startup: Gucs,
    /// Settings now in effect for the client.
    pub gucs: Gucs,
    /// The client's named statements by the client's name.
    pub statements: FastMap<Bytes, Arc<Statement>>,
    /// The client's unnamed statement (its last `Parse ""`), prepared on a server only when
    /// a Bind or Describe shows where it must run.
    pub unnamed: Option<Arc<Statement>>,
    /// Transaction status of the last ReadyForQuery the client saw.
    pub txn_status: u8,
}

impl ClientSession {
    pub fn new(params: &[(String, String)]) -> Self {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let user = get("user").unwrap_or_default();
        let database = get("database").unwrap_or_else(|| user.clone());
        let mut startup = Gucs::default();
        for (k, v) in params {
            if !NOT_SETTINGS.contains(&k.as_str()) {
                startup.set(k, GucValue::Str(v.clone()));
            }
        }
        if let Some(options) = get("options") {
            for (k, v) in parse_options(&options) {
                startup.set(&k, GucValue::Str(v));
            }
        }
        Self {
            user,
            database,
            gucs: startup.clone(),
            startup,
            statements: FastMap::default(),
            unnamed: None,
            txn_status: b'I',
        }
    }

    /// Applies a session command that completed on the server (or that the proxy answered).
    pub fn apply(&mut self, cmd: &SessionCommand) {
        match cmd {
            SessionCommand::Set { name, value } => {
                self.gucs.set(name, GucValue::Raw(value.clone()));
            }
            SessionCommand::SetConfig { name, value } => {
                self.gucs.set(name, GucValue::Str(value.clone()));
            }
            SessionCommand::Reset { name } => match self.startup.get(name) {
                Some(v) => self.gucs.set(name, v.clone()),
                None => self.gucs.remove(name),
            },
            SessionCommand::ResetAll => self.gucs = self.startup.clone(),
            SessionCommand::DiscardAll => {
                self.gucs = self.startup.clone();
                self.statements.clear();
            }
            SessionCommand::Deallocate { name: None } => self.statements.clear(),
            SessionCommand::Deallocate { name: Some(n) } => {
                self.statements.remove(n.as_bytes());
            }
            // Transaction structure, folded by the session loop; nothing to keep here.
            SessionCommand::Savepoint { .. }
            | SessionCommand::RollbackTo { .. }
            | SessionCommand::Release { .. } => {}
        }
    }
}

/// Parses the startup `options` parameter: `-c name=value` and `--name=value`, with
/// backslash escaping spaces, as libpq and Postgres do.
pub fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
        } else if let Some(s) = w.strip_prefix("--") {
            Some(s.to_owned())
        } else {
            w.strip_prefix("-c").map(str::to_owned)
        };
        if let Some((k, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parameter_yields_settings() {
        assert_eq!(
            parse_options(
                "-c app.tenant_id=42 --search_path=a,b -cstatement_timeout=5s -c x=a\\ b"
            ),
            vec![
                ("app.tenant_id".into(), "42".into()),
                ("search_path".into(), "a,b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("x".into(), "a b".into()),
            ]
        );
        assert!(parse_options("-c novalue -x").is_empty());
    }

    #[test]
    fn startup_settings_are_what_reset_returns_to() {
        let mut s = ClientSession::new(&[
            ("user".into(), "app".into()),
            ("application_name".into(), "psql".into()),
            ("options".into(), "-c search_path=a".into()),
        ]);
        assert_eq!(s.database, "app");
        assert_eq!(s.gucs.get("search_path"), Some(&GucValue::Str("a".into())));
        s.apply(&SessionCommand::Set {
            name: "search_path".into(),
            value: "b".into(),
        });
        s.apply(&SessionCommand::Set {
            name: "statement_timeout".into(),
            value: "1".into(),
        });
        s.apply(&SessionCommand::Reset {
            name: "search_path".into(),
        });
        assert_eq!(s.gucs.get("search_path"), Some(&GucValue::Str("a".into())));
        s.apply(&SessionCommand::ResetAll);
        assert_eq!(s.gucs, s.startup);
    }

    #[test]
    fn registry_shares_equal_statements() {
        let r = StatementRegistry::default();
        let a = r.intern(b"select 1\0\0\0", |_| None);
        let b = r.intern(b"select 1\0\0\0", |_| panic!("classified twice"));
        let c = r.intern(b"select 2\0\0\x01\0\0\0\x17", |_| None);
        assert_eq!(c.param_types, vec![23]);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(&a.server_name[..], format!("sg{}", a.id).as_bytes());
        assert_eq!(r.len(), 2);
    }
}
