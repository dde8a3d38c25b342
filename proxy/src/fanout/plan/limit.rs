//! LIMIT / OFFSET / FETCH FIRST: the bounds the client asked for, and the LIMIT the shards run.

use sqlparser::ast::{BinaryOperator, CastKind, DataType, Expr, LimitClause, Query, Value};

use super::{Bound, Unsupported, refuse};

/// LIMIT / OFFSET / FETCH FIRST as the client wrote them.
pub(super) struct Limits {
    pub(super) limit: Option<Bound>,
    pub(super) offset: Option<Bound>,
    /// An OFFSET clause is present (even `OFFSET 0` or `OFFSET NULL`).
    pub(super) has_offset: bool,
}

impl Limits {
    pub(super) fn of(q: &Query) -> Result<Limits, Unsupported> {
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
pub(super) fn shard_limit(limit: Option<Bound>, offset: Option<Bound>) -> Option<Expr> {
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
