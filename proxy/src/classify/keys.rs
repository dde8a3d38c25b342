//! Finding where a parsed statement's shard key comes from.
//!
//! The rule that keeps this safe: a statement is *pinned* only when every part of it that
//! reads or writes a table is restricted to a known set of key values. Parts are the main
//! body, each CTE, each derived table in a FROM and each branch of a UNION. A part is pinned
//! by `key = v` (or `key IN (…)`, `key = ANY(…)`, or an OR whose every branch pins) in the
//! top-level AND chain of its WHERE or of an inner join's ON; anything else (`<>`, `<`, LIKE,
//! NOT, an OR branch without the key, a key only inside a WHERE subquery) leaves it unpinned
//! and the statement gets [`KeySpec::None`]. Several pins are combined by union, which can
//! only widen the set of tenants the router sees, never narrow it.
//!
//! Tables joined to a pinned table (and subqueries in WHERE or the select list) are assumed
//! to hold the same tenant's rows, as in every tenant-per-shard design: the shard that holds
//! the tenant holds all of its rows.

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, Delete, Expr, FromTable, Ident, Insert,
    JoinConstraint, JoinOperator, ObjectName, OnConflictAction, OnInsert, Query, Select,
    SelectItem, SetExpr, Statement, TableFactor, TableWithJoins, Update, UpdateTableFromKind,
    ValueWithSpan,
};

use super::template::{KeySpec, StatementKind, ValueRef};

/// How a statement's literals and parameters appear in the AST that was parsed.
pub(crate) enum ValueMap {
    /// The normalized text was parsed: `$n` above `base` is literal `n - base - 1`.
    Placeholders { base: u32, count: usize },
    /// The original text was parsed (the normalized one was refused): a literal is found by
    /// the (line, column) where it starts.
    Spans(Vec<(u64, u64)>),
}

impl ValueMap {
    fn value_ref(&self, v: &ValueWithSpan) -> Option<ValueRef> {
        use sqlparser::ast::Value;
        if let Value::Placeholder(p) = &v.value {
            let n: u32 = p.strip_prefix('$')?.parse().ok()?;
            return match self {
                ValueMap::Placeholders { base, count } if n > *base => {
                    let i = (n - base - 1) as usize;
                    (i < *count).then_some(ValueRef::Literal(i))
                }
                _ => u16::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .map(ValueRef::Param),
            };
        }
        match self {
            ValueMap::Placeholders { .. } => None,
            ValueMap::Spans(starts) => {
                let at = (v.span.start.line, v.span.start.column);
                starts.iter().position(|&s| s == at).map(ValueRef::Literal)
            }
        }
    }
}

/// What the walk found.
#[derive(Debug)]
pub(crate) struct Analysis {
    pub key: KeySpec,
    pub has_key_column_write: bool,
    pub key_write: KeySpec,
    /// The first INSERT/UPDATE/DELETE met anywhere (a data-modifying CTE makes a SELECT a write).
    pub dml: Option<StatementKind>,
}

pub(crate) fn analyze(stmt: &Statement, key_column: &str, values: &ValueMap) -> Analysis {
    let mut w = Walker {
        key: key_column,
        values,
        ctes: Vec::new(),
        key_writes: Vec::new(),
        dml: None,
        depth: 0,
    };
    let key = match w.statement(stmt) {
        Cover::Rows(rows) => KeySpec::Rows(rows),
        Cover::Pinned(pins) => to_spec(pins),
        Cover::Neutral | Cover::Unpinned => KeySpec::None,
    };
    let key_write = match w.key_writes.iter().copied().collect::<Option<Vec<_>>>() {
        Some(v) if !v.is_empty() => to_spec(v.into_iter().map(Pin::Scalar).collect()),
        _ => KeySpec::None,
    };
    Analysis {
        key,
        has_key_column_write: !w.key_writes.is_empty(),
        key_write,
        dml: w.dml,
    }
}

/// One way a filter restricts the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pin {
    Scalar(ValueRef),
    /// Any element of an array value (`key = ANY($1)`).
    Array(ValueRef),
}

/// What one part of a statement tells about the tenants it touches.
#[derive(Debug)]
enum Cover {
    /// Restricted to the union of these.
    Pinned(Vec<Pin>),
    /// INSERT … VALUES: the key of each row.
    Rows(Vec<ValueRef>),
    /// Touches no table itself (`SELECT 1`, VALUES, a CTE reference).
    Neutral,
    /// Touches tables without a restriction the walk understands.
    Unpinned,
}

fn combine(parts: Vec<Cover>) -> Cover {
    let mut active: Vec<Cover> = parts
        .into_iter()
        .filter(|c| !matches!(c, Cover::Neutral))
        .collect();
    if active.len() <= 1 {
        return active.pop().unwrap_or(Cover::Neutral);
    }
    let mut pins = Vec::new();
    for c in active {
        match c {
            Cover::Pinned(p) => union(&mut pins, p),
            Cover::Rows(r) => union(&mut pins, r.into_iter().map(Pin::Scalar).collect()),
            Cover::Neutral => {}
            Cover::Unpinned => return Cover::Unpinned,
        }
    }
    Cover::Pinned(pins)
}

fn union(into: &mut Vec<Pin>, more: Vec<Pin>) {
    for p in more {
        if !into.contains(&p) {
            into.push(p);
        }
    }
}

fn to_spec(pins: Vec<Pin>) -> KeySpec {
    let mut scalars = Vec::with_capacity(pins.len());
    for p in &pins {
        match p {
            Pin::Scalar(v) if !scalars.contains(v) => scalars.push(*v),
            Pin::Scalar(_) => {}
            Pin::Array(v) if pins.len() == 1 => return KeySpec::AnyOfArray(*v),
            // An array mixed with other pins: not expressible, so no key (never a wrong one).
            Pin::Array(_) => return KeySpec::None,
        }
    }
    match scalars.len() {
        0 => KeySpec::None,
        1 => KeySpec::One(scalars[0]),
        _ => KeySpec::AnyOf(scalars),
    }
}

/// Deeper nesting than this is not analysed (the statement gets no key).
const MAX_DEPTH: u32 = 48;

struct Walker<'a> {
    key: &'a str,
    values: &'a ValueMap,
    /// CTE names in scope (lowercased unless quoted).
    ctes: Vec<String>,
    /// Assignments to the key column: the value when it is a literal or parameter.
    key_writes: Vec<Option<ValueRef>>,
    dml: Option<StatementKind>,
    depth: u32,
}

impl Walker<'_> {
    fn statement(&mut self, s: &Statement) -> Cover {
        if self.depth >= MAX_DEPTH {
            return Cover::Unpinned;
        }
        self.depth += 1;
        let cover = match s {
            Statement::Query(q) => self.query(q),
            Statement::Insert(i) => self.insert(i),
            Statement::Update(u) => self.update(u),
            Statement::Delete(d) => self.delete(d),
            Statement::Copy {
                source: sqlparser::ast::CopySource::Query(q),
                ..
            } => self.query(q),
            Statement::Explain { statement, .. } => self.statement(statement),
            _ => Cover::Unpinned,
        };
        self.depth -= 1;
        cover
    }

    fn query(&mut self, q: &Query) -> Cover {
        if self.depth >= MAX_DEPTH {
            return Cover::Unpinned;
        }
        self.depth += 1;
        let mark = self.ctes.len();
        let mut parts = Vec::new();
        if let Some(with) = &q.with {
            self.ctes
                .extend(with.cte_tables.iter().map(|c| ident_name(&c.alias.name)));
            for cte in &with.cte_tables {
                parts.push(self.query(&cte.query));
            }
        }
        parts.push(self.set_expr(&q.body));
        self.ctes.truncate(mark);
        self.depth -= 1;
        combine(parts)
    }

    fn set_expr(&mut self, e: &SetExpr) -> Cover {
        match e {
            SetExpr::Select(s) => self.select(s),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                let l = self.set_expr(left);
                let r = self.set_expr(right);
                combine(vec![l, r])
            }
            SetExpr::Values(_) => Cover::Neutral,
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => self.statement(s),
            SetExpr::Table(t) => match &t.table_name {
                Some(name) if t.schema_name.is_none() && self.is_cte_str(name) => Cover::Neutral,
                _ => Cover::Unpinned,
            },
            _ => Cover::Unpinned,
        }
    }

    fn select(&mut self, s: &Select) -> Cover {
        let from: Vec<&TableWithJoins> = s.from.iter().collect();
        self.filtered(&from, s.selection.as_ref())
    }

    /// The cover of a FROM list (and UPDATE/DELETE targets) under a WHERE.
    fn filtered(&mut self, from: &[&TableWithJoins], selection: Option<&Expr>) -> Cover {
        let mut f = FromScan::default();
        for twj in from {
            self.scan_from(twj, &mut f);
        }
        f.filters.extend(selection);
        let mut pins: Option<Vec<Pin>> = None;
        for e in &f.filters {
            if let Some(p) = self.pins(e, 0) {
                union(pins.get_or_insert_with(Vec::new), p);
            }
        }
        let own = match (pins, f.real_table) {
            (Some(p), _) => Cover::Pinned(p),
            (None, true) => Cover::Unpinned,
            (None, false) => Cover::Neutral,
        };
        f.parts.push(own);
        combine(f.parts)
    }

    fn scan_from<'e>(&mut self, twj: &'e TableWithJoins, f: &mut FromScan<'e>) {
        self.scan_factor(&twj.relation, f);
        for join in &twj.joins {
            self.scan_factor(&join.relation, f);
            if let JoinOperator::Join(JoinConstraint::On(e))
            | JoinOperator::Inner(JoinConstraint::On(e)) = &join.join_operator
            {
                f.filters.push(e);
            }
        }
    }

    fn scan_factor<'e>(&mut self, tf: &'e TableFactor, f: &mut FromScan<'e>) {
        match tf {
            TableFactor::Table {
                name, args: None, ..
            } => {
                if !self.is_cte(name) {
                    f.real_table = true;
                }
            }
            TableFactor::Table { .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::Function { .. }
            | TableFactor::UNNEST { .. } => {}
            TableFactor::Derived { subquery, .. } => {
                let c = self.query(subquery);
                f.parts.push(c);
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.scan_from(table_with_joins, f),
            _ => f.real_table = true,
        }
    }

    fn insert(&mut self, i: &Insert) -> Cover {
        self.dml.get_or_insert(StatementKind::Insert);
        if let Some(OnInsert::OnConflict(oc)) = &i.on {
            if let OnConflictAction::DoUpdate(du) = &oc.action {
                self.assignments(&du.assignments, true);
            }
        }
        let Some(k) = i.columns.iter().position(|c| self.is_key_name(c)) else {
            return Cover::Unpinned;
        };
        let Some(src) = &i.source else {
            return Cover::Unpinned;
        };
        match &*src.body {
            SetExpr::Values(v) if src.with.is_none() => {
                let rows: Option<Vec<ValueRef>> = v
                    .rows
                    .iter()
                    .map(|row| row.content.get(k).and_then(|e| self.value(e)))
                    .collect();
                rows.map_or(Cover::Unpinned, Cover::Rows)
            }
            SetExpr::Select(s) => self.insert_select(s, k, src),
            _ => Cover::Unpinned,
        }
    }

    /// `INSERT INTO t (…, key, …) SELECT …`: the key column's item decides.
    fn insert_select(&mut self, s: &Select, k: usize, src: &Query) -> Cover {
        let item = match s.projection.get(k) {
            Some(SelectItem::UnnamedExpr(e)) | Some(SelectItem::ExprWithAlias { expr: e, .. }) => e,
            _ => return Cover::Unpinned,
        };
        let read = self.query(src);
        if let Some(v) = self.value(item) {
            // The rows get key v; what they are read from must be on v's shard as well.
            return combine(vec![Cover::Pinned(vec![Pin::Scalar(v)]), read]);
        }
        match (self.is_key(item), read) {
            (true, Cover::Pinned(p)) => Cover::Pinned(p),
            _ => Cover::Unpinned,
        }
    }

    fn update(&mut self, u: &Update) -> Cover {
        self.dml.get_or_insert(StatementKind::Update);
        self.assignments(&u.assignments, false);
        let mut from = vec![&u.table];
        if let Some(UpdateTableFromKind::BeforeSet(v) | UpdateTableFromKind::AfterSet(v)) = &u.from
        {
            from.extend(v.iter());
        }
        self.filtered(&from, u.selection.as_ref())
    }

    fn delete(&mut self, d: &Delete) -> Cover {
        self.dml.get_or_insert(StatementKind::Delete);
        let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) = &d.from;
        let mut from: Vec<&TableWithJoins> = tables.iter().collect();
        from.extend(d.using.iter().flatten());
        self.filtered(&from, d.selection.as_ref())
    }

    /// Records assignments to the key column. `SET key = key` changes nothing, and neither
    /// does `ON CONFLICT … SET key = excluded.key` (the row keeps the key it was routed by).
    fn assignments(&mut self, list: &[Assignment], on_conflict: bool) {
        for a in list {
            let hits_key = match &a.target {
                AssignmentTarget::ColumnName(n) => self.is_key_name(n),
                AssignmentTarget::Tuple(names) => {
                    if names.iter().any(|n| self.is_key_name(n)) {
                        self.key_writes.push(None);
                    }
                    false
                }
            };
            if !hits_key || self.is_same_key(&a.value, on_conflict) {
                continue;
            }
            let v = self.value(&a.value);
            self.key_writes.push(v);
        }
    }

    fn is_same_key(&self, e: &Expr, on_conflict: bool) -> bool {
        match e {
            Expr::Identifier(id) => self.ident_is_key(id),
            Expr::CompoundIdentifier(parts) if on_conflict && parts.len() == 2 => {
                ident_name(&parts[0]) == "excluded" && self.ident_is_key(&parts[1])
            }
            Expr::Nested(inner) => self.is_same_key(inner, on_conflict),
            _ => false,
        }
    }

    /// The pins of one boolean filter, or `None` when it does not restrict the key.
    fn pins(&self, e: &Expr, depth: u32) -> Option<Vec<Pin>> {
        if depth > MAX_DEPTH * 4 {
            return None;
        }
        match e {
            Expr::BinaryOp {
                op: op @ (BinaryOperator::And | BinaryOperator::Or),
                ..
            } => {
                let mut out: Option<Vec<Pin>> = None;
                for operand in flatten(e, op) {
                    match (self.pins(operand, depth + 1), op) {
                        (Some(p), _) => union(out.get_or_insert_with(Vec::new), p),
                        // An AND is pinned by any of its operands; an OR needs all of them.
                        (None, BinaryOperator::And) => {}
                        (None, _) => return None,
                    }
                }
                out
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => self.equality(left, right),
            Expr::IsNotDistinctFrom(left, right) => self.equality(left, right),
            Expr::Nested(inner) => self.pins(inner, depth + 1),
            Expr::InList {
                expr,
                list,
                negated: false,
            } if self.is_key(expr) => list
                .iter()
                .map(|e| self.value(e).map(Pin::Scalar))
                .collect(),
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } if self.is_key(left) => self.any_of(right),
            _ => None,
        }
    }

    fn equality(&self, left: &Expr, right: &Expr) -> Option<Vec<Pin>> {
        let v = if self.is_key(left) {
            self.value(right)?
        } else if self.is_key(right) {
            self.value(left)?
        } else {
            return None;
        };
        Some(vec![Pin::Scalar(v)])
    }

    /// The right side of `key = ANY(…)`: an ARRAY[…] of values, or one array value.
    fn any_of(&self, e: &Expr) -> Option<Vec<Pin>> {
        match unwrap_casts(e) {
            Expr::Array(a) => a
                .elem
                .iter()
                .map(|e| self.value(e).map(Pin::Scalar))
                .collect(),
            _ => self.value(e).map(|v| vec![Pin::Array(v)]),
        }
    }

    /// A literal or parameter, possibly cast (`'…'::uuid`, `$1::bigint`).
    fn value(&self, e: &Expr) -> Option<ValueRef> {
        match unwrap_casts(e) {
            Expr::Value(v) => self.values.value_ref(v),
            Expr::TypedString(t) => self.values.value_ref(&t.value),
            _ => None,
        }
    }

    fn is_key(&self, e: &Expr) -> bool {
        match e {
            Expr::Identifier(id) => self.ident_is_key(id),
            Expr::CompoundIdentifier(parts) => parts.last().is_some_and(|id| self.ident_is_key(id)),
            Expr::Nested(inner) => self.is_key(inner),
            _ => false,
        }
    }

    fn is_key_name(&self, name: &ObjectName) -> bool {
        name.0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|id| self.ident_is_key(id))
    }

    /// Unquoted names fold to lower case, as Postgres folds them; quoted ones match exactly.
    fn ident_is_key(&self, id: &Ident) -> bool {
        match id.quote_style {
            Some(_) => id.value == self.key,
            None => id.value.eq_ignore_ascii_case(self.key),
        }
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        name.0.len() == 1
            && name.0[0]
                .as_ident()
                .is_some_and(|id| self.ctes.contains(&ident_name(id)))
    }

    fn is_cte_str(&self, name: &str) -> bool {
        self.ctes.iter().any(|c| c.eq_ignore_ascii_case(name))
    }
}

/// `e` without the casts and parentheses around it (a loop: `x::a::b::…` chains are deep).
fn unwrap_casts(mut e: &Expr) -> &Expr {
    while let Expr::Cast { expr: inner, .. } | Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

/// The operands of a chain of one operator (`a AND b AND c`), without recursion: long
/// generated chains parse into trees as deep as they are long.
fn flatten<'e>(e: &'e Expr, op: &BinaryOperator) -> Vec<&'e Expr> {
    let mut out = Vec::new();
    let mut todo = vec![e];
    while let Some(e) = todo.pop() {
        match e {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                todo.push(right);
                todo.push(left);
            }
            other => out.push(other),
        }
    }
    out
}

#[derive(Default)]
struct FromScan<'e> {
    real_table: bool,
    /// Covers of derived tables.
    parts: Vec<Cover>,
    /// WHERE and inner-join ON expressions.
    filters: Vec<&'e Expr>,
}

/// A name as Postgres sees it: lowercased unless it was quoted.
pub(crate) fn ident_name(id: &Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_ascii_lowercase(),
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
