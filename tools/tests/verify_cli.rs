//! The real `shardctl verify` binary against a real catalog and two shards (two databases
//! of one cluster): a tenant with equal rows on both exits 0; one changed or missing row,
//! or a table missing on one side, exits 13 with `E_VERIFY_MISMATCH` and a per-table
//! report; an unknown shard, a single `--shard` or the same shard twice exit 2 with
//! `E_INVALID`; a catalog that is down exits 3 with `E_CATALOG`.

mod common;

use common::{fails, ok, run};
use tokio_postgres::{Client, NoTls};

const SCHEMA: &str = "create table orders (tenant_id bigint not null, id bigint not null, \
                      note text, primary key (tenant_id, id)); \
                      create table items (tenant_id bigint not null, sku text not null, \
                      qty int, primary key (tenant_id, sku))";
const T: i64 = 42;

async fn connect(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

/// The tenant's rows, the same on both sides; a bystander tenant only on `sa`, which
/// verify must ignore.
async fn load(c: &Client, bystander: bool) {
    c.batch_execute(SCHEMA).await.unwrap();
    c.batch_execute(&format!(
        "insert into orders select {T}, g, 'note ' || g from generate_series(1, 500) g; \
         insert into items select {T}, 'sku' || g, g from generate_series(1, 20) g;"
    ))
    .await
    .unwrap();
    if bystander {
        c.batch_execute("insert into orders values (7, 1, 'other tenant')")
            .await
            .unwrap();
    }
}

fn verify_args<'a>(a: &'a str, b: &'a str, json: bool) -> Vec<&'a str> {
    let mut args = vec!["verify", "--tenant", "42", "--shard", a, "--shard", b];
    if json {
        args.extend(["--format", "json"]);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_0_when_equal_13_with_a_report_when_not_and_2_on_bad_arguments() {
    let (pg, url, _catalog) = common::two_shard_catalog().await;
    let (a, b) = (
        connect(&pg.superuser_url("a")).await,
        connect(&pg.superuser_url("b")).await,
    );
    load(&a, true).await;
    load(&b, false).await;

    // Equal: exit 0, every table reported equal with its row count.
    let r = run(&url, &verify_args("sa", "sb", false)).await;
    ok(&r);
    assert!(
        r.stdout
            .starts_with("tenant 42 is equal on sa and sb (2 tables)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("public.orders: 500 rows"), "{}", r.stdout);
    let r = run(&url, &verify_args("sa", "1", true)).await;
    ok(&r);
    let j = r.json();
    assert_eq!(j["equal"], true);
    assert_eq!(j["shards"], serde_json::json!(["sa", "sb"]), "ids resolve");
    assert_eq!(j["tables"][0]["table"], "public.items");
    assert_eq!(j["tables"][1]["sides"][0]["rows"], 500);
    assert_eq!(j["tables"][1]["sides"][1]["rows"], 500);

    // One row changed on one side: same counts, different checksum; only that table differs.
    b.batch_execute(&format!(
        "update orders set note = 'changed' where tenant_id = {T} and id = 250"
    ))
    .await
    .unwrap();
    let r = run(&url, &verify_args("sa", "sb", false)).await;
    fails(&r, 13, "E_VERIFY_MISMATCH");
    assert!(
        r.stderr
            .contains("tenant 42 differs between sa and sb in public.orders"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("DIFFERS on sa and sb: 1 of 2 tables"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("public.items: 20 rows"),
        "the equal table is still reported: {}",
        r.stdout
    );
    let r = run(&url, &verify_args("sa", "sb", true)).await;
    fails(&r, 13, "E_VERIFY_MISMATCH");
    let j = r.json();
    assert_eq!(j["equal"], false);
    let orders = &j["tables"][1];
    assert_eq!(
        (orders["table"].as_str(), &orders["equal"]),
        (Some("public.orders"), &false.into())
    );
    assert_eq!(orders["sides"][0]["rows"], orders["sides"][1]["rows"]);
    assert_ne!(
        orders["sides"][0]["checksum"],
        orders["sides"][1]["checksum"]
    );
    assert_eq!(j["tables"][0]["equal"], true);

    // Put back: equal again, so the checksum saw exactly that row.
    b.batch_execute(&format!(
        "update orders set note = 'note 250' where tenant_id = {T} and id = 250"
    ))
    .await
    .unwrap();
    ok(&run(&url, &verify_args("sb", "sa", false)).await);

    // A row missing, and a table missing on one side.
    b.batch_execute(&format!(
        "delete from orders where tenant_id = {T} and id = 1; drop table items"
    ))
    .await
    .unwrap();
    let r = run(&url, &verify_args("sa", "sb", true)).await;
    fails(&r, 13, "E_VERIFY_MISMATCH");
    let j = r.json();
    assert_eq!(j["tables"][0]["sides"][1]["missing"], true);
    assert_eq!(j["tables"][1]["sides"][0]["rows"], 500);
    assert_eq!(j["tables"][1]["sides"][1]["rows"], 499);

    // Bad arguments: exit 2, E_INVALID, nothing compared.
    let r = run(&url, &verify_args("sa", "nope", false)).await;
    fails(&r, 2, "E_INVALID");
    assert!(r.stderr.contains("\"nope\""), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    let r = run(&url, &verify_args("nope", "sb", true)).await;
    fails(&r, 2, "E_INVALID");
    assert_eq!(
        (r.json()["error"].as_str(), r.json()["exit_code"].as_i64()),
        (Some("E_INVALID"), Some(2))
    );
    fails(
        &run(&url, &["verify", "--tenant", "42", "--shard", "sa"]).await,
        2,
        "E_INVALID",
    );
    fails(
        &run(&url, &verify_args("sa", "0", false)).await,
        2,
        "E_INVALID",
    );
    fails(
        &run(
            &url,
            &["verify", "--tenant", "x", "--shard", "sa", "--shard", "sb"],
        )
        .await,
        2,
        "E_INVALID",
    );
    // clap's own errors keep clap's exit status 2.
    assert_eq!(run(&url, &["verify", "--shard", "sa"]).await.code, 2);

    // The catalog down: E_CATALOG, 3.
    let dead = "postgres://postgres@127.0.0.1:1/shardgate";
    fails(
        &run(dead, &verify_args("sa", "sb", false)).await,
        3,
        "E_CATALOG",
    );
}
