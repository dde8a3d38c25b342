//! Expressions and names as Postgres sees them: folded names, output column names,
//! positions, constants, and the function calls of one query level.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Function, Ident, Query, Value, Visit, Visitor, VisitorMut};

/// The column name Postgres gives an unaliased item, where it is simple to tell.
pub(super) fn implicit_name(e: &Expr) -> Option<String> {
    let last = match e {
        Expr::Identifier(id) => id,
        Expr::CompoundIdentifier(parts) => parts.last()?,
        Expr::Function(f) => f.name.0.last()?.as_ident()?,
        _ => return None,
    };
    Some(ident_name(last))
}

/// `n` when `e` is the integer literal of an ORDER BY / GROUP BY position.
pub(super) fn ordinal(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, false) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The same on every shard: a literal or parameter, possibly cast.
pub(super) fn is_constant(e: &Expr) -> bool {
    match e {
        Expr::Value(_) | Expr::TypedString(_) => true,
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => is_constant(inner),
        _ => false,
    }
}

pub(super) fn has_collate(e: &Expr) -> bool {
    let flow = sqlparser::ast::visit_expressions(e, |e| match e {
        Expr::Collate { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    flow.is_break()
}

/// Whether `e` names a column `name` (`name` or `t.name`), subqueries included.
pub(super) fn mentions_column(e: &Expr, name: &str) -> bool {
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
pub(super) fn visit_calls<B>(
    e: &Expr,
    f: impl FnMut(&Function) -> ControlFlow<B>,
) -> ControlFlow<B> {
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
pub(super) struct Fold<'a> {
    pub(super) single_ref: Option<&'a str>,
    pub(super) depth: usize,
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

/// A name as Postgres sees it: lowercased unless it was quoted.
pub(super) fn ident_name(id: &Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_ascii_lowercase(),
    }
}

/// Unquoted names fold to lower case; quoted ones match exactly.
pub(super) fn ident_is(id: &Ident, name: &str) -> bool {
    match id.quote_style {
        Some(_) => id.value == name,
        None => id.value.eq_ignore_ascii_case(name),
    }
}
