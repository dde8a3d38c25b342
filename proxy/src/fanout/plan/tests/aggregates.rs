//! Planner cases for aggregates, GROUP BY and HAVING (the helpers are the parent's).

use super::*;

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
