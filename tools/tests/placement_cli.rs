//! The real `shardctl` binary's placement commands against a real catalog: every exit code
//! of `place` (0-4) with its `E_*` code on stderr and its JSON on stdout, the same codes
//! from `tenant add`, and `shard list`. The placement logic itself is tested end to end in
//! `tests/tests/placement.rs`.

mod common;

use common::{fails, ok, run};
use serde_json::{Value, json};
use shardctl::pg::{PgCluster, PgOptions};
use shardgate_catalog::ShardState;
use shardgate_catalog::db::{self, ShardRef};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_and_tenant_add_exit_with_their_documented_codes() {
    let pg = PgCluster::start(PgOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    pg.create_database("shardgate")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = pg.superuser_url("shardgate");
    ok(&run(&url, &["init"]).await);

    // 3: no shard at all.
    let r = run(&url, &["place"]).await;
    fails(&r, 3, "E_NO_ACTIVE_SHARD");
    let r = run(&url, &["place", "--format", "json"]).await;
    fails(&r, 3, "E_NO_ACTIVE_SHARD");
    assert_eq!(r.json()["error"], "E_NO_ACTIVE_SHARD");
    assert_eq!(r.json()["exit_code"], 3);
    fails(
        &run(&url, &["tenant", "add", "1"]).await,
        3,
        "E_NO_ACTIVE_SHARD",
    );

    // shard add suggests a capacity_hint from max_connections when none is given.
    let r = run(
        &url,
        &[
            "shard",
            "add",
            "--name",
            "s1",
            "--url",
            "postgres://app:pw@127.0.0.1:1/app",
            "--capacity-hint",
            "1",
            "--format",
            "json",
        ],
    )
    .await;
    ok(&r);
    assert!(r.json()["suggested_capacity_hint"].is_null());
    let r = run(
        &url,
        &[
            "shard",
            "add",
            "--name",
            "s0",
            "--url",
            "postgres://app:pw@127.0.0.1:1/app",
            "--max-connections",
            "100",
            "--pool-size",
            "20",
        ],
    )
    .await;
    ok(&r);
    assert!(r.stdout.contains("suggests 2"), "{}", r.stdout);

    // 3 again: shards exist, none active.
    let mut c = db::connect(&url).await.unwrap();
    for s in ["s0", "s1"] {
        db::set_shard_state(&mut c, &ShardRef::from(s), ShardState::Draining)
            .await
            .unwrap();
    }
    fails(&run(&url, &["place"]).await, 3, "E_NO_ACTIVE_SHARD");
    // ...while a named one that is not active has no capacity (2).
    let r = run(&url, &["place", "--preferred-shard", "s1"]).await;
    fails(&r, 2, "E_NO_CAPACITY");
    assert!(r.stderr.contains("draining"), "{}", r.stderr);
    db::set_shard_state(&mut c, &ShardRef::from("s1"), ShardState::Active)
        .await
        .unwrap();

    // 0: s1 (capacity 1) is the only active shard.
    let r = run(&url, &["place", "--format", "json"]).await;
    ok(&r);
    assert_eq!(
        r.json(),
        json!({"shard": "s1", "shard_id": 0, "tenants": 0, "capacity_hint": 1, "free": 1})
    );
    let r = run(&url, &["place"]).await;
    ok(&r);
    assert!(r.stdout.contains("shard s1 (id 0)"), "{}", r.stdout);
    let r = run(&url, &["tenant", "add", "7", "--format", "json"]).await;
    ok(&r);
    let v = r.json();
    assert_eq!(
        (&v["tenant"], &v["shard"], &v["tenants"]),
        (&json!("7"), &json!("s1"), &json!(1))
    );

    // 1: every active shard is full; the add changes nothing.
    let version = db::map_version(&c).await.unwrap();
    let r = run(&url, &["place", "--format", "json"]).await;
    fails(&r, 1, "E_NO_CAPACITY");
    assert_eq!(r.json()["error"], "E_NO_CAPACITY");
    fails(
        &run(&url, &["tenant", "add", "8"]).await,
        1,
        "E_NO_CAPACITY",
    );
    assert_eq!(db::map_version(&c).await.unwrap(), version);

    // 2: the named shard is full (while s0 has room once active) or missing.
    db::set_shard_state(&mut c, &ShardRef::from("s0"), ShardState::Active)
        .await
        .unwrap();
    let version = db::map_version(&c).await.unwrap();
    let r = run(
        &url,
        &["place", "--preferred-shard", "s1", "--format", "json"],
    )
    .await;
    fails(&r, 2, "E_NO_CAPACITY");
    assert_eq!(r.json()["exit_code"], 2);
    fails(
        &run(&url, &["tenant", "add", "8", "--shard", "s1"]).await,
        2,
        "E_NO_CAPACITY",
    );
    fails(
        &run(&url, &["place", "--preferred-shard", "nope"]).await,
        2,
        "E_SHARD_NOT_FOUND",
    );
    fails(
        &run(&url, &["tenant", "add", "8", "--shard", "nope"]).await,
        2,
        "E_SHARD_NOT_FOUND",
    );
    assert_eq!(
        db::map_version(&c).await.unwrap(),
        version,
        "no fallback to s0"
    );
    ok(&run(&url, &["place", "--preferred-shard", "s0"]).await);
    ok(&run(&url, &["tenant", "add", "8"]).await);

    // 4: an existing tenant, a key of the wrong type, a catalog that is not there.
    fails(
        &run(&url, &["tenant", "add", "7"]).await,
        4,
        "E_TENANT_EXISTS",
    );
    fails(
        &run(&url, &["tenant", "add", "seven"]).await,
        4,
        "E_INVALID_ARGUMENT",
    );
    let dead = "postgres://u:hidden@127.0.0.1:1/shardgate";
    let r = run(dead, &["place", "--format", "json"]).await;
    fails(&r, 4, "E_CATALOG");
    assert_eq!(r.json()["error"], "E_CATALOG");
    assert!(!r.stderr.contains("hidden"), "{}", r.stderr);

    // shard list: the counts, passwords masked.
    let r = run(&url, &["shard", "list", "--format", "json"]).await;
    ok(&r);
    let v = r.json();
    let shards = v["shards"].as_array().unwrap();
    let names: Vec<_> = shards
        .iter()
        .map(|s| (s["name"].clone(), s["tenants"].clone()))
        .collect();
    assert_eq!(names, [(json!("s1"), json!(1)), (json!("s0"), json!(1))]);
    assert_eq!(shards[1]["free"], Value::Null);
    assert_eq!(shards[0]["free"], 0);
    assert_eq!(shards[0]["url"], "postgres://app:***@127.0.0.1:1/app");
    let r = run(&url, &["shard", "list"]).await;
    ok(&r);
    assert!(r.stdout.starts_with("ID  NAME"), "{}", r.stdout);
    assert!(!r.stdout.contains(":pw@"), "{}", r.stdout);
}

#[tokio::test]
async fn argument_errors_of_placement_commands_exit_4() {
    // Nothing is reached: clap refuses these before any connection.
    let none = "postgres://u@127.0.0.1:1/x";
    for args in [
        &["place", "--bogus"][..],
        &["place", "--format", "yaml"],
        &["tenant", "add"],
        &["tenant", "add", "1", "--shard"],
    ] {
        let r = run(none, args).await;
        assert_eq!(r.code, 4, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("error:"), "{args:?}: {}", r.stderr);
    }
    // Other commands keep clap's own code.
    assert_eq!(run(none, &["tenant", "set", "1"]).await.code, 2);
    // Help is not an error, and it documents the exit codes.
    for cmd in [&["place", "--help"][..], &["tenant", "add", "--help"]] {
        let r = run(none, cmd).await;
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains("Exit codes:"), "{}", r.stdout);
        assert!(r.stdout.contains("3  E_NO_ACTIVE_SHARD"), "{}", r.stdout);
    }
}
