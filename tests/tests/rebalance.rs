//! `shardctl rebalance` end to end: 40 tenants all on one of four shards. `--plan` changes
//! nothing; `--execute` spreads them so every shard is near the mean, one group move per
//! shard pair, each tenant's rows on its new home only, none lost, nothing left behind.

mod common;

use shardctl::move_cmd::{Hooks, MoveRequest};
use shardctl::rebalance_cmd;
use shardctl::split_cmd::SplitBy;
use shardgate_catalog::db::{self, ShardRef};
use shardgate_catalog::{TenantKey, TenantState};
use shardgate_e2e::CatalogFleet;

const SCHEMA: &str = "create table orders (tenant_id bigint not null, id bigint not null, \
                      note text, primary key (tenant_id, id))";
const TENANTS: i64 = 40;

fn loaded(t: i64) -> i64 {
    20 + 5 * t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_spreads_a_full_shard_over_empty_ones() {
    let fleet = CatalogFleet::start(SCHEMA, &["orders"], 200, |_| {}).await;
    let keys: Vec<TenantKey> = (1..=TENANTS).map(TenantKey::Int).collect();
    let mut cat = fleet.catalog_client().await;
    db::set_tenants(&mut cat, &keys, &ShardRef::Id(0), TenantState::Active)
        .await
        .unwrap();
    fleet
        .fx
        .connect_shard(0)
        .await
        .batch_execute(&format!(
            "insert into orders select t, g, 'r' || g from generate_series(1, {TENANTS}) t, \
             lateral generate_series(1, 20 + 5 * t) g"
        ))
        .await
        .unwrap();
    let total: i64 = (1..=TENANTS).map(loaded).sum();
    let url = fleet.catalog_url();
    let moves = MoveRequest {
        tenants: Vec::new(),
        ..MoveRequest::new(String::new(), String::new())
    };

    let planned = rebalance_cmd::rebalance(&url, SplitBy::Rows, false, &moves, &Hooks::default())
        .await
        .unwrap();
    assert!(planned.jobs.is_empty());
    assert_eq!(planned.plan.shards[0].1, total);
    assert_eq!(planned.plan.steps.len(), 3, "{:?}", planned.plan.steps);
    let version = db::map_version(&cat).await.unwrap();
    assert_eq!(
        db::jobs::list_jobs(&cat, true).await.unwrap(),
        vec![],
        "a plan runs nothing"
    );

    let done = rebalance_cmd::rebalance(&url, SplitBy::Rows, true, &moves, &Hooks::default())
        .await
        .unwrap();
    assert_eq!(done.jobs.len(), 3);
    assert!(db::map_version(&cat).await.unwrap() > version);
    let map = db::load_map(&mut fleet.catalog_client().await)
        .await
        .unwrap();
    let mut per_shard = [0i64; 4];
    for t in 1..=TENANTS {
        let home = map.locate(&TenantKey::Int(t)).unwrap();
        assert_eq!(home.state, TenantState::Active);
        for (i, held) in per_shard.iter_mut().enumerate() {
            let n: i64 = fleet
                .fx
                .connect_shard(i)
                .await
                .query_one(
                    "select count(*) from orders where tenant_id = $1 and note = 'r' || id",
                    &[&t],
                )
                .await
                .unwrap()
                .get(0);
            let want = if i == home.shard as usize {
                loaded(t)
            } else {
                0
            };
            assert_eq!(n, want, "tenant {t} on s{i}");
            *held += n;
        }
    }
    let mean = total as f64 / 4.0;
    for (i, n) in per_shard.iter().enumerate() {
        assert!(
            (*n as f64 - mean).abs() <= 0.15 * mean,
            "s{i} holds {n} rows, the mean is {mean}: {per_shard:?}"
        );
    }
    let expected: Vec<i64> = done.plan.shards.iter().map(|s| s.2).collect();
    assert_eq!(per_shard.to_vec(), expected, "the plan's loads came true");
    assert_eq!(fleet.move_leftovers().await, Vec::<String>::new());
}
