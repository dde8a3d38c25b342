//! Fan-out reads (DESIGN.md §4), differentially: the same rows are loaded through the proxy
//! into 4 shards and directly into one reference Postgres, and every query below must give
//! the same answer both ways (in order where its ORDER BY fixes the order, as a multiset
//! otherwise), or SG004 through the proxy where the merge cannot be exact. Both protocols:
//! the simple one compares text, the extended one compares the binary values byte for byte.

mod common;

use std::time::Duration;

use common::{db_error, proxy_with, within};
use shardgate_e2e::{Fixture, ProxyHandle};
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

const TENANTS: i64 = 40;

const SCHEMA: &str = "
create table accounts (
    tenant_id bigint not null, id int not null, name text, region text, plan text,
    score int, balance numeric(12,2), rating float8, active bool, created date,
    updated timestamptz, ext uuid, primary key (tenant_id, id));
create table events (
    tenant_id bigint not null, id bigint not null, account_id int not null,
    kind text not null, amount_cents bigint, at timestamp, primary key (tenant_id, id));
create table plans (name text primary key, price int);";

fn accounts_sql(t: i64) -> String {
    let n = 5 + (t * 7) % 23;
    format!(
        "/* tenant_id={t} */ insert into accounts
         select {t}, g,
           case when g % 11 = 0 then null
                when g % 5 = 0 then upper(chr(97 + (g * {t}) % 26) || 'acct' || g)
                else chr(97 + (g * {t}) % 26) || 'acct' || g end,
           (array['eu', 'us', 'apac', null])[1 + ({t} + g) % 4],
           (array['free', 'team', 'enterprise'])[1 + ({t} * g) % 3],
           case when g % 13 = 0 then null else ((g * 37 + {t} * 11) % 200) - 20 end,
           case when g % 9 = 0 then null else ((g * 1234 + {t} * 77) % 100000) / 100.0 - 300 end,
           case when g = 3 and {t} = 5 then 'NaN'::float8
                else ((g * 3 + {t}) % 17) * 0.25 - 1.0 end,
           (g + {t}) % 3 = 0,
           case when g % 7 = 0 then null else date '2026-01-01' + ((g * 5 + {t} * 3) % 400) end,
           timestamptz '2026-11-01 04:00:00+00' + ((g * 7 + {t} * 13) % 60) * interval '3 minutes',
           md5({t} || '-' || g)::uuid
         from generate_series(1, {n}) g"
    )
}

fn events_sql(t: i64) -> String {
    let n = 3 + (t * 5) % 11;
    let accounts = 5 + (t * 7) % 23;
    format!(
        "/* tenant_id={t} */ insert into events
         select {t}, g, 1 + g % {accounts},
           (array['sale', 'refund', 'fee'])[1 + (g + {t}) % 3],
           case when g % 6 = 0 then null
                when g % 5 = 0 then ((g * 997 + {t} * 31) % 100000) * 100000000000
                else (g * 997 + {t} * 31) % 100000 - 20000 end,
           timestamp '2026-01-01' + g * {t} * interval '1 hour'
         from generate_series(1, {n}) g"
    )
}

const PLANS: &str = "insert into plans values ('free', 0), ('team', 49), ('enterprise', 499)";

/// 5 clusters: the proxy serves the first 4, the fifth is the reference.
async fn fleet() -> (Fixture, ProxyHandle, Client, Client) {
    let (fx, proxy) = proxy_with(
        Fixture::builder()
            .shards(5)
            .sharding_key("sharded_tables", "[\"accounts\", \"events\"]"),
        |c| c.shards.truncate(4),
    )
    .await;
    for i in 0..5 {
        fx.connect_shard(i)
            .await
            .batch_execute(SCHEMA)
            .await
            .unwrap();
    }
    let via = common::client(&proxy).await;
    let reference = fx.connect_shard(4).await;
    for t in 1..=TENANTS {
        for sql in [accounts_sql(t), events_sql(t)] {
            via.batch_execute(&sql).await.unwrap();
            reference.batch_execute(&sql).await.unwrap();
        }
    }
    via.batch_execute(PLANS).await.unwrap();
    reference.batch_execute(PLANS).await.unwrap();
    // Offsets that change inside the data (the US fall-back hour) for timestamptz text.
    for c in [&via, &reference] {
        c.batch_execute("set timezone = 'America/New_York'")
            .await
            .unwrap();
    }
    (fx, proxy, via, reference)
}

/// Whether the query's ORDER BY fixes the order of every row it returns.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    Fixed,
    Any,
}
use Order::{Any, Fixed};

/// Queries that must give the reference's answer, both protocols.
const SAME: &[(&str, Order)] = &[
    // plain rows
    ("select id, name from accounts where score > 50", Any),
    ("select * from accounts", Any),
    ("select * from events where kind = 'sale'", Any),
    (
        "select tenant_id, id, score from accounts order by score desc, tenant_id, id",
        Fixed,
    ),
    (
        "select tenant_id, id, name from accounts order by name, tenant_id, id",
        Fixed,
    ),
    (
        "select tenant_id, id, name from accounts order by name nulls first, tenant_id, id",
        Fixed,
    ),
    (
        "select tenant_id, id, balance from accounts order by balance desc nulls last, tenant_id, id",
        Fixed,
    ),
    (
        "select tenant_id, id, rating from accounts order by rating, tenant_id, id",
        Fixed,
    ),
    (
        "select tenant_id, id, active from accounts order by active desc, tenant_id desc, id",
        Fixed,
    ),
    (
        "select tenant_id, id, created from accounts order by created desc, tenant_id, id",
        Fixed,
    ),
    (
        "select tenant_id, id, updated from accounts order by updated, tenant_id, id",
        Fixed,
    ),
    ("select ext, name from accounts order by ext", Fixed),
    (
        "select tenant_id, id, at from events order by at desc, tenant_id, id",
        Fixed,
    ),
    (
        "select tenant_id, id, amount_cents from events order by amount_cents, tenant_id, id limit 10",
        Fixed,
    ),
    (
        "select tenant_id, id, amount_cents from events order by amount_cents desc nulls last, tenant_id, id limit 10 offset 5",
        Fixed,
    ),
    (
        "select tenant_id, id from accounts order by tenant_id, id offset 20",
        Fixed,
    ),
    (
        "select tenant_id, id from accounts order by tenant_id, id limit 0",
        Fixed,
    ),
    (
        "select name from accounts order by id, tenant_id limit 7",
        Fixed,
    ),
    (
        "select id from accounts order by lower(name), tenant_id, id limit 15",
        Fixed,
    ),
    (
        "select tenant_id, id from accounts order by 2 desc, 1 limit 9",
        Fixed,
    ),
    (
        "select tenant_id, id from accounts order by tenant_id, id fetch first 5 rows only",
        Fixed,
    ),
    (
        "select name, score from accounts order by score desc nulls last, name, tenant_id, id limit 12",
        Fixed,
    ),
    (
        "select score from accounts order by score nulls first, tenant_id, id limit 30",
        Fixed,
    ),
    (
        "select tenant_id, id from accounts where name like 'a%' order by tenant_id, id",
        Fixed,
    ),
    (
        "select tenant_id, id, updated from accounts order by updated desc, tenant_id, id limit 5",
        Fixed,
    ),
    // aggregates
    ("select count(*) from accounts", Fixed),
    ("select count(name) from accounts", Fixed),
    (
        "select sum(score), min(score), max(score) from accounts",
        Fixed,
    ),
    ("select avg(score) from accounts", Fixed),
    ("select avg(balance), sum(balance) from accounts", Fixed),
    (
        "select avg(rating), sum(rating) from accounts where not (tenant_id = 5 and id = 3)",
        Fixed,
    ),
    (
        "select avg(rating), sum(rating), min(rating), max(rating) from accounts",
        Fixed,
    ),
    ("select min(name), max(name) from accounts", Fixed),
    ("select min(created), max(updated) from accounts", Fixed),
    ("select count(*) from accounts where score > 1000", Fixed),
    (
        "select sum(score), avg(score) from accounts where score > 1000",
        Fixed,
    ),
    (
        "select avg(amount_cents), sum(amount_cents) from events",
        Fixed,
    ),
    (
        "select sum(amount_cents) from events where kind = 'refund'",
        Fixed,
    ),
    (
        "select count(*) filter (where active), count(*) from accounts",
        Fixed,
    ),
    ("select count(distinct tenant_id) from accounts", Fixed),
    // GROUP BY, HAVING, DISTINCT
    ("select region, count(*) from accounts group by region", Any),
    (
        "select region, count(*), sum(balance), avg(score) from accounts group by region order by region",
        Fixed,
    ),
    (
        "select plan, region, count(*) from accounts group by plan, region order by 1, 2",
        Fixed,
    ),
    (
        "select region, count(*) from accounts group by region having count(*) > 10 order by region",
        Fixed,
    ),
    (
        "select region, count(*) from accounts group by region having sum(score) > 500 order by region",
        Fixed,
    ),
    (
        "select region from accounts group by region order by count(*) desc, region",
        Fixed,
    ),
    ("select count(*) from accounts group by region", Any),
    (
        "select active, avg(rating) from accounts where rating = rating group by active order by active",
        Fixed,
    ),
    (
        "select region, count(*) from accounts group by region order by count(*) desc, region limit 2",
        Fixed,
    ),
    (
        "select region, max(balance) from accounts group by region having max(balance) > 100 order by region",
        Fixed,
    ),
    (
        "select region, count(*) from accounts where name is not null group by region having count(*) >= 5 and min(score) < 10 order by region",
        Fixed,
    ),
    (
        "select tenant_id, count(*), sum(score) from accounts group by tenant_id order by tenant_id",
        Fixed,
    ),
    (
        "select kind, sum(amount_cents), count(amount_cents) from events group by kind order by kind",
        Fixed,
    ),
    ("select distinct region from accounts", Any),
    (
        "select distinct region, plan from accounts order by region, plan",
        Fixed,
    ),
    (
        "select distinct plan from accounts order by plan limit 2",
        Fixed,
    ),
    (
        "select tenant_id, count(*) from accounts where tenant_id in (1, 5, 9, 13, 22) group by tenant_id order by 1",
        Fixed,
    ),
    // joins that stay on each shard, and global tables
    (
        "select a.region, count(*) from accounts a join events e on e.tenant_id = a.tenant_id and e.account_id = a.id group by a.region order by a.region",
        Fixed,
    ),
    (
        "select p.name, count(*), sum(p.price) from accounts a join plans p on p.name = a.plan group by p.name order by p.name",
        Fixed,
    ),
    ("select * from plans order by name", Fixed),
    ("select count(*) from plans", Fixed),
];

/// Queries the proxy must refuse with SG004 (a merge would not be exact).
const REFUSED: &[&str] = &[
    "select row_number() over (order by id) from accounts",
    "select count(distinct region) from accounts",
    "select percentile_cont(0.5) within group (order by score) from accounts",
    "select string_agg(name, ',') from accounts",
    "select region, sum(score) / count(*) from accounts group by region",
    "select * from accounts a join events e on e.id = a.id",
    "select * from accounts where id in (select account_id from events)",
    "select region from accounts union select kind from events",
    "select distinct on (region) region, id from accounts",
];

type TextRows = Vec<Vec<Option<String>>>;

/// Column names, rows and the CommandComplete row count of a simple query.
async fn simple(
    c: &Client,
    sql: &str,
) -> Result<(Vec<String>, TextRows, Option<u64>), tokio_postgres::Error> {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    let mut tag = None;
    for m in c.simple_query(sql).await? {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
            }
            SimpleQueryMessage::CommandComplete(n) => tag = Some(n),
            _ => {}
        }
    }
    Ok((columns, rows, tag))
}

/// Any value, as the bytes the server sent (binary format).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

type BinRows = Vec<Vec<Raw>>;

async fn extended(
    c: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(Vec<(String, Type)>, BinRows), tokio_postgres::Error> {
    let stmt = c.prepare(sql).await?;
    let columns = stmt
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_().clone()))
        .collect();
    let rows = c
        .query(&stmt, params)
        .await?
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, Raw>(i)).collect())
        .collect();
    Ok((columns, rows))
}

fn same<T: Ord + std::fmt::Debug + Clone>(sql: &str, order: Order, got: &[T], want: &[T]) {
    let (mut got, mut want) = (got.to_vec(), want.to_vec());
    if order == Any {
        got.sort();
        want.sort();
    }
    assert_eq!(got.len(), want.len(), "row count of {sql}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "row {i} of {sql}");
    }
}

#[tokio::test]
async fn fan_out_reads_match_one_postgres_in_both_protocols() {
    let (_fx, _proxy, via, reference) = fleet().await;
    assert!(SAME.len() + REFUSED.len() >= 60);
    for &(sql, order) in SAME {
        let want = simple(&reference, sql).await.unwrap();
        let got = within(30, sql, simple(&via, sql))
            .await
            .unwrap_or_else(|e| panic!("simple {sql}: {e}"));
        assert_eq!(got.0, want.0, "columns of {sql}");
        assert_eq!(got.2, want.2, "command tag of {sql}");
        same(sql, order, &got.1, &want.1);

        let want = extended(&reference, sql, &[]).await.unwrap();
        let got = within(30, sql, extended(&via, sql, &[]))
            .await
            .unwrap_or_else(|e| panic!("extended {sql}: {e}"));
        assert_eq!(got.0, want.0, "columns of {sql} (extended)");
        same(sql, order, &got.1, &want.1);
    }
    for sql in REFUSED {
        let e = simple(&via, sql).await.expect_err(sql);
        assert_eq!(db_error(&e).code().code(), "SG004", "{sql}: {e}");
        let e = extended(&via, sql, &[]).await.expect_err(sql);
        assert_eq!(db_error(&e).code().code(), "SG004", "{sql} (extended): {e}");
    }
    // A shard's error fails the statement with that shard's SQLSTATE, as one server would.
    let failing = "select tenant_id, 1 / (score - score) from accounts where score is not null";
    let want = simple(&reference, failing).await.expect_err(failing);
    let got = simple(&via, failing).await.expect_err(failing);
    assert_eq!(db_error(&got).code(), db_error(&want).code(), "{got}");
    let got = extended(&via, failing, &[]).await.expect_err(failing);
    assert_eq!(db_error(&got).code().code(), "22012", "{got}");
    // The connection is still usable after the refusals.
    assert_eq!(simple(&via, "select 1").await.unwrap().1.len(), 1);
}

#[tokio::test]
async fn fan_out_with_parameters_in_the_extended_protocol() {
    let (_fx, _proxy, via, reference) = fleet().await;
    let cases: &[(&str, &[&(dyn ToSql + Sync)], Order)] = &[
        (
            "select tenant_id, id from accounts where score > $1 order by score, tenant_id, id limit $2",
            &[&50i32, &10i64],
            Fixed,
        ),
        (
            "select * from accounts order by tenant_id, id limit $1 offset $2",
            &[&7i64, &13i64],
            Fixed,
        ),
        (
            "select region, count(*) from accounts where score > $1 group by region order by region",
            &[&0i32],
            Fixed,
        ),
        (
            "select tenant_id, count(*) from accounts where tenant_id = any($1) group by tenant_id order by 1",
            &[&vec![2i64, 3, 4, 17, 31]],
            Fixed,
        ),
        ("select name from accounts where region = $1", &[&"eu"], Any),
    ];
    for &(sql, params, order) in cases {
        let want = extended(&reference, sql, params).await.unwrap();
        let got = within(30, sql, extended(&via, sql, params))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(got.0, want.0, "columns of {sql}");
        same(sql, order, &got.1, &want.1);
    }
}

#[tokio::test]
async fn a_fan_out_with_a_shard_down_fails_promptly_naming_it() {
    let (mut fx, _proxy, via, _reference) = fleet().await;
    fx.shards[2].stop().unwrap();
    let started = std::time::Instant::now();
    let e = within(
        10,
        "fan-out with a dead shard",
        simple(&via, "select count(*) from accounts"),
    )
    .await
    .expect_err("a fan-out over a dead shard must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let db = db_error(&e);
    assert!(db.code().code().starts_with("08"), "{e}");
    assert!(
        db.message().contains("s2"),
        "the error names the shard: {e}"
    );
    // A tenant on a live shard is still served.
    let map = shardgate_catalog::ShardMap::from_specs(
        &fx.config.shards[..4],
        shardgate_catalog::Strategy::Hash,
        fx.config.sharding.vnodes_per_shard,
    )
    .unwrap();
    let live = (1..=TENANTS)
        .find(|t| {
            map.locate(&shardgate_catalog::TenantKey::Int(*t))
                .unwrap()
                .shard
                != 2
        })
        .unwrap();
    let rows = simple(
        &via,
        &format!("select count(*) from accounts where tenant_id = {live}"),
    )
    .await
    .unwrap();
    assert_eq!(rows.1.len(), 1);
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

/// Backends of `app` on `shard` busy with the big query (an idle pooled connection that
/// ran it earlier does not count).
async fn busy_with_big(shard: &Client) -> i64 {
    shard
        .query_one(
            "select count(*) from pg_stat_activity where datname = 'app' \
             and state <> 'idle' and query like '%from big order by v%' \
             and pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn an_ordered_fan_out_of_a_million_rows_streams_and_a_leaving_client_frees_the_shards() {
    use futures_util::TryStreamExt;

    const PER_SHARD: i64 = 250_000;
    let (fx, proxy) = proxy_with(
        Fixture::builder()
            .shards(4)
            .sharding_key("sharded_tables", "[\"big\"]"),
        |_| {},
    )
    .await;
    let mut shards = Vec::new();
    for i in 0..4 {
        let s = fx.connect_shard(i).await;
        s.batch_execute(&format!(
            "create table big (tenant_id bigint, id bigint, v int, pad text, \
                               primary key (tenant_id, id));
             insert into big select {i}, g, (g * 7919 + {i}) % 1000003, repeat('x', 100)
             from generate_series(1, {PER_SHARD}) g;
             analyze big"
        ))
        .await
        .unwrap();
        shards.push(s);
    }
    let via = common::client(&proxy).await;
    // Peak RSS from here on: the proxy runs in this process.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let base = proc_status_kib("VmRSS:");
    let rows = via
        .query_raw(
            "select v, pad from big order by v",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(rows);
    let (mut n, mut last) = (0i64, i32::MIN);
    while let Some(row) = within(120, "streaming the fan-out", rows.try_next())
        .await
        .unwrap()
    {
        let v: i32 = row.get(0);
        assert!(v >= last, "row {n}: {v} after {last}");
        last = v;
        n += 1;
    }
    assert_eq!(n, 4 * PER_SHARD);
    let growth_mib = (proc_status_kib("VmHWM:").saturating_sub(base)) / 1024;
    eprintln!("peak RSS growth while streaming {n} ordered rows: {growth_mib} MiB");
    assert!(growth_mib < 64, "RSS grew by {growth_mib} MiB");

    // A client that leaves in the middle: every shard's backend is freed.
    // (Its connection task is aborted, so the socket closes with rows still coming.)
    let (leaving, conn) = common::proxy_config(&proxy)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let rows = leaving
        .query_raw(
            "select v, pad from big order by v",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(rows);
    for _ in 0..1000 {
        rows.try_next().await.unwrap().unwrap();
    }
    conn.abort();
    drop(leaving);
    let freed = shardgate_e2e::wait_until(Duration::from_secs(10), || async {
        let mut busy = 0;
        for s in &shards {
            busy += busy_with_big(s).await;
        }
        busy == 0
    })
    .await;
    assert!(
        freed,
        "shard backends still busy 10 s after the client left"
    );
    // And the proxy still serves fan-outs.
    let (_, rows, _) = simple(&via, "select count(*) from big").await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn ddl_that_fails_on_one_shard_says_where_it_was_applied() {
    let (fx, proxy) = proxy_with(Fixture::builder().shards(4), |_| {}).await;
    fx.connect_shard(1)
        .await
        .batch_execute("create table audit (x int)")
        .await
        .unwrap();
    let via = common::client(&proxy).await;
    let e = via
        .batch_execute("create table audit (x int)")
        .await
        .expect_err("the shard that has the table refuses it");
    let db = db_error(&e);
    assert_eq!(
        db.code().code(),
        "42P07",
        "the failing shard's SQLSTATE: {e}"
    );
    assert!(db.message().contains("s1"), "names the failing shard: {e}");
    let detail = db.detail().unwrap_or_default().to_owned();
    let mut has = Vec::new();
    for i in 0..4 {
        let n: i64 = fx
            .connect_shard(i)
            .await
            .query_one(
                "select count(*) from pg_tables where tablename = 'audit'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 && i != 1 {
            has.push(format!("s{i}"));
        }
    }
    assert!(!has.is_empty(), "the other shards ran it");
    for name in &has {
        assert!(detail.contains(name.as_str()), "{detail} lists {name}");
    }
    for i in [0, 2, 3] {
        let name = format!("s{i}");
        if !has.contains(&name) {
            assert!(!detail.contains(&name), "{detail} does not claim {name}");
        }
    }
}
