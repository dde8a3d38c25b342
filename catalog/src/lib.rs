//! shardgate's shard map and its catalog: what a shard is, where each tenant lives, the hash
//! that places tenants, and the Postgres catalog database that is the map's source of truth.
//! The proxy and `shardctl` both depend on this crate, never the reverse.
//!
//! - model (pure): [`ShardMap`], [`TenantKey`], [`build_ring`], [`hash`], [`KeyType`];
//! - [`schema`]: the catalog's tables and [`schema::migrate`];
//! - [`db`]: reading the map from the catalog and changing it;
//! - [`MapHandle`] and [`watch`]: the map a proxy routes on, kept current.

pub mod db;
mod error;
mod handle;
pub mod hash;
mod map;
pub mod schema;
mod shard;
mod text;
mod watch;

pub use error::{CatalogError, redact_url};
pub use handle::{MapGuard, MapHandle, WatchStatus};
pub use map::{
    LocateError, MapError, Placement, ShardId, ShardInfo, ShardMap, ShardState, Strategy,
    TenantKey, TenantState, build_ring, vnode_position,
};
pub use shard::{Endpoint, EndpointError, ShardSpec};
pub use text::{KeyType, ParseError, ring_from_db, ring_to_db};
pub use watch::{APPLICATION_NAME, BACKOFF_MAX, BACKOFF_MIN, next_backoff, watch};
