//! Select-list matching: ORDER BY, GROUP BY and HAVING against the select list, the
//! aggregates the merge can recombine, and the helper columns the shards must add.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentClause, FunctionArguments, GroupByExpr, Ident, ObjectName, OrderByExpr,
    OrderBySort, Select, SelectItem, UnaryOperator, Value, VisitMut,
};

use super::expr::{
    Fold, has_collate, ident_is, ident_name, implicit_name, is_constant, mentions_column, ordinal,
    visit_calls,
};
use super::from::FromFacts;
use super::{CmpOp, ColumnRef, Combine, Operand, Predicate, SortKey, Unsupported, refuse};

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
pub(super) struct Helper {
    pub(super) expr: Expr,
    folded: Expr,
    /// Names the column alias `?sg_<role>_<j>`.
    pub(super) role: &'static str,
    /// Meaningful in grouped queries only.
    pub(super) combine: Combine,
}

/// Matches ORDER BY, GROUP BY and HAVING against the select list and collects helper columns.
pub(super) struct Builder<'p> {
    key: &'p str,
    from: FromFacts,
    items: Vec<Item>,
    wildcard: bool,
    pub(super) grouped: bool,
    /// Visible columns a GROUP BY entry names by position or alias.
    keyed: Vec<bool>,
    /// Folded GROUP BY expressions.
    group_exprs: Vec<Expr>,
    pub(super) hidden: Vec<Helper>,
}

impl<'p> Builder<'p> {
    pub(super) fn new(
        projection: &[SelectItem],
        key: &'p str,
        from: FromFacts,
    ) -> Result<Self, Unsupported> {
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

    pub(super) fn is_grouped(&self, s: &Select, keys: &[OrderByExpr]) -> Result<bool, Unsupported> {
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
    pub(super) fn group_keys(&mut self, group_by: &GroupByExpr) -> Result<(), Unsupported> {
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
    pub(super) fn visible_combines(&mut self) -> Result<Vec<Combine>, Unsupported> {
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

    pub(super) fn sort_key(&mut self, k: &OrderByExpr) -> Result<SortKey, Unsupported> {
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

    pub(super) fn predicate(&mut self, e: &Expr) -> Result<Predicate, Unsupported> {
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
