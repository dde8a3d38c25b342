//! Fan-out reads (DESIGN.md §4): a read without a tenant runs on every shard (or the subset
//! an `IN (...)` names) and the rows are merged into what one Postgres would have returned.
//! Everything here is pure; the exec layer does the I/O.
//!
//! - [`plan`]: SQL → [`plan::MergePlan`] (the per-shard SQL and how to merge), or the
//!   construct that cannot be merged exactly (SG004).
//! - [`value`]: column values decoded by type OID (text and binary) for ordering.
//! - [`decimal`]: Postgres `numeric` arithmetic the merge needs (add, divide, both formats).
//! - [`agg`]: aggregate accumulators that recombine per-shard partial aggregates.

pub mod agg;
pub mod decimal;
pub mod merge;
pub mod plan;
pub mod value;
