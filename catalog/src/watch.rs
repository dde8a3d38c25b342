//! Keeps a [`MapHandle`] current: `LISTEN shardgate_map` for changes the moment they
//! commit, and a poll as the safety net for notifications lost while disconnected or
//! changes made without one.
//!
//! The catalog is not on the data path: when it is unreachable, or holds something this
//! build cannot read, the proxy keeps routing on the last good map, and the watcher retries
//! (with a capped backoff) until the catalog is back.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval, sleep, timeout};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::db::{self, NOTIFY_CHANNEL};
use crate::error::{CatalogError, redact_url};
use crate::handle::MapHandle;

/// What the watcher's connection calls itself in the catalog's `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "shardgate-watch";
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest wait for the version check, and for a full reload (large tenant tables).
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs until `shutdown` completes, keeping `handle` at the catalog's current map. Spawn
/// it; it never returns an error, it reports through [`MapHandle::status`] and the log.
pub async fn watch(
    url: String,
    poll: Duration,
    handle: MapHandle,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown);
    let mut w = Watcher {
        url,
        poll: poll.max(Duration::from_millis(10)),
        handle,
        outage: false,
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let result = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = w.session(&mut backoff) => r,
        };
        w.failed(&result, true);
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = sleep(backoff) => {}
        }
        backoff = next_backoff(backoff);
    }
    w.handle.status_mut().connected = false;
}

/// The wait before the next reconnect: doubling, capped at [`BACKOFF_MAX`].
pub fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
}

struct Watcher {
    url: String,
    poll: Duration,
    handle: MapHandle,
    /// Set from the first failure until the next success: an outage is logged once.
    outage: bool,
}

/// Aborts the task when dropped, so a session that ends (or is cancelled by shutdown)
/// closes its connection.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Message = Result<String, tokio_postgres::Error>;

impl Watcher {
    /// One connection's lifetime: listen, catch up, then refresh on each notification and
    /// each poll tick. Returns the error that ended the connection.
    async fn session(&mut self, backoff: &mut Duration) -> CatalogError {
        let (mut client, mut rx, _driver) = match self.connect().await {
            Ok(c) => c,
            Err(e) => return e,
        };
        *backoff = BACKOFF_MIN;
        self.handle.status_mut().connected = true;
        // Listening came first, so nothing committed from here on can be missed.
        if let Err(e) = self.refresh_or_close(&mut client, None).await {
            return e;
        }
        let mut tick = interval(self.poll);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.reset();
        loop {
            let payload = tokio::select! {
                msg = rx.recv() => match drain(msg, &mut rx) {
                    Ok(p) => Some(p),
                    Err(e) => return e,
                },
                _ = tick.tick() => None,
            };
            if let Err(e) = self.refresh_or_close(&mut client, payload).await {
                return e;
            }
        }
    }

    async fn connect(
        &self,
    ) -> Result<(Client, mpsc::UnboundedReceiver<Message>, AbortOnDrop), CatalogError> {
        let config = db::config(&self.url, APPLICATION_NAME)?;
        let (client, mut conn) = timeout(CHECK_TIMEOUT * 2, config.connect(NoTls))
            .await
            .map_err(|_| CatalogError::Timeout(CHECK_TIMEOUT * 2))?
            .map_err(|source| CatalogError::Connect {
                url: redact_url(&self.url),
                source,
            })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                match poll_fn(|cx| conn.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(Ok(n.payload().to_owned())).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    None => return,
                }
            }
        });
        let driver = AbortOnDrop(driver);
        client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await
            .map_err(CatalogError::query("listening for map changes"))?;
        Ok((client, rx, driver))
    }

    /// A refresh; an error that leaves the connection usable (bad data) is recorded and the
    /// session goes on, anything else ends it.
    async fn refresh_or_close(
        &mut self,
        client: &mut Client,
        payload: Option<String>,
    ) -> Result<(), CatalogError> {
        let result = self.refresh(client, payload).await;
        match result {
            Ok(()) => {
                self.succeeded();
                Ok(())
            }
            Err(e) if e.is_connection() || client.is_closed() => Err(e),
            Err(e) => {
                self.failed(&e, false);
                Ok(())
            }
        }
    }

    /// Reloads the map if the catalog's version differs from ours. A notification carries
    /// the new version, which spares the version query.
    async fn refresh(
        &mut self,
        client: &mut Client,
        payload: Option<String>,
    ) -> Result<(), CatalogError> {
        let ours = self.handle.version();
        let theirs = match payload.and_then(|p| p.parse::<u64>().ok()) {
            Some(v) => v,
            None => within(CHECK_TIMEOUT, db::map_version(client)).await?,
        };
        if theirs == ours {
            return Ok(());
        }
        let map = within(LOAD_TIMEOUT, db::load_map(client)).await?;
        let version = map.version();
        self.handle.store(map);
        let mut st = self.handle.status_mut();
        st.reloads += 1;
        st.last_reload = Some(Instant::now());
        drop(st);
        tracing::info!(
            from = ours,
            to = version,
            "shard map reloaded from the catalog"
        );
        Ok(())
    }

    fn succeeded(&mut self) {
        let mut st = self.handle.status_mut();
        st.last_ok = Some(Instant::now());
        st.error = None;
        drop(st);
        if std::mem::take(&mut self.outage) {
            tracing::info!(
                version = self.handle.version(),
                "catalog refresh works again"
            );
        }
    }

    fn failed(&mut self, e: &CatalogError, disconnected: bool) {
        let version = self.handle.version();
        let mut st = self.handle.status_mut();
        st.failures += 1;
        st.error = Some(e.to_string());
        if disconnected {
            st.connected = false;
        }
        drop(st);
        if !std::mem::replace(&mut self.outage, true) {
            tracing::warn!(
                error = %e,
                version,
                "catalog refresh failed; routing stays on the last map until it recovers"
            );
        } else {
            tracing::debug!(error = %e, "catalog refresh still failing");
        }
    }
}

/// The newest payload of everything queued (a burst of changes needs one reload).
fn drain(
    first: Option<Message>,
    rx: &mut mpsc::UnboundedReceiver<Message>,
) -> Result<String, CatalogError> {
    let mut latest = match first {
        None => return Err(CatalogError::Closed),
        Some(m) => m,
    };
    while let Ok(m) = rx.try_recv() {
        latest = m;
        if latest.is_err() {
            break;
        }
    }
    latest.map_err(CatalogError::query("listening for map changes"))
}

async fn within<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, CatalogError>>,
) -> Result<T, CatalogError> {
    timeout(limit, f)
        .await
        .map_err(|_| CatalogError::Timeout(limit))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut d = BACKOFF_MIN;
        let mut seen = vec![d];
        for _ in 0..6 {
            d = next_backoff(d);
            seen.push(d);
        }
        let ms: Vec<u128> = seen.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[tokio::test]
    async fn drain_keeps_the_newest_notification() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for v in ["3", "4", "5"] {
            tx.send(Ok(v.to_owned())).unwrap();
        }
        let first = rx.recv().await;
        assert_eq!(drain(first, &mut rx).unwrap(), "5");
        drop(tx);
        assert!(matches!(
            drain(rx.recv().await, &mut rx),
            Err(CatalogError::Closed)
        ));
    }

    #[tokio::test]
    async fn an_unreachable_catalog_leaves_the_map_and_stops_on_shutdown() {
        let spec = crate::ShardSpec {
            id: 0,
            name: "s0".into(),
            url: "postgres://u@h/d".into(),
            pool_size: 1,
        };
        let map = crate::ShardMap::from_specs(&[spec], crate::Strategy::Hash, 4).unwrap();
        let handle = MapHandle::new(map);
        // Port 1 on loopback: refused at once, no server needed.
        let url = "postgres://u@127.0.0.1:1/d".to_owned();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(watch(
            url,
            Duration::from_millis(50),
            handle.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle.status().failures < 2 {
            assert!(Instant::now() < deadline, "no failure recorded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let st = handle.status();
        assert!(!st.connected);
        assert!(st.error.unwrap().contains("cannot connect"));
        assert_eq!(handle.version(), 0);
        stop_tx.send(()).unwrap();
        timeout(Duration::from_secs(5), task)
            .await
            .expect("watch ends on shutdown")
            .unwrap();
    }
}
