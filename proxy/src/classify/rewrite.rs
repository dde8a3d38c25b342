//! Rewriting a statement for part of the shards: a multi-row INSERT whose rows belong to
//! tenants on several shards is sent to each shard with that shard's rows only.

use sqlparser::ast::{SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// `sql` (one `INSERT … VALUES` statement) keeping only the VALUES rows at `rows`, or `None`
/// when it is not such a statement or an index is out of range.
pub fn insert_with_rows(sql: &str, rows: &[usize]) -> Option<String> {
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Insert(insert)] = stmts.as_mut_slice() else {
        return None;
    };
    let SetExpr::Values(values) = insert.source.as_mut()?.body.as_mut() else {
        return None;
    };
    let kept = rows
        .iter()
        .map(|&i| values.rows.get(i).cloned())
        .collect::<Option<Vec<_>>>()?;
    if kept.is_empty() {
        return None;
    }
    values.rows = kept;
    Some(stmts[0].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_chosen_rows_and_everything_else() {
        let sql = "INSERT INTO orders (tenant_id, id, note) VALUES (1, 10, 'a'), (2, 20, 'b;c'), \
                   (3, 30, NULL) ON CONFLICT DO NOTHING RETURNING id";
        let out = insert_with_rows(sql, &[0, 2]).unwrap();
        assert!(out.contains("(1, 10, 'a'), (3, 30, NULL)"), "{out}");
        assert!(!out.contains("'b;c'"), "{out}");
        assert!(out.contains("ON CONFLICT DO NOTHING RETURNING id"), "{out}");
    }

    #[test]
    fn refuses_what_it_cannot_rewrite() {
        assert_eq!(insert_with_rows("SELECT 1", &[0]), None);
        assert_eq!(insert_with_rows("INSERT INTO t SELECT 1", &[0]), None);
        assert_eq!(insert_with_rows("INSERT INTO t VALUES (1)", &[1]), None);
        assert_eq!(insert_with_rows("INSERT INTO t VALUES (1)", &[]), None);
        assert_eq!(
            insert_with_rows("INSERT INTO t VALUES (1); SELECT 1", &[0]),
            None
        );
    }
}
