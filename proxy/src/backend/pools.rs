//! One pool per shard, created when the map first names the shard and replaced when its
//! address changes (a new map version can move a shard to another server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

pub struct Pools {
    settings: PoolSettings,
    by_shard: Mutex<HashMap<ShardId, (String, Arc<Pool>)>>,
}

impl Pools {
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            settings,
            by_shard: Mutex::new(HashMap::new()),
        }
    }

    /// The pool of `shard`, as the current map describes it.
    pub fn get(&self, shard: &ShardInfo) -> Result<Arc<Pool>, BackendError> {
        let mut pools = lock(&self.by_shard);
        if let Some((url, pool)) = pools.get(&shard.id)
            && *url == shard.url
        {
            return Ok(pool.clone());
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
        pools.insert(shard.id, (shard.url.clone(), pool.clone()));
        Ok(pool)
    }

    /// Every pool made so far, by shard id.
    pub fn all(&self) -> Vec<(ShardId, Arc<Pool>)> {
        let mut v: Vec<_> = lock(&self.by_shard)
            .iter()
            .map(|(id, (_, p))| (*id, p.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }
}
