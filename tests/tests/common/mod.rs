//! Helpers shared by the protocol, pooling and fuzz tests: proxies with exact pool settings,
//! clients with their own connection options, and a way to kill the proxy's server
//! connections from the shard's side.
//!
//! Each test file compiles this module on its own and uses only part of it; [`moves`]
//! holds what the tenant-move tests share.
#![allow(dead_code)]

pub mod moves;

use std::future::Future;
use std::time::Duration;

use shardgate::config::Config;
use shardgate_e2e::{Fixture, FixtureBuilder, ProxyHandle, start_proxy, wait_until};
use tokio_postgres::error::DbError;
use tokio_postgres::{Client, NoTls};

/// The proxy user every fixture declares.
pub const USER: &str = "app";
pub const PASSWORD: &str = "app";
pub const DB: &str = "app";

/// Shard clusters from `builder`, and a proxy whose parsed config `tweak` has edited first
/// (pool size, pool mode, timeouts: whatever the TOML builder does not reach).
pub async fn proxy_with(
    builder: FixtureBuilder,
    tweak: impl FnOnce(&mut Config),
) -> (Fixture, ProxyHandle) {
    let fx = builder.without_proxy().start().await;
    let mut config = fx.config.clone();
    tweak(&mut config);
    let proxy = start_proxy(config).await;
    (fx, proxy)
}

/// The client configuration for the `app` user through `proxy`.
pub fn proxy_config(proxy: &ProxyHandle) -> tokio_postgres::Config {
    proxy
        .url(USER, PASSWORD, DB)
        .parse()
        .expect("proxy url parses")
}

/// Connects with `config`; the connection runs on a task of its own.
pub async fn connect_with(
    config: &tokio_postgres::Config,
) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A client of `proxy` as `app`, panicking if it cannot log in (setup, not the assertion).
pub async fn client(proxy: &ProxyHandle) -> Client {
    connect_with(&proxy_config(proxy))
        .await
        .unwrap_or_else(|e| panic!("connecting through the proxy: {e}"))
}

/// The server's error inside a client error, or a panic that shows what came instead.
pub fn db_error(e: &tokio_postgres::Error) -> &DbError {
    e.as_db_error()
        .unwrap_or_else(|| panic!("expected an error from the server, got: {e:?}"))
}

/// Runs `f` under a deadline, so that a hang fails the test with a message instead of
/// stalling the whole run.
pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {secs} s"))
}

/// Backends of the `app` database other than `direct`'s own, i.e. the proxy's server
/// connections when `direct` is the only other client of the shard.
const OTHERS: &str = "from pg_stat_activity where datname = 'app' \
     and backend_type = 'client backend' and pid <> pg_backend_pid()";

pub async fn other_backends(direct: &Client) -> i64 {
    direct
        .query_one(&format!("select count(*) {OTHERS}"), &[])
        .await
        .expect("counting backends")
        .get(0)
}

/// Terminates every other backend of `app` (the proxy's server connections) and waits until
/// they are gone from the shard. Returns how many were terminated.
pub async fn terminate_others(direct: &Client) -> usize {
    let killed = direct
        .query(&format!("select pg_terminate_backend(pid) {OTHERS}"), &[])
        .await
        .expect("terminating backends")
        .len();
    let gone = wait_until(Duration::from_secs(10), || async {
        other_backends(direct).await == 0
    })
    .await;
    assert!(gone, "terminated backends still listed after 10 s");
    killed
}
