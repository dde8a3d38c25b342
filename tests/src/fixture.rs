//! The common end-to-end setup: N shard clusters, each with an `app` database, and a
//! proxy whose config (TOML, like an operator's) points at them.

use std::fmt::Write as _;

use shardctl::pg::{HostAuth, PgCluster, PgOptions};
use shardgate::config::Config;

use crate::proxy::{ProxyHandle, start_proxy};
use crate::util::ScratchDir;

/// Superuser password of every fixture cluster; shard URLs in the config carry it.
pub const SUPERUSER_PASSWORD: &str = "sg-super";
/// Proxy users the fixture config always declares.
pub const APP_USER: (&str, &str) = ("app", "app");
pub const ADMIN_USER: (&str, &str) = ("admin", "admin");

/// Shard clusters plus a proxy in front of them. Fields drop in order: the proxy stops
/// before the clusters, and the clusters before their scratch directory goes.
#[derive(Debug)]
pub struct Fixture {
    proxy: Option<ProxyHandle>,
    pub shards: Vec<PgCluster>,
    /// The TOML the proxy config was parsed from (listen still `127.0.0.1:0`).
    pub toml: String,
    /// The parsed config before `start_proxy` patched `proxy.listen`.
    pub config: Config,
    dir: ScratchDir,
}

/// Settings for [`Fixture`]; every method returns the builder.
#[derive(Debug, Clone)]
pub struct FixtureBuilder {
    shards: usize,
    pool_mode: String,
    auth: String,
    shard_auth: HostAuth,
    proxy_keys: Vec<(String, String)>,
    sharding_keys: Vec<(String, String)>,
    extra_toml: String,
    shard_conf: Vec<(String, String)>,
    with_proxy: bool,
}

impl Default for FixtureBuilder {
    fn default() -> Self {
        Self {
            shards: 1,
            pool_mode: "transaction".into(),
            auth: "scram-sha-256".into(),
            shard_auth: HostAuth::ScramSha256,
            proxy_keys: Vec::new(),
            sharding_keys: Vec::new(),
            extra_toml: String::new(),
            shard_conf: Vec::new(),
            with_proxy: true,
        }
    }
}

impl FixtureBuilder {
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }

    /// `[proxy] pool_mode`: "transaction" or "session".
    pub fn pool_mode(mut self, mode: &str) -> Self {
        self.pool_mode = mode.into();
        self
    }

    /// `[auth] method` clients use towards the proxy: "scram-sha-256", "md5" or "trust".
    pub fn auth(mut self, method: &str) -> Self {
        self.auth = method.into();
        self
    }

    /// How the proxy (and tests) log in to the shards themselves.
    pub fn shard_auth(mut self, auth: HostAuth) -> Self {
        self.shard_auth = auth;
        self
    }

    /// Another key in `[proxy]`; `value` is TOML (`"\"x\""` for a string, `"5"` for a number).
    pub fn proxy_key(mut self, key: &str, value: &str) -> Self {
        self.proxy_keys.push((key.into(), value.into()));
        self
    }

    /// A key in `[sharding]`; `value` is TOML, as for [`FixtureBuilder::proxy_key`].
    pub fn sharding_key(mut self, key: &str, value: &str) -> Self {
        self.sharding_keys.push((key.into(), value.into()));
        self
    }

    /// TOML appended at the end: more `[[users]]`, a `[catalog]` table, ...
    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// A postgresql.conf setting for every shard cluster.
    pub fn shard_conf(mut self, key: &str, value: &str) -> Self {
        self.shard_conf.push((key.into(), value.into()));
        self
    }

    /// Clusters and config only; the test starts its own proxy(s) with `start_proxy`.
    pub fn without_proxy(mut self) -> Self {
        self.with_proxy = false;
        self
    }

    /// The config text for shards listening on `ports` (pure, so it is unit-tested).
    pub fn render_toml(&self, ports: &[u16]) -> String {
        let mut t = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\npool_mode = \"{}\"\n",
            self.pool_mode
        );
        for (k, v) in &self.proxy_keys {
            let _ = writeln!(t, "{k} = {v}");
        }
        let _ = write!(
            t,
            "\n[auth]\nmethod = \"{}\"\nadmin_users = [\"{}\"]\n\n",
            self.auth, ADMIN_USER.0
        );
        for (name, password) in [APP_USER, ADMIN_USER] {
            let _ = write!(
                t,
                "[[users]]\nname = \"{name}\"\npassword = \"{password}\"\n\n"
            );
        }
        t.push_str("[sharding]\n");
        for (k, v) in &self.sharding_keys {
            let _ = writeln!(t, "{k} = {v}");
        }
        for (i, port) in ports.iter().enumerate() {
            let _ = write!(
                t,
                "\n[[shards]]\nid = {i}\nname = \"s{i}\"\n\
                 url = \"postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{port}/app\"\n"
            );
        }
        if !self.extra_toml.is_empty() {
            t.push('\n');
            t.push_str(&self.extra_toml);
        }
        t
    }

    /// Starts the clusters concurrently, creates `app` on each, then the proxy. Panics
    /// with the server's own error when anything fails: this is test setup.
    pub async fn start(self) -> Fixture {
        let dir = ScratchDir::new("fx");
        let mut set = tokio::task::JoinSet::new();
        for i in 0..self.shards {
            let opts = PgOptions {
                name: format!("s{i}"),
                base_dir: dir.path().to_owned(),
                auth: self.shard_auth,
                superuser_password: SUPERUSER_PASSWORD.into(),
                extra_conf: self.shard_conf.clone(),
                ..PgOptions::default()
            };
            set.spawn(async move {
                let c = PgCluster::start(opts)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                c.create_database("app")
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                (i, c)
            });
        }
        let mut shards: Vec<(usize, PgCluster)> = set.join_all().await;
        shards.sort_by_key(|(i, _)| *i);
        let shards: Vec<PgCluster> = shards.into_iter().map(|(_, c)| c).collect();
        let ports: Vec<u16> = shards.iter().map(PgCluster::port).collect();
        let toml = self.render_toml(&ports);
        let config = Config::from_toml(&toml)
            .unwrap_or_else(|e| panic!("fixture config is invalid: {e}\n{toml}"));
        let proxy = match self.with_proxy {
            true => Some(start_proxy(config.clone()).await),
            false => None,
        };
        Fixture {
            proxy,
            shards,
            toml,
            config,
            dir,
        }
    }
}

impl Fixture {
    pub fn builder() -> FixtureBuilder {
        FixtureBuilder::default()
    }

    /// One shard, transaction pooling, SCRAM everywhere.
    pub async fn start() -> Fixture {
        FixtureBuilder::default().start().await
    }

    pub fn proxy(&self) -> &ProxyHandle {
        self.proxy
            .as_ref()
            .expect("fixture built without_proxy has no proxy")
    }

    /// Takes the proxy out, e.g. to call `shutdown().await` on it.
    pub fn take_proxy(&mut self) -> Option<ProxyHandle> {
        self.proxy.take()
    }

    /// URL of the proxy for the `app` user.
    pub fn proxy_url(&self, db: &str) -> String {
        self.proxy().url(APP_USER.0, APP_USER.1, db)
    }

    /// Connects to the proxy as `app`; the error is returned because tests assert on it.
    pub async fn connect_proxy(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.proxy_url("app"), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub fn shard(&self, i: usize) -> &PgCluster {
        &self.shards[i]
    }

    /// A superuser client straight to shard `i`'s `app` database, bypassing the proxy.
    pub async fn connect_shard(&self, i: usize) -> tokio_postgres::Client {
        self.shards[i]
            .connect("app")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Where the fixture keeps its clusters (for tests that write files beside them).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate::config::{AuthMethod, PoolMode};

    #[test]
    fn rendered_toml_parses_with_every_tweak() {
        let b = Fixture::builder()
            .pool_mode("session")
            .auth("md5")
            .proxy_key("pool_timeout_ms", "250")
            .sharding_key("key_column", "\"org_id\"")
            .extra_toml("[[users]]\nname = \"ro\"\npassword = \"ro\"");
        let text = b.render_toml(&[5001, 5002]);
        let c = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.proxy.pool_mode, PoolMode::Session);
        assert_eq!(c.proxy.pool_timeout_ms, 250);
        assert_eq!(c.auth.method, AuthMethod::Md5);
        assert_eq!(c.sharding.key_column, "org_id");
        assert_eq!(c.users.len(), 3);
        assert_eq!(c.shards.len(), 2);
        assert_eq!(
            c.shards[1].url,
            "postgres://postgres:sg-super@127.0.0.1:5002/app"
        );
    }
}
