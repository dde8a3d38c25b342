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

use std::fmt;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Distinct, DuplicateTreatment, Expr, Function, FunctionArg,
    FunctionArgExpr, FunctionArgumentClause, FunctionArguments, GroupByExpr, Ident, JoinConstraint,
    JoinOperator, LimitClause, ObjectName, OrderByExpr, OrderByKind, OrderBySort, Query, Select,
    SelectFlavor, SelectItem, SetExpr, Statement, TableFactor, TableWithJoins, UnaryOperator,
    Value, Visit, VisitMut, Visitor, VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

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

/// LIMIT / OFFSET / FETCH FIRST as the client wrote them.
struct Limits {
    limit: Option<Bound>,
    offset: Option<Bound>,
    /// An OFFSET clause is present (even `OFFSET 0` or `OFFSET NULL`).
    has_offset: bool,
}

impl Limits {
    fn of(q: &Query) -> Result<Limits, Unsupported> {
        let mut l = Limits {
            limit: None,
            offset: None,
            has_offset: false,
        };
        let mut has_limit = false;
        match &q.limit_clause {
            None => {}
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                if !limit_by.is_empty() {
                    return Err(refuse("LIMIT BY"));
                }
                if let Some(e) = limit {
                    l.limit = bound(e)?;
                    has_limit = true;
                }
                if let Some(o) = offset {
                    l.offset = bound(&o.value)?;
                    l.has_offset = true;
                }
            }
            Some(LimitClause::OffsetCommaLimit { .. }) => return Err(refuse("LIMIT m, n")),
        }
        if let Some(f) = &q.fetch {
            if f.with_ties || f.percent || has_limit {
                return Err(refuse(f.to_string()));
            }
            l.limit = match &f.quantity {
                None => Some(Bound::Const(1)),
                Some(e) => bound(e)?,
            };
        }
        Ok(l)
    }
}

/// A LIMIT/OFFSET value: a non-negative integer literal, `$n`, or NULL (no bound).
fn bound(e: &Expr) -> Result<Option<Bound>, Unsupported> {
    let bad = || refuse(format!("LIMIT/OFFSET value {e}"));
    let Expr::Value(v) = e else {
        return Err(bad());
    };
    match &v.value {
        Value::Null => Ok(None),
        Value::Number(n, false) => match n.parse::<u64>() {
            Ok(n) if n <= i64::MAX as u64 => Ok(Some(Bound::Const(n))),
            _ => Err(bad()),
        },
        Value::Placeholder(p) => match p.strip_prefix('$').map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => Ok(Some(Bound::Param(n))),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The shards' LIMIT for plain rows: n + m, so the merge can skip m and keep n. `None` when
/// there is no limit (or n + m overflows bigint: the shards then return everything).
fn shard_limit(limit: Option<Bound>, offset: Option<Bound>) -> Option<Expr> {
    let number = |n: u64| Expr::value(Value::Number(n.to_string(), false));
    // `$1 + $2` alone leaves Postgres unable to pick the operator; LIMIT infers bigint anyway.
    let term = |b: Bound| match b {
        Bound::Const(n) => number(n),
        Bound::Param(n) => Expr::Cast {
            kind: CastKind::DoubleColon,
            expr: Box::new(Expr::value(Value::Placeholder(format!("${n}")))),
            data_type: DataType::BigInt(None),
            format: None,
        },
    };
    match (limit?, offset) {
        (l, None) => Some(term(l)),
        (Bound::Const(n), Some(Bound::Const(m))) => n
            .checked_add(m)
            .filter(|s| *s <= i64::MAX as u64)
            .map(number),
        (l, Some(o)) => Some(Expr::BinaryOp {
            left: Box::new(term(l)),
            op: BinaryOperator::Plus,
            right: Box::new(term(o)),
        }),
    }
}

/// The aggregates the merge can recombine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agg {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

/// Postgres's built-in aggregates (and GROUPING), by name: any of them other than the five
/// the merge recombines is refused.
const AGGREGATES: &str = "any_value array_agg avg bit_and bit_or bit_xor bool_and bool_or corr \
    count covar_pop covar_samp cume_dist dense_rank every grouping json_agg json_agg_strict \
    json_arrayagg json_object_agg json_object_agg_strict json_object_agg_unique \
    json_object_agg_unique_strict json_objectagg jsonb_agg jsonb_agg_strict jsonb_object_agg \
    jsonb_object_agg_strict jsonb_object_agg_unique jsonb_object_agg_unique_strict max min mode \
    percent_rank percentile_cont percentile_disc range_agg range_intersect_agg rank regr_avgx \
    regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy stddev \
    stddev_pop stddev_samp string_agg sum var_pop var_samp variance xmlagg";

/// A select-list entry with a known expression.
struct Item {
    expr: Expr,
    folded: Expr,
    /// Its output column name (alias, or the column a bare reference names).
    name: Option<String>,
    /// The explicit alias.
    alias: Option<String>,
    /// Its visible column index; `None` after a wildcard.
    pos: Option<usize>,
}

/// A helper column appended to the shard's select list.
struct Helper {
    expr: Expr,
    folded: Expr,
    /// Names the column alias `?sg_<role>_<j>`.
    role: &'static str,
    /// Meaningful in grouped queries only.
    combine: Combine,
}

/// Matches ORDER BY, GROUP BY and HAVING against the select list and collects helper columns.
struct Builder<'p> {
    key: &'p str,
    from: FromFacts,
    items: Vec<Item>,
    wildcard: bool,
    grouped: bool,
    /// Visible columns a GROUP BY entry names by position or alias.
    keyed: Vec<bool>,
    /// Folded GROUP BY expressions.
    group_exprs: Vec<Expr>,
    hidden: Vec<Helper>,
}

impl<'p> Builder<'p> {
    fn new(projection: &[SelectItem], key: &'p str, from: FromFacts) -> Result<Self, Unsupported> {
        let mut b = Builder {
            key,
            from,
            items: Vec::new(),
            wildcard: false,
            grouped: false,
            keyed: Vec::new(),
            group_exprs: Vec::new(),
            hidden: Vec::new(),
        };
        for p in projection {
            let (expr, alias) = match p {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(ident_name(alias))),
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    b.wildcard = true;
                    continue;
                }
                SelectItem::ExprWithAliases { .. } => return Err(refuse(p.to_string())),
            };
            let name = alias.clone().or_else(|| implicit_name(expr));
            b.items.push(Item {
                folded: b.fold(expr),
                expr: expr.clone(),
                name,
                alias,
                pos: (!b.wildcard).then_some(b.items.len()),
            });
        }
        b.keyed = vec![false; b.items.len()];
        Ok(b)
    }

    /// `e` for comparing: unquoted names lowercased, `t.x` as `x` when `t` is the only table.
    fn fold(&self, e: &Expr) -> Expr {
        let mut e = e.clone();
        let mut fold = Fold {
            single_ref: self.from.single_ref.as_deref(),
            depth: 0,
        };
        let _ = VisitMut::visit(&mut e, &mut fold);
        e
    }

    fn is_grouped(&self, s: &Select, keys: &[OrderByExpr]) -> Result<bool, Unsupported> {
        let no_group_by =
            matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
        let mut grouped = s.having.is_some() || !no_group_by;
        for e in self
            .items
            .iter()
            .map(|i| &i.expr)
            .chain(keys.iter().map(|k| &k.expr))
        {
            grouped |= self.has_aggregate(e)?;
        }
        if grouped && self.wildcard {
            return Err(refuse("SELECT * with GROUP BY or aggregates"));
        }
        Ok(grouped)
    }

    /// Records the GROUP BY keys: visible columns they name, hidden Key columns for the rest.
    fn group_keys(&mut self, group_by: &GroupByExpr) -> Result<(), Unsupported> {
        let exprs = match group_by {
            GroupByExpr::All(_) => return Err(refuse("GROUP BY ALL")),
            GroupByExpr::Expressions(_, mods) if !mods.is_empty() => {
                return Err(refuse(format!("GROUP BY {}", mods[0])));
            }
            GroupByExpr::Expressions(exprs, _) => exprs,
        };
        for g in exprs {
            match g {
                Expr::GroupingSets(_) => return Err(refuse("GROUPING SETS")),
                Expr::Rollup(_) => return Err(refuse("ROLLUP")),
                Expr::Cube(_) => return Err(refuse("CUBE")),
                Expr::Tuple(_) => return Err(refuse(format!("GROUP BY {g}"))),
                _ => {}
            }
            let target = match ordinal(g) {
                Some(n) => Some(
                    n.checked_sub(1)
                        .filter(|&i| i < self.items.len())
                        .ok_or_else(|| refuse(format!("GROUP BY position {n}")))?,
                ),
                None => self.alias_target(g),
            };
            let key = target.map_or(g, |i| &self.items[i].expr);
            if self.has_aggregate(key)? {
                return Err(refuse(format!("aggregate in GROUP BY {g}")));
            }
            if let Some(i) = target {
                self.keyed[i] = true;
                continue;
            }
            let folded = self.fold(g);
            let selected = self.items.iter().any(|it| it.folded == folded);
            if !selected && !self.hidden.iter().any(|h| h.folded == folded) {
                self.push(g, "key", Combine::Key);
            }
            self.group_exprs.push(folded);
        }
        Ok(())
    }

    /// The item a GROUP BY name means when it is an output alias. Postgres prefers an input
    /// column of that name, so an alias whose own expression mentions such a column is not it.
    fn alias_target(&self, g: &Expr) -> Option<usize> {
        let Expr::Identifier(id) = g else {
            return None;
        };
        let name = ident_name(id);
        self.items.iter().position(|it| {
            it.alias.as_deref() == Some(name.as_str())
                && it.folded != self.fold(g)
                && !mentions_column(&it.expr, &name)
        })
    }

    /// The combine of each visible column of a grouped query.
    fn visible_combines(&mut self) -> Result<Vec<Combine>, Unsupported> {
        let mut out = Vec::with_capacity(self.items.len());
        for i in 0..self.items.len() {
            let it = &self.items[i];
            let is_key = self.keyed[i] || self.group_exprs.contains(&it.folded);
            if is_key || is_constant(&it.expr) {
                out.push(Combine::Key);
                continue;
            }
            let expr = it.expr.clone();
            let combine = match self.aggregate(&expr)? {
                Some((Agg::Avg, f)) => self.avg_helpers(f),
                Some((agg, _)) => simple_combine(agg),
                None if self.has_aggregate(&expr)? => {
                    return Err(refuse("expression over aggregates"));
                }
                None => {
                    return Err(refuse(format!(
                        "select item {expr} (neither a GROUP BY key nor an aggregate)"
                    )));
                }
            };
            out.push(combine);
        }
        Ok(out)
    }

    fn sort_key(&mut self, k: &OrderByExpr) -> Result<SortKey, Unsupported> {
        let desc = match &k.options.sort {
            None | Some(OrderBySort::Asc) => false,
            Some(OrderBySort::Desc) => true,
            Some(OrderBySort::Using(op)) => return Err(refuse(format!("ORDER BY ... USING {op}"))),
        };
        if k.with_fill.is_some() {
            return Err(refuse("ORDER BY ... WITH FILL"));
        }
        let col = self.order_col(&k.expr)?;
        let target = match col {
            ColumnRef::Visible(i) => &self.items[i].expr,
            ColumnRef::Hidden(j) => &self.hidden[j].expr,
        };
        if has_collate(&k.expr) || has_collate(target) {
            return Err(refuse("COLLATE in ORDER BY"));
        }
        Ok(SortKey {
            col,
            desc,
            nulls_first: k.options.nulls_first.unwrap_or(desc),
        })
    }

    /// An ORDER BY key: a position, an output column name, or an expression.
    fn order_col(&mut self, e: &Expr) -> Result<ColumnRef, Unsupported> {
        if let Some(n) = ordinal(e) {
            let i = n.wrapping_sub(1);
            return match self.items.get(i).and_then(|it| it.pos) {
                Some(pos) if pos == i => Ok(ColumnRef::Visible(i)),
                _ if self.wildcard => Err(refuse("ORDER BY position with SELECT *")),
                _ => Err(refuse(format!("ORDER BY position {n}"))),
            };
        }
        if let Expr::Identifier(id) = e {
            let name = ident_name(id);
            if let Some(it) = self.items.iter().find(|it| it.name.as_ref() == Some(&name)) {
                return match it.pos {
                    Some(i) => Ok(ColumnRef::Visible(i)),
                    None => {
                        let expr = it.expr.clone();
                        self.column(&expr, "ORDER BY")
                    }
                };
            }
        }
        self.column(e, "ORDER BY")
    }

    /// The column holding `e`: a visible one equal to it, a helper already appended, or a new
    /// helper (in a grouped query only for an aggregate call).
    fn column(&mut self, e: &Expr, clause: &str) -> Result<ColumnRef, Unsupported> {
        let folded = self.fold(e);
        if let Some(i) = self
            .items
            .iter()
            .filter(|it| it.folded == folded)
            .find_map(|it| it.pos)
        {
            return Ok(ColumnRef::Visible(i));
        }
        if let Some(j) = self.hidden.iter().position(|h| h.folded == folded) {
            return Ok(ColumnRef::Hidden(j));
        }
        if !self.grouped {
            return Ok(ColumnRef::Hidden(self.push(e, "sort", Combine::Key)));
        }
        match self.aggregate(e)? {
            Some((agg, f)) => {
                let j = self.push(e, "agg", simple_combine(agg));
                if agg == Agg::Avg {
                    self.hidden[j].combine = self.avg_helpers(f);
                }
                Ok(ColumnRef::Hidden(j))
            }
            None if self.has_aggregate(e)? => Err(refuse("expression over aggregates")),
            None => Err(refuse(format!(
                "{clause} expression {e} (neither a GROUP BY key nor an aggregate)"
            ))),
        }
    }

    /// Appends a helper column; returns its hidden index.
    fn push(&mut self, e: &Expr, role: &'static str, combine: Combine) -> usize {
        self.hidden.push(Helper {
            folded: self.fold(e),
            expr: e.clone(),
            role,
            combine,
        });
        self.hidden.len() - 1
    }

    /// `sum(x)` and `count(x)` helpers for `avg(x)` (same FILTER), as its combine.
    fn avg_helpers(&mut self, avg: &Function) -> Combine {
        let mut call = |name: &str, role, combine| {
            let mut f = avg.clone();
            f.name = ObjectName::from(vec![Ident::new(name)]);
            ColumnRef::Hidden(self.push(&Expr::Function(f), role, combine))
        };
        let sum = call("sum", "sum", Combine::Sum);
        let count = call("count", "count", Combine::Count);
        Combine::Avg { sum, count }
    }

    fn predicate(&mut self, e: &Expr) -> Result<Predicate, Unsupported> {
        let pair = |b: &mut Self, l: &Expr, r: &Expr| -> Result<_, Unsupported> {
            Ok((Box::new(b.predicate(l)?), Box::new(b.predicate(r)?)))
        };
        Ok(match e {
            Expr::Nested(inner) => self.predicate(inner)?,
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And => {
                    let (l, r) = pair(self, left, right)?;
                    Predicate::And(l, r)
                }
                BinaryOperator::Or => {
                    let (l, r) = pair(self, left, right)?;
                    Predicate::Or(l, r)
                }
                _ => Predicate::Cmp {
                    op: cmp_op(op).ok_or_else(|| refuse(format!("HAVING expression {e}")))?,
                    left: self.operand(left)?,
                    right: self.operand(right)?,
                },
            },
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Predicate::Not(Box::new(self.predicate(expr)?)),
            Expr::IsNull(x) | Expr::IsNotNull(x) => Predicate::IsNull {
                operand: self.operand(x)?,
                negated: matches!(e, Expr::IsNotNull(_)),
            },
            _ => return Err(refuse(format!("HAVING expression {e}"))),
        })
    }

    fn operand(&mut self, e: &Expr) -> Result<Operand, Unsupported> {
        let literal = |v: &Value| match v {
            Value::Number(n, false) => Some(Operand::Literal(n.clone())),
            Value::SingleQuotedString(s) => Some(Operand::Literal(s.clone())),
            Value::Null => Some(Operand::Null),
            _ => None,
        };
        match e {
            Expr::Nested(inner) => self.operand(inner),
            Expr::Value(v) => {
                literal(&v.value).ok_or_else(|| refuse(format!("HAVING expression {e}")))
            }
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match expr.as_ref() {
                Expr::Value(v) if matches!(v.value, Value::Number(..)) => {
                    Ok(Operand::Literal(format!("-{}", v.value)))
                }
                _ => Err(refuse(format!("HAVING expression {e}"))),
            },
            _ => self.column(e, "HAVING").map(Operand::Column),
        }
    }

    /// `e` as one mergeable aggregate call (parentheses allowed), with the call itself.
    fn aggregate<'e>(&self, e: &'e Expr) -> Result<Option<(Agg, &'e Function)>, Unsupported> {
        match e {
            Expr::Nested(inner) => self.aggregate(inner),
            Expr::Function(f) => Ok(self.call(f)?.map(|a| (a, f))),
            _ => Ok(None),
        }
    }

    /// Whether `f` is an aggregate call the merge can recombine; refuses other aggregates.
    fn call(&self, f: &Function) -> Result<Option<Agg>, Unsupported> {
        let name = f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(ident_name)
            .unwrap_or_default();
        if f.over.is_some()
            || (!AGGREGATES.split_whitespace().any(|a| a == name) && f.within_group.is_empty())
        {
            return Ok(None);
        }
        let agg = match name.as_str() {
            _ if !f.within_group.is_empty() => None,
            "count" => Some(Agg::Count),
            "sum" => Some(Agg::Sum),
            "min" => Some(Agg::Min),
            "max" => Some(Agg::Max),
            "avg" => Some(Agg::Avg),
            _ => None,
        }
        .ok_or_else(|| refuse(format!("aggregate {name}")))?;
        let FunctionArguments::List(list) = &f.args else {
            return Err(refuse(f.to_string()));
        };
        if list
            .clauses
            .iter()
            .any(|c| matches!(c, FunctionArgumentClause::OrderBy(_)))
        {
            return Err(refuse(format!("ORDER BY inside aggregate {name}()")));
        }
        let odd = !list.clauses.is_empty()
            || f.null_treatment.is_some()
            || !matches!(f.parameters, FunctionArguments::None);
        let distinct = list.duplicate_treatment == Some(DuplicateTreatment::Distinct);
        let ok = match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] => agg == Agg::Count && !distinct,
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] => match agg {
                // Each tenant's rows are on one shard: distinct tenants never repeat across shards.
                Agg::Count if distinct => self.is_key_ref(arg),
                Agg::Min | Agg::Max => true,
                _ => !distinct,
            },
            _ => false,
        };
        if odd || !ok {
            return Err(refuse(f.to_string()));
        }
        Ok(Some(agg))
    }

    /// Whether `e` calls an aggregate outside any subquery (refusing ones the merge cannot do).
    fn has_aggregate(&self, e: &Expr) -> Result<bool, Unsupported> {
        let mut found = false;
        let flow = visit_calls(e, |f| match self.call(f) {
            Ok(agg) => {
                found |= agg.is_some();
                ControlFlow::Continue(())
            }
            Err(refused) => ControlFlow::Break(refused),
        });
        match flow {
            ControlFlow::Break(refused) => Err(refused),
            ControlFlow::Continue(()) => Ok(found),
        }
    }

    /// The key column of a sharded table: `tenant_id`, or `o.tenant_id` with `o` sharded.
    fn is_key_ref(&self, e: &Expr) -> bool {
        match e {
            Expr::Identifier(id) => ident_is(id, self.key),
            Expr::CompoundIdentifier(p) if p.len() >= 2 => {
                ident_is(&p[p.len() - 1], self.key)
                    && self
                        .from
                        .sharded_refs
                        .contains(&ident_name(&p[p.len() - 2]))
            }
            Expr::Nested(inner) => self.is_key_ref(inner),
            _ => false,
        }
    }
}

fn simple_combine(agg: Agg) -> Combine {
    match agg {
        Agg::Count => Combine::Count,
        Agg::Sum => Combine::Sum,
        Agg::Min => Combine::Min,
        Agg::Max => Combine::Max,
        // Replaced by the real one once the helpers exist.
        Agg::Avg => Combine::Key,
    }
}

fn cmp_op(op: &BinaryOperator) -> Option<CmpOp> {
    Some(match op {
        BinaryOperator::Eq => CmpOp::Eq,
        BinaryOperator::NotEq => CmpOp::NotEq,
        BinaryOperator::Lt => CmpOp::Lt,
        BinaryOperator::LtEq => CmpOp::LtEq,
        BinaryOperator::Gt => CmpOp::Gt,
        BinaryOperator::GtEq => CmpOp::GtEq,
        _ => return None,
    })
}

/// The column name Postgres gives an unaliased item, where it is simple to tell.
fn implicit_name(e: &Expr) -> Option<String> {
    let last = match e {
        Expr::Identifier(id) => id,
        Expr::CompoundIdentifier(parts) => parts.last()?,
        Expr::Function(f) => f.name.0.last()?.as_ident()?,
        _ => return None,
    };
    Some(ident_name(last))
}

/// `n` when `e` is the integer literal of an ORDER BY / GROUP BY position.
fn ordinal(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, false) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The same on every shard: a literal or parameter, possibly cast.
fn is_constant(e: &Expr) -> bool {
    match e {
        Expr::Value(_) | Expr::TypedString(_) => true,
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => is_constant(inner),
        _ => false,
    }
}

fn has_collate(e: &Expr) -> bool {
    let flow = sqlparser::ast::visit_expressions(e, |e| match e {
        Expr::Collate { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    flow.is_break()
}

/// Whether `e` names a column `name` (`name` or `t.name`), subqueries included.
fn mentions_column(e: &Expr, name: &str) -> bool {
    let flow = sqlparser::ast::visit_expressions(e, |e| {
        let last = match e {
            Expr::Identifier(id) => Some(id),
            Expr::CompoundIdentifier(parts) => parts.last(),
            _ => None,
        };
        match last {
            Some(id) if ident_name(id) == name => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    });
    flow.is_break()
}

/// Calls `f` on each function call in `e` that belongs to `e`'s own query level.
fn visit_calls<B>(e: &Expr, f: impl FnMut(&Function) -> ControlFlow<B>) -> ControlFlow<B> {
    struct Calls<F> {
        f: F,
        depth: usize,
    }
    impl<B, F: FnMut(&Function) -> ControlFlow<B>> Visitor for Calls<F> {
        type Break = B;
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<B> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<B> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<B> {
            match e {
                Expr::Function(call) if self.depth == 0 => (self.f)(call),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    Visit::visit(e, &mut Calls { f, depth: 0 })
}

/// Folds names for comparing expressions as Postgres would see them.
struct Fold<'a> {
    single_ref: Option<&'a str>,
    depth: usize,
}

impl VisitorMut for Fold<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::CompoundIdentifier(parts) = e {
            if let ([table, column], Some(single), 0) =
                (parts.as_slice(), self.single_ref, self.depth)
            {
                if ident_name(table) == single {
                    *e = Expr::Identifier(column.clone());
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_ident(&mut self, id: &mut Ident) -> ControlFlow<()> {
        if id.quote_style.take().is_none() {
            id.value.make_ascii_lowercase();
        }
        ControlFlow::Continue(())
    }
}

/// Walks the whole statement for what is refused wherever it appears: window functions,
/// sharded tables below the top level (subqueries, CTEs), TABLESAMPLE, data-modifying CTEs.
struct NestedScan<'c> {
    ctx: &'c PlanContext<'c>,
    depth: usize,
    statements: usize,
}

impl Visitor for NestedScan<'_> {
    type Break = Unsupported;

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<Unsupported> {
        self.depth += 1;
        // `TABLE t` names its table outside the relations the visitor reports.
        let mut todo = vec![q.body.as_ref()];
        while let Some(body) = todo.pop() {
            match body {
                SetExpr::SetOperation { left, right, .. } => todo.extend([&**left, &**right]),
                SetExpr::Table(t) => {
                    let table = t.table_name.as_deref().unwrap_or_default().to_lowercase();
                    if self.depth > 1 && sharded(self.ctx, &table) {
                        return ControlFlow::Break(refuse(format!(
                            "subquery over sharded table {table}"
                        )));
                    }
                }
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<Unsupported> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, _: &Statement) -> ControlFlow<Unsupported> {
        self.statements += 1;
        if self.statements > 1 {
            return ControlFlow::Break(refuse("data-modifying statement in WITH"));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<Unsupported> {
        // sqlparser reads `FROM ONLY t` as table `only` aliased `t`, which would hide `t`.
        if let [part] = name.0.as_slice() {
            if part
                .as_ident()
                .is_some_and(|id| id.quote_style.is_none() && ident_is(id, "only"))
            {
                return ControlFlow::Break(refuse("FROM ONLY"));
            }
        }
        // A CTE named like a sharded table is refused too: scoping is not worth the risk.
        let table = table_name(name);
        if self.depth > 1 && sharded(self.ctx, &table) {
            return ControlFlow::Break(refuse(format!("subquery over sharded table {table}")));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<Unsupported> {
        match t {
            TableFactor::Table {
                sample: Some(_), ..
            } => ControlFlow::Break(refuse("TABLESAMPLE")),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Unsupported> {
        match e {
            Expr::Function(f) if f.over.is_some() => {
                ControlFlow::Break(refuse(format!("window function {}()", f.name)))
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// What the top-level FROM tells the rest of the planner.
struct FromFacts {
    /// Reference names (alias or table name) of the sharded tables.
    sharded_refs: Vec<String>,
    /// The reference name of the only relation, if there is one: `t.x` and `x` are the same
    /// column then.
    single_ref: Option<String>,
}

/// One relation of the top-level FROM.
struct Rel {
    table: String,
    /// The name columns are qualified by: the alias, else the table name.
    refname: String,
    sharded: bool,
}

/// The top-level FROM: which relations are sharded and which key equalities join them.
struct FromScan<'c> {
    ctx: &'c PlanContext<'c>,
    ctes: &'c [String],
    rels: Vec<Rel>,
    /// Pairs of relations joined by `a.key = b.key` (ON, top-level WHERE) or USING (key).
    edges: Vec<(usize, usize)>,
}

impl<'c> FromScan<'c> {
    /// Checks that the FROM reads a sharded table and that all sharded tables in it are
    /// joined on the key, so every joined row combination lives on one shard.
    fn check(
        s: &Select,
        ctx: &'c PlanContext<'c>,
        ctes: &'c [String],
    ) -> Result<FromFacts, Unsupported> {
        let mut f = FromScan {
            ctx,
            ctes,
            rels: Vec::new(),
            edges: Vec::new(),
        };
        for twj in &s.from {
            f.join_tree(twj)?;
        }
        if let Some(w) = &s.selection {
            f.equalities(w);
        }
        let sharded: Vec<usize> = (0..f.rels.len()).filter(|&i| f.rels[i].sharded).collect();
        let Some(&first) = sharded.first() else {
            return Err(refuse("query reads no sharded table"));
        };
        let mut root: Vec<usize> = (0..f.rels.len()).collect();
        let find = |root: &[usize], mut i: usize| {
            while root[i] != i {
                i = root[i];
            }
            i
        };
        for &(a, b) in &f.edges {
            let (ra, rb) = (find(&root, a), find(&root, b));
            root[ra] = rb;
        }
        if let Some(&apart) = sharded
            .iter()
            .find(|&&i| find(&root, i) != find(&root, first))
        {
            return Err(refuse(format!(
                "join of sharded tables {} and {} not on {}",
                f.rels[first].table, f.rels[apart].table, ctx.key_column
            )));
        }
        Ok(FromFacts {
            sharded_refs: sharded.iter().map(|&i| f.rels[i].refname.clone()).collect(),
            single_ref: (f.rels.len() == 1).then(|| f.rels[0].refname.clone()),
        })
    }

    fn join_tree(&mut self, twj: &TableWithJoins) -> Result<(), Unsupported> {
        let start = self.rels.len();
        self.factor(&twj.relation)?;
        for join in &twj.joins {
            let right = self.rels.len();
            self.factor(&join.relation)?;
            let constraint = match &join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c) => c,
                _ => return Err(refuse("join Postgres does not have")),
            };
            match constraint {
                // Any join type: a row only ever meets rows of its own tenant, all on its shard.
                JoinConstraint::On(e) => self.equalities(e),
                JoinConstraint::Using(cols) if cols.iter().any(|c| self.names_key(c)) => {
                    for l in start..right {
                        for r in right..self.rels.len() {
                            self.edges.push((l, r));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn factor(&mut self, t: &TableFactor) -> Result<(), Unsupported> {
        match t {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                let table = table_name(name);
                let cte = name.0.len() == 1 && self.ctes.contains(&table);
                self.rels.push(Rel {
                    sharded: args.is_none() && !cte && sharded(self.ctx, &table),
                    refname: alias
                        .as_ref()
                        .map_or_else(|| table.clone(), |a| ident_name(&a.name)),
                    table,
                });
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.join_tree(table_with_joins)?,
            // Subqueries were checked to read no sharded table; functions read none.
            TableFactor::Derived { alias, .. }
            | TableFactor::Function { alias, .. }
            | TableFactor::UNNEST { alias, .. }
            | TableFactor::TableFunction { alias, .. } => self.rels.push(Rel {
                table: String::new(),
                refname: alias
                    .as_ref()
                    .map(|a| ident_name(&a.name))
                    .unwrap_or_default(),
                sharded: false,
            }),
            _ => return Err(refuse(format!("FROM item {t}"))),
        }
        Ok(())
    }

    /// Records `a.key = b.key` among the top-level AND operands of `e`.
    fn equalities(&mut self, e: &Expr) {
        let mut todo = vec![e];
        while let Some(e) = todo.pop() {
            match e {
                Expr::Nested(inner) => todo.push(inner),
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::And,
                    right,
                } => todo.extend([left.as_ref(), right.as_ref()]),
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Eq,
                    right,
                } => {
                    for a in self.key_of(left) {
                        for b in self.key_of(right) {
                            self.edges.push((a, b));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The sharded relations `e` (`t.key`) is the key column of.
    fn key_of(&self, e: &Expr) -> Vec<usize> {
        let Expr::CompoundIdentifier(p) = e else {
            return match e {
                Expr::Nested(inner) => self.key_of(inner),
                _ => Vec::new(),
            };
        };
        if p.len() < 2 || !ident_is(&p[p.len() - 1], self.ctx.key_column) {
            return Vec::new();
        }
        let qualifier = ident_name(&p[p.len() - 2]);
        (0..self.rels.len())
            .filter(|&i| self.rels[i].sharded && self.rels[i].refname == qualifier)
            .collect()
    }

    fn names_key(&self, c: &ObjectName) -> bool {
        c.0.last()
            .and_then(|p| p.as_ident())
            .is_some_and(|id| ident_is(id, self.ctx.key_column))
    }
}

/// Asks the catalog, also with the name lowercased (a quoted mixed-case name is never taken
/// for global when its lowercase form is sharded).
fn sharded(ctx: &PlanContext, table: &str) -> bool {
    (ctx.is_sharded)(table) || (ctx.is_sharded)(&table.to_lowercase())
}

/// The unqualified table name as Postgres sees it.
fn table_name(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(ident_name)
        .unwrap_or_default()
}

/// A name as Postgres sees it: lowercased unless it was quoted.
fn ident_name(id: &Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_ascii_lowercase(),
    }
}

/// Unquoted names fold to lower case; quoted ones match exactly.
fn ident_is(id: &Ident, name: &str) -> bool {
    match id.quote_style {
        Some(_) => id.value == name,
        None => id.value.eq_ignore_ascii_case(name),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
