//! shardgate's shard map model: what a shard is, where each tenant lives, and the hash that
//! places tenants. The proxy and `shardctl` both depend on this crate, never the reverse.

pub mod hash;
mod map;
mod shard;

pub use map::{
    LocateError, MapError, Placement, ShardId, ShardInfo, ShardMap, ShardState, Strategy,
    TenantKey, TenantState, build_ring, vnode_position,
};
pub use shard::{Endpoint, EndpointError, ShardSpec};
