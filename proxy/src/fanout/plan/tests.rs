use super::*;
use ColumnRef::{Hidden, Visible};

mod aggregates;

fn sharded_tables(t: &str) -> bool {
    matches!(t, "orders" | "users" | "items" | "events")
}

fn ctx() -> PlanContext<'static> {
    PlanContext {
        key_column: "tenant_id",
        is_sharded: &sharded_tables,
    }
}

fn ok(sql: &str) -> MergePlan {
    plan(sql, &ctx()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Plans `sql`, asserting the shard SQL is the input unchanged.
fn unchanged(sql: &str) -> MergePlan {
    let p = ok(sql);
    assert_eq!(p.shard_sql, sql);
    p
}

/// Plans `sql`, asserting the exact rewritten shard SQL and that it parses again.
fn rewritten(sql: &str, shard_sql: &str) -> MergePlan {
    let p = ok(sql);
    assert_eq!(p.shard_sql, shard_sql, "for {sql}");
    let again = Parser::parse_sql(&PostgreSqlDialect {}, &p.shard_sql).unwrap();
    assert_eq!(again.len(), 1);
    p
}

fn refused(sql: &str) -> String {
    match plan(sql, &ctx()) {
        Ok(p) => panic!("{sql} was planned: {p:?}"),
        Err(e) => e.construct,
    }
}

fn asc(col: ColumnRef) -> SortKey {
    SortKey {
        col,
        desc: false,
        nulls_first: false,
    }
}

fn desc(col: ColumnRef) -> SortKey {
    SortKey {
        col,
        desc: true,
        nulls_first: true,
    }
}

fn columns(p: &MergePlan) -> Vec<Combine> {
    p.grouping.as_ref().expect("grouped").columns.clone()
}

fn having(p: &MergePlan) -> Predicate {
    p.grouping.as_ref().unwrap().having.clone().expect("HAVING")
}

fn cmp(left: Operand, op: CmpOp, right: Operand) -> Predicate {
    Predicate::Cmp { left, op, right }
}

fn lit(s: &str) -> Operand {
    Operand::Literal(s.to_string())
}

// ---- plain rows ----

#[test]
fn plain_select_is_sent_unchanged() {
    let sql = "select  id, total\nFROM orders -- recent ones\nWHERE total > 5";
    let p = unchanged(sql);
    assert_eq!(
        p,
        MergePlan {
            shard_sql: sql.to_string(),
            hidden: 0,
            order: vec![],
            limit: None,
            offset: None,
            distinct: false,
            grouping: None,
        }
    );
}

#[test]
fn star_without_order_is_unchanged() {
    let p = unchanged("SELECT * FROM orders WHERE status = 'open';");
    assert_eq!(p.hidden, 0);
}

#[test]
fn order_by_selected_column_name() {
    let p = unchanged("SELECT id, total FROM orders ORDER BY total DESC");
    assert_eq!(p.order, vec![desc(Visible(1))]);
}

#[test]
fn order_by_output_alias() {
    let p = unchanged("SELECT id, total * 2 AS double FROM orders ORDER BY double, id");
    assert_eq!(p.order, vec![asc(Visible(1)), asc(Visible(0))]);
}

#[test]
fn order_by_alias_wins_over_input_column() {
    // Postgres: ORDER BY a bare name means the output column first.
    let p = unchanged("SELECT total AS id, id AS total FROM orders ORDER BY total");
    assert_eq!(p.order, vec![asc(Visible(1))]);
}

#[test]
fn order_by_ordinal() {
    let p = unchanged("SELECT id, total FROM orders ORDER BY 2, 1 DESC");
    assert_eq!(p.order, vec![asc(Visible(1)), desc(Visible(0))]);
    assert_eq!(
        refused("SELECT id FROM orders ORDER BY 3"),
        "ORDER BY position 3"
    );
}

#[test]
fn order_by_expression_equal_to_an_item_ignores_identifier_case() {
    let p = unchanged("SELECT id, lower(name) FROM users ORDER BY LOWER(Name)");
    assert_eq!(p.order, vec![asc(Visible(1))]);
}

#[test]
fn quoted_names_fold_as_postgres_folds_them() {
    let p = unchanged("SELECT \"total\", \"Note\" FROM orders ORDER BY TOTAL, \"Note\"");
    assert_eq!(p.order, vec![asc(Visible(0)), asc(Visible(1))]);
    let p = rewritten(
        "SELECT \"Note\" FROM orders ORDER BY note",
        "SELECT \"Note\", note AS \"?sg_sort_0\" FROM orders ORDER BY note",
    );
    assert_eq!(p.order, vec![asc(Hidden(0))]);
}

#[test]
fn order_by_qualified_and_bare_name_of_the_only_table_match() {
    let p = unchanged("SELECT o.id, o.total + 1 FROM orders o ORDER BY total + 1, id");
    assert_eq!(p.order, vec![asc(Visible(1)), asc(Visible(0))]);
}

#[test]
fn order_by_column_not_selected_becomes_hidden() {
    let p = rewritten(
        "SELECT id FROM orders ORDER BY created_at DESC NULLS LAST, id",
        "SELECT id, created_at AS \"?sg_sort_0\" FROM orders ORDER BY created_at DESC NULLS LAST, id",
    );
    assert_eq!(p.hidden, 1);
    let mut first = desc(Hidden(0));
    first.nulls_first = false;
    assert_eq!(p.order, vec![first, asc(Visible(0))]);
}

#[test]
fn hidden_sort_column_with_limit_and_offset() {
    let p = rewritten(
        "SELECT id FROM orders WHERE status = $1 ORDER BY created_at DESC LIMIT $2 OFFSET $3",
        "SELECT id, created_at AS \"?sg_sort_0\" FROM orders WHERE status = $1 \
         ORDER BY created_at DESC LIMIT $2::BIGINT + $3::BIGINT",
    );
    assert_eq!(p.hidden, 1);
    assert_eq!(p.order, vec![desc(Hidden(0))]);
    assert_eq!(
        (p.limit, p.offset),
        (Some(Bound::Param(2)), Some(Bound::Param(3)))
    );
}

#[test]
fn nulls_default_as_postgres_and_explicit_ones_are_kept() {
    let p = unchanged(
        "SELECT a, b, c, d FROM orders ORDER BY a, b DESC, c ASC NULLS FIRST, d DESC NULLS LAST",
    );
    let nulls: Vec<(bool, bool)> = p.order.iter().map(|k| (k.desc, k.nulls_first)).collect();
    assert_eq!(
        nulls,
        vec![(false, false), (true, true), (false, true), (true, false)]
    );
}

#[test]
fn same_hidden_sort_expression_is_appended_once() {
    let p = rewritten(
        "SELECT id FROM orders ORDER BY total * 2, total * 2 DESC",
        "SELECT id, total * 2 AS \"?sg_sort_0\" FROM orders ORDER BY total * 2, total * 2 DESC",
    );
    assert_eq!(p.order, vec![asc(Hidden(0)), desc(Hidden(0))]);
}

#[test]
fn star_with_order_by_name_uses_a_hidden_column() {
    let p = rewritten(
        "SELECT * FROM orders ORDER BY total",
        "SELECT *, total AS \"?sg_sort_0\" FROM orders ORDER BY total",
    );
    assert_eq!(p.order, vec![asc(Hidden(0))]);
}

#[test]
fn star_with_order_by_an_alias_after_it_appends_the_aliased_expression() {
    let p = rewritten(
        "SELECT *, total * 2 AS t2 FROM orders ORDER BY t2 DESC",
        "SELECT *, total * 2 AS t2, total * 2 AS \"?sg_sort_0\" FROM orders ORDER BY t2 DESC",
    );
    assert_eq!(p.order, vec![desc(Hidden(0))]);
}

#[test]
fn ordinal_with_star_is_refused_unless_before_it() {
    assert_eq!(
        refused("SELECT * FROM orders ORDER BY 1"),
        "ORDER BY position with SELECT *"
    );
    assert_eq!(
        refused("SELECT id, o.* FROM orders o ORDER BY 2"),
        "ORDER BY position with SELECT *"
    );
    let p = unchanged("SELECT id, * FROM orders ORDER BY 1");
    assert_eq!(p.order, vec![asc(Visible(0))]);
}

#[test]
fn order_by_using_and_collate_are_refused() {
    assert!(refused("SELECT id FROM orders ORDER BY id USING >").contains("USING"));
    assert_eq!(
        refused("SELECT name FROM users ORDER BY name COLLATE \"C\""),
        "COLLATE in ORDER BY"
    );
    assert_eq!(
        refused("SELECT name COLLATE \"C\" FROM users ORDER BY 1"),
        "COLLATE in ORDER BY"
    );
}

// ---- LIMIT / OFFSET / FETCH ----

#[test]
fn limit_alone_is_sent_unchanged() {
    let p = unchanged("SELECT id FROM orders ORDER BY id LIMIT 10");
    assert_eq!((p.limit, p.offset), (Some(Bound::Const(10)), None));
}

#[test]
fn limit_and_offset_constants_become_their_sum() {
    let p = rewritten(
        "SELECT id FROM orders ORDER BY id LIMIT 10 OFFSET 5",
        "SELECT id FROM orders ORDER BY id LIMIT 15",
    );
    assert_eq!(
        (p.limit, p.offset),
        (Some(Bound::Const(10)), Some(Bound::Const(5)))
    );
}

#[test]
fn limit_and_offset_params_become_a_sum_of_bigints() {
    let p = rewritten(
        "SELECT id FROM orders ORDER BY id LIMIT $1 OFFSET $2",
        "SELECT id FROM orders ORDER BY id LIMIT $1::BIGINT + $2::BIGINT",
    );
    assert_eq!(
        (p.limit, p.offset),
        (Some(Bound::Param(1)), Some(Bound::Param(2)))
    );
    let p = rewritten(
        "SELECT id FROM orders WHERE total > $1 OFFSET $3 LIMIT 10",
        "SELECT id FROM orders WHERE total > $1 LIMIT 10 + $3::BIGINT",
    );
    assert_eq!(
        (p.limit, p.offset),
        (Some(Bound::Const(10)), Some(Bound::Param(3)))
    );
}

#[test]
fn offset_alone_is_dropped_from_the_shard_sql() {
    let p = rewritten("SELECT id FROM orders OFFSET 5", "SELECT id FROM orders");
    assert_eq!((p.limit, p.offset), (None, Some(Bound::Const(5))));
}

#[test]
fn limit_all_and_null_mean_no_limit() {
    let p = rewritten(
        "SELECT id FROM orders LIMIT ALL OFFSET 3",
        "SELECT id FROM orders",
    );
    assert_eq!((p.limit, p.offset), (None, Some(Bound::Const(3))));
    let p = unchanged("SELECT id FROM orders LIMIT NULL");
    assert_eq!(p.limit, None);
}

#[test]
fn fetch_first() {
    let p = unchanged("SELECT id FROM orders ORDER BY id FETCH FIRST 5 ROWS ONLY");
    assert_eq!(p.limit, Some(Bound::Const(5)));
    let p = unchanged("SELECT id FROM orders FETCH FIRST ROW ONLY");
    assert_eq!(p.limit, Some(Bound::Const(1)));
    let p = rewritten(
        "SELECT id FROM orders ORDER BY id OFFSET 2 ROWS FETCH NEXT $1 ROWS ONLY",
        "SELECT id FROM orders ORDER BY id LIMIT $1::BIGINT + 2",
    );
    assert_eq!(
        (p.limit, p.offset),
        (Some(Bound::Param(1)), Some(Bound::Const(2)))
    );
}

#[test]
fn odd_limits_are_refused() {
    for sql in [
        "SELECT id FROM orders LIMIT 2.5",
        "SELECT id FROM orders LIMIT 1 + 1",
        "SELECT id FROM orders LIMIT -1",
        "SELECT id FROM orders LIMIT 5 OFFSET $1::int",
        "SELECT id FROM orders LIMIT 99999999999999999999",
    ] {
        assert!(refused(sql).starts_with("LIMIT/OFFSET value"), "{sql}");
    }
    assert!(
        refused("SELECT id FROM orders ORDER BY id FETCH FIRST 5 ROWS WITH TIES")
            .contains("WITH TIES")
    );
}

// ---- DISTINCT ----

#[test]
fn distinct_keeps_distinct_and_drops_limits_from_the_shards() {
    let p = unchanged("SELECT DISTINCT status FROM orders ORDER BY status");
    assert!(p.distinct);
    assert_eq!(p.order, vec![asc(Visible(0))]);
    let p = rewritten(
        "SELECT DISTINCT status FROM orders LIMIT 3",
        "SELECT DISTINCT status FROM orders",
    );
    assert_eq!(p.limit, Some(Bound::Const(3)));
}

#[test]
fn distinct_with_an_order_key_not_selected_is_refused() {
    assert_eq!(
        refused("SELECT DISTINCT status FROM orders ORDER BY total"),
        "ORDER BY expression not in the SELECT DISTINCT list"
    );
}

#[test]
fn distinct_on_is_refused() {
    assert_eq!(
        refused("SELECT DISTINCT ON (user_id) user_id, total FROM orders ORDER BY user_id"),
        "DISTINCT ON"
    );
}

// ---- statement shapes ----

#[test]
fn window_functions_are_refused_anywhere() {
    assert_eq!(
        refused("SELECT id, row_number() OVER (ORDER BY id) FROM orders"),
        "window function row_number()"
    );
    assert_eq!(
        refused("SELECT id FROM orders ORDER BY sum(total) OVER (PARTITION BY user_id)"),
        "window function sum()"
    );
}

#[test]
fn set_operations_and_values_are_refused() {
    assert_eq!(
        refused("SELECT id FROM orders UNION SELECT id FROM users"),
        "UNION"
    );
    assert_eq!(
        refused("SELECT id FROM orders INTERSECT SELECT id FROM users"),
        "INTERSECT"
    );
    assert_eq!(
        refused("SELECT id FROM orders EXCEPT SELECT id FROM users"),
        "EXCEPT"
    );
    assert_eq!(refused("VALUES (1), (2)"), "VALUES");
}

#[test]
fn unparsable_several_and_non_select_statements_are_refused() {
    assert_eq!(
        refused("SELEC id FROM orders"),
        "statement the planner cannot parse"
    );
    assert_eq!(
        refused("SELECT id FROM orders; SELECT id FROM users"),
        "statement the planner cannot parse"
    );
    assert_eq!(refused(""), "statement the planner cannot parse");
    assert_eq!(
        refused("DELETE FROM orders WHERE id = 1"),
        "statement other than SELECT"
    );
}

#[test]
fn locking_into_and_tablesample_are_refused() {
    assert_eq!(refused("SELECT id FROM orders FOR UPDATE"), "FOR UPDATE");
    assert_eq!(refused("SELECT id INTO copy FROM orders"), "SELECT INTO");
    assert_eq!(
        refused("SELECT id FROM orders TABLESAMPLE SYSTEM (10)"),
        "TABLESAMPLE"
    );
}

#[test]
fn a_read_of_no_sharded_table_is_refused() {
    assert_eq!(
        refused("SELECT * FROM plans"),
        "query reads no sharded table"
    );
    assert_eq!(refused("SELECT 1"), "query reads no sharded table");
    assert_eq!(
        refused("WITH orders AS (SELECT * FROM plans) SELECT * FROM orders"),
        "query reads no sharded table"
    );
}

// ---- joins ----

#[test]
fn join_of_sharded_tables_not_on_the_key_is_refused() {
    assert_eq!(
        refused("SELECT o.id FROM orders o JOIN users u ON o.user_id = u.id"),
        "join of sharded tables orders and users not on tenant_id"
    );
    assert_eq!(
        refused(
            "SELECT o.id FROM orders o, users u WHERE o.user_id = u.id OR o.tenant_id = u.tenant_id"
        ),
        "join of sharded tables orders and users not on tenant_id"
    );
    assert_eq!(
        refused(
            "SELECT o.id FROM orders o JOIN users u ON o.tenant_id = u.tenant_id \
             JOIN items i ON i.order_id = o.id"
        ),
        "join of sharded tables orders and items not on tenant_id"
    );
}

#[test]
fn co_located_joins_on_the_key_are_planned() {
    for sql in [
        "SELECT o.id, u.email FROM orders o JOIN users u ON o.tenant_id = u.tenant_id AND o.user_id = u.id",
        "SELECT o.id FROM orders o LEFT JOIN users u ON (u.id = o.user_id AND u.tenant_id = o.tenant_id)",
        "SELECT id FROM orders JOIN items USING (tenant_id, order_id)",
        "SELECT o.id FROM orders o, users u WHERE o.tenant_id = u.tenant_id AND o.user_id = u.id",
        "SELECT o.id FROM orders o JOIN users u ON o.tenant_id = u.tenant_id \
         JOIN items i ON i.tenant_id = u.tenant_id AND i.order_id = o.id",
        "SELECT a.id FROM orders a JOIN orders b ON a.tenant_id = b.tenant_id AND a.id = b.parent_id",
    ] {
        let p = unchanged(sql);
        assert_eq!(p.grouping, None, "{sql}");
    }
}

#[test]
fn joins_with_global_tables_are_free() {
    let p = unchanged(
        "SELECT o.id, p.name FROM orders o JOIN plans p ON p.id = o.plan_id \
         LEFT JOIN countries c ON c.code = p.country",
    );
    assert_eq!(p.hidden, 0);
}

// ---- subqueries and CTEs ----

#[test]
fn subqueries_over_sharded_tables_are_refused() {
    for sql in [
        "SELECT id FROM orders WHERE user_id IN (SELECT id FROM users)",
        "SELECT id, (SELECT count(*) FROM users u WHERE u.id = o.user_id) FROM orders o",
        "SELECT s.id FROM (SELECT id FROM users) s JOIN orders o ON o.user_id = s.id",
        "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM public.users u WHERE u.id = o.user_id)",
    ] {
        assert_eq!(refused(sql), "subquery over sharded table users", "{sql}");
    }
}

#[test]
fn sharded_tables_hidden_from_the_parser_are_refused() {
    // sqlparser reads `ONLY users` as table `only` aliased `users`.
    assert_eq!(
        refused("SELECT o.id FROM orders o JOIN ONLY users ON users.id = o.user_id"),
        "FROM ONLY"
    );
    assert_eq!(
        refused("SELECT id FROM orders WHERE user_id IN (SELECT id FROM ONLY users)"),
        "FROM ONLY"
    );
    assert_eq!(
        refused("SELECT id FROM orders WHERE id IN (SELECT 1 UNION TABLE users LIMIT 1)"),
        "subquery over sharded table users"
    );
}

#[test]
fn ctes_over_sharded_tables_are_refused() {
    assert_eq!(
        refused("WITH big AS (SELECT * FROM orders WHERE total > 100) SELECT * FROM big"),
        "subquery over sharded table orders"
    );
    assert_eq!(
        refused("WITH d AS (DELETE FROM plans RETURNING id) SELECT id FROM orders"),
        "data-modifying statement in WITH"
    );
}

#[test]
fn subqueries_and_ctes_over_global_tables_are_planned() {
    unchanged("SELECT id FROM orders WHERE plan_id IN (SELECT id FROM plans WHERE active)");
    unchanged("SELECT id, (SELECT max(price) FROM plans) FROM orders");
    let p = unchanged(
        "WITH cheap AS (SELECT id FROM plans WHERE price < 10) \
         SELECT o.status, count(*) FROM orders o JOIN cheap ON cheap.id = o.plan_id GROUP BY o.status",
    );
    assert_eq!(columns(&p), vec![Combine::Key, Combine::Count]);
}

#[test]
fn unsupported_displays_as_sg004_text() {
    let e = plan("SELECT id FROM orders UNION SELECT id FROM users", &ctx()).unwrap_err();
    assert_eq!(e.to_string(), "cannot merge across shards: UNION");
}
