//! One pool per shard, created when the map first names the shard and replaced when its
//! address changes (a new map version can move a shard to another server).

use crate::FastMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use shardgate_catalog::{Endpoint, ShardId, ShardInfo};

use super::{BackendError, Pool};
use crate::lock;

/// How new pools are made.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub wait_timeout: Duration,
    pub idle_timeout: Option<Duration>,
}

/// Read on every statement, written when a shard first appears or moves: readers take no
/// lock.
pub struct Pools {
    settings: PoolSettings,
    by_shard: ArcSwap<FastMap<ShardId, (String, Arc<Pool>)>>,
    /// Serialises the rare writers, so two sessions cannot make two pools for one shard.
    creating: Mutex<()>,
}

impl Pools {
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            settings,
            by_shard: ArcSwap::from_pointee(FastMap::default()),
            creating: Mutex::new(()),
        }
    }

    /// The pool of `shard`, as the current map describes it.
    pub fn get(&self, shard: &ShardInfo) -> Result<Arc<Pool>, BackendError> {
        if let Some(pool) = self.current(shard) {
            return Ok(pool);
        }
        let _guard = lock(&self.creating);
        if let Some(pool) = self.current(shard) {
            return Ok(pool);
        }
        let endpoint = Endpoint::parse(&shard.url).map_err(|e| BackendError::Config {
            shard: shard.name.clone(),
            message: e.to_string(),
        })?;
        let s = self.settings;
        let pool = Pool::new(
            shard.name.clone(),
            endpoint,
            shard.pool_size,
            s.connect_timeout,
            s.wait_timeout,
            s.idle_timeout,
        );
        // A replaced pool drains as its lent connections come back and are dropped.
        let mut next = FastMap::clone(&self.by_shard.load());
        next.insert(shard.id, (shard.url.clone(), pool.clone()));
        self.by_shard.store(Arc::new(next));
        Ok(pool)
    }

    fn current(&self, shard: &ShardInfo) -> Option<Arc<Pool>> {
        let pools = self.by_shard.load();
        match pools.get(&shard.id) {
            Some((url, pool)) if *url == shard.url => Some(pool.clone()),
            _ => None,
        }
    }

    /// Every pool made so far, by shard id.
    pub fn all(&self) -> Vec<(ShardId, Arc<Pool>)> {
        let mut v: Vec<_> = self
            .by_shard
            .load()
            .iter()
            .map(|(id, (_, p))| (*id, p.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }
}
