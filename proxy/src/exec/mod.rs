//! Doing what the client asked: lending it a server connection, passing its messages through
//! (renaming prepared statements on the way) and the server's replies back.
//!
//! One task per client runs [`session::run`], which owns the client socket and, while a
//! transaction is open, one pooled server connection; nothing else touches either.

pub mod cancel;
mod client_msgs;
mod extended;
mod fanout;
pub mod gate;
mod lend;
mod multi;
pub mod replies;
pub mod route;
mod server_msgs;
mod session;
mod settings;
mod txn;
mod wakers;

use std::sync::Arc;

use std::sync::atomic::AtomicUsize;

use crate::backend::Pools;
use crate::config::PoolMode;
use crate::frontend::StatementRegistry;

pub use cancel::{CancelRegistry, forward_cancel};
pub use session::{SessionEnd, run};

/// What every client session shares.
pub struct ExecContext {
    pub pools: Pools,
    pub routing: route::Routing,
    /// Spreads statements that any shard can run over the shards.
    pub any_counter: AtomicUsize,
    pub statements: StatementRegistry,
    pub cancels: Arc<CancelRegistry>,
    pub pool_mode: PoolMode,
    pub max_message_size: usize,
    /// Named statements kept prepared per server connection.
    pub prepared_cache: usize,
}
