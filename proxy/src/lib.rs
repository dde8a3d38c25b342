//! shardgate: a Postgres wire-protocol sharding gateway.
//!
//! Module map (DESIGN.md §2):
//! - [`wire`]: sans-IO Postgres v3 codec; the only module that touches frame bytes.
//! - [`frontend`]: the client side: startup, TLS, authentication, session state.
//! - [`backend`]: the shard side: server connections, their login, pools.
//! - [`exec`]: moving a client's statements to a server and the replies back.
//! - [`classify`]: pure statement inspection (session commands, later shard keys).
//! - [`router`]: pure routing: where a statement goes, given the shard map.
//! - [`gucs`]: session settings and replaying them on pooled server connections.
//! - [`admin`]: the admin console (database `shardgate`).
//! - [`config`]: the configuration file.
//!
//! [`run`] serves clients on a listener until a shutdown future resolves, so the binary
//! and every end-to-end test boot the proxy the same way (tests on port 0).

pub mod admin;
pub mod backend;
pub mod classify;
pub mod config;
pub mod exec;
pub mod fanout;
pub mod frontend;
pub mod gucs;
pub mod heartbeat;
pub mod router;
mod server;
pub mod wire;

pub use server::{ProxyError, run};

/// Hash maps looked up on every statement (the template cache, prepared statements, pools,
/// sharded tables). SipHash costs hundreds of instructions per SQL-text key; foldhash is
/// several times cheaper and, randomly keyed per process, still resists keys chosen to
/// collide (template and statement keys come from clients).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Locks a mutex, ignoring poisoning: a panic in one client's task must not turn every later
/// lock of shared state into a panic for all other clients.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
