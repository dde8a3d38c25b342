use super::*;
use ColumnRef::{Hidden, Visible};

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

// ---- aggregates ----

#[test]
fn count_without_group_by() {
    let p = unchanged("SELECT count(*) FROM orders WHERE status = 'open'");
    assert_eq!(columns(&p), vec![Combine::Count]);
    assert_eq!(p.grouping.unwrap().having, None);
}

#[test]
fn count_sum_min_max_per_group() {
    let p = unchanged(
        "SELECT status, count(*), count(note), sum(total), min(total), MAX(total) FROM orders GROUP BY status",
    );
    assert_eq!(
        columns(&p),
        vec![
            Combine::Key,
            Combine::Count,
            Combine::Count,
            Combine::Sum,
            Combine::Min,
            Combine::Max
        ]
    );
    assert_eq!(p.hidden, 0);
}

#[test]
fn avg_gets_sum_and_count_helpers() {
    let p = rewritten(
        "SELECT status, avg(total) FROM orders GROUP BY status",
        "SELECT status, avg(total), sum(total) AS \"?sg_sum_0\", count(total) AS \"?sg_count_1\" \
         FROM orders GROUP BY status",
    );
    assert_eq!(p.hidden, 2);
    assert_eq!(
        columns(&p),
        vec![
            Combine::Key,
            Combine::Avg {
                sum: Hidden(0),
                count: Hidden(1)
            },
            Combine::Sum,
            Combine::Count
        ]
    );
}

#[test]
fn avg_helpers_keep_the_filter() {
    let p = rewritten(
        "SELECT avg(total) FILTER (WHERE status = 'paid') FROM orders",
        "SELECT avg(total) FILTER (WHERE status = 'paid'), \
         sum(total) FILTER (WHERE status = 'paid') AS \"?sg_sum_0\", \
         count(total) FILTER (WHERE status = 'paid') AS \"?sg_count_1\" FROM orders",
    );
    assert_eq!(p.hidden, 2);
}

#[test]
fn count_filter_is_pushed_down_as_written() {
    let p = unchanged("SELECT count(*) FILTER (WHERE total > 0) FROM orders");
    assert_eq!(columns(&p), vec![Combine::Count]);
}

#[test]
fn group_key_not_selected_becomes_a_hidden_key() {
    let p = rewritten(
        "SELECT count(*) FROM orders GROUP BY status, region",
        "SELECT count(*), status AS \"?sg_key_0\", region AS \"?sg_key_1\" FROM orders GROUP BY status, region",
    );
    assert_eq!(
        columns(&p),
        vec![Combine::Count, Combine::Key, Combine::Key]
    );
}

#[test]
fn group_by_position_and_alias() {
    let p = unchanged(
        "SELECT date_trunc('day', created_at) AS day, count(*) FROM orders GROUP BY day ORDER BY day",
    );
    assert_eq!(columns(&p), vec![Combine::Key, Combine::Count]);
    assert_eq!(p.order, vec![asc(Visible(0))]);
    let p = unchanged("SELECT date_trunc('day', created_at), count(*) FROM orders GROUP BY 1");
    assert_eq!(columns(&p), vec![Combine::Key, Combine::Count]);
}

#[test]
fn group_by_name_of_an_input_column_is_not_taken_for_an_alias() {
    // Postgres groups by the column `name` here, not by lower(name).
    let construct = refused("SELECT lower(name) AS name, count(*) FROM users GROUP BY name");
    assert!(
        construct.starts_with("select item lower(name)"),
        "{construct}"
    );
}

#[test]
fn constant_items_are_keys() {
    let p = unchanged("SELECT 'all' AS label, count(*) FROM orders");
    assert_eq!(columns(&p), vec![Combine::Key, Combine::Count]);
}

#[test]
fn count_distinct_key_column_is_a_count() {
    let p = unchanged("SELECT count(DISTINCT tenant_id) FROM orders");
    assert_eq!(columns(&p), vec![Combine::Count]);
    let p = unchanged(
        "SELECT p.name, count(DISTINCT o.tenant_id) FROM orders o JOIN plans p ON p.id = o.plan_id GROUP BY p.name",
    );
    assert_eq!(columns(&p), vec![Combine::Key, Combine::Count]);
    assert_eq!(
        refused(
            "SELECT count(DISTINCT p.tenant_id) FROM orders o JOIN plans p ON p.id = o.plan_id"
        ),
        "count(DISTINCT p.tenant_id)"
    );
}

#[test]
fn distinct_aggregates_on_other_columns_are_refused() {
    assert_eq!(
        refused("SELECT count(DISTINCT email) FROM users"),
        "count(DISTINCT email)"
    );
    assert_eq!(
        refused("SELECT sum(DISTINCT total) FROM orders"),
        "sum(DISTINCT total)"
    );
    let p = unchanged("SELECT max(DISTINCT total) FROM orders");
    assert_eq!(columns(&p), vec![Combine::Max]);
}

#[test]
fn other_aggregates_are_refused_by_name() {
    assert_eq!(
        refused("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders"),
        "aggregate percentile_cont"
    );
    assert_eq!(
        refused("SELECT string_agg(name, ',') FROM users"),
        "aggregate string_agg"
    );
    assert_eq!(
        refused("SELECT stddev(total) FROM orders"),
        "aggregate stddev"
    );
    assert_eq!(
        refused("SELECT status FROM orders GROUP BY status ORDER BY array_agg(id)"),
        "aggregate array_agg"
    );
    assert_eq!(
        refused("SELECT sum(total ORDER BY id) FROM orders"),
        "ORDER BY inside aggregate sum()"
    );
}

#[test]
fn expressions_over_aggregates_are_refused() {
    for sql in [
        "SELECT sum(total) / count(*) FROM orders",
        "SELECT count(*) + 1 FROM orders",
        "SELECT coalesce(sum(total), 0) FROM orders",
        "SELECT status FROM orders GROUP BY status ORDER BY count(*) * 2",
    ] {
        assert_eq!(refused(sql), "expression over aggregates", "{sql}");
    }
}

#[test]
fn items_neither_key_nor_aggregate_are_refused() {
    let construct = refused("SELECT status, total, count(*) FROM orders GROUP BY status");
    assert!(construct.starts_with("select item total"), "{construct}");
}

#[test]
fn star_with_aggregates_is_refused() {
    assert_eq!(
        refused("SELECT *, count(*) FROM orders"),
        "SELECT * with GROUP BY or aggregates"
    );
    assert_eq!(
        refused("SELECT * FROM orders GROUP BY id"),
        "SELECT * with GROUP BY or aggregates"
    );
}

#[test]
fn grouping_sets_rollup_cube_are_refused() {
    assert_eq!(
        refused("SELECT status, count(*) FROM orders GROUP BY GROUPING SETS ((status), ())"),
        "GROUPING SETS"
    );
    assert_eq!(
        refused("SELECT status, count(*) FROM orders GROUP BY ROLLUP (status)"),
        "ROLLUP"
    );
    assert_eq!(
        refused("SELECT status, count(*) FROM orders GROUP BY CUBE (status)"),
        "CUBE"
    );
}

#[test]
fn order_by_aggregates_in_a_grouped_query() {
    let p = unchanged(
        "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY n DESC, COUNT(*), status",
    );
    assert_eq!(
        p.order,
        vec![desc(Visible(1)), asc(Visible(1)), asc(Visible(0))]
    );
    let p = rewritten(
        "SELECT status FROM orders GROUP BY status ORDER BY sum(total) DESC",
        "SELECT status, sum(total) AS \"?sg_agg_0\" FROM orders GROUP BY status ORDER BY sum(total) DESC",
    );
    assert_eq!(p.order, vec![desc(Hidden(0))]);
    assert_eq!(columns(&p), vec![Combine::Key, Combine::Sum]);
}

#[test]
fn order_by_the_output_name_of_a_function_call() {
    // Postgres names the column `count`, and ORDER BY count sorts by it.
    let p = unchanged("SELECT status, count(*) FROM orders GROUP BY status ORDER BY count DESC");
    assert_eq!(p.order, vec![desc(Visible(1))]);
}

#[test]
fn grouped_order_by_on_other_expressions_is_refused() {
    let construct = refused("SELECT status, count(*) FROM orders GROUP BY status ORDER BY total");
    assert!(
        construct.starts_with("ORDER BY expression total"),
        "{construct}"
    );
}

#[test]
fn grouped_limit_and_offset_are_applied_by_the_proxy_only() {
    let p = rewritten(
        "SELECT status, count(*) FROM orders GROUP BY status ORDER BY 2 DESC LIMIT 10 OFFSET 5",
        "SELECT status, count(*) FROM orders GROUP BY status ORDER BY 2 DESC",
    );
    assert_eq!(
        (p.limit, p.offset),
        (Some(Bound::Const(10)), Some(Bound::Const(5)))
    );
    assert_eq!(p.order, vec![desc(Visible(1))]);
}

// ---- HAVING ----

#[test]
fn having_on_a_selected_aggregate() {
    let p = rewritten(
        "SELECT status, count(*) FROM orders GROUP BY status HAVING count(*) > 5",
        "SELECT status, count(*) FROM orders GROUP BY status",
    );
    assert_eq!(
        having(&p),
        cmp(Operand::Column(Visible(1)), CmpOp::Gt, lit("5"))
    );
    assert_eq!(p.hidden, 0);
}

#[test]
fn having_on_unselected_aggregates_and_keys() {
    let p = rewritten(
        "SELECT status FROM orders GROUP BY status HAVING sum(total) >= 100.5 AND status <> 'void'",
        "SELECT status, sum(total) AS \"?sg_agg_0\" FROM orders GROUP BY status",
    );
    assert_eq!(
        having(&p),
        Predicate::And(
            Box::new(cmp(Operand::Column(Hidden(0)), CmpOp::GtEq, lit("100.5"))),
            Box::new(cmp(Operand::Column(Visible(0)), CmpOp::NotEq, lit("void"))),
        )
    );
    assert_eq!(columns(&p), vec![Combine::Key, Combine::Sum]);
}

#[test]
fn having_avg_not_selected_brings_its_helpers() {
    let p = rewritten(
        "SELECT status FROM orders GROUP BY status HAVING avg(total) < 10",
        "SELECT status, avg(total) AS \"?sg_agg_0\", sum(total) AS \"?sg_sum_1\", \
         count(total) AS \"?sg_count_2\" FROM orders GROUP BY status",
    );
    assert_eq!(
        columns(&p),
        vec![
            Combine::Key,
            Combine::Avg {
                sum: Hidden(1),
                count: Hidden(2)
            },
            Combine::Sum,
            Combine::Count
        ]
    );
    assert_eq!(
        having(&p),
        cmp(Operand::Column(Hidden(0)), CmpOp::Lt, lit("10"))
    );
}

#[test]
fn having_or_not_is_null_and_group_key_not_selected() {
    let p = rewritten(
        "SELECT count(*) FROM orders GROUP BY region \
         HAVING NOT (region IS NULL OR max(total) = -1) AND min(total) IS NOT NULL AND region <> NULL",
        "SELECT count(*), region AS \"?sg_key_0\", max(total) AS \"?sg_agg_1\", \
         min(total) AS \"?sg_agg_2\" FROM orders GROUP BY region",
    );
    let region = || Operand::Column(Hidden(0));
    let expected = Predicate::And(
        Box::new(Predicate::And(
            Box::new(Predicate::Not(Box::new(Predicate::Or(
                Box::new(Predicate::IsNull {
                    operand: region(),
                    negated: false,
                }),
                Box::new(cmp(Operand::Column(Hidden(1)), CmpOp::Eq, lit("-1"))),
            )))),
            Box::new(Predicate::IsNull {
                operand: Operand::Column(Hidden(2)),
                negated: true,
            }),
        )),
        Box::new(cmp(region(), CmpOp::NotEq, Operand::Null)),
    );
    assert_eq!(having(&p), expected);
}

#[test]
fn having_without_group_by_and_shared_helpers() {
    let p = rewritten(
        "SELECT count(*) FROM orders HAVING max(total) > 1 ORDER BY max(total)",
        "SELECT count(*), max(total) AS \"?sg_agg_0\" FROM orders ORDER BY max(total)",
    );
    assert_eq!(p.hidden, 1);
    assert_eq!(p.order, vec![asc(Hidden(0))]);
}

#[test]
fn having_shapes_outside_the_predicate_language_are_refused() {
    assert!(
        refused("SELECT status FROM orders GROUP BY status HAVING count(*) > $1")
            .starts_with("HAVING expression")
    );
    assert!(
        refused("SELECT status FROM orders GROUP BY status HAVING status LIKE 'a%'")
            .starts_with("HAVING expression")
    );
    assert!(
        refused("SELECT status FROM orders GROUP BY status HAVING total > 5")
            .starts_with("HAVING expression total")
    );
    assert_eq!(
        refused("SELECT status FROM orders GROUP BY status HAVING count(*) + 1 > 5"),
        "expression over aggregates"
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
