//! Finding the statements that change session state (`SET`, `RESET`, `DISCARD ALL`,
//! `DEALLOCATE`) in SQL text, so that transaction pooling can carry that state from one
//! server connection to the next.
//!
//! A hand-written scan, not a parser: it only needs statement boundaries (respecting quotes,
//! dollar quotes and comments) and the first few words of each statement, and it runs on
//! every simple query, so the common case (one statement that starts with another word)
//! costs a few byte comparisons.

/// A statement that changes what the proxy must remember about the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// `SET [SESSION] name {TO|=} value`; `value` is the SQL text as written.
    Set {
        name: String,
        value: String,
    },
    /// `RESET name`
    Reset {
        name: String,
    },
    ResetAll,
    DiscardAll,
    /// `DEALLOCATE [PREPARE] name`, or `ALL` when `name` is `None`.
    Deallocate {
        name: Option<String>,
    },
    /// `set_config(name, value, false)`: `value` is the string itself.
    SetConfig {
        name: String,
        value: String,
    },
    /// Savepoints matter because `ROLLBACK TO` undoes the `SET`s made after one.
    Savepoint {
        name: String,
    },
    RollbackTo {
        name: String,
    },
    Release {
        name: String,
    },
}

/// The session commands in `sql`, and how many statements it holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SessionScan {
    pub commands: Vec<SessionCommand>,
    pub statements: usize,
}

/// First words that can start a session command; anything else is skipped cheaply.
const KEYWORDS: [&[u8]; 7] = [
    b"set",
    b"savepoint",
    b"reset",
    b"rollback",
    b"release",
    b"discard",
    b"deallocate",
];

pub fn scan_session_commands(sql: &[u8]) -> SessionScan {
    let mut scan = SessionScan::default();
    if is_single_statement(sql) {
        scan_statement(sql, &mut scan);
        return scan;
    }
    for stmt in split_statements(sql) {
        scan_statement(stmt, &mut scan);
    }
    scan
}

fn scan_statement(stmt: &[u8], scan: &mut SessionScan) {
    let start = skip_space_and_comments(stmt, 0);
    if start == stmt.len() {
        return;
    }
    scan.statements += 1;
    let stmt = &stmt[start..];
    if starts_with_keyword(stmt) {
        scan.commands.extend(parse_statement(stmt));
    } else {
        set_config_calls(stmt, &mut scan.commands);
    }
}

/// `set_config('name', 'value', false)` calls with literal arguments, wherever they appear
/// in a statement (`SELECT set_config(…)` is how many drivers set a session value). Calls
/// with `is_local = true`, or with arguments that are not literals, are not tracked.
fn set_config_calls(stmt: &[u8], out: &mut Vec<SessionCommand>) {
    if !mentions_set_config(stmt) {
        return;
    }
    for finder in [&*SET_CONFIG_LOWER, &*SET_CONFIG_UPPER] {
        for at in finder.find_iter(stmt) {
            let mut w = Words {
                sql: stmt,
                pos: at + b"set_config".len(),
            };
            if let Some(cmd) = parse_set_config_args(&mut w) {
                out.push(cmd);
            }
        }
    }
}

/// Whether `set_config` or `SET_CONFIG` occurs in `stmt`: one pass over its `_`s (few in
/// most statements) instead of two substring searches, for every statement that is not a
/// session command.
fn mentions_set_config(stmt: &[u8]) -> bool {
    memchr::memchr_iter(b'_', stmt).any(|at| {
        at >= 3
            && stmt.len() - at > 6
            && matches!(
                (&stmt[at - 3..at], &stmt[at + 1..at + 7]),
                (b"set", b"config") | (b"SET", b"CONFIG")
            )
    })
}

static SET_CONFIG_LOWER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"set_config"));
static SET_CONFIG_UPPER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"SET_CONFIG"));

fn parse_set_config_args(w: &mut Words<'_>) -> Option<SessionCommand> {
    w.punct(b'(')?;
    let name = w.string_literal()?;
    w.punct(b',')?;
    let value = w.string_literal()?;
    w.punct(b',')?;
    let is_local = match w.next()?.as_str() {
        "false" => false,
        "true" => true,
        _ => return None,
    };
    w.punct(b')')?;
    (!is_local).then(|| SessionCommand::SetConfig {
        name: name.to_ascii_lowercase(),
        value,
    })
}

/// True when no `;` is followed by anything but whitespace and more `;`: the common shape
/// (`SELECT …;`) is settled by one fast search, without tokenising quotes.
fn is_single_statement(sql: &[u8]) -> bool {
    match memchr::memchr(b';', sql) {
        None => true,
        Some(at) => sql[at..]
            .iter()
            .all(|&b| b == b';' || b.is_ascii_whitespace()),
    }
}

fn starts_with_keyword(s: &[u8]) -> bool {
    // The first byte picks the candidates: most statements are ruled out by it alone.
    let candidates: &[&[u8]] = match s.first().map(u8::to_ascii_lowercase) {
        Some(b's') => &KEYWORDS[..2],
        Some(b'r') => &KEYWORDS[2..5],
        Some(b'd') => &KEYWORDS[5..],
        _ => return false,
    };
    candidates.iter().any(|k| {
        s.len() >= k.len()
            && s[..k.len()].eq_ignore_ascii_case(k)
            && s.get(k.len()).is_none_or(|b| !is_ident_byte(*b))
    })
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Splits on `;` outside quotes, dollar quotes and comments.
pub fn split_statements(sql: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= sql.len() {
            return None;
        }
        let mut i = start;
        while i < sql.len() {
            match sql[i] {
                b';' => {
                    let stmt = &sql[start..i];
                    start = i + 1;
                    return Some(stmt);
                }
                b'\'' | b'"' => i = skip_quoted(sql, i),
                b'-' | b'/' => {
                    let j = skip_comment(sql, i);
                    i = if j == i { i + 1 } else { j };
                }
                b'$' => i = skip_dollar_quoted(sql, i),
                _ => i += 1,
            }
        }
        let stmt = &sql[start..];
        start = sql.len();
        Some(stmt)
    })
}

fn skip_quoted(sql: &[u8], at: usize) -> usize {
    let q = sql[at];
    let mut i = at + 1;
    while i < sql.len() {
        if sql[i] == q {
            if sql.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    sql.len()
}

fn skip_comment(sql: &[u8], at: usize) -> usize {
    match (sql.get(at), sql.get(at + 1)) {
        (Some(b'-'), Some(b'-')) => sql[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(sql.len(), |p| at + p + 1),
        (Some(b'/'), Some(b'*')) => {
            // Postgres block comments nest.
            let mut depth = 0;
            let mut i = at;
            while i + 1 < sql.len() {
                if sql[i] == b'/' && sql[i + 1] == b'*' {
                    depth += 1;
                    i += 2;
                } else if sql[i] == b'*' && sql[i + 1] == b'/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        return i;
                    }
                } else {
                    i += 1;
                }
            }
            sql.len()
        }
        _ => at,
    }
}

/// `$tag$ … $tag$`; a `$` that does not open a dollar quote (e.g. `$1`) is one byte.
fn skip_dollar_quoted(sql: &[u8], at: usize) -> usize {
    let tag_end = sql[at + 1..]
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80))
        .map(|p| at + 1 + p);
    let Some(end) = tag_end.filter(|&e| sql[e] == b'$') else {
        return at + 1;
    };
    let tag = &sql[at..=end];
    if tag.len() > 2 && tag[1].is_ascii_digit() {
        return at + 1;
    }
    let body = end + 1;
    sql[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(sql.len(), |p| body + p + tag.len())
}

fn skip_space_and_comments(sql: &[u8], mut i: usize) -> usize {
    loop {
        while i < sql.len() && sql[i].is_ascii_whitespace() {
            i += 1;
        }
        let j = skip_comment(sql, i);
        if j == i {
            return i;
        }
        i = j;
    }
}

/// Reads words (identifiers, possibly quoted and dotted) off the front of a statement.
struct Words<'a> {
    sql: &'a [u8],
    pos: usize,
}

impl<'a> Words<'a> {
    fn next(&mut self) -> Option<String> {
        self.pos = skip_space_and_comments(self.sql, self.pos);
        let s = &self.sql[self.pos..];
        let first = *s.first()?;
        if first == b'"' {
            let end = skip_quoted(self.sql, self.pos);
            let inner = &self.sql[self.pos + 1..end.saturating_sub(1).max(self.pos + 1)];
            self.pos = end;
            return Some(String::from_utf8_lossy(inner).replace("\"\"", "\""));
        }
        if first == b'=' {
            self.pos += 1;
            return Some("=".into());
        }
        let len = s.iter().take_while(|&&b| is_ident_byte(b)).count();
        if len == 0 {
            return None;
        }
        self.pos += len;
        Some(String::from_utf8_lossy(&s[..len]).to_ascii_lowercase())
    }

    /// Consumes `c` (after whitespace and comments), or fails.
    fn punct(&mut self, c: u8) -> Option<()> {
        self.pos = skip_space_and_comments(self.sql, self.pos);
        (self.sql.get(self.pos) == Some(&c)).then(|| self.pos += 1)
    }

    /// A standard `'…'` literal, with `''` for a quote.
    fn string_literal(&mut self) -> Option<String> {
        self.pos = skip_space_and_comments(self.sql, self.pos);
        if self.sql.get(self.pos) != Some(&b'\'') {
            return None;
        }
        let end = skip_quoted(self.sql, self.pos);
        let inner = self.sql.get(self.pos + 1..end.checked_sub(1)?)?;
        if self.sql.get(end - 1) != Some(&b'\'') || end - 1 <= self.pos {
            return None;
        }
        self.pos = end;
        Some(String::from_utf8_lossy(inner).replace("''", "'"))
    }

    /// A setting name: `word` or `word.word`.
    fn name(&mut self) -> Option<String> {
        let mut name = self.next()?;
        while self.sql.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            name.push('.');
            name.push_str(&self.next()?);
        }
        Some(name)
    }

    fn rest(&self) -> String {
        let s = String::from_utf8_lossy(&self.sql[self.pos..]);
        s.trim().to_owned()
    }
}

fn parse_statement(stmt: &[u8]) -> Option<SessionCommand> {
    let mut w = Words { sql: stmt, pos: 0 };
    match w.next()?.as_str() {
        "set" => parse_set(&mut w),
        "reset" => match w.name()?.as_str() {
            "all" => Some(SessionCommand::ResetAll),
            "session" if w.next().as_deref() == Some("authorization") => {
                Some(SessionCommand::Reset {
                    name: "session_authorization".into(),
                })
            }
            "time" if w.next().as_deref() == Some("zone") => Some(SessionCommand::Reset {
                name: "timezone".into(),
            }),
            name => Some(SessionCommand::Reset { name: name.into() }),
        },
        "discard" => (w.next()?.as_str() == "all").then_some(SessionCommand::DiscardAll),
        "savepoint" => Some(SessionCommand::Savepoint { name: w.next()? }),
        "rollback" => {
            // ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name; a plain ROLLBACK is not one.
            let mut word = w.next()?;
            if word == "work" || word == "transaction" {
                word = w.next()?;
            }
            if word != "to" {
                return None;
            }
            let mut name = w.next()?;
            if name == "savepoint" {
                name = w.next()?;
            }
            Some(SessionCommand::RollbackTo { name })
        }
        "release" => {
            let mut name = w.next()?;
            if name == "savepoint" {
                name = w.next()?;
            }
            Some(SessionCommand::Release { name })
        }
        "deallocate" => {
            let mut name = w.next()?;
            if name == "prepare" {
                name = w.next()?;
            }
            Some(SessionCommand::Deallocate {
                name: (name != "all").then_some(name),
            })
        }
        _ => None,
    }
}

fn parse_set(w: &mut Words<'_>) -> Option<SessionCommand> {
    let mut name = w.name()?;
    match name.as_str() {
        "local" => return None, // lasts only until the end of the transaction
        "session" => {
            name = w.name()?;
            if name == "characteristics" {
                return None; // SET SESSION CHARACTERISTICS AS TRANSACTION …: not tracked
            }
        }
        "transaction" | "constraints" => return None,
        _ => {}
    }
    let name = match name.as_str() {
        "time" => {
            (w.next()? == "zone").then_some(())?;
            "timezone".to_owned()
        }
        "authorization" => "session_authorization".to_owned(),
        "role" | "names" | "schema" | "xml" => {
            return special_set(name, w);
        }
        _ => {
            let sep = w.next()?;
            if sep != "to" && sep != "=" {
                return None;
            }
            name
        }
    };
    let value = w.rest();
    (!value.is_empty()).then_some(SessionCommand::Set { name, value })
}

/// `SET ROLE r`, `SET NAMES 'enc'`, `SET SCHEMA 's'`: settings with their own syntax.
fn special_set(word: String, w: &mut Words<'_>) -> Option<SessionCommand> {
    let name = match word.as_str() {
        "role" => "role",
        "names" => "client_encoding",
        "schema" => "search_path",
        _ => return None, // SET XML OPTION: rare, not tracked
    };
    let value = w.rest();
    (!value.is_empty()).then(|| SessionCommand::Set {
        name: name.into(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds(sql: &str) -> Vec<SessionCommand> {
        scan_session_commands(sql.as_bytes()).commands
    }

    fn set(name: &str, value: &str) -> SessionCommand {
        SessionCommand::Set {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn ordinary_statements_are_not_session_commands() {
        assert_eq!(cmds("select 1"), vec![]);
        assert_eq!(cmds("settle_accounts()"), vec![]);
        assert_eq!(cmds("update t set a = 1"), vec![]);
        assert_eq!(scan_session_commands(b"  ").statements, 0);
        assert_eq!(scan_session_commands(b"select 1; select 2;").statements, 2);
        assert_eq!(scan_session_commands(b"select 1; ;\n").statements, 1);
        assert_eq!(
            cmds("select ';'; set a = 1"),
            vec![set("a", "1")],
            "a quoted ; is not a boundary"
        );
    }

    #[test]
    fn set_forms() {
        assert_eq!(
            cmds("SET search_path TO a, \"B\""),
            vec![set("search_path", "a, \"B\"")]
        );
        assert_eq!(
            cmds("set session app.tenant_id = 42"),
            vec![set("app.tenant_id", "42")]
        );
        assert_eq!(cmds("SET TIME ZONE 'UTC'"), vec![set("timezone", "'UTC'")]);
        assert_eq!(cmds("SET ROLE alice"), vec![set("role", "alice")]);
        assert_eq!(
            cmds("SET NAMES 'UTF8'"),
            vec![set("client_encoding", "'UTF8'")]
        );
        assert_eq!(
            cmds("/* c */ SET statement_timeout = '5s'"),
            vec![set("statement_timeout", "'5s'")]
        );
        assert_eq!(cmds("SET LOCAL statement_timeout = 1"), vec![]);
        assert_eq!(cmds("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"), vec![]);
        assert_eq!(cmds("SET \"Foo\".\"Bar\" TO 1"), vec![set("Foo.Bar", "1")]);
    }

    #[test]
    fn reset_discard_deallocate() {
        assert_eq!(
            cmds("RESET search_path"),
            vec![SessionCommand::Reset {
                name: "search_path".into()
            }]
        );
        assert_eq!(cmds("reset all"), vec![SessionCommand::ResetAll]);
        assert_eq!(cmds("DISCARD ALL"), vec![SessionCommand::DiscardAll]);
        assert_eq!(cmds("DISCARD PLANS"), vec![]);
        assert_eq!(
            cmds("DEALLOCATE PREPARE s1"),
            vec![SessionCommand::Deallocate {
                name: Some("s1".into())
            }]
        );
        assert_eq!(
            cmds("deallocate all"),
            vec![SessionCommand::Deallocate { name: None }]
        );
    }

    #[test]
    fn set_config_calls_with_literals() {
        let sc = |n: &str, v: &str| SessionCommand::SetConfig {
            name: n.into(),
            value: v.into(),
        };
        assert_eq!(
            cmds("select set_config('app.tenant_id', '42', false)"),
            vec![sc("app.tenant_id", "42")]
        );
        assert_eq!(
            cmds("SELECT SET_CONFIG( 'search_path' , 'a, b''c', FALSE ), 1"),
            vec![sc("search_path", "a, b'c")]
        );
        assert_eq!(cmds("select set_config('x', '1', true)"), vec![]);
        assert_eq!(cmds("select set_config($1, $2, false)"), vec![]);
        assert_eq!(cmds("select set_config('x', '1'"), vec![]);
        assert_eq!(cmds("select set_config('x', ''"), vec![]);
        assert_eq!(cmds("select 'set_config'"), vec![]);
    }

    #[test]
    fn set_config_prefilter_matches_both_spellings_anywhere() {
        for s in ["set_config(", "xset_config", "a; SET_CONFIG", "set_config"] {
            assert!(mentions_set_config(s.as_bytes()), "{s}");
        }
        for s in [
            "",
            "_",
            "et_config",
            "set_confi",
            "Set_Config",
            "set_CONFIG",
            "pg_config",
        ] {
            assert!(!mentions_set_config(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn savepoint_commands() {
        assert_eq!(
            cmds(
                "SAVEPOINT a; ROLLBACK TO SAVEPOINT a; rollback work to b; RELEASE a; RELEASE SAVEPOINT \"B\""
            ),
            vec![
                SessionCommand::Savepoint { name: "a".into() },
                SessionCommand::RollbackTo { name: "a".into() },
                SessionCommand::RollbackTo { name: "b".into() },
                SessionCommand::Release { name: "a".into() },
                SessionCommand::Release { name: "B".into() },
            ]
        );
        assert_eq!(cmds("ROLLBACK"), vec![]);
        assert_eq!(cmds("rollback and chain"), vec![]);
        assert_eq!(cmds("releases_table()"), vec![]);
    }

    #[test]
    fn statement_splitting_respects_quotes_and_comments() {
        let sql = b"select ';' ; set a.b = 'x;y' -- ;\n; select $q$ ; $q$; select $1; /* ; /* ; */ */ reset all";
        let parts: Vec<_> = split_statements(sql).collect();
        assert_eq!(
            parts.len(),
            5,
            "{:?}",
            parts
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            scan_session_commands(sql).commands,
            vec![set("a.b", "'x;y' -- ;"), SessionCommand::ResetAll]
        );
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "set",
            "set ;",
            "reset",
            "deallocate",
            "set \"",
            "$",
            "$a",
            "/*",
            "'",
            "set x to",
        ] {
            let _ = scan_session_commands(s.as_bytes());
        }
    }
}
