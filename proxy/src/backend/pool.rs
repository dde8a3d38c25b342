//! A pool of server connections for one shard.
//!
//! Deliberately small: a LIFO stack of idle connections and a fair semaphore that bounds how
//! many are in use. A checkout that finds no idle connection opens one itself, so a shard
//! that refuses connections fails that checkout at once with the real error (class 08),
//! instead of leaving the client to wait out a timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use shardgate_catalog::Endpoint;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{BackendError, ServerConn};

pub struct Pool {
    shard: String,
    endpoint: Endpoint,
    size: u32,
    connect_timeout: Duration,
    wait_timeout: Duration,
    idle: Mutex<Vec<ServerConn>>,
    permits: Arc<Semaphore>,
    /// ParameterStatus values of the first login, shown to clients at their startup.
    server_params: Mutex<Option<Vec<(String, String)>>>,
    stats: PoolStats,
}

#[derive(Debug, Default)]
pub struct PoolStats {
    pub checkouts: AtomicU64,
    pub waited: AtomicU64,
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub closed_broken: AtomicU64,
}

impl Pool {
    pub fn new(
        shard: String,
        endpoint: Endpoint,
        size: u32,
        connect_timeout: Duration,
        wait_timeout: Duration,
        idle_timeout: Option<Duration>,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            shard,
            endpoint,
            size,
            connect_timeout,
            wait_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
            server_params: Mutex::new(None),
            stats: PoolStats::default(),
        });
        if let Some(t) = idle_timeout {
            tokio::spawn(reap_idle(Arc::downgrade(&pool), t));
        }
        pool
    }

    pub fn shard(&self) -> &str {
        &self.shard
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    pub fn idle_count(&self) -> usize {
        crate::lock(&self.idle).len()
    }

    pub fn active_count(&self) -> usize {
        self.size as usize - self.permits.available_permits()
    }

    /// Takes a connection: an idle one if any is alive, else a new one.
    pub async fn get(self: &Arc<Self>) -> Result<Pooled, BackendError> {
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.stats.waited.fetch_add(1, Ordering::Relaxed);
                let wait = self.permits.clone().acquire_owned();
                match tokio::time::timeout(self.wait_timeout, wait).await {
                    Ok(p) => p.expect("pool semaphore is never closed"),
                    Err(_) => {
                        return Err(BackendError::PoolTimeout {
                            shard: self.shard.clone(),
                            ms: self.wait_timeout.as_millis() as u64,
                        });
                    }
                }
            }
        };
        while let Some(conn) = self.pop_idle() {
            if conn.is_alive() {
                return Ok(self.wrap(conn, permit));
            }
            self.stats.closed_broken.fetch_add(1, Ordering::Relaxed);
        }
        let conn = self.connect().await?;
        Ok(self.wrap(conn, permit))
    }

    fn pop_idle(&self) -> Option<ServerConn> {
        crate::lock(&self.idle).pop()
    }

    async fn connect(&self) -> Result<ServerConn, BackendError> {
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        let conn = ServerConn::connect(&self.shard, &self.endpoint, self.connect_timeout)
            .await
            .inspect_err(|_| {
                self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
            })?;
        let mut params = crate::lock(&self.server_params);
        if params.is_none() {
            *params = Some(conn.params.clone());
        }
        Ok(conn)
    }

    /// The server's startup ParameterStatus values, logging in once if none is known yet.
    pub async fn server_params(self: &Arc<Self>) -> Result<Vec<(String, String)>, BackendError> {
        if let Some(p) = crate::lock(&self.server_params).clone() {
            return Ok(p);
        }
        let conn = self.get().await?;
        Ok(conn.conn().params.clone())
    }

    fn wrap(self: &Arc<Self>, conn: ServerConn, permit: OwnedSemaphorePermit) -> Pooled {
        Pooled {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        }
    }

    fn put_back(&self, mut conn: ServerConn) {
        if conn.broken || !conn.rbuf.is_empty() {
            self.stats.closed_broken.fetch_add(1, Ordering::Relaxed);
            return;
        }
        conn.idle_since = Instant::now();
        crate::lock(&self.idle).push(conn);
    }
}

/// A checked-out connection; dropping it returns the connection to the pool (or closes it
/// when it was marked broken) and frees its slot.
pub struct Pooled {
    conn: Option<ServerConn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    pub fn conn(&self) -> &ServerConn {
        self.conn.as_ref().expect("present until drop")
    }

    pub fn conn_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().expect("present until drop")
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}

/// Closes connections idle longer than `timeout`; ends when the pool is dropped.
async fn reap_idle(pool: Weak<Pool>, timeout: Duration) {
    let mut tick = tokio::time::interval(
        timeout
            .min(Duration::from_secs(30))
            .max(Duration::from_millis(100)),
    );
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = crate::lock(&pool.idle);
        idle.retain(|c| c.idle_since.elapsed() < timeout);
    }
}
