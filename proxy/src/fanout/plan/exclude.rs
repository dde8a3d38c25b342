//! Leaving tenants out of one shard's fan-out: a move's copy of a tenant lies on a shard
//! that is not its home (the target until the flip, the source until cleanup), and a
//! tenant-less read must not count those rows twice.

use sqlparser::ast::{BinaryOperator, Expr, SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::expr::ident_name;
use super::from::FromScan;
use super::{PlanContext, Unsupported, refuse};

/// `shard_sql` (a planned fan-out statement) with every sharded table of its top-level FROM
/// restricted to rows not of `tenants` (SQL literals). The restriction keeps the
/// null-extended rows of outer joins: `(t.key IS NULL OR t.key NOT IN (...))`.
pub fn exclude_tenants(
    shard_sql: &str,
    ctx: &PlanContext,
    tenants: &[String],
) -> Result<String, Unsupported> {
    if tenants.is_empty() {
        return Ok(shard_sql.to_owned());
    }
    let dialect = PostgreSqlDialect {};
    let unparsable = || refuse("statement the planner cannot parse");
    let mut stmts = Parser::parse_sql(&dialect, shard_sql).map_err(|_| unparsable())?;
    let [Statement::Query(q)] = stmts.as_mut_slice() else {
        return Err(unparsable());
    };
    let ctes: Vec<String> = q
        .with
        .iter()
        .flat_map(|w| &w.cte_tables)
        .map(|c| ident_name(&c.alias.name))
        .collect();
    let SetExpr::Select(select) = q.body.as_mut() else {
        return Err(unparsable());
    };
    let refs = FromScan::check(select, ctx, &ctes)?.sharded_refs;
    let list = tenants.join(", ");
    let key = quote_ident(ctx.key_column);
    let text = refs
        .iter()
        .map(|r| {
            let col = format!("{}.{key}", quote_ident(r));
            format!("({col} IS NULL OR {col} NOT IN ({list}))")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let cond = Parser::new(&dialect)
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|_| refuse("tenant list the planner cannot parse"))?;
    select.selection = Some(match select.selection.take() {
        Some(w) => Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(w))),
            op: BinaryOperator::And,
            right: Box::new(Expr::Nested(Box::new(cond))),
        },
        None => cond,
    });
    Ok(stmts[0].to_string())
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_test(sql: &str, tenants: &[&str]) -> String {
        let sharded = |t: &str| t == "orders" || t == "items";
        let ctx = PlanContext {
            key_column: "tenant_id",
            is_sharded: &sharded,
        };
        let tenants: Vec<String> = tenants.iter().map(|s| s.to_string()).collect();
        exclude_tenants(sql, &ctx, &tenants).unwrap()
    }

    #[test]
    fn every_sharded_relation_is_restricted_and_the_where_kept() {
        assert_eq!(
            ctx_test("SELECT count(*) FROM orders", &[]),
            "SELECT count(*) FROM orders"
        );
        assert_eq!(
            ctx_test("SELECT count(*) FROM orders WHERE x > 1", &["7"]),
            "SELECT count(*) FROM orders WHERE (x > 1) AND ((\"orders\".\"tenant_id\" IS NULL \
             OR \"orders\".\"tenant_id\" NOT IN (7)))"
        );
        let joined = ctx_test(
            "SELECT o.id FROM orders o JOIN items i USING (tenant_id) JOIN plans p ON p.id = o.plan",
            &["7", "9"],
        );
        assert!(
            joined.contains("\"o\".\"tenant_id\" NOT IN (7, 9)"),
            "{joined}"
        );
        assert!(
            joined.contains("\"i\".\"tenant_id\" NOT IN (7, 9)"),
            "{joined}"
        );
        assert!(
            !joined.contains("\"p\""),
            "global tables are not restricted: {joined}"
        );
        let text = ctx_test("SELECT * FROM orders", &["'a''b'"]);
        assert!(text.ends_with("NOT IN ('a''b'))"), "{text}");
    }
}
