//! The current shard map, shared by every task of the proxy without a lock on the read
//! path: readers take a snapshot, the watcher swaps in a whole new map.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::map::ShardMap;

/// A snapshot of the map that is cheap to take on every statement; hold it only briefly
/// (use [`MapHandle::load_full`] to keep one).
pub type MapGuard = arc_swap::Guard<Arc<ShardMap>>;

/// A cheap-to-clone handle on the current map. Clones share the map and the status.
#[derive(Clone)]
pub struct MapHandle {
    map: Arc<ArcSwap<ShardMap>>,
    status: Arc<Mutex<WatchStatus>>,
    /// Woken on every swap, for sessions that wait for a tenant's gate to open.
    changed: Arc<tokio::sync::Notify>,
}

/// How fresh the map is, as the catalog watcher last found it (for metrics and the admin
/// console). A handle nobody watches keeps the default: never refreshed, no error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStatus {
    /// Whether the watcher holds a live, listening catalog connection.
    pub connected: bool,
    /// When the catalog last confirmed the map current (a version check or a reload).
    pub last_ok: Option<Instant>,
    /// When a new map was last swapped in.
    pub last_reload: Option<Instant>,
    /// The error of the outage in progress; `None` once the catalog answers again.
    pub error: Option<String>,
    /// Maps swapped in since the watcher started.
    pub reloads: u64,
    /// Failed connects, checks and loads since the watcher started.
    pub failures: u64,
}

impl WatchStatus {
    /// Time since the catalog last confirmed the map; `None` if it never has.
    pub fn refresh_age(&self) -> Option<Duration> {
        self.last_ok.map(|t| t.elapsed())
    }
}

impl MapHandle {
    pub fn new(map: ShardMap) -> Self {
        MapHandle {
            map: Arc::new(ArcSwap::from_pointee(map)),
            status: Arc::default(),
            changed: Arc::default(),
        }
    }

    /// The current map, for the duration of one decision.
    pub fn load(&self) -> MapGuard {
        self.map.load()
    }

    /// The current map, to keep.
    pub fn load_full(&self) -> Arc<ShardMap> {
        self.map.load_full()
    }

    /// Replaces the map for every holder of this handle; readers that already took a
    /// snapshot finish on the old one.
    pub fn store(&self, map: ShardMap) {
        self.map.store(Arc::new(map));
        self.changed.notify_waiters();
    }

    /// What a waiter for the next swap awaits. Create (and `enable`) the `Notified`
    /// before looking at the map, so a swap between the look and the wait is not missed.
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    pub fn version(&self) -> u64 {
        self.map.load().version()
    }

    pub fn status(&self) -> WatchStatus {
        self.status_mut().clone()
    }

    /// Lets the watcher update the status; a poisoned lock only means a panic elsewhere
    /// mid-update of plain data, so the data is still used.
    pub(crate) fn status_mut(&self) -> MutexGuard<'_, WatchStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for MapHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapHandle")
            .field("version", &self.version())
            .field("status", &self.status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ShardSpec, Strategy};

    fn map(version_marker: &str) -> ShardMap {
        let spec = ShardSpec {
            id: 0,
            name: version_marker.into(),
            url: "postgres://u@h/d".into(),
            pool_size: 1,
        };
        ShardMap::from_specs(&[spec], Strategy::Hash, 1).unwrap()
    }

    #[test]
    fn clones_share_the_map_and_old_snapshots_stay_valid() {
        let a = MapHandle::new(map("old"));
        let b = a.clone();
        let kept = a.load_full();
        b.store(map("new"));
        assert_eq!(a.load().shards()[0].name, "new");
        assert_eq!(kept.shards()[0].name, "old");
        b.status_mut().reloads = 3;
        assert_eq!(a.status().reloads, 3);
        assert_eq!(a.status().refresh_age(), None);
        assert_eq!(a.version(), 0);
    }
}
