//! The shard side: raw server connections and a pool of them per shard.
//!
//! Errors name the shard that failed, so the client (and the log) can tell a dead shard from
//! its own mistake.

mod conn;
mod pool;
mod pools;

pub use conn::{BackendKey, ServerConn};
pub use pool::{Pool, PoolStats, Pooled};
pub use pools::{PoolSettings, Pools};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("shard {shard}: cannot connect to {addr}: {source}")]
    Connect {
        shard: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("shard {shard}: connecting timed out after {ms} ms")]
    ConnectTimeout { shard: String, ms: u64 },
    #[error("shard {shard}: login failed: {message}")]
    Login { shard: String, message: String },
    #[error("shard {shard}: no server connection free within {ms} ms")]
    PoolTimeout { shard: String, ms: u64 },
    #[error("shard {shard}: server closed the connection")]
    Closed { shard: String },
    #[error("shard {shard}: {source}")]
    Io {
        shard: String,
        source: std::io::Error,
    },
    #[error("shard {shard}: {message}")]
    Config { shard: String, message: String },
    #[error("shard {shard}: no reply within {ms} ms")]
    Timeout { shard: String, ms: u64 },
    #[error("shard {shard}: protocol error: {source}")]
    Protocol {
        shard: String,
        source: crate::wire::WireError,
    },
}

impl BackendError {
    /// The SQLSTATE a client sees for this failure: class 08 (connection exception) for a
    /// shard that cannot be reached, 53300 when the pool stays exhausted.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            BackendError::Connect { .. } | BackendError::ConnectTimeout { .. } => "08001",
            BackendError::Login { .. } => "08004",
            BackendError::Config { .. } => "08001",
            BackendError::PoolTimeout { .. } => "53300",
            BackendError::Timeout { .. } => "57014",
            BackendError::Closed { .. }
            | BackendError::Io { .. }
            | BackendError::Protocol { .. } => "08006",
        }
    }
}
