//! Tenant routing over 4 real shards (DESIGN.md §3): every tenant's rows land on exactly
//! the shard the map names, by every way of naming the tenant, and the refusals (SG001,
//! SG002, SG003) leave nothing behind. The map here is the config's (no catalog); the
//! expected shard is computed with the same catalog code the proxy uses.

mod common;

use std::collections::HashMap;

use common::{client, db_error, proxy_with, within};
use shardgate_catalog::{ShardMap, Strategy, TenantKey};
use shardgate_e2e::{Fixture, ProxyHandle};
use tokio_postgres::Client;

const SCHEMA: &str = "create table orders (tenant_id bigint not null, id bigint not null, \
                      note text, primary key (tenant_id, id));\
                      create table plans (name text primary key, price int)";

/// 4 shards with the schema, and a proxy that knows `orders` is sharded.
async fn four_shards(strategy: &str) -> (Fixture, ProxyHandle, ShardMap) {
    let (fx, proxy) = proxy_with(
        Fixture::builder()
            .shards(4)
            .sharding_key("sharded_tables", "[\"orders\"]")
            .sharding_key("strategy", &format!("\"{strategy}\"")),
        |_| {},
    )
    .await;
    for i in 0..4 {
        fx.connect_shard(i)
            .await
            .batch_execute(SCHEMA)
            .await
            .unwrap();
    }
    let map = ShardMap::from_specs(
        &fx.config.shards,
        Strategy::Hash,
        fx.config.sharding.vnodes_per_shard,
    )
    .unwrap();
    (fx, proxy, map)
}

fn shard_of(map: &ShardMap, tenant: i64) -> usize {
    map.locate(&TenantKey::Int(tenant)).unwrap().shard as usize
}

/// Rows per tenant on each shard, read directly.
async fn rows_by_shard(fx: &Fixture) -> Vec<HashMap<i64, i64>> {
    let mut out = Vec::new();
    for i in 0..4 {
        let rows = fx
            .connect_shard(i)
            .await
            .query("select tenant_id, count(*) from orders group by 1", &[])
            .await
            .unwrap();
        out.push(rows.iter().map(|r| (r.get(0), r.get(1))).collect());
    }
    out
}

fn assert_each_tenant_on_its_shard(map: &ShardMap, by_shard: &[HashMap<i64, i64>], want: i64) {
    for (shard, tenants) in by_shard.iter().enumerate() {
        assert!(!tenants.is_empty(), "shard {shard} got no tenant at all");
        for (&t, &n) in tenants {
            assert_eq!(
                shard_of(map, t),
                shard,
                "tenant {t} landed on shard {shard}"
            );
            assert_eq!(n, want, "tenant {t} has {n} rows on shard {shard}");
        }
    }
}

async fn count_via_proxy(c: &Client, tenant: i64) -> i64 {
    c.query_one(
        "select count(*) from orders where tenant_id = $1",
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn five_hundred_tenants_land_on_their_shards_by_literal_param_comment_and_setting() {
    let (fx, proxy, map) = four_shards("hash").await;
    let c = client(&proxy).await;
    let insert = c
        .prepare("insert into orders (tenant_id, id, note) values ($1, $2, 'param')")
        .await
        .unwrap();
    for t in 1..=500i64 {
        // One row each way: SQL literal, Bind parameter, comment, session setting.
        c.simple_query(&format!(
            "insert into orders (tenant_id, id, note) values ({t}, 1, 'literal')"
        ))
        .await
        .unwrap();
        c.execute(&insert, &[&t, &2i64]).await.unwrap();
        c.simple_query(&format!(
            "/* tenant_id={t} */ insert into orders (tenant_id, id, note) \
             select {t}, 3, 'comment'"
        ))
        .await
        .unwrap();
        c.batch_execute(&format!(
            "set app.tenant_id = {t}; insert into orders (tenant_id, id, note) \
             select current_setting('app.tenant_id')::bigint, 4, 'setting'"
        ))
        .await
        .unwrap();
    }
    let by_shard = rows_by_shard(&fx).await;
    assert_each_tenant_on_its_shard(&map, &by_shard, 4);
    let total: usize = by_shard.iter().map(HashMap::len).sum();
    assert_eq!(total, 500);
    c.batch_execute("reset app.tenant_id").await.unwrap();
    for t in [1i64, 77, 250, 500] {
        assert_eq!(
            count_via_proxy(&c, t).await,
            4,
            "reads see exactly tenant {t}'s rows"
        );
        let notes: Vec<String> = c
            .query(
                "select note from orders where tenant_id = $1 order by id",
                &[&t],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(notes, ["literal", "param", "comment", "setting"]);
    }
}

#[tokio::test]
async fn a_multi_row_insert_spanning_shards_is_split() {
    let (fx, proxy, map) = four_shards("hash").await;
    let c = client(&proxy).await;
    let values: Vec<String> = (1..=40).map(|t| format!("({t}, 1, 'multi')")).collect();
    let sql = format!(
        "insert into orders (tenant_id, id, note) values {} returning tenant_id",
        values.join(", ")
    );
    let messages = c.simple_query(&sql).await.unwrap();
    let returned = messages
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(returned, 40, "RETURNING rows from every shard");
    let tag = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    });
    assert_eq!(tag, Some(40), "the command tag counts every shard's rows");
    assert_each_tenant_on_its_shard(&map, &rows_by_shard(&fx).await, 1);
}

#[tokio::test]
async fn refusals_leave_nothing_behind() {
    let (fx, proxy, map) = four_shards("hash").await;
    let c = client(&proxy).await;
    c.simple_query("insert into orders (tenant_id, id, note) values (1, 1, 'keep')")
        .await
        .unwrap();

    // SG001: a write to a sharded table without a tenant.
    let e = c
        .simple_query("update orders set note = 'clobbered'")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).code().code(), "SG001");
    let e = c
        .execute("delete from orders where note = $1", &[&"keep"])
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).code().code(), "SG001");

    // SG003: a transaction that moves to another shard; the COMMIT commits nothing.
    let (a, b) = two_tenants_on_different_shards(&map);
    c.batch_execute(&format!(
        "begin; insert into orders (tenant_id, id, note) values ({a}, 9, 'tx')"
    ))
    .await
    .unwrap();
    let e = c
        .simple_query(&format!(
            "insert into orders (tenant_id, id, note) values ({b}, 9, 'tx')"
        ))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).code().code(), "SG003");
    c.batch_execute("commit").await.unwrap();
    // The same through the extended protocol, inside a driver transaction.
    let mut c2 = client(&proxy).await;
    let tx = c2.transaction().await.unwrap();
    tx.execute(
        "insert into orders (tenant_id, id, note) values ($1, 10, 'tx')",
        &[&a],
    )
    .await
    .unwrap();
    let e = tx
        .execute(
            "insert into orders (tenant_id, id, note) values ($1, 10, 'tx')",
            &[&b],
        )
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).code().code(), "SG003");
    // Postgres answers the COMMIT of an aborted transaction with ROLLBACK (no error); the
    // count below is what proves nothing was committed.
    tx.commit().await.unwrap();

    let mut rows = 0;
    for i in 0..4 {
        let n: i64 = fx
            .connect_shard(i)
            .await
            .query_one(
                "select count(*) from orders where note in ('clobbered', 'tx')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        rows += n;
    }
    assert_eq!(
        rows, 0,
        "nothing of a refused statement or its transaction was applied"
    );
    assert_eq!(count_via_proxy(&c, 1).await, 1);
    // The sessions still work.
    assert_eq!(count_via_proxy(&c2, 1).await, 1);
}

fn two_tenants_on_different_shards(map: &ShardMap) -> (i64, i64) {
    let a = 1;
    let b = (2..1000)
        .find(|&t| shard_of(map, t) != shard_of(map, a))
        .unwrap();
    (a, b)
}

#[tokio::test]
async fn unknown_tenants_are_refused_under_the_directory_strategy() {
    let (fx, proxy, _) = four_shards("directory").await;
    let c = client(&proxy).await;
    let e = c
        .simple_query("insert into orders (tenant_id, id, note) values (42, 1, 'x')")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).code().code(), "SG002");
    let e = c
        .query("select * from orders where tenant_id = $1", &[&42i64])
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).code().code(), "SG002");
    for i in 0..4 {
        let n: i64 = fx
            .connect_shard(i)
            .await
            .query_one("select count(*) from orders", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
    }
}

#[tokio::test]
async fn global_tables_and_ddl_reach_every_shard() {
    let (fx, proxy, _) = four_shards("hash").await;
    let c = client(&proxy).await;
    c.batch_execute("create table regions (code text primary key)")
        .await
        .unwrap();
    c.batch_execute("insert into plans values ('pro', 10), ('team', 20)")
        .await
        .unwrap();
    c.execute("update plans set price = price + $1", &[&1i32])
        .await
        .unwrap();
    for i in 0..4 {
        let shard = fx.connect_shard(i).await;
        let prices: Vec<i32> = shard
            .query("select price from plans order by name", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(prices, [11, 21], "shard {i} has the global table's rows");
        shard
            .query_one("select count(*) from regions", &[])
            .await
            .unwrap_or_else(|e| panic!("shard {i} lacks the table created through the proxy: {e}"));
    }
    // A global read is answered by one shard, with the one copy's rows.
    let n: i64 = c
        .query_one("select count(*) from plans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn the_admin_console_shows_the_map_and_where_a_tenant_lives() {
    let (_fx, proxy, map) = four_shards("hash").await;
    let admin = proxy.url("admin", "admin", "shardgate");
    let out = shardgate_e2e::psql(&admin, &["-tA", "-F", ",", "-c", "show map"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text.lines().map(|l| l.split(',').nth(2).unwrap()).collect();
    assert_eq!(names, ["s0", "s1", "s2", "s3"]);
    assert!(!text.contains("sg-super"), "passwords stay hidden: {text}");

    let out = shardgate_e2e::psql(&admin, &["-tA", "-F", ",", "-c", "show tenant 42"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.trim().split(',').collect();
    assert_eq!(fields[0], "42");
    assert_eq!(fields[1], shard_of(&map, 42).to_string());
    assert_eq!(fields[4], "ring");

    let app = proxy.url("app", "app", "shardgate");
    let out = shardgate_e2e::psql(&app, &["-c", "show map"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an admin user"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Row-level security on the tenant setting (the demo schema's policies): a statement that
/// names its tenant in WHERE or VALUES sees that tenant's rows even though the client never
/// set the setting, when the proxy logs in to the shards as a role RLS applies to.
#[tokio::test]
async fn row_level_security_sees_the_routed_tenant() {
    let fx = Fixture::builder().shards(2).without_proxy().start().await;
    for i in 0..2 {
        fx.connect_shard(i)
            .await
            .batch_execute(
                "create role tenantapp login password 'tenantapp';\
                 create table docs (tenant_id bigint not null, id bigint not null, body text, \
                   primary key (tenant_id, id));\
                 alter table docs enable row level security;\
                 create policy by_tenant on docs \
                   using (tenant_id = current_setting('app.tenant_id', true)::bigint) \
                   with check (tenant_id = current_setting('app.tenant_id', true)::bigint);\
                 grant select, insert, update, delete on docs to tenantapp",
            )
            .await
            .unwrap();
    }
    let mut config = fx.config.clone();
    for s in &mut config.shards {
        s.url = s.url.replace(
            &format!("postgres:{}@", shardgate_e2e::SUPERUSER_PASSWORD),
            "tenantapp:tenantapp@",
        );
    }
    let proxy = shardgate_e2e::start_proxy(config).await;
    let c = client(&proxy).await;
    for t in 1..=6i64 {
        c.execute(
            "insert into docs (tenant_id, id, body) values ($1, 1, 'mine')",
            &[&t],
        )
        .await
        .unwrap_or_else(|e| panic!("tenant {t}: the policy's WITH CHECK refused the row: {e:?}"));
    }
    for t in 1..=6i64 {
        let n: i64 = c
            .query_one("select count(*) from docs where tenant_id = $1", &[&t])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "tenant {t} sees its row through the policy");
    }
    // A client's own setting wins again for statements that do not name a tenant.
    c.batch_execute("set app.tenant_id = 2").await.unwrap();
    let n: i64 = c
        .query_one("select count(*) from docs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the setting routes and filters: tenant 2's row only");
}

#[tokio::test]
async fn psycopg_routes_by_bind_parameters_text_binary_prepared_and_executemany() {
    let (fx, proxy, map) = four_shards("hash").await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/psycopg_routing.py");
    let run = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(proxy.url(common::USER, common::PASSWORD, common::DB))
        .arg("200")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = within(180, "psycopg routing script", run)
        .await
        .unwrap_or_else(|e| panic!("python3 could not be started ({e}); .ci/run installs it"));
    assert!(
        out.status.success(),
        "psycopg routing failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let by_shard = rows_by_shard(&fx).await;
    assert_each_tenant_on_its_shard(&map, &by_shard, 4);
    assert_eq!(by_shard.iter().map(HashMap::len).sum::<usize>(), 200);
}
