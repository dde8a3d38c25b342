//! shardctl: shardgate's operator CLI, as a library so tests drive the same code.
//!
//! - [`pg`]: local Postgres clusters from the machine's binaries (tests and `dev`).

pub mod pg;
