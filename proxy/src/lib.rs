//! shardgate: a Postgres wire-protocol sharding gateway.
//!
//! Module map (DESIGN.md §2):
//! - [`wire`]: sans-IO Postgres v3 codec; the only module that touches frame bytes.
//! - [`frontend`]: the client side: startup, TLS, authentication, session state.
//! - [`backend`]: the shard side: server connections, their login, pools.
//! - [`exec`]: moving a client's statements to a server and the replies back.
//! - [`config`]: the configuration file.
//!
//! [`run`] serves clients on a listener until a shutdown future resolves, so the binary
//! and every end-to-end test boot the proxy the same way (tests on port 0).

pub mod backend;
pub mod config;
pub mod exec;
pub mod frontend;
mod server;
pub mod wire;

pub use server::{ProxyError, run};
