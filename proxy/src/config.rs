//! The proxy's configuration file (DESIGN.md §12), parsed and validated once at start.
//!
//! Every key has a default so that a minimal file (one `[[shards]]` entry) runs; the
//! commented reference is `config.example.toml` at the repository root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shardgate_catalog::ShardSpec;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub sharding: ShardingConfig,
    #[serde(default)]
    pub catalog: Option<CatalogConfig>,
    #[serde(default)]
    pub shards: Vec<ShardSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection serves a client for one transaction, then returns to the pool.
    Transaction,
    /// A server connection serves one client until it disconnects.
    Session,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    pub listen: String,
    pub metrics_listen: Option<String>,
    pub pool_mode: PoolMode,
    /// Runtime worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest client message accepted (bytes, header included); larger closes that client.
    pub max_message_size: usize,
    /// TLS for clients: both set enables `SSLRequest` → 'S'.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Time allowed to open and log in a server connection.
    pub connect_timeout_ms: u64,
    /// How long a client waits for a pooled server connection before it gets an error.
    pub pool_timeout_ms: u64,
    /// Idle server connections older than this are closed (0 = never).
    pub server_idle_timeout_ms: u64,
    /// Named statements kept prepared per server connection before the oldest is closed.
    pub server_prepared_cache: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".into(),
            metrics_listen: None,
            pool_mode: PoolMode::Transaction,
            workers: 0,
            max_message_size: 64 << 20,
            tls_cert: None,
            tls_key: None,
            connect_timeout_ms: 3000,
            pool_timeout_ms: 5000,
            server_idle_timeout_ms: 600_000,
            server_prepared_cache: 512,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub method: AuthMethod,
    pub admin_users: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            method: AuthMethod::ScramSha256,
            admin_users: vec!["admin".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain text, an md5 hash (`md5…`) or a SCRAM verifier (`SCRAM-SHA-256$…`).
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Bigint,
    Text,
    Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Hash,
    Directory,
}

impl From<KeyType> for shardgate_catalog::KeyType {
    fn from(k: KeyType) -> Self {
        match k {
            KeyType::Bigint => Self::Bigint,
            KeyType::Text => Self::Text,
            KeyType::Uuid => Self::Uuid,
        }
    }
}

impl From<Strategy> for shardgate_catalog::Strategy {
    fn from(s: Strategy) -> Self {
        match s {
            Strategy::Hash => Self::Hash,
            Strategy::Directory => Self::Directory,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrossShardWrites {
    Refuse,
    Allow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardingConfig {
    pub key_column: String,
    pub key_guc: String,
    pub key_type: KeyType,
    pub strategy: Strategy,
    pub vnodes_per_shard: u32,
    pub sharded_tables: Vec<String>,
    pub cross_shard_writes: CrossShardWrites,
    pub gate_timeout_ms: u64,
    /// How long a fan-out read waits for any one shard's next reply.
    pub fanout_timeout_ms: u64,
    /// Statements that may wait at one gated tenant's gate, across all clients.
    pub gate_queue_max: usize,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        Self {
            key_column: "tenant_id".into(),
            key_guc: "app.tenant_id".into(),
            key_type: KeyType::Bigint,
            strategy: Strategy::Hash,
            vnodes_per_shard: 256,
            sharded_tables: Vec::new(),
            cross_shard_writes: CrossShardWrites::Refuse,
            gate_timeout_ms: 10_000,
            fanout_timeout_ms: 30_000,
            gate_queue_max: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    pub url: String,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_poll_ms() -> u64 {
    1000
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: cross-field rules and values that would fail later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.proxy.listen.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "proxy.listen = {:?} is not an address:port",
                self.proxy.listen
            ));
        }
        if let Some(m) = &self.proxy.metrics_listen
            && m.parse::<SocketAddr>().is_err()
        {
            return bad(format!(
                "proxy.metrics_listen = {m:?} is not an address:port"
            ));
        }
        if self.proxy.tls_cert.is_some() != self.proxy.tls_key.is_some() {
            return bad("proxy.tls_cert and proxy.tls_key must be set together".into());
        }
        if self.proxy.max_message_size < 1024 {
            return bad("proxy.max_message_size must be at least 1024".into());
        }
        if self.shards.is_empty() && self.catalog.is_none() {
            return bad("no [[shards]] and no [catalog]: nothing to route to".into());
        }
        let mut ids = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for s in &self.shards {
            if !ids.insert(s.id) {
                return bad(format!("shard id {} appears twice", s.id));
            }
            if !names.insert(s.name.as_str()) {
                return bad(format!("shard name {:?} appears twice", s.name));
            }
            if let Err(e) = s.endpoint() {
                return bad(format!("shard {:?}: {e}", s.name));
            }
            if s.pool_size == 0 {
                return bad(format!("shard {:?}: pool_size must be > 0", s.name));
            }
        }
        let mut users = std::collections::HashSet::new();
        for u in &self.users {
            if !users.insert(u.name.as_str()) {
                return bad(format!("user {:?} appears twice", u.name));
            }
            if self.auth.method != AuthMethod::Trust && u.password.is_none() {
                return bad(format!(
                    "user {:?} has no password but auth.method is not trust",
                    u.name
                ));
            }
        }
        Ok(())
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(
            r#"
            [[users]]
            name = "app"
            password = "app"
            [[shards]]
            id = 0
            name = "s0"
            url = "postgres://postgres:secret@127.0.0.1:5432/app"
            "#,
        )
        .unwrap();
        assert_eq!(c.proxy.listen, "127.0.0.1:6432");
        assert_eq!(c.proxy.pool_mode, PoolMode::Transaction);
        assert_eq!(c.auth.method, AuthMethod::ScramSha256);
        assert_eq!(c.sharding.key_guc, "app.tenant_id");
        assert_eq!(c.shards[0].pool_size, 20);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let err = Config::from_toml("[proxy]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = Config::from_toml("[proxy]\nlisten = \"nope\"\n").unwrap_err();
        assert!(err.to_string().contains("proxy.listen"), "{err}");
        let err = Config::from_toml("[proxy]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.to_string().contains("nothing to route"), "{err}");
        let err = Config::from_toml(
            "[[shards]]\nid = 0\nname = \"a\"\nurl = \"postgres://x@h:1/d\"\n\
             [[shards]]\nid = 0\nname = \"b\"\nurl = \"postgres://x@h:1/d\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
