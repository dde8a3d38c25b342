//! shardgate's shard map model: what a shard is, where each tenant lives, and the hash that
//! places tenants. The proxy and `shardctl` both depend on this crate, never the reverse.

mod handle;
pub mod hash;
mod map;
mod shard;
mod text;

pub use handle::{MapGuard, MapHandle, WatchStatus};
pub use map::{
    LocateError, MapError, Placement, ShardId, ShardInfo, ShardMap, ShardState, Strategy,
    TenantKey, TenantState, build_ring, vnode_position,
};
pub use shard::{Endpoint, EndpointError, ShardSpec};
pub use text::{KeyType, ParseError, ring_from_db, ring_to_db};
