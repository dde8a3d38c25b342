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

use std::sync::atomic::AtomicUsize;

use shardgate_catalog::{MapHandle, ShardMap};

use crate::backend::{PoolSettings, Pools};
use crate::classify::{Classifier, ClassifyConfig};
use crate::config::Config;
use crate::config::CrossShardWrites;
use crate::exec::route::{Routing, ShardedTables};
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
    #[error("catalog: {0}")]
    Catalog(String),
}

/// Everything client tasks share, built once from the config.
struct Shared {
    exec: ExecContext,
    admin_users: Vec<String>,
    credentials: Credentials,
    tls: Option<TlsAcceptor>,
}

impl Shared {
    fn new(config: &Config, map: MapHandle) -> Result<Self, ProxyError> {
        let p = &config.proxy;
        let sh = &config.sharding;
        let idle =
            (p.server_idle_timeout_ms > 0).then(|| Duration::from_millis(p.server_idle_timeout_ms));
        let pools = Pools::new(PoolSettings {
            connect_timeout: Duration::from_millis(p.connect_timeout_ms),
            wait_timeout: Duration::from_millis(p.pool_timeout_ms),
            idle_timeout: idle,
        });
        let key_type = sh.key_type.into();
        let routing = Routing {
            map,
            classifier: Classifier::new(
                ClassifyConfig {
                    key_column: sh.key_column.clone(),
                    key_type,
                },
                TEMPLATE_CACHE,
            ),
            key_guc: sh.key_guc.clone(),
            key_type,
            cross_shard_writes: sh.cross_shard_writes == CrossShardWrites::Allow,
            tables: ShardedTables::new(&sh.sharded_tables),
            key_column: sh.key_column.clone(),
            fanout_timeout: Duration::from_millis(sh.fanout_timeout_ms.max(1)),
            gates: crate::exec::gate::Gates::new(
                Duration::from_millis(sh.gate_timeout_ms),
                sh.gate_queue_max,
            ),
            open_txns: Default::default(),
        };
        let tls = match (&p.tls_cert, &p.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        Ok(Self {
            exec: ExecContext {
                pools,
                routing,
                any_counter: AtomicUsize::new(0),
                statements: Default::default(),
                cancels: Arc::new(CancelRegistry::default()),
                pool_mode: p.pool_mode,
                max_message_size: p.max_message_size,
                prepared_cache: p.server_prepared_cache,
            },
            credentials: Credentials::from_config(config)?,
            admin_users: config.auth.admin_users.clone(),
            tls,
        })
    }
}

/// Statement shapes kept classified.
const TEMPLATE_CACHE: usize = 10_000;

/// The shard map from the catalog. A proxy that cannot load one at start has nothing to
/// route by, so it tries for a while and then gives up with the catalog's error; once
/// running, it keeps its last map through catalog outages (the watcher's job).
async fn map_from_catalog(config: &Config, url: &str) -> Result<MapHandle, ProxyError> {
    let deadline = tokio::time::Instant::now() + CATALOG_START_TIMEOUT;
    loop {
        match load_catalog(config, url).await {
            Ok(map) => return Ok(MapHandle::new(map)),
            Err(e) if tokio::time::Instant::now() < deadline && e.is_connection() => {
                tracing::warn!(error = %e, "catalog not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(ProxyError::Catalog(e.to_string())),
        }
    }
}

const CATALOG_START_TIMEOUT: Duration = Duration::from_secs(10);

async fn load_catalog(
    config: &Config,
    url: &str,
) -> Result<ShardMap, shardgate_catalog::CatalogError> {
    let mut client = shardgate_catalog::db::connect(url).await?;
    let settings = shardgate_catalog::schema::load_settings(&client).await?;
    let (strategy, key_type) = (
        config.sharding.strategy.into(),
        config.sharding.key_type.into(),
    );
    if settings.strategy != strategy || settings.key_type != key_type {
        return Err(shardgate_catalog::CatalogError::Invalid(format!(
            "the catalog says strategy = {}, key_type = {}, but [sharding] says strategy = {}, \
             key_type = {}: placements depend on both, so they must agree",
            settings.strategy, settings.key_type, strategy, key_type
        )));
    }
    shardgate_catalog::db::load_map(&mut client).await
}

/// The shard map of a proxy without a catalog: its `[[shards]]`.
fn map_from_config(config: &Config) -> Result<MapHandle, ProxyError> {
    let sh = &config.sharding;
    let map = ShardMap::from_specs(&config.shards, sh.strategy.into(), sh.vnodes_per_shard)
        .map_err(|e| ProxyError::Config(format!("[[shards]]: {e}")))?;
    Ok(MapHandle::new(map))
}

/// Serves clients accepted on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let map = match &config.catalog {
        None => map_from_config(&config)?,
        Some(catalog) => map_from_catalog(&config, &catalog.url).await?,
    };
    // Dropped when `run` returns, which stops the catalog watcher.
    let (_stop_watch, stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(catalog) = &config.catalog {
        tokio::spawn(shardgate_catalog::watch(
            catalog.url.clone(),
            Duration::from_millis(catalog.poll_ms.max(50)),
            map.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
    }
    let shared = Arc::new(Shared::new(&config, map)?);
    let _stop_heartbeat = config.catalog.as_ref().map(|catalog| {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        AbortOnDrop(tokio::spawn(crate::heartbeat::run(
            catalog.url.clone(),
            Duration::from_millis(catalog.poll_ms.max(50)),
            crate::heartbeat::proxy_id(&addr),
            addr,
            shared.exec.routing.map.clone(),
            Arc::downgrade(&shared.exec.routing.open_txns),
        )))
    });
    let _stop_discovery = AbortOnDrop(tokio::spawn(discover::sharded_tables_loop(
        Arc::downgrade(&shared),
        config.sharding.key_column.clone(),
    )));
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
            let user = session.user.clone();
            if let Err(e) =
                frontend::authenticate(&mut req.stream, &mut req.buf, &user, &shared.credentials)
                    .await
            {
                tracing::info!(?peer, %user, error = %e, "client refused");
                return;
            }
            if session.database == "shardgate" {
                serve_admin(&shared, req, &user).await;
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

/// The admin console (database `shardgate`), for the users in `auth.admin_users`.
async fn serve_admin(shared: &Shared, mut req: frontend::StartupRequest, user: &str) {
    if !shared.admin_users.iter().any(|u| u == user) {
        let mut out = BytesMut::new();
        PgError::fatal(
            "28000",
            format!("user \"{user}\" is not an admin user (auth.admin_users)"),
        )
        .encode(&mut out);
        let _ = req.stream.write_all(&out).await;
        return;
    }
    let exec = &shared.exec;
    let view = || crate::admin::AdminView {
        map: exec.routing.map.load_full(),
        pools: exec.pools.all(),
        key_type: exec.routing.key_type,
    };
    if let Err(e) = crate::admin::serve(req.stream, req.buf, view).await {
        tracing::debug!(error = %e, "admin session ended");
    }
}

/// Aborts a background task when the proxy stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Finding the sharded tables (those with the key column) when the config does not list
/// them: asked of a shard at start and every few seconds, since an ORM may add tables.
mod discover {
    use std::collections::HashSet;
    use std::sync::Weak;
    use std::time::Duration;

    use super::Shared;
    use crate::gucs::quote_literal;
    use crate::wire::{self, btag};

    const EVERY: Duration = Duration::from_secs(10);

    pub(super) async fn sharded_tables_loop(shared: Weak<Shared>, key_column: String) {
        let sql = format!(
            "SELECT n.nspname, c.relname, c.relrowsecurity::text FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.attname = {} AND NOT a.attisdropped AND a.attnum > 0 \
             AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
            quote_literal(&key_column)
        );
        loop {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            match once(&shared, &sql).await {
                Ok((tables, rls)) => shared.exec.routing.tables.set_discovered(tables, rls),
                Err(e) => tracing::debug!(error = %e, "sharded-table discovery failed"),
            }
            drop(shared);
            tokio::time::sleep(EVERY).await;
        }
    }

    type Tables = (HashSet<String>, HashSet<String>);

    /// The tables with the key column, and those of them with row-level security.
    async fn once(shared: &Shared, sql: &str) -> Result<Tables, String> {
        let map = shared.exec.routing.map.load_full();
        let mut last = String::from("no shards");
        for info in map.shards() {
            let pool = shared.exec.pools.get(info).map_err(|e| e.to_string())?;
            let mut conn = match pool.get().await {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let frames = conn
                .conn_mut()
                .simple_query(pool.shard(), sql)
                .await
                .map_err(|e| e.to_string())?;
            let (mut tables, mut rls) = (HashSet::new(), HashSet::new());
            for f in frames.iter().filter(|f| f.tag == btag::DATA_ROW) {
                let row = wire::decode_data_row(f.body()).map_err(|e| e.to_string())?;
                if let [Some(schema), Some(name), Some(secured)] = row.as_slice() {
                    let (schema, name) = (
                        String::from_utf8_lossy(schema),
                        String::from_utf8_lossy(name),
                    );
                    let names = [format!("{schema}.{name}"), name.into_owned()];
                    if *secured == b"true" {
                        rls.extend(names.iter().cloned());
                    }
                    tables.extend(names);
                }
            }
            return Ok((tables, rls));
        }
        Err(last)
    }
}
