//! The catalog database against a real Postgres: migrations, the map it yields, the
//! version discipline of every change, and the watcher that keeps a proxy's map current
//! through notifications, polling, outages and bad data.

use std::time::{Duration, Instant};

use shardctl::catalog_cmd::{self, Format, Report};
use shardgate_catalog::db::{self, InitOptions, NewShard, ShardRef};
use shardgate_catalog::{
    CatalogError, KeyType, MapHandle, ShardMap, ShardState, Strategy, TenantKey, TenantState,
    build_ring, watch,
};
use shardgate_e2e::{PgCluster, PgOptions, wait_until};
use tokio::sync::oneshot;
use tokio_postgres::Client;

const DB: &str = "shardgate";

/// A cluster with an empty catalog database, and its url.
async fn catalog_cluster() -> (PgCluster, String) {
    let pg = PgCluster::start(PgOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    pg.create_database(DB)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = pg.superuser_url(DB);
    (pg, url)
}

async fn client(url: &str) -> Client {
    db::connect(url).await.unwrap_or_else(|e| panic!("{e}"))
}

fn opts(strategy: Strategy, key_type: KeyType, vnodes: u32) -> InitOptions {
    InitOptions {
        strategy: Some(strategy),
        key_type: Some(key_type),
        vnodes_per_shard: Some(vnodes),
    }
}

/// An initialised catalog with shards s0..s{n}, each with `vnodes` ring nodes.
async fn catalog_with_shards(n: u32, vnodes: u32) -> (PgCluster, String, Client) {
    let (pg, url) = catalog_cluster().await;
    let mut c = client(&url).await;
    db::migrate(&mut c, opts(Strategy::Hash, KeyType::Bigint, vnodes))
        .await
        .unwrap();
    for i in 0..n {
        let shard = NewShard::new(format!("s{i}"), format!("postgres://u@127.0.0.1:1/s{i}"));
        db::add_shard(&mut c, &shard).await.unwrap();
    }
    (pg, url, c)
}

/// A watcher on `url` over a handle that starts at the catalog's current map; dropping
/// the returned sender stops it.
async fn start_watch(
    url: &str,
    c: &mut Client,
    poll: Duration,
) -> (MapHandle, oneshot::Sender<()>) {
    let handle = MapHandle::new(db::load_map(c).await.unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(watch(url.to_owned(), poll, handle.clone(), async {
        let _ = stopped.await;
    }));
    let ready = wait_until(Duration::from_secs(10), || async {
        let st = handle.status();
        st.connected && st.last_ok.is_some()
    })
    .await;
    assert!(ready, "watcher never connected: {:?}", handle.status());
    (handle, stop)
}

/// Time from now until `handle` places `key` on `shard`, or None after `limit`.
async fn time_until_placed(
    handle: &MapHandle,
    key: &TenantKey,
    shard: u32,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let seen = wait_until(limit, || async {
        handle.load().locate(key).map(|p| p.shard) == Ok(shard)
    })
    .await;
    seen.then(|| since.elapsed())
}

/// A shard other than the one the ring gives `key`.
fn other_shard(map: &ShardMap, key: &TenantKey) -> u32 {
    let here = map.locate(key).unwrap().shard;
    map.shards()
        .iter()
        .map(|s| s.id)
        .find(|&id| id != here)
        .unwrap()
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_concurrent_inits_are_safe() {
    let (_pg, url) = catalog_cluster().await;

    // Before init, reading says what to do rather than "relation does not exist".
    let mut c = client(&url).await;
    let err = db::load_map(&mut c).await.unwrap_err();
    assert!(matches!(err, CatalogError::NotInitialised), "{err}");
    assert!(err.to_string().contains("shardctl init"));

    // Four inits race on a fresh catalog: all succeed, exactly one does the work.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let url = url.clone();
        set.spawn(async move {
            let mut c = client(&url).await;
            db::migrate(&mut c, opts(Strategy::Directory, KeyType::Text, 32)).await
        });
    }
    let reports: Vec<_> = set
        .join_all()
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("a concurrent init failed: {e}")))
        .collect();
    let workers: Vec<_> = reports.iter().filter(|r| !r.applied.is_empty()).collect();
    assert_eq!(workers.len(), 1, "{reports:?}");
    assert_eq!(workers[0].applied, ["0001_init", "0002_copy_on"]);
    assert_eq!(workers[0].from_version, 0);
    assert_eq!(
        reports
            .iter()
            .filter(|r| !r.settings_written.is_empty())
            .count(),
        1
    );

    // A plain re-run changes nothing and keeps the stored settings.
    let again = db::migrate(&mut c, InitOptions::default()).await.unwrap();
    assert!(again.applied.is_empty() && again.settings_written.is_empty());
    assert_eq!(
        again.from_version,
        shardgate_catalog::schema::SCHEMA_VERSION
    );
    assert_eq!(again.settings.strategy, Strategy::Directory);
    assert_eq!(again.settings.key_type, KeyType::Text);
    assert_eq!(again.settings.vnodes_per_shard, 32);
    assert_eq!(
        count(&c, "select count(*) from shardgate.schema_migrations").await,
        shardgate_catalog::schema::MIGRATIONS.len() as i64
    );
    assert_eq!(
        count(&c, "select count(*) from shardgate.settings").await,
        3
    );

    // Every table of the design exists.
    let tables = count(
        &c,
        "select count(*) from information_schema.tables where table_schema = 'shardgate' \
         and table_name in ('shards', 'tenants', 'ring', 'map_version', 'settings', 'proxies', \
         'jobs', 'ddl', 'events', 'schema_migrations')",
    )
    .await;
    assert_eq!(tables, 10);

    // Asking for a different setting is refused, and refused atomically.
    let err = db::migrate(&mut c, opts(Strategy::Hash, KeyType::Text, 32))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::SettingConflict {
                key: "strategy",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        db::load_settings(&c).await.unwrap().strategy,
        Strategy::Directory
    );

    // The shardctl command says the same, as text and as JSON.
    let init = catalog_cmd::init(&url, InitOptions::default())
        .await
        .unwrap();
    let text = init.render(Format::Text);
    let current = shardgate_catalog::schema::SCHEMA_VERSION;
    assert!(
        text.contains(&format!("already at schema version {current}")),
        "{text}"
    );
    assert!(
        !text.contains(shardctl_password(&url)),
        "password leaked: {text}"
    );
    let json = init.render(Format::Json);
    assert!(json.contains("\"applied\":[]"), "{json}");
    assert!(json.contains("\"strategy\":\"directory\""), "{json}");
}

fn shardctl_password(url: &str) -> &str {
    let userinfo = url.split('@').next().unwrap();
    userinfo.rsplit(':').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_bumps_the_version_once_and_load_map_locates_tenants() {
    let (_pg, url) = catalog_cluster().await;
    let mut c = client(&url).await;
    db::migrate(&mut c, opts(Strategy::Hash, KeyType::Bigint, 16))
        .await
        .unwrap();
    assert_eq!(db::map_version(&c).await.unwrap(), 0);
    let err = db::load_map(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("no shards"), "{err}");

    for i in 0..3u32 {
        let shard = NewShard {
            capacity_hint: Some(100),
            max_connections: Some(200),
            region: Some("eu".into()),
            ..NewShard::new(format!("s{i}"), format!("postgres://u@127.0.0.1:1/s{i}"))
        };
        let added = db::add_shard(&mut c, &shard).await.unwrap();
        assert_eq!(
            (added.id, added.vnodes, added.version),
            (i, 16, u64::from(i) + 1)
        );
    }
    let map = db::load_map(&mut c).await.unwrap();
    assert_eq!(map.version(), 3);
    assert_eq!(map.strategy(), Strategy::Hash);
    assert_eq!(map.ring(), build_ring(&[0, 1, 2], 16).as_slice());
    let s1 = map.shard(1).unwrap();
    assert_eq!((s1.name.as_str(), s1.capacity_hint), ("s1", Some(100)));
    assert_eq!(s1.url, "postgres://u@127.0.0.1:1/s1");
    let rows = db::list_shards(&c).await.unwrap();
    assert_eq!(rows[2].max_connections, Some(200));
    assert_eq!(rows[2].region.as_deref(), Some("eu"));

    // Pin tenant 42 away from its ring shard, gated.
    let k42 = TenantKey::Int(42);
    let ring_home = map.locate(&k42).unwrap().shard;
    let target = other_shard(&map, &k42);
    let v = db::set_tenant(&mut c, &k42, &ShardRef::Id(target), TenantState::Gated)
        .await
        .unwrap();
    assert_eq!(v, 4);
    let map = db::load_map(&mut c).await.unwrap();
    let p = map.locate(&k42).unwrap();
    assert_eq!(
        (p.shard, p.state, p.pinned),
        (target, TenantState::Gated, true)
    );
    assert_eq!(map.version(), 4);
    // An unpinned tenant is where the ring (built locally) puts it.
    let local = ShardMap::new(
        0,
        Strategy::Hash,
        map.shards().to_vec(),
        build_ring(&[0, 1, 2], 16),
        Default::default(),
    )
    .unwrap();
    for t in 0..50 {
        let k = TenantKey::Int(t);
        if t != 42 {
            assert_eq!(map.locate(&k), local.locate(&k));
        }
    }

    // Shard state, and a tenant by shard name given as text (the CLI's path).
    assert_eq!(
        db::set_shard_state(&mut c, &ShardRef::from("s1"), ShardState::Draining)
            .await
            .unwrap(),
        5
    );
    let set = catalog_cmd::tenant_set(&url, " 7 ", "2", TenantState::Active)
        .await
        .unwrap();
    assert_eq!(
        (set.tenant.as_str(), set.shard_id, set.version),
        ("7", 2, 6)
    );
    assert_eq!(db::remove_tenant(&mut c, &k42).await.unwrap(), 7);
    let map = db::load_map(&mut c).await.unwrap();
    assert_eq!(map.shard(1).unwrap().state, ShardState::Draining);
    let p = map.locate(&k42).unwrap();
    assert_eq!((p.shard, p.pinned), (ring_home, false), "back on the ring");
    assert_eq!(map.locate(&TenantKey::Int(7)).unwrap().shard, 2);

    // Refused changes leave the version alone.
    let refused: Vec<CatalogError> = vec![
        db::set_tenant(&mut c, &k42, &ShardRef::from("nope"), TenantState::Active)
            .await
            .unwrap_err(),
        db::set_tenant(
            &mut c,
            &TenantKey::Text("x".into()),
            &ShardRef::Id(0),
            TenantState::Active,
        )
        .await
        .unwrap_err(),
        db::add_shard(&mut c, &NewShard::new("s0", "postgres://u@h/d"))
            .await
            .unwrap_err(),
        db::add_shard(&mut c, &NewShard::new("s9", "mysql://u@h/d"))
            .await
            .unwrap_err(),
        db::remove_tenant(&mut c, &TenantKey::Int(999))
            .await
            .unwrap_err(),
        db::set_shard_state(&mut c, &ShardRef::Id(77), ShardState::Offline)
            .await
            .unwrap_err(),
    ];
    let msgs: Vec<String> = refused.iter().map(|e| e.to_string()).collect();
    assert!(
        matches!(refused[0], CatalogError::UnknownShard(_)),
        "{msgs:?}"
    );
    assert!(msgs[1].contains("key_type is bigint"), "{msgs:?}");
    assert!(
        matches!(refused[2], CatalogError::ShardExists(_)),
        "{msgs:?}"
    );
    assert!(msgs[3].contains("postgres://"), "{msgs:?}");
    assert!(
        matches!(refused[4], CatalogError::UnknownTenant(_)),
        "{msgs:?}"
    );
    assert!(
        matches!(refused[5], CatalogError::UnknownShard(_)),
        "{msgs:?}"
    );
    assert_eq!(db::map_version(&c).await.unwrap(), 7);
    assert_eq!(count(&c, "select count(*) from shardgate.events").await, 7);
    assert_eq!(count(&c, "select count(*) from shardgate.ring").await, 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_and_text_keys_are_stored_canonically_and_read_back() {
    let (pg, url) = catalog_cluster().await;
    pg.create_database("textcat").await.unwrap();
    let text_url = pg.superuser_url("textcat");

    let mut c = client(&url).await;
    db::migrate(&mut c, opts(Strategy::Directory, KeyType::Uuid, 8))
        .await
        .unwrap();
    db::add_shard(&mut c, &NewShard::new("a", "postgres://u@h/a"))
        .await
        .unwrap();
    db::add_shard(&mut c, &NewShard::new("b", "postgres://u@h/b"))
        .await
        .unwrap();
    let canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
    let set = catalog_cmd::tenant_set(&url, &canonical.to_uppercase(), "b", TenantState::Active)
        .await
        .unwrap();
    assert_eq!(set.tenant, canonical);
    let stored: String = c
        .query_one("select tenant_id from shardgate.tenants", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, canonical);
    // The stored text is what Postgres itself prints for that uuid.
    let pg_text: String = c
        .query_one("select $1::text::uuid::text", &[&stored])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pg_text, stored);
    let map = db::load_map(&mut c).await.unwrap();
    let key = KeyType::Uuid.parse(canonical).unwrap();
    assert_eq!(map.locate(&key).unwrap().shard, 1);
    assert!(
        map.locate(&KeyType::Uuid.parse(&"0".repeat(32)).unwrap())
            .is_err(),
        "directory"
    );

    let mut t = client(&text_url).await;
    db::migrate(&mut t, opts(Strategy::Hash, KeyType::Text, 8))
        .await
        .unwrap();
    db::add_shard(&mut t, &NewShard::new("only", "postgres://u@h/o"))
        .await
        .unwrap();
    let acme = TenantKey::Text(" Acme, Inc. ".into());
    db::set_tenant(&mut t, &acme, &ShardRef::Id(0), TenantState::Moving)
        .await
        .unwrap();
    let map = db::load_map(&mut t).await.unwrap();
    assert_eq!(map.locate(&acme).unwrap().state, TenantState::Moving);
    assert_eq!(map.tenants().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_a_notified_change_within_a_second() {
    let (_pg, url, mut c) = catalog_with_shards(2, 16).await;
    // A poll far longer than the test: only the notification can explain a quick reload.
    let (handle, _stop) = start_watch(&url, &mut c, Duration::from_secs(600)).await;
    let key = TenantKey::Int(1001);
    let target = other_shard(&handle.load(), &key);

    let t0 = Instant::now();
    let v = db::set_tenant(&mut c, &key, &ShardRef::Id(target), TenantState::Active)
        .await
        .unwrap();
    let took = time_until_placed(&handle, &key, target, t0, Duration::from_secs(5)).await;
    eprintln!("notify -> reload took {took:?}");
    let took = took.expect("change never seen");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(handle.version(), v);
    assert_eq!(handle.status().reloads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_polls_a_change_made_without_notify() {
    let (_pg, url, mut c) = catalog_with_shards(2, 16).await;
    let poll = Duration::from_millis(300);
    let (handle, _stop) = start_watch(&url, &mut c, poll).await;

    // Unchanged versions are checked, not reloaded: the refresh age stays within a poll.
    let first_ok = handle.status().last_ok.unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || async {
            handle.status().last_ok.is_some_and(|t| t > first_ok)
        })
        .await,
        "no poll happened"
    );
    assert_eq!(handle.status().reloads, 0);
    assert!(handle.status().refresh_age().unwrap() < poll * 2);

    let key = TenantKey::Int(555);
    let target = other_shard(&handle.load(), &key);
    let t0 = Instant::now();
    c.batch_execute(&format!(
        "begin;
         insert into shardgate.tenants (tenant_id, shard_id) values ('555', {target});
         update shardgate.map_version set version = version + 1;
         commit;"
    ))
    .await
    .unwrap();
    let took = time_until_placed(&handle, &key, target, t0, Duration::from_secs(5)).await;
    eprintln!("poll ({poll:?}) -> reload took {took:?}");
    let took = took.expect("change never seen");
    assert!(took < poll * 2, "took {took:?}");
    assert_eq!(handle.status().reloads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_keeps_the_last_map_through_a_catalog_outage() {
    let (mut pg, url, mut c) = catalog_with_shards(2, 16).await;
    let (handle, _stop) = start_watch(&url, &mut c, Duration::from_millis(200)).await;
    let before = handle.version();
    let key = TenantKey::Int(77);
    let home = handle.load().locate(&key).unwrap().shard;

    tokio::task::block_in_place(|| pg.stop()).unwrap();
    let noticed = wait_until(Duration::from_secs(5), || async {
        let st = handle.status();
        !st.connected && st.error.is_some() && st.failures >= 3
    })
    .await;
    assert!(noticed, "outage not reported: {:?}", handle.status());
    // Still routing, on the same map.
    assert_eq!(handle.version(), before);
    assert_eq!(handle.load().locate(&key).unwrap().shard, home);
    let error = handle.status().error.unwrap();
    eprintln!("status during the outage: {error}");
    assert!(
        error.contains("cannot connect") && error.to_lowercase().contains("refused"),
        "the cause is lost: {error}"
    );

    let t0 = Instant::now();
    pg.restart().await.unwrap();
    let back = wait_until(Duration::from_secs(10), || async {
        let st = handle.status();
        st.connected && st.error.is_none()
    })
    .await;
    assert!(back, "watcher did not come back: {:?}", handle.status());
    eprintln!("reconnected {:?} after restart began", t0.elapsed());

    let mut c = client(&url).await;
    let target = other_shard(&handle.load(), &key);
    let t1 = Instant::now();
    db::set_tenant(&mut c, &key, &ShardRef::Id(target), TenantState::Active)
        .await
        .unwrap();
    let took = time_until_placed(&handle, &key, target, t1, Duration::from_secs(5)).await;
    assert!(took.is_some(), "change after restart never seen");
    assert_eq!(handle.version(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_catches_up_on_reconnect_without_waiting_for_the_poll() {
    let (pg, url, mut c) = catalog_with_shards(2, 16).await;
    // No poll and no notification can deliver the change below: only the catch-up after
    // reconnecting can.
    let (handle, _stop) = start_watch(&url, &mut c, Duration::from_secs(600)).await;
    let admin = pg.connect("postgres").await.unwrap();
    admin
        .batch_execute("alter database shardgate allow_connections false")
        .await
        .unwrap();
    admin
        .batch_execute(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where application_name = 'shardgate-watch'",
        )
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            !handle.status().connected
        })
        .await
    );
    // `c` was connected before connections were closed, so it can still change the map.
    let key = TenantKey::Int(31337);
    let target = other_shard(&handle.load(), &key);
    let v = db::set_tenant(&mut c, &key, &ShardRef::Id(target), TenantState::Active)
        .await
        .unwrap();
    assert_ne!(handle.version(), v);
    admin
        .batch_execute("alter database shardgate allow_connections true")
        .await
        .unwrap();
    let t0 = Instant::now();
    let took = time_until_placed(&handle, &key, target, t0, Duration::from_secs(5)).await;
    eprintln!("caught up {took:?} after connections were allowed again");
    assert!(
        took.is_some(),
        "missed change never picked up: {:?}",
        handle.status()
    );
    assert_eq!(handle.version(), v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_catalog_data_fails_the_load_and_the_watcher_keeps_the_last_map() {
    let (_pg, url, mut c) = catalog_with_shards(2, 16).await;
    let (handle, _stop) = start_watch(&url, &mut c, Duration::from_millis(200)).await;
    let good = handle.version();

    // A tenant id that is no bigint, written behind the library's back.
    c.batch_execute(
        "begin;
         insert into shardgate.tenants (tenant_id, shard_id) values ('abc', 0);
         update shardgate.map_version set version = version + 1;
         select pg_notify('shardgate_map', (select version::text from shardgate.map_version));
         commit;",
    )
    .await
    .unwrap();
    let err = db::load_map(&mut c).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CatalogError::InvalidData(_)), "{msg}");
    assert!(
        msg.contains("tenants row \"abc\"") && msg.contains("key_type is bigint"),
        "{msg}"
    );
    let reported = wait_until(Duration::from_secs(5), || async {
        handle.status().error.is_some_and(|e| e.contains("\"abc\""))
    })
    .await;
    assert!(reported, "{:?}", handle.status());
    assert_eq!(handle.version(), good, "the bad map must not be swapped in");
    assert!(
        handle.status().connected,
        "bad data is no reason to reconnect"
    );
    assert!(handle.load().locate(&TenantKey::Int(1)).is_ok());

    // An unknown key_type is as clear.
    c.batch_execute("update shardgate.settings set value = 'int' where key = 'key_type'")
        .await
        .unwrap();
    let msg = db::load_map(&mut c).await.unwrap_err().to_string();
    assert!(msg.contains("settings.key_type = \"int\""), "{msg}");

    // Repaired: the watcher recovers on its own and takes the new map.
    c.batch_execute(
        "begin;
         update shardgate.settings set value = 'bigint' where key = 'key_type';
         delete from shardgate.tenants where tenant_id = 'abc';
         update shardgate.map_version set version = version + 1;
         commit;",
    )
    .await
    .unwrap();
    let recovered = wait_until(Duration::from_secs(5), || async {
        let st = handle.status();
        st.error.is_none() && handle.version() == good + 2
    })
    .await;
    assert!(recovered, "{:?}", handle.status());
}
