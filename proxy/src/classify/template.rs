//! Templates: what a statement shape is (kind, tables, where its shard key comes from), built
//! once per normalized text by parsing it with `sqlparser` and shared by every statement of
//! that shape.

use std::ops::ControlFlow;
use std::sync::Arc;

use sqlparser::ast::{
    CopySource, CopyTarget, ObjectName, ObjectType, Query, SetExpr, Statement, TableFactor, Visit,
    Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::keys::{self, ValueMap, ident_name};
use super::lexer::{Lexed, is_ident_byte, is_ident_start};

/// What a statement does, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// A read (`SELECT`, `VALUES`, `TABLE t`, `SHOW`-free queries).
    Select,
    Insert,
    Update,
    Delete,
    /// `MERGE`: a write whose key is never extracted.
    Merge,
    /// `TRUNCATE`: removes every tenant's rows of the tables it names.
    Truncate,
    /// CREATE / ALTER / DROP / COMMENT / GRANT / REVOKE …
    Ddl,
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK`, `ABORT` (not `ROLLBACK TO`).
    Rollback,
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`, `SET TRANSACTION`.
    TxnOther,
    /// `SET`, `RESET`, `DISCARD`.
    Set,
    Show,
    /// `COPY`; `from_stdin` when the client will send the rows (CopyIn).
    Copy {
        from_stdin: bool,
    },
    /// Understood, carries no key: LISTEN/NOTIFY, VACUUM, ANALYZE, PREPARE, DEALLOCATE, LOCK…
    Utility,
    /// Not understood: refused by the parser, or code the proxy cannot see into (DO, CALL).
    Unparsed,
}

impl StatementKind {
    /// True for statements that change table rows.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Self::Insert | Self::Update | Self::Delete | Self::Merge | Self::Truncate
        ) || self == (Self::Copy { from_stdin: true })
    }
}

/// A table a statement reads or writes, as Postgres would name it: unquoted parts lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub schema: Option<String>,
    pub name: String,
}

/// Where one key value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueRef {
    /// Index into [`super::StatementInfo::literals`].
    Literal(usize),
    /// `$n`, 1-based, bound by the client's Bind.
    Param(u16),
}

/// Where a statement's shard key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// No key: the statement is not pinned to a tenant (fan out, broadcast or refuse).
    None,
    /// `key = v` in the WHERE's top-level AND chain (or an inner join's ON).
    One(ValueRef),
    /// `key IN (…)`, `key = ANY(ARRAY[…])`, ORs of pins, or several pins ANDed: the rows
    /// touched belong to tenants among these.
    AnyOf(Vec<ValueRef>),
    /// `key = ANY(v)` where v is one array value: a `$n` array parameter, or a literal in
    /// Postgres's array text form (`'{1,2}'`).
    AnyOfArray(ValueRef),
    /// INSERT … VALUES: the key of each row, in row order.
    Rows(Vec<ValueRef>),
}

/// One statement shape, shared by every statement whose normalized text is the same.
#[derive(Debug)]
pub struct Template {
    /// The normalized text (literals as placeholders): the cache key, and a useful log label.
    pub text: Arc<str>,
    pub kind: StatementKind,
    /// Every table read or written, deduplicated, in order of appearance (CTE names excluded).
    pub tables: Vec<TableRef>,
    pub key: KeySpec,
    /// The statement assigns the key column (`UPDATE … SET tenant_id = …`, or an upsert
    /// that sets it to anything but `excluded.tenant_id`): rows could change tenant.
    pub has_key_column_write: bool,
    /// The values assigned to the key column when they are literals or parameters (so the
    /// router may allow a write that keeps rows on their tenant); `None` otherwise.
    pub key_write: KeySpec,
    /// The highest `$n` the statement uses.
    pub param_count: u16,
    /// `EXPLAIN …`: `kind`, `tables` and `key` describe the explained statement.
    pub explain: bool,
    /// Whether `sqlparser` accepted it; false for `Unparsed` and first-word kinds.
    pub parsed: bool,
    /// Placeholders in `text` are numbered from `placeholder_base + 1`.
    pub(crate) placeholder_base: u32,
}

/// Parses a lexed statement into its template. Never fails: what the parser refuses gets a
/// kind from its first word and no key.
pub(crate) fn build<T>(l: &Lexed<'_, T>, text: Arc<str>, key_column: &str) -> Template {
    if l.too_deep {
        return unparsed(text, l);
    }
    let values = ValueMap::Placeholders {
        base: l.base,
        count: l.literals.len(),
    };
    if let Some(stmt) = parse_one(&text) {
        return from_statement(&stmt, text, key_column, &values, l);
    }
    // Some literals cannot be placeholders (type modifiers: `varchar(10)`, `numeric(10, 2)`;
    // adjacent string constants): parse the statement as written and find its literals by
    // position instead.
    if let Ok(raw) = std::str::from_utf8(l.raw) {
        if let Some(stmt) = parse_one(raw) {
            let values = ValueMap::Spans(line_columns(l.raw, &l.offsets()));
            return from_statement(&stmt, text, key_column, &values, l);
        }
    }
    unparsed(text, l)
}

/// Nesting deeper than this is refused by the parser (the statement becomes `Unparsed`).
const PARSE_RECURSION_LIMIT: usize = 40;

fn parse_one(sql: &str) -> Option<Statement> {
    let dialect = PostgreSqlDialect {};
    let mut stmts = Parser::new(&dialect)
        .with_recursion_limit(PARSE_RECURSION_LIMIT)
        .try_with_sql(sql)
        .ok()?
        .parse_statements()
        .ok()?;
    (stmts.len() == 1).then(|| stmts.pop()).flatten()
}

/// sqlparser's (line, column) of each offset: lines counted by `\n`, columns in characters.
fn line_columns(raw: &[u8], offsets: &[usize]) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(offsets.len());
    let (mut line, mut col) = (1u64, 1u64);
    let mut next = offsets.iter().peekable();
    for (i, &b) in raw.iter().enumerate() {
        while next.peek().is_some_and(|&&o| o == i) {
            out.push((line, col));
            next.next();
        }
        if b == b'\n' {
            line += 1;
            col = 1;
        } else if b & 0xC0 != 0x80 {
            col += 1;
        }
    }
    out
}

fn from_statement<T>(
    stmt: &Statement,
    text: Arc<str>,
    key_column: &str,
    values: &ValueMap,
    l: &Lexed<'_, T>,
) -> Template {
    let a = keys::analyze(stmt, key_column, values);
    let (inner, explain) = match stmt {
        Statement::Explain { statement, .. } => (&**statement, true),
        s => (s, false),
    };
    let kind = kind_of(inner, a.dml, &text);
    Template {
        tables: tables_of(stmt),
        key: if kind == StatementKind::Unparsed {
            KeySpec::None
        } else {
            a.key
        },
        has_key_column_write: a.has_key_column_write,
        key_write: a.key_write,
        param_count: l.max_param.min(u32::from(u16::MAX)) as u16,
        explain,
        parsed: true,
        placeholder_base: l.base,
        kind,
        text,
    }
}

fn unparsed<T>(text: Arc<str>, l: &Lexed<'_, T>) -> Template {
    Template {
        kind: first_word_kind(&text).unwrap_or(StatementKind::Unparsed),
        tables: Vec::new(),
        key: KeySpec::None,
        has_key_column_write: false,
        key_write: KeySpec::None,
        param_count: l.max_param.min(u32::from(u16::MAX)) as u16,
        explain: false,
        parsed: false,
        placeholder_base: l.base,
        text,
    }
}

fn kind_of(stmt: &Statement, dml: Option<StatementKind>, text: &str) -> StatementKind {
    use StatementKind as K;
    match stmt {
        Statement::Query(q) => match &*q.body {
            SetExpr::Insert(_) => K::Insert,
            SetExpr::Update(_) => K::Update,
            SetExpr::Delete(_) => K::Delete,
            SetExpr::Merge(_) => K::Merge,
            _ => dml.unwrap_or(K::Select),
        },
        Statement::Insert(_) => K::Insert,
        Statement::Update(_) => K::Update,
        Statement::Delete(_) => K::Delete,
        Statement::Merge(_) => K::Merge,
        Statement::Truncate(_) => K::Truncate,
        Statement::Copy { to, target, .. } => K::Copy {
            from_stdin: !*to && matches!(target, CopyTarget::Stdin),
        },
        Statement::StartTransaction { .. } => K::Begin,
        Statement::Commit { .. } => K::Commit,
        Statement::Rollback {
            savepoint: None, ..
        } => K::Rollback,
        Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => K::TxnOther,
        Statement::Set(sqlparser::ast::Set::SetTransaction { .. }) => K::TxnOther,
        Statement::Set(_) | Statement::Reset(_) | Statement::Discard { .. } => K::Set,
        Statement::ShowVariable { .. } | Statement::ShowVariables { .. } => K::Show,
        _ => first_word_kind(text).unwrap_or(K::Utility),
    }
}

/// The kind told by a statement's first words, for statements the parser refused (or that
/// have no case of their own above). `None` when the words do not make it obvious.
pub(crate) fn first_word_kind(text: &str) -> Option<StatementKind> {
    use StatementKind as K;
    let mut words = Words(text.as_bytes());
    let first = words.next()?;
    let second = words.next();
    let second = second.as_deref();
    Some(match first.as_str() {
        "begin" | "start" => K::Begin,
        "commit" | "end" | "rollback" | "abort" if second == Some("prepared") => K::Utility,
        "commit" | "end" => K::Commit,
        "rollback" if second == Some("to") => K::TxnOther,
        "rollback" | "abort" => K::Rollback,
        "savepoint" | "release" => K::TxnOther,
        "set" if second == Some("transaction") => K::TxnOther,
        "set" | "reset" | "discard" => K::Set,
        "show" => K::Show,
        "truncate" => K::Truncate,
        "create" | "alter" | "drop" | "comment" | "grant" | "revoke" | "security" | "import" => {
            K::Ddl
        }
        "vacuum" | "analyze" | "analyse" | "checkpoint" | "cluster" | "reindex" | "listen"
        | "unlisten" | "notify" | "load" | "lock" | "refresh" | "prepare" | "deallocate"
        | "reassign" => K::Utility,
        "do" | "call" => K::Unparsed,
        "copy" => K::Copy {
            from_stdin: copy_from_stdin(text),
        },
        _ => return None,
    })
}

/// `COPY … FROM STDIN`, told from the words alone.
fn copy_from_stdin(text: &str) -> bool {
    let mut prev = String::new();
    for w in Words(text.as_bytes()) {
        if prev == "from" && w == "stdin" {
            return true;
        }
        prev = w;
    }
    false
}

/// Lowercased bare words of a normalized text (quoted names and punctuation skipped).
struct Words<'a>(&'a [u8]);

impl Iterator for Words<'_> {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        loop {
            let s = self.0;
            let start = s.iter().position(|&b| is_ident_start(b) || b == b'"')?;
            if s[start] == b'"' {
                self.0 = &s[super::lexer::quoted_end(s, start)..];
                continue;
            }
            let len = s[start..].iter().take_while(|&&b| is_ident_byte(b)).count();
            self.0 = &s[start + len..];
            return Some(String::from_utf8_lossy(&s[start..start + len]).to_ascii_lowercase());
        }
    }
}

/// Every table the statement touches, CTE names and table functions excluded.
fn tables_of(stmt: &Statement) -> Vec<TableRef> {
    let mut c = TableCollector::default();
    let _ = stmt.visit(&mut c);
    if let Statement::Drop {
        object_type: ObjectType::Table,
        names,
        ..
    } = stmt
    {
        c.names.extend(names.iter().cloned());
    }
    if let Statement::Copy {
        source: CopySource::Table { table_name, .. },
        ..
    } = stmt
    {
        c.names.push(table_name.clone());
    }
    let mut out: Vec<TableRef> = Vec::new();
    for name in &c.names {
        let Some(t) = table_ref(name) else { continue };
        if t.schema.is_none() && c.ctes.contains(&t.name) {
            continue;
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn table_ref(name: &ObjectName) -> Option<TableRef> {
    let parts: Option<Vec<String>> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(ident_name))
        .collect();
    let mut parts = parts?;
    let table = parts.pop()?;
    Some(TableRef {
        schema: parts.pop(),
        name: table,
    })
}

#[derive(Default)]
struct TableCollector {
    names: Vec<ObjectName>,
    ctes: Vec<String>,
    /// The next relation is a table function's name (`generate_series(…)`), not a table.
    skip_next: bool,
}

impl Visitor for TableCollector {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            self.ctes
                .extend(with.cte_tables.iter().map(|c| ident_name(&c.alias.name)));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        self.skip_next = matches!(tf, TableFactor::Table { args: Some(_), .. });
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        if !std::mem::take(&mut self.skip_next) {
            self.names.push(r.clone());
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::lexer::lex;

    /// Common shapes parse with placeholders (one parse per miss); the literal forms that
    /// cannot be placeholders go through the second parse of the original text.
    #[test]
    fn which_shapes_need_the_fallback_parse() {
        let normalized_parses = |sql: &str| {
            let l = lex(sql.as_bytes(), "tenant_id").last().unwrap();
            parse_one(&l.normalized).is_some()
        };
        for sql in [
            "select * from orders where tenant_id = 42 and note = 'x' limit 10 offset 5",
            "insert into t (tenant_id, a) values (1, 'a'), (2, E'b') on conflict do nothing",
            "update t set a = 'x'::uuid, b = interval '1 day' where tenant_id = any(array[1, 2])",
            "select * from t where tenant_id in (1, 2) and x = $$y$$ and d > now() - interval '1' day",
            "set statement_timeout = 5000",
            "select * from t where d > date '2020-01-01' fetch first 10 rows only",
        ] {
            assert!(normalized_parses(sql), "{sql}");
        }
        for sql in [
            "select x::varchar(10) from t where tenant_id = 1",
            "create table t (a varchar(10), b numeric(10, 2))",
            "alter table t alter column a type bit(3)",
        ] {
            assert!(!normalized_parses(sql), "{sql}");
            let l = lex(sql.as_bytes(), "tenant_id").last().unwrap();
            let text: Arc<str> = l.normalized.as_str().into();
            assert!(build(&l, text, "tenant_id").parsed, "{sql}");
        }
    }

    #[test]
    fn line_columns_count_characters() {
        let raw = "a\n é 'x'\n\t42".as_bytes();
        assert_eq!(line_columns(raw, &[0, 6, 11]), [(1, 1), (2, 4), (3, 2)]);
    }
}
