//! shardgate's shard map model: what a shard is and where it lives.
//!
//! Later this crate grows the versioned `ShardMap`, placement strategies, the shard hash
//! and the catalog database; the proxy and `shardctl` both depend on it, never the reverse.

pub mod hash;
mod shard;

pub use shard::{Endpoint, EndpointError, ShardSpec};
