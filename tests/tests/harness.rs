//! Proves the harness itself: if these fail, no end-to-end result means anything.

use std::time::Duration;

use shardgate_e2e::{Fixture, HostAuth, PgCluster, PgOptions, psql, wait_until};

async fn started(opts: PgOptions) -> PgCluster {
    PgCluster::start(opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn cluster_answers_select_1_over_tcp_with_scram() {
    let pg = started(PgOptions::default()).await;
    let client = pg.connect("postgres").await.unwrap();
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let row = client
        .query_one(
            "select inet_server_addr()::text, current_setting('port')::int, \
             current_setting('wal_level'), \
             (select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'postgres')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("127.0.0.1/32")
    );
    assert_eq!(row.get::<_, i32>(1), i32::from(pg.port()));
    assert_eq!(row.get::<_, String>(2), "logical");
    assert!(
        row.get::<_, bool>(3),
        "superuser password is not a SCRAM verifier"
    );

    // The password is really checked: a wrong one is refused with invalid_password.
    let bad = pg.url("postgres", "wrong", "postgres");
    let Err(err) = tokio_postgres::connect(&bad, tokio_postgres::NoTls).await else {
        panic!("wrong password must be refused");
    };
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{err}"
    );
}

#[tokio::test]
async fn two_clusters_start_concurrently_on_different_ports() {
    let (a, b) = tokio::join!(
        PgCluster::start(PgOptions::default()),
        PgCluster::start(PgOptions::default())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    // Each answers on its own port, with its own data.
    a.execute_batch("postgres", "create table only_in_a(x int)")
        .await
        .unwrap();
    let count = |pg: &PgCluster| {
        let url = pg.superuser_url("postgres");
        async move {
            let out = psql(
                &url,
                &[
                    "-tAc",
                    "select count(*) from pg_class where relname = 'only_in_a'",
                ],
            )
            .await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }
    };
    assert_eq!(count(&a).await, "1");
    assert_eq!(count(&b).await, "0");
}

#[tokio::test]
async fn stop_and_restart_keep_data_and_port() {
    let mut pg = started(PgOptions::default()).await;
    let port = pg.port();
    pg.execute_batch(
        "postgres",
        "create table kept(x int); insert into kept values (41), (1)",
    )
    .await
    .unwrap();
    pg.stop().unwrap();
    assert!(!pg.is_running());
    assert!(!shardctl::pg::is_running(pg.data_dir()).unwrap());
    assert!(
        pg.connect("postgres").await.is_err(),
        "stopped server answered"
    );

    pg.restart().await.unwrap();
    assert_eq!(pg.port(), port);
    let client = pg.connect("postgres").await.unwrap();
    let sum: i64 = client
        .query_one("select sum(x) from kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 42);
}

#[tokio::test]
async fn killed_cluster_recovers_checkpointed_data_on_restart() {
    let mut pg = started(PgOptions::default()).await;
    // Separate statements: one multi-statement batch is one transaction, whose commit
    // would come after the checkpoint and (synchronous_commit=off) could die with the kill.
    pg.execute_batch(
        "postgres",
        "create table t(x int); insert into t values (7)",
    )
    .await
    .unwrap();
    pg.execute_batch("postgres", "checkpoint").await.unwrap();
    pg.kill().unwrap();
    assert!(!shardctl::pg::is_running(pg.data_dir()).unwrap());
    pg.restart().await.unwrap();
    let client = pg.connect("postgres").await.unwrap();
    let x: i32 = client
        .query_one("select x from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 7);
    assert!(
        pg.log_tail()
            .contains("database system was not properly shut down"),
        "restart after kill should run crash recovery:\n{}",
        pg.log_tail()
    );
}

#[tokio::test]
async fn drop_removes_the_data_dir_unless_kept() {
    let pg = started(PgOptions::default()).await;
    let dir = pg.data_dir().to_owned();
    assert!(dir.join("PG_VERSION").is_file());
    drop(pg);
    assert!(!dir.exists(), "{} survived drop", dir.display());

    let kept = started(PgOptions {
        keep: true,
        ..PgOptions::default()
    })
    .await;
    let dir = kept.data_dir().to_owned();
    drop(kept);
    assert!(
        dir.join("PG_VERSION").is_file(),
        "keep: true lost the data dir"
    );
    assert!(
        !shardctl::pg::is_running(&dir).unwrap(),
        "drop must stop the server"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn existing_data_dir_is_refused_unless_reuse_is_asked_for() {
    let mut first = started(PgOptions {
        keep: true,
        ..PgOptions::default()
    })
    .await;
    first
        .execute_batch("postgres", "create table old(x int)")
        .await
        .unwrap();
    first.stop().unwrap();
    let opts = first.options().clone();
    drop(first);

    let refused = PgCluster::start(PgOptions {
        keep: false,
        ..opts.clone()
    })
    .await;
    assert!(
        matches!(refused, Err(shardctl::pg::PgError::DataDirExists(_))),
        "{refused:?}"
    );
    let again = started(PgOptions {
        keep: false,
        reuse_existing: true,
        ..opts
    })
    .await;
    let client = again.connect("postgres").await.unwrap();
    assert!(
        client
            .query_one("select count(*) from old", &[])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn md5_cluster_stores_md5_passwords_and_accepts_them() {
    let pg = started(PgOptions {
        auth: HostAuth::Md5,
        ..PgOptions::default()
    })
    .await;
    pg.create_role("alice", "s3cret", false).await.unwrap();
    let client = pg.connect("postgres").await.unwrap();
    let row = client
        .query_one(
            "select bool_and(rolpassword like 'md5%') from pg_authid \
             where rolname in ('postgres', 'alice')",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "md5 cluster holds non-md5 verifiers");
    let out = psql(
        &pg.url("alice", "s3cret", "postgres"),
        &["-tAc", "select current_user"],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice");
}

#[tokio::test]
async fn fixture_builds_a_config_that_points_at_its_shards() {
    let fx = Fixture::builder()
        .shards(2)
        .pool_mode("session")
        .auth("md5")
        .proxy_key("pool_timeout_ms", "1234")
        .start()
        .await;
    let proxy = fx.proxy();
    assert_eq!(proxy.config.proxy.listen, proxy.addr.to_string());
    assert_eq!(proxy.config.proxy.pool_timeout_ms, 1234);
    assert_eq!(fx.config.shards.len(), 2);
    for (i, spec) in fx.config.shards.iter().enumerate() {
        let ep = spec.endpoint().unwrap();
        assert_eq!(ep.port, fx.shard(i).port());
        // The shard URL in the config logs in and reaches the app database.
        let (client, conn) = tokio_postgres::connect(&spec.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let db: String = client
            .query_one("select current_database()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(db, "app");
    }
    assert_ne!(fx.shard(0).port(), fx.shard(1).port());
}

#[tokio::test]
async fn proxy_shutdown_releases_its_port() {
    let mut fx = Fixture::start().await;
    let addr = fx.proxy().addr;
    assert!(
        !fx.proxy().is_finished(),
        "run returned before shutdown was asked for"
    );
    let proxy = fx.take_proxy().unwrap();
    proxy.shutdown().await.unwrap();
    let closed = wait_until(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(closed, "proxy still accepts on {addr} after shutdown");
}
