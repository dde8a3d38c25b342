use super::*;
use crate::fanout::plan::{Bound, Grouping};

const INT8: u32 = 20;
const NUMERIC: u32 = 1700;
const TEXT: u32 = 25;

fn text(oid: u32) -> Column {
    Column {
        oid,
        format: Format::Text,
    }
}

fn row(values: &[Option<&str>]) -> Row {
    values
        .iter()
        .map(|v| v.map(|s| Bytes::copy_from_slice(s.as_bytes())))
        .collect()
}

fn strings(rows: &[Row]) -> Vec<Vec<Option<String>>> {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|v| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))
                .collect()
        })
        .collect()
}

fn plan() -> MergePlan {
    MergePlan {
        shard_sql: String::new(),
        hidden: 0,
        order: Vec::new(),
        limit: None,
        offset: None,
        distinct: false,
        grouping: None,
    }
}

fn drain(m: &mut Merger) -> Vec<Row> {
    std::iter::from_fn(|| m.pop()).collect()
}

#[test]
fn concat_streams_rows_as_they_come_within_offset_and_limit() {
    let mut m = Merger::new(&plan(), vec![text(INT8)], 2, Some(2), 1).unwrap();
    assert_eq!(m.wants(), Want::Any);
    m.push(1, row(&[Some("1")])).unwrap();
    assert!(m.pop().is_none(), "skipped by OFFSET 1");
    m.push(0, row(&[Some("2")])).unwrap();
    assert_eq!(strings(&drain(&mut m)), [[Some("2".into())]]);
    m.push(0, row(&[Some("3")])).unwrap();
    m.push(1, row(&[Some("4")])).unwrap();
    assert_eq!(strings(&drain(&mut m)), [[Some("3".into())]]);
    m.finish_shard(0).unwrap();
    m.finish_shard(1).unwrap();
    assert_eq!(m.wants(), Want::Nothing);
    assert!(m.push(0, row(&[Some("1"), None])).is_err(), "width checked");
}

#[test]
fn ordered_merge_waits_for_every_shard_and_honours_desc_and_nulls() {
    let mut p = plan();
    p.order = vec![SortKey {
        col: ColumnRef::Visible(0),
        desc: true,
        nulls_first: true,
    }];
    p.hidden = 1;
    let cols = vec![text(INT8), text(TEXT)];
    let mut m = Merger::new(&p, cols, 3, None, 0).unwrap();
    assert_eq!(m.wants(), Want::Shard(0));
    m.push(0, row(&[Some("9"), Some("a")])).unwrap();
    m.push(0, row(&[Some("-3"), Some("b")])).unwrap();
    assert_eq!(m.wants(), Want::Shard(1));
    assert!(m.pop().is_none(), "shard 1 and 2 have not spoken");
    m.push(1, row(&[None, Some("c")])).unwrap();
    m.push(2, row(&[Some("10"), Some("d")])).unwrap();
    m.push(2, row(&[Some("4"), Some("e")])).unwrap();
    // NULL first (NULLS FIRST); then shard 1 must speak again before anything else.
    assert_eq!(strings(&drain(&mut m)), [[None]], "hidden column cut off");
    assert_eq!(m.wants(), Want::Shard(1));
    m.finish_shard(1).unwrap();
    // 10 (shard 2), 9 (shard 0), 4 (shard 2); then shard 2 has nothing buffered.
    assert_eq!(
        strings(&drain(&mut m)),
        [[Some("10".into())], [Some("9".into())], [Some("4".into())]]
    );
    assert_eq!(m.wants(), Want::Shard(2));
    m.finish_shard(2).unwrap();
    m.finish_shard(0).unwrap();
    assert_eq!(strings(&drain(&mut m)), [[Some("-3".into())]]);
    assert_eq!(m.wants(), Want::Nothing);
}

#[test]
fn groups_recombine_counts_sums_and_averages_then_having_order_and_limit() {
    // region, count, sum(n), avg(n) | hidden sum(n), count(n)
    let mut p = plan();
    p.hidden = 2;
    p.grouping = Some(Grouping {
        columns: vec![
            Combine::Key,
            Combine::Count,
            Combine::Sum,
            Combine::Avg {
                sum: ColumnRef::Hidden(0),
                count: ColumnRef::Hidden(1),
            },
            Combine::Sum,
            Combine::Count,
        ],
        having: Some(Predicate::Cmp {
            left: Operand::Column(ColumnRef::Visible(1)),
            op: CmpOp::Gt,
            right: Operand::Literal("1".into()),
        }),
    });
    p.order = vec![SortKey {
        col: ColumnRef::Visible(2),
        desc: true,
        nulls_first: true,
    }];
    p.limit = Some(Bound::Const(5));
    let cols = vec![
        text(TEXT),
        text(INT8),
        text(NUMERIC),
        text(NUMERIC),
        text(NUMERIC),
        text(INT8),
    ];
    let mut m = Merger::new(&p, cols, 2, Some(5), 0).unwrap();
    let r = |k: &str, c: &str, s: &str, sc: &str| {
        row(&[Some(k), Some(c), Some(s), Some("0"), Some(s), Some(sc)])
    };
    m.push(0, r("eu", "2", "10", "2")).unwrap();
    m.push(0, r("us", "1", "7", "1")).unwrap();
    m.push(1, r("eu", "1", "5", "1")).unwrap();
    m.push(1, r("apac", "3", "30", "3")).unwrap();
    m.finish_shard(0).unwrap();
    assert!(
        m.pop().is_none(),
        "groups come out when every shard is done"
    );
    m.finish_shard(1).unwrap();
    // us has count 1: filtered by HAVING count > 1. apac 30 before eu 15.
    assert_eq!(
        strings(&drain(&mut m)),
        [
            ["apac", "3", "30", "10.0000000000000000"].map(|s| Some(s.to_string())),
            ["eu", "3", "15", "5.0000000000000000"].map(|s| Some(s.to_string())),
        ]
    );
}

#[test]
fn distinct_keeps_one_row_per_value() {
    let mut p = plan();
    p.distinct = true;
    let mut m = Merger::new(&p, vec![text(TEXT)], 2, None, 0).unwrap();
    for (s, v) in [(0, "a"), (1, "a"), (1, "b"), (0, "b"), (0, "c")] {
        m.push(s, row(&[Some(v)])).unwrap();
    }
    m.push(1, row(&[None])).unwrap();
    m.push(0, row(&[None])).unwrap();
    m.finish_shard(0).unwrap();
    m.finish_shard(1).unwrap();
    let mut got = strings(&drain(&mut m));
    got.sort();
    assert_eq!(
        got,
        [None, Some("a".into()), Some("b".into()), Some("c".into())].map(|v| vec![v])
    );
}

#[test]
fn references_past_the_row_are_refused_up_front() {
    let mut p = plan();
    p.hidden = 1;
    p.order = vec![SortKey {
        col: ColumnRef::Hidden(3),
        desc: false,
        nulls_first: false,
    }];
    assert!(Merger::new(&p, vec![text(INT8), text(INT8)], 2, None, 0).is_err());
}
