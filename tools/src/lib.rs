//! shardctl: shardgate's operator CLI, as a library so tests drive the same code.
//!
//! - [`pg`]: local Postgres clusters from the machine's binaries (tests and `dev`).
//! - [`dev`]: `shardctl dev up|down`, a whole local fleet in one command.
//! - [`catalog_cmd`]: `shardctl init`, `shard add`, `tenant set` on the catalog database.
//! - [`place_cmd`]: `shardctl shard list`, `place`, `tenant add`: capacity and placement.
//! - [`move_cmd`]: `shardctl move` (online tenant move) and `shardctl jobs`.
//! - [`rebalance_cmd`]: `shardctl rebalance`, tenants moved from the heaviest shards.
//! - [`split_cmd`]: `shardctl split`, about half a shard's load moved under one gate.
//! - [`verify_cmd`]: `shardctl verify`, one tenant's rows compared on two shards.

pub mod catalog_cmd;
pub mod demo;
pub mod dev;
pub mod move_cmd;
pub mod pg;
pub mod place_cmd;
pub mod rebalance_cmd;
pub mod split_cmd;
pub mod verify_cmd;
