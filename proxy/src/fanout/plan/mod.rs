//! The fan-out planner: one SELECT without a tenant → the SQL every shard runs and the recipe
//! that merges the shards' rows into exactly what one Postgres holding all the data would
//! return, or the construct that cannot be merged exactly ([`Unsupported`], SG004).
//!
//! A shard row is the client's visible columns, then [`MergePlan::hidden`] helper columns the
//! planner appended to the select list: ORDER BY keys that are not selected, GROUP BY keys
//! that are not selected, aggregates that only ORDER BY or HAVING use, and the `sum`/`count`
//! behind each `avg`. The shard SQL is the original text unless something had to change
//! (helper columns, HAVING, LIMIT/OFFSET); then it is the AST printed again.
//!
//! Planned: plain rows (concatenated or k-way merged on ORDER BY), LIMIT/OFFSET/FETCH FIRST
//! (constants or `$n`), DISTINCT, GROUP BY with `count`, `sum`, `min`, `max`, `avg` (FILTER
//! allowed, `count(DISTINCT <key column>)` too), HAVING over group keys and those aggregates,
//! joins of sharded tables on the key column, and global tables anywhere.
//!
//! Refused, because no merge of per-shard results is exact: window functions, other
//! aggregates and DISTINCT aggregates, expressions over aggregates, GROUPING SETS/ROLLUP/CUBE,
//! set operations, DISTINCT ON, subqueries and CTEs that read a sharded table, joins of
//! sharded tables not on the key, FOR UPDATE, SELECT INTO, TABLESAMPLE, COLLATE in ORDER BY.
//! When unsure, the planner refuses: an SG004 is better than a wrong answer.
//!
//! Known limits, all for lack of a schema: a user-defined aggregate is taken for a plain
//! function (aggregates are told apart by name); an aggregate inside a subquery that only
//! reads outer columns (which makes the outer query an aggregate one) is not noticed; and a
//! GROUP BY name that is both an output alias and an input column the alias's expression does
//! not mention is taken for the alias (Postgres takes the input column).

mod exclude;
mod expr;
mod from;
mod limit;
mod select;

use std::fmt;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Distinct, Ident, LimitClause, OrderByExpr, OrderByKind, Query, Select, SelectFlavor,
    SelectItem, SetExpr, Statement, Visit,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use exclude::exclude_tenants;
use expr::ident_name;
use from::{FromScan, NestedScan};
use limit::{Limits, shard_limit};
use select::{Builder, Helper};

/// What the planner needs to know about the schema.
#[derive(Clone, Copy)]
pub struct PlanContext<'a> {
    /// The shard-key column, e.g. `tenant_id`.
    pub key_column: &'a str,
    /// Table name (unqualified, lowercased) → whether it holds tenant rows.
    pub is_sharded: &'a dyn Fn(&str) -> bool,
}

/// A construct whose cross-shard result cannot be merged exactly (SG004).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// What was refused, e.g. `window function row_number()` or `count(DISTINCT email)`.
    pub construct: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot merge across shards: {}", self.construct)
    }
}

impl std::error::Error for Unsupported {}

/// A column of a shard row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRef {
    /// The i-th visible column.
    Visible(usize),
    /// The j-th appended helper column: field `row_len - hidden + j`. Needed because with
    /// `SELECT *` the visible count is unknown until the RowDescription arrives.
    Hidden(usize),
}

/// One ORDER BY key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub col: ColumnRef,
    pub desc: bool,
    /// Defaults as in Postgres: NULLS LAST for ASC, NULLS FIRST for DESC.
    pub nulls_first: bool,
}

/// A LIMIT or OFFSET value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Const(u64),
    /// `$n` (1-based), known at Bind.
    Param(usize),
}

/// How the shards' values of one column combine into the merged group's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// A GROUP BY key column: part of the group identity.
    Key,
    /// count(*) / count(x) / count(DISTINCT key_column): sum the shards' int8 counts.
    Count,
    /// sum(x): add the shards' sums (NULL only if all are NULL).
    Sum,
    /// Keep the least non-NULL value.
    Min,
    /// Keep the greatest non-NULL value.
    Max,
    /// avg(x): this column's own shard value is ignored; the result is total sum / total
    /// count of the two helper columns.
    Avg { sum: ColumnRef, count: ColumnRef },
}

/// How grouped rows merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// One entry per shard-row column, visible columns first then hidden ones, in order.
    pub columns: Vec<Combine>,
    /// HAVING, evaluated by the proxy on merged groups (shards get no HAVING).
    pub having: Option<Predicate>,
}

/// A HAVING condition over merged group columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
    Cmp {
        left: Operand,
        op: CmpOp,
        right: Operand,
    },
    IsNull {
        operand: Operand,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Column(ColumnRef),
    /// Literal text as written, e.g. `5`, `2.5`, `abc` (a string without its quotes).
    Literal(String),
    Null,
}

/// The SQL each shard runs and how the proxy merges what comes back.
#[derive(Debug, Clone, PartialEq)]
pub struct MergePlan {
    /// The original text, byte for byte, when nothing needed rewriting.
    pub shard_sql: String,
    /// Trailing helper columns the proxy drops before the client sees rows.
    pub hidden: usize,
    /// Empty: no ORDER BY.
    pub order: Vec<SortKey>,
    pub limit: Option<Bound>,
    pub offset: Option<Bound>,
    /// SELECT DISTINCT (over the visible columns).
    pub distinct: bool,
    /// Some when the query has aggregates, GROUP BY or HAVING.
    pub grouping: Option<Grouping>,
}

/// Plans one SELECT for every shard. Pure: parses `sql` and looks at nothing else.
pub fn plan(sql: &str, ctx: &PlanContext) -> Result<MergePlan, Unsupported> {
    let unparsable = || refuse("statement the planner cannot parse");
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|_| unparsable())?;
    let [stmt] = stmts.as_mut_slice() else {
        return Err(unparsable());
    };
    let mut scan = NestedScan {
        ctx,
        depth: 0,
        statements: 0,
    };
    if let ControlFlow::Break(refused) = Visit::visit(&*stmt, &mut scan) {
        return Err(refused);
    }
    let Statement::Query(query) = stmt else {
        return Err(refuse("statement other than SELECT"));
    };
    let (mut plan, rewritten) = plan_query(query, ctx)?;
    if rewritten {
        let text = stmt.to_string();
        // The printed AST must be one statement the shards can parse; else refuse.
        match Parser::parse_sql(&PostgreSqlDialect {}, &text) {
            Ok(again) if again.len() == 1 => plan.shard_sql = text,
            _ => return Err(refuse("statement the planner cannot rewrite")),
        }
    } else {
        plan.shard_sql = sql.to_string();
    }
    Ok(plan)
}

fn refuse(construct: impl Into<String>) -> Unsupported {
    Unsupported {
        construct: construct.into(),
    }
}

/// Plans the top-level query, rewriting it in place where the shards need other SQL.
/// Returns the plan (without `shard_sql`) and whether the query was changed.
fn plan_query(q: &mut Query, ctx: &PlanContext) -> Result<(MergePlan, bool), Unsupported> {
    if let Some(lock) = q.locks.first() {
        return Err(refuse(lock.to_string()));
    }
    if q.for_clause.is_some()
        || q.settings.is_some()
        || q.format_clause.is_some()
        || !q.pipe_operators.is_empty()
    {
        return Err(refuse("query clause Postgres does not have"));
    }
    let limits = Limits::of(q)?;
    let ctes: Vec<String> = q
        .with
        .iter()
        .flat_map(|w| &w.cte_tables)
        .map(|c| ident_name(&c.alias.name))
        .collect();
    let Query {
        body,
        order_by,
        limit_clause,
        fetch,
        ..
    } = q;
    let select = match body.as_mut() {
        SetExpr::Select(s) => s,
        SetExpr::SetOperation { op, .. } => return Err(refuse(op.to_string())),
        SetExpr::Values(_) => return Err(refuse("VALUES")),
        SetExpr::Query(_) => return Err(refuse("parenthesized SELECT")),
        SetExpr::Table(_) => return Err(refuse("TABLE")),
        _ => return Err(refuse("data-modifying statement")),
    };
    check_select(select)?;
    let keys: &[OrderByExpr] = match order_by.as_ref().map(|o| &o.kind) {
        None => &[],
        Some(OrderByKind::Expressions(keys)) => keys,
        Some(OrderByKind::All(_)) => return Err(refuse("ORDER BY ALL")),
    };
    let from = FromScan::check(select, ctx, &ctes)?;
    let b = Builder::new(&select.projection, ctx.key_column, from)?;
    let (plan, helpers) = merge_plan(select, keys, b, &limits)?;

    let mut rewritten = select.having.take().is_some();
    if plan.grouping.is_some() || plan.distinct {
        // The proxy limits after merging groups or duplicates: shards return them all.
        rewritten |= limit_clause.take().is_some();
        rewritten |= fetch.take().is_some();
    } else if limits.has_offset {
        // Shards skip nothing: the first n + m rows of each can hold the merged first n + m.
        *limit_clause =
            shard_limit(limits.limit, limits.offset).map(|e| LimitClause::LimitOffset {
                limit: Some(e),
                offset: None,
                limit_by: Vec::new(),
            });
        *fetch = None;
        rewritten = true;
    }
    for (j, h) in helpers.into_iter().enumerate() {
        select.projection.push(SelectItem::ExprWithAlias {
            expr: h.expr,
            alias: Ident::with_quote('"', format!("?sg_{}_{j}", h.role)),
        });
        rewritten = true;
    }
    Ok((plan, rewritten))
}

/// The merge recipe of a SELECT whose FROM was checked, and the helper columns it needs.
fn merge_plan(
    select: &Select,
    keys: &[OrderByExpr],
    mut b: Builder,
    limits: &Limits,
) -> Result<(MergePlan, Vec<Helper>), Unsupported> {
    b.grouped = b.is_grouped(select, keys)?;
    let mut visible = Vec::new();
    if b.grouped {
        b.group_keys(&select.group_by)?;
        visible = b.visible_combines()?;
    }
    let order = keys
        .iter()
        .map(|k| b.sort_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let having = match (&select.having, b.grouped) {
        (Some(h), true) => Some(b.predicate(h)?),
        _ => None,
    };
    let distinct = match &select.distinct {
        None | Some(Distinct::All) => false,
        Some(Distinct::Distinct) => true,
        Some(Distinct::On(_)) => return Err(refuse("DISTINCT ON")),
    };
    if distinct && order.iter().any(|k| matches!(k.col, ColumnRef::Hidden(_))) {
        // Postgres refuses it; a helper column would change what DISTINCT compares.
        return Err(refuse(
            "ORDER BY expression not in the SELECT DISTINCT list",
        ));
    }
    let grouping = b.grouped.then(|| Grouping {
        columns: visible
            .into_iter()
            .chain(b.hidden.iter().map(|h| h.combine))
            .collect(),
        having,
    });
    let plan = MergePlan {
        shard_sql: String::new(),
        hidden: b.hidden.len(),
        order,
        limit: limits.limit,
        offset: limits.offset,
        distinct,
        grouping,
    };
    Ok((plan, b.hidden))
}

/// Refuses SELECT clauses that change what the merge must do or that Postgres does not have.
fn check_select(s: &Select) -> Result<(), Unsupported> {
    if s.into.is_some() {
        return Err(refuse("SELECT INTO"));
    }
    let foreign = s.top.is_some()
        || s.exclude.is_some()
        || s.select_modifiers.is_some()
        || !s.optimizer_hints.is_empty()
        || !s.lateral_views.is_empty()
        || s.prewhere.is_some()
        || !s.connect_by.is_empty()
        || !s.cluster_by.is_empty()
        || !s.distribute_by.is_empty()
        || !s.sort_by.is_empty()
        || s.qualify.is_some()
        || s.value_table_mode.is_some()
        || !matches!(s.flavor, SelectFlavor::Standard);
    if foreign {
        return Err(refuse("SELECT clause Postgres does not have"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
