//! A pool of server connections for one shard.
//!
//! Deliberately small: one lock around a LIFO stack of idle connections, a count of the
//! connections out (lent or being opened) and a FIFO of waiting clients. A checkout that
//! finds no idle connection and room to grow opens one itself, so a shard that refuses
//! connections fails that checkout at once with the real error (class 08) instead of
//! leaving the client to wait out a timeout. A returned connection goes straight to the
//! longest-waiting client. Connections are boxed so that lending one moves a pointer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use shardgate_catalog::Endpoint;
use tokio::sync::oneshot;

use super::{BackendError, ServerConn};
use crate::lock;

pub struct Pool {
    shard: String,
    endpoint: Endpoint,
    size: u32,
    connect_timeout: Duration,
    wait_timeout: Duration,
    state: Mutex<State>,
    /// ParameterStatus values of the first login, shown to clients at their startup.
    server_params: Mutex<Option<Vec<(String, String)>>>,
}

/// What a waiting client is handed: a connection, or `None`, meaning a slot came free and
/// the waiter may open a connection in it.
type Handoff = Option<Box<ServerConn>>;

#[derive(Default)]
struct State {
    /// Boxed although in a Vec: connections move between the stack, waiters and clients,
    /// and a box makes each move a pointer copy instead of a few hundred bytes.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<ServerConn>>,
    /// Connections lent to clients or being opened for them.
    out: u32,
    waiters: VecDeque<oneshot::Sender<Handoff>>,
    stats: PoolStats,
}

/// Counters for the admin console and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub waited: u64,
    pub timeouts: u64,
    pub connects: u64,
    pub connect_errors: u64,
    pub closed_broken: u64,
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
            size: size.max(1),
            connect_timeout,
            wait_timeout,
            state: Mutex::new(State::default()),
            server_params: Mutex::new(None),
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

    pub fn stats(&self) -> PoolStats {
        lock(&self.state).stats
    }

    pub fn idle_count(&self) -> usize {
        lock(&self.state).idle.len()
    }

    /// Connections lent to clients (or being opened for them).
    pub fn active_count(&self) -> usize {
        lock(&self.state).out as usize
    }

    pub fn waiting_count(&self) -> usize {
        lock(&self.state).waiters.len()
    }

    /// Takes a connection: an idle one if any is alive, else a new one if the pool has
    /// room, else the next one returned (up to the pool's wait timeout).
    pub async fn get(self: &Arc<Self>) -> Result<Pooled, BackendError> {
        enum Next {
            Idle(Box<ServerConn>),
            Open,
            Wait(oneshot::Receiver<Handoff>),
        }
        loop {
            let next = {
                let mut st = lock(&self.state);
                if let Some(conn) = st.idle.pop() {
                    st.out += 1;
                    Next::Idle(conn)
                } else if st.out < self.size {
                    st.out += 1;
                    Next::Open
                } else {
                    let (tx, rx) = oneshot::channel();
                    st.waiters.push_back(tx);
                    st.stats.waited += 1;
                    Next::Wait(rx)
                }
            };
            let handoff = match next {
                Next::Idle(conn) => Some(conn),
                Next::Open => None,
                Next::Wait(rx) => self.wait(rx).await?,
            };
            match handoff {
                Some(conn) if conn.is_alive() => return Ok(self.wrap(conn)),
                Some(_) => self.slot_freed(true),
                None => return self.open().await.map(|c| self.wrap(c)),
            }
        }
    }

    async fn wait(&self, mut rx: oneshot::Receiver<Handoff>) -> Result<Handoff, BackendError> {
        match tokio::time::timeout(self.wait_timeout, &mut rx).await {
            Ok(Ok(handoff)) => Ok(handoff),
            // The pool sends to every waiter it dequeues, so this does not happen; treat it
            // like a timeout rather than trust that.
            Ok(Err(_)) | Err(_) => {
                // Something may have been handed over as the timer fired: take it back.
                rx.close();
                if let Ok(handoff) = rx.try_recv() {
                    return Ok(handoff);
                }
                lock(&self.state).stats.timeouts += 1;
                Err(BackendError::PoolTimeout {
                    shard: self.shard.clone(),
                    ms: self.wait_timeout.as_millis() as u64,
                })
            }
        }
    }

    /// Opens a connection in a slot already counted in `out`; gives the slot back on error.
    async fn open(self: &Arc<Self>) -> Result<Box<ServerConn>, BackendError> {
        match ServerConn::connect(&self.shard, &self.endpoint, self.connect_timeout).await {
            Ok(conn) => {
                lock(&self.state).stats.connects += 1;
                let mut params = lock(&self.server_params);
                if params.is_none() {
                    *params = Some(conn.params.clone());
                }
                Ok(Box::new(conn))
            }
            Err(e) => {
                lock(&self.state).stats.connect_errors += 1;
                self.slot_freed(false);
                Err(e)
            }
        }
    }

    /// A lent slot ends without a connection to return: the first waiter that still
    /// waits may open one in it.
    fn slot_freed(&self, broken: bool) {
        let mut st = lock(&self.state);
        if broken {
            st.stats.closed_broken += 1;
        }
        while let Some(w) = st.waiters.pop_front() {
            if w.send(None).is_ok() {
                return;
            }
        }
        st.out -= 1;
    }

    /// The server's startup ParameterStatus values, logging in once if none is known yet.
    pub async fn server_params(self: &Arc<Self>) -> Result<Vec<(String, String)>, BackendError> {
        if let Some(p) = lock(&self.server_params).clone() {
            return Ok(p);
        }
        let conn = self.get().await?;
        Ok(conn.conn().params.clone())
    }

    fn wrap(self: &Arc<Self>, conn: Box<ServerConn>) -> Pooled {
        Pooled {
            conn: Some(conn),
            pool: self.clone(),
        }
    }

    fn put_back(&self, mut conn: Box<ServerConn>) {
        if conn.broken || !conn.rbuf.is_empty() {
            self.slot_freed(true);
            return;
        }
        let mut st = lock(&self.state);
        while let Some(w) = st.waiters.pop_front() {
            match w.send(Some(conn)) {
                Ok(()) => return,
                Err(returned) => conn = returned.expect("sent a connection"),
            }
        }
        conn.idle_sweeps = 0;
        st.out -= 1;
        st.idle.push(conn);
    }
}

/// A checked-out connection; dropping it returns the connection to the pool (or closes it
/// when it was marked broken) and frees its slot.
pub struct Pooled {
    conn: Option<Box<ServerConn>>,
    pool: Arc<Pool>,
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

/// Closes connections idle at least `timeout` (and at most a quarter longer); ends when the
/// pool is dropped.
async fn reap_idle(pool: Weak<Pool>, timeout: Duration) {
    let period = (timeout / 4).clamp(Duration::from_millis(25), Duration::from_secs(30));
    // Idle through more than this many sweeps means idle for at least `timeout`.
    let sweeps = timeout.as_millis().div_ceil(period.as_millis()) as u32;
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let expired: Vec<_> = {
            let mut st = lock(&pool.state);
            for c in &mut st.idle {
                c.idle_sweeps += 1;
            }
            let (keep, expired) = std::mem::take(&mut st.idle)
                .into_iter()
                .partition(|c| c.idle_sweeps <= sweeps);
            st.idle = keep;
            expired
        };
        drop(expired); // closes the sockets outside the lock
    }
}
