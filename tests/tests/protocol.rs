//! The wire protocol through the proxy, as a driver sees it: typed parameters and binary
//! results, transactions, errors, prepared statements under transaction pooling,
//! pipelining, portals, and a message over the size limit.

mod common;

use std::time::{Duration, Instant, UNIX_EPOCH};

use futures_util::{TryStreamExt, future::join_all};
use shardgate_e2e::{Fixture, wait_until};
use tokio_postgres::error::{DbError, SqlState};
use tokio_postgres::{Client, SimpleQueryMessage};

use common::{client, db_error, proxy_with, terminate_others, within};

/// Every field a driver can show of an error, which the proxy must pass through untouched.
fn assert_same_error(via_proxy: &DbError, direct: &DbError) {
    assert_eq!(via_proxy.code(), direct.code());
    assert_eq!(via_proxy.severity(), direct.severity());
    assert_eq!(via_proxy.message(), direct.message());
    assert_eq!(via_proxy.detail(), direct.detail());
    assert_eq!(via_proxy.hint(), direct.hint());
    assert_eq!(
        format!("{:?}", via_proxy.position()),
        format!("{:?}", direct.position())
    );
    assert_eq!(via_proxy.schema(), direct.schema());
    assert_eq!(via_proxy.table(), direct.table());
    assert_eq!(via_proxy.column(), direct.column());
    assert_eq!(via_proxy.constraint(), direct.constraint());
    assert_eq!(via_proxy.routine(), direct.routine());
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn typed_parameters_and_binary_results_round_trip() {
    let fx = Fixture::start().await;
    let c = fx.connect_proxy().await.unwrap();
    c.batch_execute(
        "create table typed (id int primary key, i2 int2, i4 int4, i8 int8, f8 float8, \
         n numeric, b bool, t text, by bytea, ts timestamp, u uuid, \
         ai int4[], at text[], a8 int8[])",
    )
    .await
    .unwrap();

    let ts = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    let text = "héllo ✓ 😀 'quoted' \"double\" back\\slash\ttab";
    let numeric = "-12345678901234567890.000000000000000000001";
    let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let ai = vec![Some(1i32), None, Some(i32::MIN)];
    let at = vec![
        "a,b".to_string(),
        String::new(),
        "{\"x\"}".into(),
        "ü".into(),
    ];
    let a8: Vec<i64> = Vec::new();
    let insert = c
        .prepare(
            "insert into typed values ($1, $2, $3, $4, $5, $6::text::numeric, $7, $8, $9, \
             $10, $11::text::uuid, $12, $13, $14)",
        )
        .await
        .unwrap();
    c.execute(
        &insert,
        &[
            &1i32,
            &i16::MIN,
            &i32::MAX,
            &i64::MIN,
            &-1.5e300f64,
            &numeric,
            &true,
            &text,
            &bytes,
            &ts,
            &uuid,
            &ai,
            &at,
            &a8,
        ],
    )
    .await
    .unwrap();
    let nulls: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
        &2i32,
        &None::<i16>,
        &None::<i32>,
        &None::<i64>,
        &None::<f64>,
        &None::<&str>,
        &None::<bool>,
        &None::<&str>,
        &None::<Vec<u8>>,
        &None::<std::time::SystemTime>,
        &None::<&str>,
        &None::<Vec<i32>>,
        &None::<Vec<String>>,
        &None::<Vec<i64>>,
    ];
    c.execute(&insert, &nulls).await.unwrap();

    let select = "select i2, i4, i8, f8, n::text, b, t, by, ts, u::text, ai, at, a8 \
                  from typed where id = $1";
    let row = c.query_one(select, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, i16>(0), i16::MIN);
    assert_eq!(row.get::<_, i32>(1), i32::MAX);
    assert_eq!(row.get::<_, i64>(2), i64::MIN);
    assert_eq!(row.get::<_, f64>(3), -1.5e300);
    assert_eq!(row.get::<_, String>(4), numeric);
    assert!(row.get::<_, bool>(5));
    assert_eq!(row.get::<_, String>(6), text);
    assert_eq!(row.get::<_, Vec<u8>>(7), bytes);
    assert_eq!(row.get::<_, std::time::SystemTime>(8), ts);
    assert_eq!(row.get::<_, String>(9), uuid);
    assert_eq!(row.get::<_, Vec<Option<i32>>>(10), ai);
    assert_eq!(row.get::<_, Vec<String>>(11), at);
    assert_eq!(row.get::<_, Vec<i64>>(12), a8);

    let row = c.query_one(select, &[&2i32]).await.unwrap();
    assert_eq!(row.get::<_, Option<i16>>(0), None);
    assert_eq!(row.get::<_, Option<i32>>(1), None);
    assert_eq!(row.get::<_, Option<i64>>(2), None);
    assert_eq!(row.get::<_, Option<f64>>(3), None);
    assert_eq!(row.get::<_, Option<String>>(4), None);
    assert_eq!(row.get::<_, Option<bool>>(5), None);
    assert_eq!(row.get::<_, Option<String>>(6), None);
    assert_eq!(row.get::<_, Option<Vec<u8>>>(7), None);
    assert_eq!(row.get::<_, Option<std::time::SystemTime>>(8), None);
    assert_eq!(row.get::<_, Option<String>>(9), None);
    assert_eq!(row.get::<_, Option<Vec<Option<i32>>>>(10), None);
    assert_eq!(row.get::<_, Option<Vec<String>>>(11), None);
    assert_eq!(row.get::<_, Option<Vec<i64>>>(12), None);

    // What landed on the shard is what was sent, seen without the proxy.
    let direct = fx.connect_shard(0).await;
    let row = direct
        .query_one(
            "select n::text, u::text, encode(by, 'hex'), t, ts::text, ai::text \
             from typed where id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), numeric);
    assert_eq!(row.get::<_, String>(1), uuid);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(row.get::<_, String>(2), hex);
    assert_eq!(row.get::<_, String>(3), text);
    assert_eq!(row.get::<_, String>(4), "2023-11-14 22:13:20.123456");
    assert_eq!(row.get::<_, String>(5), "{1,NULL,-2147483648}");

    // Parameters echoed straight back, special floats included.
    let row = c
        .query_one(
            "select $1::float8, $2::float8, 'NaN'::float8, $3::bytea, $4::text[]",
            &[
                &f64::INFINITY,
                &f64::NEG_INFINITY,
                &Vec::<u8>::new(),
                &vec![None::<String>, Some("x".into())],
            ],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), f64::INFINITY);
    assert_eq!(row.get::<_, f64>(1), f64::NEG_INFINITY);
    assert!(row.get::<_, f64>(2).is_nan());
    assert!(row.get::<_, Vec<u8>>(3).is_empty());
    assert_eq!(
        row.get::<_, Vec<Option<String>>>(4),
        vec![None, Some("x".into())]
    );
}

#[tokio::test]
async fn rolled_back_transactions_leave_nothing_and_committed_ones_persist() {
    let fx = Fixture::start().await;
    let mut c = fx.connect_proxy().await.unwrap();
    let direct = fx.connect_shard(0).await;
    c.batch_execute("create table ledger (id int primary key, note text)")
        .await
        .unwrap();

    let tx = c.transaction().await.unwrap();
    tx.execute("insert into ledger values (1, 'rolled back')", &[])
        .await
        .unwrap();
    let inside: i64 = tx
        .query_one("select count(*) from ledger", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inside, 1, "the transaction sees its own insert");
    assert_eq!(count(&direct, "select count(*) from ledger").await, 0);
    tx.rollback().await.unwrap();
    assert_eq!(count(&direct, "select count(*) from ledger").await, 0);

    let tx = c.transaction().await.unwrap();
    tx.execute("insert into ledger values (2, 'committed')", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // A transaction dropped without commit is rolled back.
    {
        let tx = c.transaction().await.unwrap();
        tx.execute("insert into ledger values (3, 'dropped')", &[])
            .await
            .unwrap();
    }

    // The same with simple-query transaction control.
    c.batch_execute("begin; insert into ledger values (4, 'simple rollback'); rollback")
        .await
        .unwrap();
    c.batch_execute("begin; insert into ledger values (5, 'simple commit')")
        .await
        .unwrap();
    c.batch_execute("insert into ledger values (6, 'second statement'); commit")
        .await
        .unwrap();
    c.batch_execute("insert into ledger values (7, 'autocommit')")
        .await
        .unwrap();

    let ids: Vec<i32> = direct
        .query("select id from ledger order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![2, 5, 6, 7]);
    let note: String = direct
        .query_one("select note from ledger where id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "committed");
}

#[tokio::test]
async fn server_errors_pass_through_unchanged_and_the_session_goes_on() {
    let fx = Fixture::start().await;
    let mut c = fx.connect_proxy().await.unwrap();
    let direct = fx.connect_shard(0).await;
    c.batch_execute(
        "create table uniq (k int constraint uniq_pk primary key, v text); \
         insert into uniq values (1, 'first')",
    )
    .await
    .unwrap();

    let dup = "insert into uniq values (1, 'again')";
    let via_proxy = c.execute(dup, &[]).await.unwrap_err();
    let straight = direct.execute(dup, &[]).await.unwrap_err();
    let e = db_error(&via_proxy);
    assert_eq!(e.code(), &SqlState::UNIQUE_VIOLATION);
    assert_eq!(e.detail(), Some("Key (k)=(1) already exists."));
    assert_eq!(e.constraint(), Some("uniq_pk"));
    assert_eq!(e.table(), Some("uniq"));
    assert_same_error(e, db_error(&straight));
    assert_eq!(count(&c, "select count(*) from uniq").await, 1);

    // Division by zero, extended protocol and simple protocol.
    let div = "select 1 / $1::int";
    let via_proxy = c.query_one(div, &[&0i32]).await.unwrap_err();
    let straight = direct.query_one(div, &[&0i32]).await.unwrap_err();
    assert_eq!(db_error(&via_proxy).code(), &SqlState::DIVISION_BY_ZERO);
    assert_eq!(db_error(&via_proxy).message(), "division by zero");
    assert_same_error(db_error(&via_proxy), db_error(&straight));
    let via_proxy = c.simple_query("select 1/0").await.unwrap_err();
    let straight = direct.simple_query("select 1/0").await.unwrap_err();
    assert_same_error(db_error(&via_proxy), db_error(&straight));
    assert_eq!(
        c.query_one("select $1::int + 1", &[&1i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );

    // An error with a position and a hint.
    let bad = "select nosuch_column from uniq";
    let via_proxy = c.simple_query(bad).await.unwrap_err();
    let straight = direct.simple_query(bad).await.unwrap_err();
    assert_eq!(db_error(&via_proxy).code(), &SqlState::UNDEFINED_COLUMN);
    assert_same_error(db_error(&via_proxy), db_error(&straight));

    // Inside a transaction: the error aborts it, the next statement says so, and after a
    // rollback the session works again.
    let tx = c.transaction().await.unwrap();
    let e = tx.execute(dup, &[]).await.unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::UNIQUE_VIOLATION);
    let e = tx.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::IN_FAILED_SQL_TRANSACTION);
    tx.rollback().await.unwrap();
    c.execute("insert into uniq values (2, 'second')", &[])
        .await
        .unwrap();
    assert_eq!(count(&direct, "select count(*) from uniq").await, 2);
}

/// Asserts what each of a client's statements returns: `double` (shared by all clients) and
/// its own, which is a different text under the same driver-side statement name.
async fn check_statements(
    c: &impl tokio_postgres::GenericClient,
    shared: &tokio_postgres::Statement,
    own: &tokio_postgres::Statement,
    who: i32,
    x: i32,
) {
    let doubled: i32 = c.query_one(shared, &[&x]).await.unwrap().get(0);
    assert_eq!(doubled, 2 * x, "client {who}: shared statement");
    let row = c.query_one(own, &[&x]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), x + who, "client {who}: own statement");
    assert_eq!(row.get::<_, String>(1), format!("client {who}"));
}

fn own_sql(who: i32) -> String {
    format!("select $1::int + {who}, 'client {who}'::text")
}

#[tokio::test]
async fn prepared_statements_interleave_over_one_server_connection() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 1).await;
    let mut clients = Vec::new();
    for who in 0..4i32 {
        let c = client(&proxy).await;
        // Half prepare the shared statement first, half their own: the driver names them
        // s0, s1, ... so one name means different statements on different clients.
        let (shared, own) = if who % 2 == 0 {
            let s = c.prepare("select $1::int * 2").await.unwrap();
            (s, c.prepare(&own_sql(who)).await.unwrap())
        } else {
            let o = c.prepare(&own_sql(who)).await.unwrap();
            (c.prepare("select $1::int * 2").await.unwrap(), o)
        };
        clients.push((who, c, shared, own));
    }
    for round in 0..25i32 {
        for (who, c, shared, own) in clients.iter_mut() {
            let x = round * 10 + *who;
            if round % 3 == 0 {
                let tx = c.transaction().await.unwrap();
                check_statements(&tx, shared, own, *who, x).await;
                let adhoc: i32 = tx
                    .query_one("select $1::int - 1", &[&x])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(adhoc, x - 1);
                tx.commit().await.unwrap();
            } else {
                check_statements(c, shared, own, *who, x).await;
            }
            if round % 5 == 4 {
                // Close the client's own statement and prepare it again under a new name.
                *own = c.prepare(&own_sql(*who)).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn prepared_statements_survive_eviction_from_a_small_server_cache() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| {
        c.shards[0].pool_size = 1;
        c.proxy.server_prepared_cache = 2;
    })
    .await;
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    let mut stmts = Vec::new();
    for k in 0..6i32 {
        let sql = format!("select $1::int * {k} + 1000");
        stmts.push((
            k,
            a.prepare(&sql).await.unwrap(),
            b.prepare(&sql).await.unwrap(),
        ));
    }
    for round in 0..20i32 {
        for (k, sa, sb) in &stmts {
            // A different visiting order per round, so the least recently used one changes.
            let pick = (round + k) % 2 == 0;
            let (c, s) = if pick { (&a, sa) } else { (&b, sb) };
            let v: i32 = c.query_one(s, &[&round]).await.unwrap().get(0);
            assert_eq!(v, round * k + 1000, "statement {k} in round {round}");
        }
    }
}

#[tokio::test]
async fn prepared_statements_from_concurrent_clients_are_reprepared_where_needed() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 2).await;
    let mut tasks = Vec::new();
    for who in 0..8i32 {
        let mut c = client(&proxy).await;
        tasks.push(tokio::spawn(async move {
            let shared = c.prepare("select $1::int * 2").await.unwrap();
            let own = c.prepare(&own_sql(who)).await.unwrap();
            for round in 0..40i32 {
                let x = round * 100 + who;
                if (round + who) % 4 == 0 {
                    let tx = c.transaction().await.unwrap();
                    check_statements(&tx, &shared, &own, who, x).await;
                    tx.commit().await.unwrap();
                } else {
                    check_statements(&c, &shared, &own, who, x).await;
                }
                let adhoc: String = c
                    .query_one("select $1::text || '!'", &[&format!("c{who}r{round}")])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(adhoc, format!("c{who}r{round}!"));
            }
            who
        }));
    }
    let done = within(120, "8 concurrent clients", join_all(tasks)).await;
    let mut finished: Vec<i32> = done.into_iter().map(|r| r.unwrap()).collect();
    finished.sort_unstable();
    assert_eq!(finished, (0..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn pipelined_queries_each_get_their_own_result() {
    let fx = Fixture::start().await;
    let c = fx.connect_proxy().await.unwrap();
    let div = c.prepare("select 100 / $1::int, $2::int").await.unwrap();
    let futures = (0..50i32).map(|i| {
        let (c, div) = (&c, &div);
        async move {
            match i % 10 {
                0 | 5 => {
                    let e = c.query_one(div, &[&0i32, &i]).await.unwrap_err();
                    assert_eq!(db_error(&e).code(), &SqlState::DIVISION_BY_ZERO, "#{i}");
                }
                1 | 6 => {
                    let row = c.query_one(div, &[&(i % 7 + 1), &i]).await.unwrap();
                    assert_eq!(row.get::<_, i32>(0), 100 / (i % 7 + 1), "#{i}");
                    assert_eq!(row.get::<_, i32>(1), i, "#{i}");
                }
                2 | 7 => {
                    let row = c
                        .query_one("select $1::int, repeat('x', $1::int)", &[&i])
                        .await
                        .unwrap();
                    assert_eq!(row.get::<_, i32>(0), i, "#{i}");
                    assert_eq!(row.get::<_, String>(1).len(), i as usize, "#{i}");
                }
                3 => {
                    let e = c.query_one(&format!("selec {i}"), &[]).await.unwrap_err();
                    assert_eq!(db_error(&e).code(), &SqlState::SYNTAX_ERROR, "#{i}");
                }
                8 => {
                    let sql = format!("select generate_series(1, {i})");
                    let rows = c.query(&sql, &[]).await.unwrap();
                    assert_eq!(rows.len(), i as usize, "#{i}");
                }
                4 => {
                    let msgs = c.simple_query(&format!("select {i}")).await.unwrap();
                    let SimpleQueryMessage::Row(row) = &msgs[1] else {
                        panic!("#{i}: {msgs:?}")
                    };
                    assert_eq!(row.get(0), Some(i.to_string().as_str()), "#{i}");
                }
                _ => {
                    let e = c
                        .simple_query(&format!("select {i}; select 1/0"))
                        .await
                        .unwrap_err();
                    assert_eq!(db_error(&e).code(), &SqlState::DIVISION_BY_ZERO, "#{i}");
                }
            }
            i
        }
    });
    let done = within(60, "50 pipelined queries", join_all(futures)).await;
    assert_eq!(done, (0..50).collect::<Vec<_>>());
    // The connection is still in step afterwards.
    let v: i32 = c.query_one(&div, &[&4i32, &9i32]).await.unwrap().get(0);
    assert_eq!(v, 25);
}

#[tokio::test]
async fn a_failed_parse_is_followed_by_a_good_one() {
    let fx = Fixture::start().await;
    let c = fx.connect_proxy().await.unwrap();
    let e = c.prepare("selec 1").await.unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::SYNTAX_ERROR);
    let good = c.prepare("select $1::int + 1").await.unwrap();
    let v: i32 = c.query_one(&good, &[&1i32]).await.unwrap().get(0);
    assert_eq!(v, 2);

    // The bad and the good one pipelined on the same connection.
    let (bad, good) = tokio::join!(
        c.prepare("select from from nowhere"),
        c.prepare("select $1::text || 'ok'")
    );
    assert_eq!(db_error(&bad.unwrap_err()).code(), &SqlState::SYNTAX_ERROR);
    let good = good.unwrap();
    let v: String = c.query_one(&good, &[&"is "]).await.unwrap().get(0);
    assert_eq!(v, "is ok");

    // A statement naming a missing table fails at Parse, and the same text works once the
    // table exists.
    let sql = "select count(*) from later";
    let e = c.prepare(sql).await.unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::UNDEFINED_TABLE);
    c.batch_execute("create table later (x int)").await.unwrap();
    let st = c.prepare(sql).await.unwrap();
    assert_eq!(c.query_one(&st, &[]).await.unwrap().get::<_, i64>(0), 0);
}

#[tokio::test]
async fn statement_on_a_dropped_table_fails_instead_of_hanging() {
    let (fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 1).await;
    let c = client(&proxy).await;
    let direct = fx.connect_shard(0).await;
    c.batch_execute("create table moving (a int); insert into moving values (1)")
        .await
        .unwrap();
    let st = c
        .prepare("select a from moving where a = $1")
        .await
        .unwrap();
    let rows = |x: i32| {
        let (c, st) = (&c, &st);
        async move { within(10, "query on moving", c.query(st, &[&x])).await }
    };
    assert_eq!(rows(1).await.unwrap().len(), 1);

    // The server connection that prepared it replans and fails.
    direct.batch_execute("drop table moving").await.unwrap();
    let e = rows(1).await.unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::UNDEFINED_TABLE);
    direct
        .batch_execute("create table moving (a int); insert into moving values (2)")
        .await
        .unwrap();
    assert_eq!(rows(2).await.unwrap()[0].get::<_, i32>(0), 2);

    // A new server connection must prepare it again, and that fails while the table is gone.
    assert!(terminate_others(&direct).await >= 1);
    direct.batch_execute("drop table moving").await.unwrap();
    let e = rows(2).await.unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::UNDEFINED_TABLE);
    let one: i32 = c.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session survives a failed re-prepare");
    let e = rows(2).await.unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::UNDEFINED_TABLE);
    direct
        .batch_execute("create table moving (a int); insert into moving values (3)")
        .await
        .unwrap();
    assert_eq!(rows(3).await.unwrap()[0].get::<_, i32>(0), 3);

    // A changed result type is refused exactly as Postgres refuses it.
    let direct_st = direct
        .prepare("select a from moving where a = $1")
        .await
        .unwrap();
    assert_eq!(direct.query(&direct_st, &[&3i32]).await.unwrap().len(), 1);
    direct
        .batch_execute("drop table moving; create table moving (a int8)")
        .await
        .unwrap();
    let e = rows(3).await.unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::FEATURE_NOT_SUPPORTED);
    assert!(
        db_error(&e)
            .message()
            .contains("must not change result type"),
        "{e}"
    );
    let straight = direct.query(&direct_st, &[&3i32]).await.unwrap_err();
    assert_same_error(db_error(&e), db_error(&straight));
}

#[tokio::test]
async fn portals_fetch_in_chunks() {
    let fx = Fixture::start().await;
    let mut c = fx.connect_proxy().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let portal = tx
        .bind(
            "select g, 'row ' || g from generate_series(1, $1::int) g order by g",
            &[&95i32],
        )
        .await
        .unwrap();
    let mut chunks = Vec::new();
    let mut seen = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 10).await.unwrap();
        if rows.is_empty() {
            break;
        }
        chunks.push(rows.len());
        for r in &rows {
            let g: i32 = r.get(0);
            assert_eq!(r.get::<_, String>(1), format!("row {g}"));
            seen.push(g);
        }
        assert!(chunks.len() <= 10, "portal never ends: {chunks:?}");
    }
    assert_eq!(chunks, [10, 10, 10, 10, 10, 10, 10, 10, 10, 5]);
    assert_eq!(seen, (1..=95).collect::<Vec<_>>());

    // Two portals open at once, fetched alternately.
    let stmt = tx
        .prepare("select g from generate_series($1::int, $2::int) g")
        .await
        .unwrap();
    let low = tx.bind(&stmt, &[&1i32, &30i32]).await.unwrap();
    let high = tx.bind(&stmt, &[&101i32, &130i32]).await.unwrap();
    let (mut got_low, mut got_high) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for r in tx.query_portal(&low, 7).await.unwrap() {
            got_low.push(r.get::<_, i32>(0));
        }
        for r in tx.query_portal(&high, 7).await.unwrap() {
            got_high.push(r.get::<_, i32>(0));
        }
    }
    assert_eq!(got_low, (1..=30).collect::<Vec<_>>());
    assert_eq!(got_high, (101..=130).collect::<Vec<_>>());
    tx.commit().await.unwrap();

    // query_raw streams the rows of one Execute.
    let stream = c
        .query_raw(
            "select g from generate_series(1, $1::int) g",
            [95i32].iter(),
        )
        .await
        .unwrap();
    let rows: Vec<tokio_postgres::Row> = stream.try_collect().await.unwrap();
    let sum: i32 = rows.iter().map(|r| r.get::<_, i32>(0)).sum();
    assert_eq!((rows.len(), sum), (95, 95 * 96 / 2));
}

#[tokio::test]
async fn an_oversized_message_closes_only_its_own_client() {
    let limit = 64 * 1024;
    let fx = Fixture::builder()
        .proxy_key("max_message_size", &limit.to_string())
        .start()
        .await;
    let big = fx.connect_proxy().await.unwrap();
    let bystander = fx.connect_proxy().await.unwrap();
    let param_sender = fx.connect_proxy().await.unwrap();

    // Just under the limit is fine.
    let fits = format!("select length('{}')", "x".repeat(limit - 1000));
    let msgs = big.simple_query(&fits).await.unwrap();
    let SimpleQueryMessage::Row(row) = &msgs[1] else {
        panic!("{msgs:?}")
    };
    assert_eq!(row.get(0), Some((limit - 1000).to_string().as_str()));

    let start = Instant::now();
    let huge = format!("select length('{}')", "y".repeat(1 << 20));
    let e = within(10, "1 MiB query", big.simple_query(&huge))
        .await
        .unwrap_err();
    if let Some(db) = e.as_db_error() {
        assert_eq!(db.code(), &SqlState::PROTOCOL_VIOLATION, "{db:?}");
    }
    assert!(
        wait_until(Duration::from_secs(5), || async { big.is_closed() }).await,
        "the proxy kept the connection of a client that sent {} bytes",
        huge.len()
    );
    assert!(start.elapsed() < Duration::from_secs(5));

    // A 1 MiB Bind parameter is refused the same way.
    let e = within(
        10,
        "1 MiB parameter",
        param_sender.query_one("select length($1::text)", &[&huge]),
    )
    .await
    .unwrap_err();
    if let Some(db) = e.as_db_error() {
        assert_eq!(db.code(), &SqlState::PROTOCOL_VIOLATION, "{db:?}");
    }

    let v: i32 = bystander
        .query_one("select $1::int", &[&7i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 7, "another client of the proxy is unaffected");
    assert!(!fx.proxy().is_finished());
    let fresh = fx.connect_proxy().await.unwrap();
    assert_eq!(count(&fresh, "select 5::bigint").await, 5);
}
