//! Pure statement classification. For now: the statements that change session state, which
//! transaction pooling must carry between server connections. Routing (shard-key
//! extraction) grows here next; nothing in this module performs I/O.

mod session;

pub use session::{SessionCommand, SessionScan, scan_session_commands, split_statements};
