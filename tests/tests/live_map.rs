//! The shard map living in the catalog: a running proxy follows placement changes (NOTIFY
//! within a second, a poll when the notification is lost), keeps routing on its last map
//! while the catalog is down, and a dead shard fails only its own tenants, promptly. A
//! gated tenant's statements wait for the flip and then run on the new shard, or get
//! SG005 when the gate stays shut too long; other tenants never wait.

mod common;

use std::time::{Duration, Instant};

use common::{client, db_error, proxy_with};
use shardgate_catalog::db::{self, ShardRef};
use shardgate_catalog::{TenantKey, TenantState};
use shardgate_e2e::{CatalogFleet, Fixture, wait_until};
use tokio_postgres::Client;

const SCHEMA: &str = "create table orders (tenant_id bigint not null, id bigint not null, \
                      note text, primary key (tenant_id, id))";

/// The catalog fleet of the harness, with this file's helpers.
struct Fleet(CatalogFleet);

impl std::ops::Deref for Fleet {
    type Target = CatalogFleet;
    fn deref(&self) -> &CatalogFleet {
        &self.0
    }
}

impl std::ops::DerefMut for Fleet {
    fn deref_mut(&mut self) -> &mut CatalogFleet {
        &mut self.0
    }
}

impl Fleet {
    /// 4 shards registered in a catalog, and a proxy that reads its map from there.
    async fn start(poll_ms: u64) -> Fleet {
        Fleet::start_with(poll_ms, |_| {}).await
    }

    /// The same, with the proxy's config edited first.
    async fn start_with(poll_ms: u64, tweak: impl FnOnce(&mut shardgate::config::Config)) -> Fleet {
        Fleet(CatalogFleet::start(SCHEMA, &["orders"], poll_ms, tweak).await)
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

/// The state the proxy's map gives `tenant`, from the admin console.
async fn state_seen(fleet: &Fleet, tenant: i64) -> String {
    let (user, password) = shardgate_e2e::ADMIN_USER;
    let admin = tokio_postgres::connect(
        &fleet.proxy.url(user, password, "shardgate"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(admin.1);
    let rows = admin
        .0
        .simple_query(&format!("show tenant {tenant}"))
        .await
        .unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("state").map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default()
}

async fn set_state(fleet: &Fleet, tenant: i64, shard: usize, state: TenantState) {
    let mut cat = fleet.catalog_client().await;
    db::set_tenant(
        &mut cat,
        &TenantKey::Int(tenant),
        &ShardRef::Id(shard as u32),
        state,
    )
    .await
    .unwrap();
    let want = state.as_str();
    let seen = wait_until(Duration::from_secs(5), || async {
        state_seen(fleet, tenant).await == want
    })
    .await;
    assert!(seen, "the proxy did not see tenant {tenant} {want}");
}

#[tokio::test]
async fn a_gated_tenant_waits_for_the_flip_and_runs_on_its_new_shard_others_never_wait() {
    const GATE_MS: u64 = 3000;
    let fleet = Fleet::start_with(1000, |c| c.sharding.gate_timeout_ms = GATE_MS).await;
    let c = client(&fleet.proxy).await;
    let (t, other) = (7i64, 8i64);
    insert(&c, t, 1).await;
    let from = fleet.shard_holding(t, 1).await.unwrap();
    let to = (from + 1) % 4;
    set_state(&fleet, t, from, TenantState::Gated).await;

    let held_client = client(&fleet.proxy).await;
    let held = tokio::spawn(async move {
        held_client
            .execute(
                "insert into orders (tenant_id, id, note) values ($1, 2, 'held')",
                &[&t],
            )
            .await
    });
    // Another tenant's statements run at once while t waits.
    for id in 0..20 {
        let started = Instant::now();
        insert(&c, other, id).await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "tenant {other} waited"
        );
    }
    assert!(!held.is_finished(), "the gated tenant's write did not wait");

    // The flip: t now lives on `to`, active. The held write runs there.
    set_state(&fleet, t, to, TenantState::Active).await;
    let written = common::within(5, "the held write after the flip", held)
        .await
        .unwrap();
    assert_eq!(written.unwrap(), 1);
    assert_eq!(fleet.shard_holding(t, 2).await, Some(to));

    // A gate that stays shut: SG005 (class 40) after gate_timeout_ms, nothing written.
    set_state(&fleet, t, to, TenantState::Gated).await;
    let started = Instant::now();
    let e = common::within(
        10,
        "a held write past the gate timeout",
        c.execute(
            "insert into orders (tenant_id, id, note) values ($1, 3, 'late')",
            &[&t],
        ),
    )
    .await
    .expect_err("the gate timed out");
    let waited = started.elapsed();
    let db = db_error(&e);
    assert_eq!(db.code().code(), "40SG5", "{e}");
    assert!(db.message().contains("SG005"), "{e}");
    assert!(waited >= Duration::from_millis(GATE_MS - 100), "{waited:?}");
    assert_eq!(fleet.shard_holding(t, 3).await, None);
    // The client's session is fine; other tenants still run.
    insert(&c, other, 100).await;
}

/// The proxy's row in `shardgate.proxies`: map version seen and in-flight JSON (as text).
async fn heartbeat_row(cat: &Client) -> Option<(i64, String)> {
    cat.query_opt(
        "select map_version_seen, inflight_json::text from shardgate.proxies \
         where last_seen > now() - interval '5 seconds'",
        &[],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

/// Whether, within `within`, the heartbeat reports map `version` or a later one with
/// `inflight` as its in-flight JSON.
async fn heartbeat_reports(cat: &Client, version: i64, inflight: &str, within: Duration) -> bool {
    wait_until(within, || async {
        heartbeat_row(cat)
            .await
            .is_some_and(|(v, open)| v >= version && open == inflight)
    })
    .await
}

/// Asserts that the heartbeat comes to report `version` (or later) and `inflight` within 5 s.
async fn assert_heartbeat(cat: &Client, version: i64, inflight: &str) {
    let seen = heartbeat_reports(cat, version, inflight, Duration::from_secs(5)).await;
    assert!(
        seen,
        "want {inflight}, heartbeat: {:?}",
        heartbeat_row(cat).await
    );
}

#[tokio::test]
async fn the_heartbeat_reports_the_map_version_and_open_transactions_of_gated_tenants() {
    let fleet = Fleet::start(200).await;
    let cat = fleet.catalog_client().await;
    let c = client(&fleet.proxy).await;
    let t = 11i64;
    insert(&c, t, 1).await;
    let home = fleet.shard_holding(t, 1).await.unwrap();

    // A transaction of t is open when t is gated: it keeps running (not held), and the
    // heartbeat says so, with the gated map's version.
    c.batch_execute(&format!(
        "begin; insert into orders (tenant_id, id, note) values ({t}, 2, 'in txn')"
    ))
    .await
    .unwrap();
    set_state(&fleet, t, home, TenantState::Gated).await;
    let version = db::map_version(&cat).await.unwrap() as i64;
    let open = format!("{{\"{t}\": 1}}");
    assert_heartbeat(&cat, version, &open).await;
    let started = Instant::now();
    c.batch_execute(&format!(
        "insert into orders (tenant_id, id, note) values ({t}, 3, 'in txn'); commit"
    ))
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the open transaction was held"
    );
    assert_heartbeat(&cat, 0, "{}").await;
    assert_eq!(fleet.shard_holding(t, 3).await, Some(home));
    set_state(&fleet, t, home, TenantState::Active).await;
}

#[tokio::test]
async fn pipelined_statements_count_as_open_until_the_last_one_is_done() {
    // A client pipelines two statements of t (the second is sent while the first runs).
    // The first one's ReadyForQuery must not end t's open work: the second is still on
    // the server, and a move that fenced t now would fail it.
    let fleet = Fleet::start(100).await;
    let cat = fleet.catalog_client().await;
    let c = std::sync::Arc::new(client(&fleet.proxy).await);
    let t = 12i64;
    insert(&c, t, 1).await;
    let home = fleet.shard_holding(t, 1).await.unwrap();
    let sleep = |secs: f64| {
        let c = c.clone();
        async move {
            c.query(
                &format!("select pg_sleep({secs}) from orders where tenant_id = {t} and id = 1"),
                &[],
            )
            .await
            .map(|_| Instant::now())
        }
    };
    let first = tokio::spawn(sleep(1.5));
    let second = tokio::spawn(sleep(3.0));
    // Both are on their way before the gate lands; the heartbeat then reports t open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    set_state(&fleet, t, home, TenantState::Gated).await;
    let version = db::map_version(&cat).await.unwrap() as i64;
    let open = format!("{{\"{t}\": 1}}");
    assert_heartbeat(&cat, version, &open).await;
    let first_done = first.await.unwrap().expect("the first statement");
    // While the second still sleeps, t stays open.
    let cleared_early = heartbeat_reports(&cat, 0, "{}", Duration::from_secs(1)).await;
    let second_done = second.await.unwrap().expect("the second statement");
    assert!(
        second_done > first_done + Duration::from_millis(1500),
        "the statements did not run one after the other"
    );
    assert!(
        !cleared_early,
        "t was reported done while its second statement ran"
    );
    assert_heartbeat(&cat, 0, "{}").await;
    set_state(&fleet, t, home, TenantState::Active).await;
}

#[tokio::test]
async fn a_copy_of_a_tenant_on_a_shard_that_is_not_its_home_is_left_out_of_fan_outs() {
    let fleet = Fleet::start(200).await;
    let c = client(&fleet.proxy).await;
    for t in 1..=8i64 {
        for id in 0..5 {
            insert(&c, t, id).await;
        }
    }
    let t = 3i64;
    let home = fleet.shard_holding(t, 0).await.unwrap();
    let other = (home + 1) % 4;
    // What a move's copy looks like: the tenant's rows on a second shard.
    fleet
        .fx
        .connect_shard(other)
        .await
        .batch_execute(&format!(
            "insert into orders select tenant_id, id, note || ' (copy)' from \
             (values ({t}::bigint, 0::bigint, 'x'), ({t}, 1, 'x'), ({t}, 2, 'x'), ({t}, 3, 'x'), \
                     ({t}, 4, 'x')) v(tenant_id, id, note)"
        ))
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count("select count(*) from orders").await,
        45,
        "counted twice"
    );

    let mut cat = fleet.catalog_client().await;
    db::set_tenant(
        &mut cat,
        &TenantKey::Int(t),
        &ShardRef::Id(home as u32),
        TenantState::Active,
    )
    .await
    .unwrap();
    db::set_copy_on(
        &mut cat,
        &TenantKey::Int(t),
        Some(&ShardRef::Id(other as u32)),
    )
    .await
    .unwrap();
    let fixed = wait_until(Duration::from_secs(5), || async {
        count("select count(*) from orders").await == 40
    })
    .await;
    assert!(fixed, "the copy is still counted");
    // Every shape of fan-out leaves it out; the tenant's own reads go home.
    let notes: Vec<String> = c
        .query(
            "select note from orders where tenant_id in ($1, 4) order by id",
            &[&t],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(notes.iter().all(|n| !n.contains("copy")), "{notes:?}");
    assert_eq!(
        count("select count(*) from orders o where o.note like '%copy%'").await,
        0
    );
    assert_eq!(
        c.query(&format!("select id from orders where tenant_id = {t}"), &[])
            .await
            .unwrap()
            .len(),
        5
    );
    // Cleared: counted again (the copy is still there).
    db::set_copy_on(&mut cat, &TenantKey::Int(t), None)
        .await
        .unwrap();
    let back = wait_until(Duration::from_secs(5), || async {
        count("select count(*) from orders").await == 45
    })
    .await;
    assert!(back);
}
