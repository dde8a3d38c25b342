//! The real `shardctl split --dry-run` and `rebalance --plan` binaries against a catalog and
//! two shards (two databases of one cluster): both print the tenants they would move, as
//! JSON, and change nothing; an unknown shard exits 2 with `E_INVALID` (for `move --to`
//! too).

mod common;

use common::{fails, ok, run};
use shardgate_catalog::db;
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_rebalance_plan_from_the_shards_loads_and_change_nothing() {
    let (pg, url, cat) = common::two_shard_catalog().await;
    for db in ["a", "b"] {
        let (c, conn) = tokio_postgres::connect(&pg.superuser_url(db), NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute(
            "create table orders (tenant_id bigint not null, id bigint not null, \
             primary key (tenant_id, id))",
        )
        .await
        .unwrap();
        if db == "a" {
            // Tenant t has 10 * t rows: 210 in all.
            c.batch_execute(
                "insert into orders select t, g from generate_series(1, 6) t, \
                 lateral generate_series(1, 10 * t) g",
            )
            .await
            .unwrap();
        }
    }
    for t in 1..=6 {
        ok(&run(&url, &["tenant", "set", &t.to_string(), "--shard", "sa"]).await);
    }
    let version = db::map_version(&cat).await.unwrap();

    // Half of 210 is 105: 60 fits, 50 would not, 40 does; nothing lighter fits after.
    let r = run(
        &url,
        &[
            "split",
            "--shard",
            "sa",
            "--into",
            "sb",
            "--dry-run",
            "--format",
            "json",
        ],
    )
    .await;
    ok(&r);
    let v = r.json();
    let moving: Vec<&str> = v["moving"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(moving, ["6", "4"], "{v}");
    assert_eq!(
        (v["moving_load"].as_i64(), v["total_load"].as_i64()),
        (Some(100), Some(210))
    );
    assert_eq!(v["dry_run"], true);

    // sa 210, sb 0: 60 then 40 go, leaving 110 / 100, within 10% of the mean.
    let r = run(&url, &["rebalance", "--plan", "--format", "json"]).await;
    ok(&r);
    let v = r.json();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{v}");
    assert_eq!(
        (steps[0]["from"].as_str(), steps[0]["to"].as_str()),
        (Some("sa"), Some("sb"))
    );
    assert_eq!(steps[0]["tenants"], serde_json::json!(["6", "4"]));
    assert_eq!(v["executed"], false);

    // Nothing changed.
    assert_eq!(db::map_version(&cat).await.unwrap(), version);
    assert!(db::jobs::list_jobs(&cat, true).await.unwrap().is_empty());

    // Unknown shards are the operator's mistake, not the catalog's.
    fails(
        &run(&url, &["split", "--shard", "nope", "--into", "sb"]).await,
        2,
        "E_INVALID",
    );
    fails(
        &run(&url, &["move", "--tenant", "6", "--to", "nope"]).await,
        2,
        "E_INVALID",
    );
}
