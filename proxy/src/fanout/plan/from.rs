//! The FROM checks: sharded tables only at the top level and joined on the key column, and
//! the constructs refused wherever they appear in the statement.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, ObjectName, Query, Select, SetExpr,
    Statement, TableFactor, TableWithJoins, Visitor,
};

use super::expr::{ident_is, ident_name};
use super::{PlanContext, Unsupported, refuse};

/// Walks the whole statement for what is refused wherever it appears: window functions,
/// sharded tables below the top level (subqueries, CTEs), TABLESAMPLE, data-modifying CTEs.
pub(super) struct NestedScan<'c> {
    pub(super) ctx: &'c PlanContext<'c>,
    pub(super) depth: usize,
    pub(super) statements: usize,
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
pub(super) struct FromFacts {
    /// Reference names (alias or table name) of the sharded tables.
    pub(super) sharded_refs: Vec<String>,
    /// The reference name of the only relation, if there is one: `t.x` and `x` are the same
    /// column then.
    pub(super) single_ref: Option<String>,
}

/// One relation of the top-level FROM.
struct Rel {
    table: String,
    /// The name columns are qualified by: the alias, else the table name.
    refname: String,
    sharded: bool,
}

/// The top-level FROM: which relations are sharded and which key equalities join them.
pub(super) struct FromScan<'c> {
    ctx: &'c PlanContext<'c>,
    ctes: &'c [String],
    rels: Vec<Rel>,
    /// Pairs of relations joined by `a.key = b.key` (ON, top-level WHERE) or USING (key).
    edges: Vec<(usize, usize)>,
}

impl<'c> FromScan<'c> {
    /// Checks that the FROM reads a sharded table and that all sharded tables in it are
    /// joined on the key, so every joined row combination lives on one shard.
    pub(super) fn check(
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
