//! Pooling as clients see it: session settings that follow each client from one server
//! connection to the next, session pooling's guarantees, dead server connections and a
//! restarted shard, an exhausted pool, and a shard that is down when the proxy starts.

mod common;

use std::future::poll_fn;
use std::time::{Duration, Instant};

use shardgate::config::PoolMode;
use shardgate_e2e::{Fixture, start_proxy};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{
    AsyncMessage, Client, GenericClient, NoTls, Notification, SimpleQueryMessage,
};

use common::{client, connect_with, db_error, proxy_config, proxy_with, terminate_others, within};

/// What a client's session settings look like from inside it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    schemas: Vec<String>,
    /// `which` is a table in every schema holding that schema's name: what an unqualified
    /// name resolves to.
    which: String,
    app: String,
    tenant: Option<String>,
}

fn expect(schemas: &[&str], which: &str, app: &str, tenant: Option<&str>) -> Seen {
    Seen {
        schemas: schemas.iter().map(|s| s.to_string()).collect(),
        which: which.into(),
        app: app.into(),
        tenant: tenant.map(str::to_owned),
    }
}

async fn seen(c: &impl GenericClient) -> Seen {
    let row = c
        .query_one(
            "select current_schemas(false)::text[], (select name from which), \
             current_setting('application_name'), \
             nullif(current_setting('app.tenant_id', true), '')",
            &[],
        )
        .await
        .unwrap();
    Seen {
        schemas: row.get(0),
        which: row.get(1),
        app: row.get(2),
        tenant: row.get(3),
    }
}

/// `SHOW name` over the simple protocol.
async fn show(c: &Client, name: &str) -> String {
    let msgs = c.simple_query(&format!("SHOW {name}")).await.unwrap();
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| panic!("SHOW {name} returned no row"))
}

/// `current_setting(name, true)`, with an empty value read as unset.
async fn setting(c: &impl GenericClient, name: &str) -> Option<String> {
    c.query_one("select nullif(current_setting($1, true), '')", &[&name])
        .await
        .unwrap()
        .get(0)
}

async fn backend_pid(c: &impl GenericClient) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

const SCHEMAS: &str = "create schema start_s; create schema a_s; create schema b_s; \
    create table public.which (name text); insert into public.which values ('public'); \
    create table start_s.which (name text); insert into start_s.which values ('start'); \
    create table a_s.which (name text); insert into a_s.which values ('a'); \
    create table b_s.which (name text); insert into b_s.which values ('b');";

#[tokio::test]
async fn session_settings_follow_each_client_in_transaction_pooling() {
    let (fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 1).await;
    fx.shard(0).execute_batch("app", SCHEMAS).await.unwrap();
    let mut cfg_a = proxy_config(&proxy);
    cfg_a
        .options("-c search_path=start_s,public")
        .application_name("start_a");
    let mut cfg_b = proxy_config(&proxy);
    cfg_b.application_name("start_b");
    let mut a = connect_with(&cfg_a).await.unwrap();
    let mut b = connect_with(&cfg_b).await.unwrap();

    let a_start = expect(&["start_s", "public"], "start", "start_a", None);
    let b_start = expect(&["public"], "public", "start_b", None);
    assert_eq!(seen(&a).await, a_start);
    assert_eq!(seen(&b).await, b_start);
    assert_eq!(backend_pid(&a).await, backend_pid(&b).await, "one server");

    // A in one multi-statement string, B statement by statement.
    a.batch_execute(
        "SET search_path TO a_s, public; SET application_name = 'app_a'; SET app.tenant_id = 42",
    )
    .await
    .unwrap();
    b.batch_execute("set search_path = b_s").await.unwrap();
    b.batch_execute("SET SESSION application_name TO 'app_b'")
        .await
        .unwrap();
    b.batch_execute("set app.tenant_id to '7'").await.unwrap();
    let a_set = expect(&["a_s", "public"], "a", "app_a", Some("42"));
    let b_set = expect(&["b_s"], "b", "app_b", Some("7"));
    for round in 0..12 {
        if round % 3 == 0 {
            let tx = a.transaction().await.unwrap();
            assert_eq!(seen(&tx).await, a_set, "A in a transaction, round {round}");
            tx.commit().await.unwrap();
        } else {
            assert_eq!(seen(&a).await, a_set, "A, round {round}");
        }
        if round % 3 == 1 {
            let tx = b.transaction().await.unwrap();
            assert_eq!(seen(&tx).await, b_set, "B in a transaction, round {round}");
            tx.commit().await.unwrap();
        } else {
            assert_eq!(seen(&b).await, b_set, "B, round {round}");
        }
        assert_eq!(show(&a, "application_name").await, "app_a");
        assert_eq!(show(&b, "app.tenant_id").await, "7");
    }

    // RESET returns to the startup value, not the server's default.
    a.batch_execute("RESET search_path").await.unwrap();
    let a_reset = expect(&["start_s", "public"], "start", "app_a", Some("42"));
    assert_eq!(seen(&a).await, a_reset);
    assert_eq!(seen(&b).await, b_set);
    a.batch_execute("reset application_name").await.unwrap();
    assert_eq!(seen(&b).await, b_set);
    assert_eq!(
        seen(&a).await,
        expect(&["start_s", "public"], "start", "start_a", Some("42"))
    );

    b.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(seen(&a).await.tenant.as_deref(), Some("42"));
    assert_eq!(seen(&b).await, b_start);

    a.batch_execute("DISCARD ALL").await.unwrap();
    for _ in 0..3 {
        assert_eq!(seen(&a).await, a_start);
        assert_eq!(seen(&b).await, b_start);
    }
}

#[tokio::test]
async fn set_sent_as_an_unnamed_extended_query_follows_the_client() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 1).await;
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    // query_typed sends an unnamed Parse, as JDBC and most drivers do for one-off SQL.
    a.query_typed("SET app.tenant_id = 11", &[]).await.unwrap();
    b.query_typed("SET app.tenant_id = 22", &[]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(setting(&a, "app.tenant_id").await.as_deref(), Some("11"));
        assert_eq!(setting(&b, "app.tenant_id").await.as_deref(), Some("22"));
    }
}

#[tokio::test]
async fn set_sent_as_a_named_prepared_statement_follows_the_client() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 1).await;
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    // Client::execute with a string prepares a named statement (s0, s1, ...).
    a.execute("SET app.tenant_id = 11", &[]).await.unwrap();
    b.execute("SET app.tenant_id = 22", &[]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(setting(&a, "app.tenant_id").await.as_deref(), Some("11"));
        assert_eq!(setting(&b, "app.tenant_id").await.as_deref(), Some("22"));
    }
}

#[tokio::test]
async fn set_config_follows_the_client() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 1).await;
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    a.simple_query("select set_config('app.tenant_id', '11', false)")
        .await
        .unwrap();
    // Through the extended protocol too, and a list value set the way a startup
    // parameter would be (two schemas, not one named "pg_catalog, public").
    b.query(
        "select set_config('search_path', 'pg_catalog, public', false)",
        &[],
    )
    .await
    .unwrap();
    b.query("select set_config('app.tenant_id', '22', false)", &[])
        .await
        .unwrap();
    a.simple_query("select set_config('app.other', 'x', true)")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(setting(&a, "app.tenant_id").await.as_deref(), Some("11"));
        assert_eq!(setting(&b, "app.tenant_id").await.as_deref(), Some("22"));
        assert_eq!(
            setting(&b, "search_path").await.as_deref(),
            Some("pg_catalog, public")
        );
        assert_eq!(setting(&a, "app.other").await, None);
    }
}

/// A's `app.v`, between two statements of B: B's statements make the proxy replay A's
/// settings from its own record, so the record is what is checked, not the server's memory.
async fn check_v(a: &Client, b: &Client, want: &str) {
    assert_eq!(setting(b, "app.v").await.as_deref(), Some("b"));
    assert_eq!(setting(a, "app.v").await.as_deref(), Some(want));
    assert_eq!(setting(b, "app.v").await.as_deref(), Some("b"));
}

#[tokio::test]
async fn set_sticks_only_when_its_transaction_commits() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 1).await;
    let mut a = client(&proxy).await;
    let b = client(&proxy).await;
    a.batch_execute("set app.v = 'one'").await.unwrap();
    b.batch_execute("set app.v = 'b'").await.unwrap();
    check_v(&a, &b, "one").await;

    a.batch_execute("begin; set app.v = 'two'").await.unwrap();
    assert_eq!(setting(&a, "app.v").await.as_deref(), Some("two"));
    a.batch_execute("rollback").await.unwrap();
    check_v(&a, &b, "one").await;

    let tx = a.transaction().await.unwrap();
    tx.batch_execute("set app.v = 'two'").await.unwrap();
    tx.rollback().await.unwrap();
    check_v(&a, &b, "one").await;

    let tx = a.transaction().await.unwrap();
    tx.batch_execute("set app.v = 'three'").await.unwrap();
    tx.commit().await.unwrap();
    check_v(&a, &b, "three").await;

    // An error aborts the transaction; its COMMIT is answered ROLLBACK.
    a.batch_execute("begin; set app.v = 'four'").await.unwrap();
    let e = a.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::DIVISION_BY_ZERO);
    a.batch_execute("commit").await.unwrap();
    check_v(&a, &b, "three").await;

    // SET LOCAL lasts only for its transaction.
    a.batch_execute("begin; set local app.v = 'local'")
        .await
        .unwrap();
    assert_eq!(setting(&a, "app.v").await.as_deref(), Some("local"));
    a.batch_execute("commit").await.unwrap();
    check_v(&a, &b, "three").await;

    // The whole transaction in one string.
    a.batch_execute("begin; set app.v = 'five'; commit")
        .await
        .unwrap();
    check_v(&a, &b, "five").await;
}

#[tokio::test]
async fn set_in_a_single_string_transaction_that_rolls_back_does_not_stick() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 1).await;
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    a.batch_execute("set app.v = 'one'").await.unwrap();
    a.batch_execute("begin; set app.v = 'two'; rollback")
        .await
        .unwrap();
    b.batch_execute("set app.v = 'b'").await.unwrap();
    assert_eq!(setting(&a, "app.v").await.as_deref(), Some("one"));
}

#[tokio::test]
async fn set_undone_by_rollback_to_savepoint_does_not_stick() {
    let (fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 1).await;
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    let direct = fx.connect_shard(0).await;
    let steps = [
        "begin",
        "set app.v = 'kept'",
        "savepoint s",
        "set app.v = 'undone'",
        "rollback to savepoint s",
        "commit",
    ];
    for sql in steps {
        a.batch_execute(sql).await.unwrap();
        direct.batch_execute(sql).await.unwrap();
    }
    assert_eq!(setting(&direct, "app.v").await.as_deref(), Some("kept"));
    assert_eq!(setting(&a, "app.v").await.as_deref(), Some("kept"));
    // B takes the server connection; A's settings come back from the proxy's record.
    b.batch_execute("set app.v = 'b'").await.unwrap();
    assert_eq!(setting(&a, "app.v").await.as_deref(), Some("kept"));
}

/// A client whose connection task hands notifications to the test.
async fn connect_listening(
    config: &tokio_postgres::Config,
) -> (Client, mpsc::UnboundedReceiver<Notification>) {
    let (client, mut conn) = config.connect(NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = poll_fn(|cx| conn.poll_message(cx)).await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

#[tokio::test]
async fn session_pooling_delivers_notifications_and_keeps_temp_tables() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| {
        c.proxy.pool_mode = PoolMode::Session;
        c.shards[0].pool_size = 2;
    })
    .await;
    let (listener, mut notes) = connect_listening(&proxy_config(&proxy)).await;
    listener.batch_execute("LISTEN jobs").await.unwrap();
    let notifier = client(&proxy).await;
    notifier
        .batch_execute("NOTIFY jobs, 'first'")
        .await
        .unwrap();
    notifier
        .query("select pg_notify('jobs', $1)", &[&"second"])
        .await
        .unwrap();
    for payload in ["first", "second"] {
        // The listener sends nothing meanwhile: the notification arrives while it is idle.
        let n = within(10, "notification", notes.recv()).await.unwrap();
        assert_eq!((n.channel(), n.payload()), ("jobs", payload));
    }

    // A temp table lives as long as the client's session, across statements.
    listener
        .batch_execute("create temp table scratch (x int)")
        .await
        .unwrap();
    listener
        .execute("insert into scratch values (1)", &[])
        .await
        .unwrap();
    listener
        .execute("insert into scratch values ($1)", &[&2i32])
        .await
        .unwrap();
    let sum: i64 = listener
        .query_one("select sum(x) from scratch", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 3);
    let e = notifier
        .simple_query("select * from scratch")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::UNDEFINED_TABLE);

    // When the client leaves, its server connection is reset before anyone else gets it.
    // Both connections are taken, so the next client must wait for exactly that one.
    let pid = backend_pid(&listener).await;
    listener
        .batch_execute("set app.v = 'left over'")
        .await
        .unwrap();
    drop(listener);
    let next = client(&proxy).await;
    assert_eq!(within(10, "next client", backend_pid(&next)).await, pid);
    let e = next
        .simple_query("select * from scratch")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::UNDEFINED_TABLE);
    assert_eq!(setting(&next, "app.v").await, None);
    let channels = next
        .query("select pg_listening_channels()", &[])
        .await
        .unwrap();
    assert!(channels.is_empty(), "LISTEN survived the reset");
}

#[tokio::test]
async fn transaction_pooling_serves_two_clients_with_one_server_connection() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 1).await;
    let mut a = client(&proxy).await;
    let mut b = client(&proxy).await;
    let pid = backend_pid(&a).await;
    for round in 0..10i32 {
        let tx = a.transaction().await.unwrap();
        let v: i32 = tx
            .query_one("select $1::int", &[&round])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, round);
        tx.commit().await.unwrap();
        let tx = b.transaction().await.unwrap();
        assert_eq!(backend_pid(&tx).await, pid);
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn dead_idle_server_connections_are_replaced() {
    let (fx, proxy) = proxy_with(Fixture::builder(), |c| c.shards[0].pool_size = 2).await;
    let direct = fx.connect_shard(0).await;
    let mut a = client(&proxy).await;
    let b = client(&proxy).await;
    a.batch_execute("set app.v = 'a'").await.unwrap();
    let st = a.prepare("select $1::int + 1").await.unwrap();
    for round in 0..3i32 {
        // Two server connections in use at once, then both idle in the pool.
        let tx = a.transaction().await.unwrap();
        let pid_a = backend_pid(&tx).await;
        let pid_b = backend_pid(&b).await;
        assert_ne!(pid_a, pid_b);
        tx.commit().await.unwrap();

        let killed = terminate_others(&direct).await;
        assert_eq!(killed, 2, "round {round}");

        let v: i32 = within(10, "query after kill", a.query_one(&st, &[&round]))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"))
            .get(0);
        assert_eq!(v, round + 1);
        assert_eq!(setting(&a, "app.v").await.as_deref(), Some("a"));
        let one: i32 = within(10, "query after kill", b.query_one("select 1", &[]))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"))
            .get(0);
        assert_eq!(one, 1);
    }
}

#[tokio::test]
async fn clients_keep_their_sessions_across_a_shard_restart() {
    let (mut fx, proxy) = proxy_with(Fixture::builder(), |_| {}).await;
    let a = client(&proxy).await;
    a.batch_execute("set app.v = 'survives'").await.unwrap();
    let st = a.prepare("select $1::text || '!'").await.unwrap();
    let v: String = a.query_one(&st, &[&"before"]).await.unwrap().get(0);
    assert_eq!(v, "before!");
    let pid = backend_pid(&a).await;

    // The client is idle, not in a transaction, while the shard goes down and comes back.
    within(60, "shard restart", fx.shards[0].restart())
        .await
        .unwrap();

    let v: String = within(
        10,
        "first query after restart",
        a.query_one(&st, &[&"after"]),
    )
    .await
    .unwrap()
    .get(0);
    assert_eq!(v, "after!");
    assert_eq!(setting(&a, "app.v").await.as_deref(), Some("survives"));
    assert_ne!(backend_pid(&a).await, pid, "a new server process serves it");
    let fresh = client(&proxy).await;
    assert_eq!(setting(&fresh, "app.v").await, None);
}

#[tokio::test]
async fn an_exhausted_pool_answers_53300_instead_of_hanging() {
    let (_fx, proxy) = proxy_with(Fixture::builder(), |c| {
        c.shards[0].pool_size = 1;
        c.proxy.pool_timeout_ms = 300;
    })
    .await;
    let mut a = client(&proxy).await;
    let b = client(&proxy).await;
    let tx = a.transaction().await.unwrap();
    tx.query_one("select 1", &[]).await.unwrap();

    let start = Instant::now();
    let e = within(5, "simple query on a full pool", b.simple_query("select 1"))
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert_eq!(db_error(&e).code(), &SqlState::TOO_MANY_CONNECTIONS, "{e}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(1),
        "answered after {waited:?}"
    );
    let start = Instant::now();
    let e = within(
        5,
        "extended query on a full pool",
        b.query_one("select $1::int", &[&1i32]),
    )
    .await
    .unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::TOO_MANY_CONNECTIONS, "{e}");
    assert!(start.elapsed() < Duration::from_secs(1));

    tx.commit().await.unwrap();
    let v: i32 = within(5, "after commit", b.query_one("select $1::int", &[&2i32]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 2);
    let msgs = b.simple_query("select 3").await.unwrap();
    let rows = msgs
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)));
    assert_eq!(rows.count(), 1);
}

/// Connects through `proxy` and returns the FATAL the proxy answered with, and how long
/// that took.
async fn refused_login(proxy: &shardgate_e2e::ProxyHandle) -> (tokio_postgres::Error, Duration) {
    let start = Instant::now();
    match within(10, "login", connect_with(&proxy_config(proxy))).await {
        Ok(_) => panic!("the proxy let a client in with its shard unreachable"),
        Err(e) => (e, start.elapsed()),
    }
}

fn assert_class_08(e: &tokio_postgres::Error) {
    let db = db_error(e);
    assert!(db.code().code().starts_with("08"), "{db:?}");
    assert_eq!(db.severity(), "FATAL");
}

#[tokio::test]
async fn a_shard_refusing_connections_gets_clients_a_prompt_class_08_error() {
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = Fixture::builder().render_toml(&[dead_port]);
    let config = shardgate::config::Config::from_toml(&toml).unwrap();
    let proxy = start_proxy(config).await;
    for _ in 0..3 {
        let (e, took) = refused_login(&proxy).await;
        assert_class_08(&e);
        assert!(took < Duration::from_secs(2), "refused after {took:?}");
    }
    assert!(!proxy.is_finished());
}

#[tokio::test]
async fn a_shard_that_never_answers_times_out_with_class_08() {
    // Accepts TCP connections (the kernel does) but never says a word.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = black_hole.local_addr().unwrap().port();
    let toml = Fixture::builder()
        .proxy_key("connect_timeout_ms", "1000")
        .render_toml(&[port]);
    let config = shardgate::config::Config::from_toml(&toml).unwrap();
    let proxy = start_proxy(config).await;
    let (e, took) = refused_login(&proxy).await;
    assert_class_08(&e);
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    assert!(!proxy.is_finished());
    drop(black_hole);
}

#[tokio::test]
async fn a_proxy_started_while_its_shard_is_down_serves_once_it_is_up() {
    let mut fx = Fixture::builder().without_proxy().start().await;
    fx.shards[0].stop().unwrap();
    let proxy = start_proxy(fx.config.clone()).await;
    let (e, took) = refused_login(&proxy).await;
    assert_class_08(&e);
    assert!(took < Duration::from_secs(2), "refused after {took:?}");

    within(60, "shard start", fx.shards[0].restart())
        .await
        .unwrap();
    let c = within(10, "login", connect_with(&proxy_config(&proxy)))
        .await
        .unwrap();
    let v: i32 = c
        .query_one("select $1::int", &[&5i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 5);
}
