//! The shard map living in the catalog: a running proxy follows placement changes (NOTIFY
//! within a second, a poll when the notification is lost), keeps routing on its last map
//! while the catalog is down, and a dead shard fails only its own tenants, promptly.

mod common;

use std::time::{Duration, Instant};

use common::{client, db_error, proxy_with};
use shardctl::pg::{PgCluster, PgOptions};
use shardgate_catalog::db::{self, NewShard, ShardRef};
use shardgate_catalog::schema::{self, InitOptions};
use shardgate_catalog::{TenantKey, TenantState};
use shardgate_e2e::{Fixture, ProxyHandle, ScratchDir, wait_until};
use tokio_postgres::Client;

const SCHEMA: &str = "create table orders (tenant_id bigint not null, id bigint not null, \
                      note text, primary key (tenant_id, id))";

struct Fleet {
    fx: Fixture,
    catalog: PgCluster,
    _dir: ScratchDir,
    proxy: ProxyHandle,
}

impl Fleet {
    /// 4 shards registered in a catalog, and a proxy that reads its map from there.
    async fn start(poll_ms: u64) -> Fleet {
        let fx = Fixture::builder().shards(4).without_proxy().start().await;
        for i in 0..4 {
            fx.connect_shard(i)
                .await
                .batch_execute(SCHEMA)
                .await
                .unwrap();
        }
        let dir = ScratchDir::new("catalog");
        let catalog = PgCluster::start(PgOptions {
            name: "catalog".into(),
            base_dir: dir.path().to_owned(),
            superuser_password: "cat".into(),
            ..PgOptions::default()
        })
        .await
        .unwrap();
        catalog.create_database("shardgate").await.unwrap();
        let url = catalog.url("postgres", "cat", "shardgate");
        let mut c = db::connect(&url).await.unwrap();
        schema::migrate(&mut c, InitOptions::default())
            .await
            .unwrap();
        for spec in &fx.config.shards {
            db::add_shard(&mut c, &NewShard::new(spec.name.clone(), spec.url.clone()))
                .await
                .unwrap();
        }
        let mut config = fx.config.clone();
        config.shards.clear();
        config.catalog = Some(shardgate::config::CatalogConfig { url, poll_ms });
        config.sharding.sharded_tables = vec!["orders".into()];
        let proxy = shardgate_e2e::start_proxy(config).await;
        Fleet {
            fx,
            catalog,
            _dir: dir,
            proxy,
        }
    }

    async fn catalog_client(&self) -> Client {
        db::connect(&self.catalog.url("postgres", "cat", "shardgate"))
            .await
            .unwrap()
    }

    /// The shard (index) holding the row (tenant, id), read directly.
    async fn shard_holding(&self, tenant: i64, id: i64) -> Option<usize> {
        for i in 0..4 {
            let n: i64 = self
                .fx
                .connect_shard(i)
                .await
                .query_one(
                    "select count(*) from orders where tenant_id = $1 and id = $2",
                    &[&tenant, &id],
                )
                .await
                .unwrap()
                .get(0);
            if n > 0 {
                return Some(i);
            }
        }
        None
    }
}

async fn insert(c: &Client, tenant: i64, id: i64) {
    c.execute(
        "insert into orders (tenant_id, id, note) values ($1, $2, 'x')",
        &[&tenant, &id],
    )
    .await
    .unwrap_or_else(|e| panic!("insert ({tenant}, {id}) failed: {e}"));
}

/// Writes rows for `tenant` until one lands on shard `want`; returns how long after the
/// start it took. Every write must succeed.
async fn time_until_routed(fleet: &Fleet, c: &Client, tenant: i64, want: usize) -> Duration {
    let start = Instant::now();
    for id in 1000.. {
        insert(c, tenant, id).await;
        if fleet.shard_holding(tenant, id).await == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never routed to shard {want}"
        );
    }
    unreachable!()
}

#[tokio::test]
async fn a_placement_change_is_followed_within_a_second() {
    let fleet = Fleet::start(60_000).await; // only NOTIFY can explain a fast switch
    let c = client(&fleet.proxy).await;
    insert(&c, 7, 1).await;
    let from = fleet.shard_holding(7, 1).await.unwrap();
    let to = (from + 1) % 4;
    let mut cat = fleet.catalog_client().await;
    db::set_tenant(
        &mut cat,
        &TenantKey::Int(7),
        &ShardRef::Id(to as u32),
        TenantState::Active,
    )
    .await
    .unwrap();
    let took = time_until_routed(&fleet, &c, 7, to).await;
    assert!(took < Duration::from_secs(1), "NOTIFY took {took:?}");
}

#[tokio::test]
async fn a_lost_notification_is_made_up_for_by_the_poll() {
    let fleet = Fleet::start(300).await;
    let c = client(&fleet.proxy).await;
    insert(&c, 9, 1).await;
    let from = fleet.shard_holding(9, 1).await.unwrap();
    let to = (from + 2) % 4;
    // The change as plain SQL, with no NOTIFY.
    fleet
        .catalog_client()
        .await
        .batch_execute(&format!(
            "insert into shardgate.tenants (tenant_id, shard_id, state, updated_at) \
             values ('9', {to}, 'active', now()); \
             update shardgate.map_version set version = version + 1"
        ))
        .await
        .unwrap();
    let took = time_until_routed(&fleet, &c, 9, to).await;
    assert!(took < Duration::from_millis(900), "the poll took {took:?}");
}

#[tokio::test]
async fn the_proxy_routes_on_its_last_map_while_the_catalog_is_down() {
    let mut fleet = Fleet::start(200).await;
    let c = client(&fleet.proxy).await;
    fleet.catalog.stop().unwrap();
    for t in 1..=40 {
        insert(&c, t, 1).await;
    }
    for t in 1..=40 {
        assert!(fleet.shard_holding(t, 1).await.is_some());
    }
    fleet.catalog.restart().await.unwrap();
    let from = fleet.shard_holding(5, 1).await.unwrap();
    let to = (from + 1) % 4;
    let mut cat = fleet.catalog_client().await;
    db::set_tenant(
        &mut cat,
        &TenantKey::Int(5),
        &ShardRef::Id(to as u32),
        TenantState::Active,
    )
    .await
    .unwrap();
    let took = time_until_routed(&fleet, &c, 5, to).await;
    assert!(
        took < Duration::from_secs(3),
        "the change after the outage took {took:?}"
    );
}

#[tokio::test]
async fn a_dead_shard_fails_only_its_tenants_and_promptly() {
    let (mut fx, proxy) = proxy_with(
        Fixture::builder()
            .shards(4)
            .sharding_key("sharded_tables", "[\"orders\"]"),
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
    let map = shardgate_catalog::ShardMap::from_specs(
        &fx.config.shards,
        shardgate_catalog::Strategy::Hash,
        fx.config.sharding.vnodes_per_shard,
    )
    .unwrap();
    let shard_of = |t: i64| map.locate(&TenantKey::Int(t)).unwrap().shard as usize;
    let c = client(&proxy).await;
    for t in 1..=20 {
        insert(&c, t, 1).await;
    }
    let dead = 2;
    fx.shards[dead].stop().unwrap();
    for t in 1..=20i64 {
        let start = Instant::now();
        let r = c
            .query("select count(*) from orders where tenant_id = $1", &[&t])
            .await;
        if shard_of(t) == dead {
            let e = r.expect_err("a dead shard's tenant must get an error");
            let code = db_error(&e).code().code().to_owned();
            assert!(code.starts_with("08"), "tenant {t}: {code} {e}");
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "took {:?}",
                start.elapsed()
            );
        } else {
            r.unwrap_or_else(|e| panic!("tenant {t} on a live shard failed: {e}"));
        }
    }
    fx.shards[dead].restart().await.unwrap();
    let t = (1..=20).find(|&t| shard_of(t) == dead).unwrap();
    let back = wait_until(Duration::from_secs(10), || async {
        c.query("select 1 from orders where tenant_id = $1", &[&t])
            .await
            .is_ok()
    })
    .await;
    assert!(
        back,
        "the shard's tenants work again without restarting the proxy"
    );
}
