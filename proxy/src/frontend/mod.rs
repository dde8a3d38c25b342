//! The client side: the startup phase (TLS, authentication), the client socket, and the
//! session state the proxy keeps for each client.

pub mod auth;
pub mod session;
pub mod startup;
mod stream;
pub mod tls;

pub use session::{ClientSession, Statement, StatementRegistry};
pub use startup::{Credentials, Hello, StartupRequest, authenticate, handshake};
pub use stream::ClientStream;

/// A failure on the client's side of the proxy; it ends only that client's session.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("client sent a malformed message: {0}")]
    Wire(#[from] crate::wire::WireError),
    #[error("client TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("client authentication failed: {0}")]
    Auth(String),
    #[error("client protocol violation: {0}")]
    Protocol(String),
    #[error("client closed the connection")]
    Closed,
}
