//! Test harness: real Postgres clusters on free loopback ports and an in-process proxy.
//!
//! - [`start_proxy`] boots `shardgate::run` on port 0 exactly as the binary does.
//! - [`Fixture`] is the common case: shard clusters with an `app` database and a proxy
//!   config pointing at them, tweakable through [`FixtureBuilder`].
//! - [`CatalogFleet`]: 4 shards listed in a catalog, and a proxy that follows it.
//! - [`ProxyProcess`]: the proxy as a `shardgate` process of its own, to SIGKILL it.
//! - [`bin`], [`psql`], [`wait_until`], [`ScratchDir`]: small tools the tests share.

mod catalog_fleet;
mod fixture;
mod proxy;
mod proxy_process;
mod util;

pub use catalog_fleet::{CATALOG_PASSWORD, CatalogFleet};
pub use fixture::{ADMIN_USER, Fixture, FixtureBuilder, SUPERUSER_PASSWORD};
pub use proxy::{ProxyHandle, start_proxy};
pub use proxy_process::{ProxyProcess, shardgate_bin};
pub use shardctl::pg::{HostAuth, PgCluster, PgOptions};
pub use util::{ScratchDir, bin, psql, wait_until};
