//! Placement by capacity (DESIGN.md §5) against a real catalog Postgres: `tenant add` fills
//! shards in the algorithm's order and then refuses without changing anything, a named
//! full shard is refused while another has room, concurrent adds never pass a
//! capacity_hint, and `shard list` reports the counts. The `shardctl` binary's exit codes
//! are tested in `tools/tests/placement_cli.rs`, where Cargo can hand the binary over.

use shardctl::catalog_cmd::Report;
use shardctl::place_cmd::{self, exit};
use shardgate_catalog::db::{self, InitOptions, NewShard, PlaceError, ShardRef};
use shardgate_catalog::{KeyType, ShardState, Strategy, TenantKey, TenantState};
use shardgate_e2e::{PgCluster, PgOptions};
use tokio_postgres::Client;

/// A fresh, initialised catalog (hash strategy, bigint keys) with `shards` as
/// (name, capacity_hint), added in that order.
async fn catalog(shards: &[(&str, Option<u32>)]) -> (PgCluster, String, Client) {
    let pg = PgCluster::start(PgOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    pg.create_database("shardgate")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = pg.superuser_url("shardgate");
    let mut c = db::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
    let opts = InitOptions {
        strategy: Some(Strategy::Hash),
        key_type: Some(KeyType::Bigint),
        vnodes_per_shard: Some(8),
    };
    db::migrate(&mut c, opts).await.unwrap();
    for (name, hint) in shards {
        let shard = NewShard {
            capacity_hint: *hint,
            ..NewShard::new(*name, format!("postgres://app:secret@127.0.0.1:1/{name}"))
        };
        db::add_shard(&mut c, &shard).await.unwrap();
    }
    (pg, url, c)
}

/// Everything a refused add must leave alone.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    version: u64,
    tenants: Vec<(String, i32, String)>,
    events: i64,
}

async fn snapshot(c: &Client) -> Snapshot {
    let tenants = c
        .query(
            "SELECT tenant_id, shard_id, state FROM shardgate.tenants ORDER BY tenant_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let events = c
        .query_one("SELECT count(*) FROM shardgate.events", &[])
        .await
        .unwrap()
        .get(0);
    Snapshot {
        version: db::map_version(c).await.unwrap(),
        tenants,
        events,
    }
}

/// Live tenants per shard name, as the catalog holds them.
async fn live_counts(c: &Client) -> Vec<(String, i64)> {
    c.query(
        "SELECT s.name, count(t.tenant_id) FILTER (WHERE t.state <> 'offboarding') \
         FROM shardgate.shards s LEFT JOIN shardgate.tenants t USING (shard_id) \
         GROUP BY s.name ORDER BY s.name",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn counts(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_add_fills_shards_in_order_then_refuses_leaving_the_catalog_unchanged() {
    // Added out of name order, so the id order cannot pass for the name tie-break.
    let (_pg, url, mut c) =
        catalog(&[("b", Some(2)), ("a", Some(2)), ("c", Some(1)), ("d", None)]).await;
    db::set_shard_state(&mut c, &ShardRef::from("d"), ShardState::Draining)
        .await
        .unwrap();
    // A pinned tenant on a counts; an offboarding one on c does not.
    db::set_tenant(
        &mut c,
        &TenantKey::Int(100),
        &ShardRef::from("a"),
        TenantState::Active,
    )
    .await
    .unwrap();
    db::set_tenant(
        &mut c,
        &TenantKey::Int(101),
        &ShardRef::from("c"),
        TenantState::Offboarding,
    )
    .await
    .unwrap();

    // (a 1, b 0, c 0) -> b by name; (a 1, b 1, c 0) -> c; then a (c is full); then b.
    let mut placed = Vec::new();
    for id in 1..=4 {
        let preview = place_cmd::place(&url, None).await.unwrap();
        let before = db::map_version(&c).await.unwrap();
        let added = place_cmd::tenant_add(&url, &id.to_string(), None)
            .await
            .unwrap_or_else(|e| panic!("tenant {id}: {}: {e}", e.code()));
        assert_eq!(
            added.0.shard, preview.shard,
            "the preview named the same shard"
        );
        assert_eq!(added.0.version, before + 1, "one bump per add");
        placed.push(added.0.shard.name.clone());
    }
    assert_eq!(placed, ["b", "c", "a", "b"]);

    // Every active shard is full now: the preview and the add say so, and nothing changes.
    let before = snapshot(&c).await;
    let err = place_cmd::place(&url, None).await.unwrap_err();
    assert!(matches!(err, PlaceError::AllFull { active: 3 }), "{err}");
    let err = place_cmd::tenant_add(&url, "5", None).await.unwrap_err();
    assert_eq!(
        (err.code(), place_cmd::exit_code(&err)),
        ("E_NO_CAPACITY", exit::NO_CAPACITY),
        "{err}"
    );
    assert_eq!(snapshot(&c).await, before);

    // An existing tenant, and an id that is not a bigint, are refused the same way.
    let err = place_cmd::tenant_add(&url, "100", None).await.unwrap_err();
    assert_eq!(err.code(), "E_TENANT_EXISTS", "{err}");
    assert!(err.to_string().contains("shard a"), "{err}");
    let err = place_cmd::tenant_add(&url, "tenant-x", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "E_INVALID_ARGUMENT", "{err}");
    assert_eq!(place_cmd::exit_code(&err), exit::USAGE);
    assert_eq!(snapshot(&c).await, before);

    // The proxy's map sees the placements as pinned tenants.
    let map = db::load_map(&mut c).await.unwrap();
    let p = map.locate(&TenantKey::Int(2)).unwrap();
    assert_eq!((p.pinned, p.state), (true, TenantState::Active));
    assert_eq!(map.shard(p.shard).unwrap().name, "c");

    // shard list reports the counts the catalog holds.
    assert_eq!(
        live_counts(&c).await,
        counts(&[("a", 2), ("b", 2), ("c", 1), ("d", 0)])
    );
    // (The JSON object `shard list --format json` prints.)
    let v = place_cmd::shard_list(&url).await.unwrap().json();
    assert_eq!(v["map_version"], before.version);
    let by_name = |n: &str| {
        v["shards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("a")["tenants"], 2);
    assert_eq!(by_name("a")["free"], 0);
    assert_eq!(
        by_name("c")["tenants"],
        1,
        "the offboarding tenant is not counted"
    );
    assert_eq!(by_name("d")["state"], "draining");
    assert!(by_name("d")["free"].is_null(), "no hint: unbounded");
    assert_eq!(by_name("b")["url"], "postgres://app:***@127.0.0.1:1/b");
    assert!(!v.to_string().contains("secret"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_full_shard_is_refused_while_another_has_room() {
    let (_pg, url, c) = catalog(&[("full", Some(1)), ("roomy", Some(5))]).await;
    place_cmd::tenant_add(&url, "1", Some("full"))
        .await
        .unwrap();

    let before = snapshot(&c).await;
    let err = place_cmd::tenant_add(&url, "2", Some("full"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PlaceError::Full { ref shard, tenants: 1, capacity_hint: 1 } if shard == "full"),
        "{err}"
    );
    assert_eq!(
        (err.code(), place_cmd::exit_code(&err)),
        ("E_NO_CAPACITY", exit::NAMED_SHARD)
    );
    let err = place_cmd::tenant_add(&url, "2", Some("gone"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "E_SHARD_NOT_FOUND", "{err}");
    assert_eq!(snapshot(&c).await, before, "no fallback to the roomy shard");

    // The preview agrees, and the shard with room takes the tenant when named (or by id).
    let err = place_cmd::place(&url, Some("full")).await.unwrap_err();
    assert_eq!(err.code(), "E_NO_CAPACITY");
    let added = place_cmd::tenant_add(&url, "2", Some("1")).await.unwrap();
    assert_eq!(added.0.shard.name, "roomy");
    assert_eq!(live_counts(&c).await, counts(&[("full", 1), ("roomy", 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_never_pass_a_capacity_hint() {
    let (_pg, url, mut c) = catalog(&[("s0", Some(3)), ("s1", Some(2)), ("s2", None)]).await;
    db::set_shard_state(&mut c, &ShardRef::from("s2"), ShardState::Offline)
        .await
        .unwrap();
    let start = db::map_version(&c).await.unwrap();

    // 12 adds at once for 5 free slots.
    let results = add_all(&url, (1..=12).map(|id| (id, None))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 5, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r, "E_NO_CAPACITY");
    }
    assert_eq!(
        live_counts(&c).await,
        counts(&[("s0", 3), ("s1", 2), ("s2", 0)])
    );
    assert_eq!(db::map_version(&c).await.unwrap(), start + 5);

    // Racing for one named shard's last two slots.
    db::add_shard(
        &mut c,
        &NewShard {
            capacity_hint: Some(2),
            ..NewShard::new("s3", "postgres://u@127.0.0.1:1/s3")
        },
    )
    .await
    .unwrap();
    let results = add_all(&url, (20..28).map(|id| (id, Some("s3")))).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        2,
        "{results:?}"
    );
    assert_eq!(live_counts(&c).await[3], ("s3".to_string(), 2));

    // Racing to add the same tenant: one row, the rest told it exists.
    db::add_shard(&mut c, &NewShard::new("s4", "postgres://u@127.0.0.1:1/s4"))
        .await
        .unwrap();
    let results = add_all(&url, (0..6).map(|_| (99, None))).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| r.as_ref().err().map(String::as_str) == Some("E_TENANT_EXISTS"))
            .count(),
        5,
        "{results:?}"
    );
}

/// Runs every `tenant add` at once, each on its own connection; Ok(shard) or Err(code).
async fn add_all(
    url: &str,
    adds: impl Iterator<Item = (u32, Option<&'static str>)>,
) -> Vec<Result<String, String>> {
    let mut set = tokio::task::JoinSet::new();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(adds.size_hint().0));
    for (id, shard) in adds {
        let (url, barrier) = (url.to_owned(), barrier.clone());
        set.spawn(async move {
            let mut c = db::connect(&url).await.unwrap();
            let key = TenantKey::Int(id.into());
            barrier.wait().await;
            db::add_tenant(&mut c, &key, shard)
                .await
                .map(|a| a.shard.name)
                .map_err(|e| e.code().to_owned())
        });
    }
    set.join_all().await
}
