//! Accepting clients and running each one's session until shutdown.
//!
//! Each client runs in its own task, so a panic caused by one client's input ends only that
//! client's task; shared state is locked with poison-tolerant locks for the same reason.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::backend::Pool;
use crate::config::Config;
use crate::exec::{self, CancelRegistry, ExecContext};
use crate::frontend::{self, ClientError, ClientSession, Credentials, Hello, tls};
use crate::wire::PgError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("listener failed: {0}")]
    Listen(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("user credentials: {0}")]
    Credentials(#[from] frontend::auth::AuthError),
    #[error("invalid config: {0}")]
    Config(String),
}

/// Everything client tasks share, built once from the config.
struct Shared {
    exec: ExecContext,
    credentials: Credentials,
    tls: Option<TlsAcceptor>,
}

impl Shared {
    fn new(config: &Config) -> Result<Self, ProxyError> {
        let shard = config
            .shards
            .first()
            .ok_or_else(|| ProxyError::Config("no [[shards]] configured".into()))?;
        let endpoint = shard
            .endpoint()
            .map_err(|e| ProxyError::Config(format!("shard {}: {e}", shard.name)))?;
        let p = &config.proxy;
        let idle =
            (p.server_idle_timeout_ms > 0).then(|| Duration::from_millis(p.server_idle_timeout_ms));
        let pool = Pool::new(
            shard.name.clone(),
            endpoint,
            shard.pool_size,
            Duration::from_millis(p.connect_timeout_ms),
            Duration::from_millis(p.pool_timeout_ms),
            idle,
        );
        let tls = match (&p.tls_cert, &p.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        Ok(Self {
            exec: ExecContext {
                pool,
                statements: Default::default(),
                cancels: Arc::new(CancelRegistry::default()),
                pool_mode: p.pool_mode,
                max_message_size: p.max_message_size,
                prepared_cache: p.server_prepared_cache,
            },
            credentials: Credentials::from_config(config)?,
            tls,
        })
    }
}

/// Serves clients accepted on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let shared = Arc::new(Shared::new(&config)?);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    socket.set_nodelay(true).ok();
                    tokio::spawn(serve_client(shared.clone(), socket));
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving who we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_client(shared: Arc<Shared>, socket: TcpStream) {
    let peer = socket.peer_addr().ok();
    match frontend::handshake(socket, shared.tls.as_ref()).await {
        Ok(Hello::Cancel { pid, secret }) => {
            if let Some(key) = shared.exec.cancels.lookup(pid, secret) {
                exec::forward_cancel(key).await;
            }
        }
        Ok(Hello::Startup(mut req)) => {
            let session = ClientSession::new(&req.params);
            if session.database == "shardgate" {
                let mut out = BytesMut::new();
                PgError::fatal(
                    "0A000",
                    "the admin console is not available in this version",
                )
                .encode(&mut out);
                let _ = req.stream.write_all(&out).await;
                return;
            }
            let user = session.user.clone();
            if let Err(e) =
                frontend::authenticate(&mut req.stream, &mut req.buf, &user, &shared.credentials)
                    .await
            {
                tracing::info!(?peer, %user, error = %e, "client refused");
                return;
            }
            match exec::run(&shared.exec, req.stream, req.buf, session).await {
                Ok(()) => tracing::debug!(?peer, "client left"),
                Err(exec::SessionEnd::Client(ClientError::Closed)) => {}
                Err(e) => tracing::info!(?peer, error = %e, "session ended"),
            }
        }
        Err(e) => tracing::debug!(?peer, error = %e, "startup failed"),
    }
}
