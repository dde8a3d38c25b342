//! The shard map: which shard holds which tenant, at one version. Immutable once built;
//! a new version is a new map, swapped in whole (see [`crate::MapHandle`]).

use std::collections::HashMap;
use std::fmt;

use crate::hash::{PARTITION_SEED, hash_bytes_extended, partition_hash_bytes, partition_hash_i64};
use crate::shard::ShardSpec;

pub type ShardId = u32;

/// A tenant's shard-key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TenantKey {
    Int(i64),
    Text(String),
    Uuid([u8; 16]),
}

impl TenantKey {
    /// The key's position in hash space (Postgres's partition hash of the value).
    pub fn hash(&self) -> u64 {
        match self {
            TenantKey::Int(v) => partition_hash_i64(*v),
            TenantKey::Text(s) => partition_hash_bytes(s.as_bytes()),
            TenantKey::Uuid(u) => partition_hash_bytes(u),
        }
    }
}

impl fmt::Display for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantKey::Int(v) => write!(f, "{v}"),
            TenantKey::Text(s) => write!(f, "{s}"),
            TenantKey::Uuid(u) => {
                for (i, b) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    Active,
    Draining,
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantState {
    Active,
    /// Held at the gate: new statements queue until the flip (DESIGN.md §6).
    Gated,
    Moving,
    Offboarding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Consistent hashing over a ring of virtual nodes; tenant rows override the ring.
    Hash,
    /// Every tenant has a row; others are unknown.
    Directory,
}

/// One shard as the map knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: ShardId,
    pub name: String,
    pub url: String,
    pub state: ShardState,
    pub pool_size: u32,
    pub capacity_hint: Option<u32>,
}

/// Where a tenant lives, and whether its traffic may flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub shard: ShardId,
    pub state: TenantState,
    /// True when a tenant row placed it, false when the hash ring did.
    pub pinned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("the map has no shards")]
    NoShards,
    #[error("shard id {0} appears twice")]
    DuplicateShard(ShardId),
    #[error("{what} refers to unknown shard id {id}")]
    UnknownShard { what: String, id: ShardId },
    #[error("strategy hash needs a ring, and the ring is empty")]
    EmptyRing,
    #[error("shard name {0:?} appears twice")]
    DuplicateName(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantKey),
}

#[derive(Debug, Clone)]
pub struct ShardMap {
    version: u64,
    strategy: Strategy,
    /// Sorted by id.
    shards: Vec<ShardInfo>,
    /// (position, shard), sorted by position.
    ring: Vec<(u64, ShardId)>,
    tenants: HashMap<TenantKey, (ShardId, TenantState)>,
    /// Tenants whose rows also lie on a shard that is not their home (a move's copy):
    /// fan-out reads leave them out there.
    copies: HashMap<ShardId, Vec<TenantKey>>,
}

impl ShardMap {
    pub fn new(
        version: u64,
        strategy: Strategy,
        mut shards: Vec<ShardInfo>,
        mut ring: Vec<(u64, ShardId)>,
        tenants: HashMap<TenantKey, (ShardId, TenantState)>,
    ) -> Result<Self, MapError> {
        if shards.is_empty() {
            return Err(MapError::NoShards);
        }
        shards.sort_by_key(|s| s.id);
        if let Some(w) = shards.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(MapError::DuplicateShard(w[0].id));
        }
        let known = |id: ShardId| shards.binary_search_by_key(&id, |s| s.id).is_ok();
        if let Some(&(_, id)) = ring.iter().find(|(_, id)| !known(*id)) {
            return Err(MapError::UnknownShard {
                what: "the ring".into(),
                id,
            });
        }
        if let Some((key, (id, _))) = tenants.iter().find(|(_, (id, _))| !known(*id)) {
            return Err(MapError::UnknownShard {
                what: format!("tenant {key}"),
                id: *id,
            });
        }
        if strategy == Strategy::Hash && ring.is_empty() {
            return Err(MapError::EmptyRing);
        }
        ring.sort_unstable();
        Ok(Self {
            version,
            strategy,
            shards,
            ring,
            tenants,
            copies: HashMap::new(),
        })
    }

    /// The same map, knowing which shards hold copies of tenants that live elsewhere.
    pub fn with_copies(mut self, copies: impl IntoIterator<Item = (TenantKey, ShardId)>) -> Self {
        self.copies.clear();
        for (key, shard) in copies {
            self.copies.entry(shard).or_default().push(key);
        }
        for keys in self.copies.values_mut() {
            keys.sort();
        }
        self
    }

    /// Tenants with a copy of their rows on `shard` that is not their home.
    pub fn copies_on(&self, shard: ShardId) -> &[TenantKey] {
        self.copies.get(&shard).map_or(&[], Vec::as_slice)
    }

    /// The map of a proxy without a catalog: the configured `[[shards]]`, all active, no
    /// tenant rows, and (hash strategy) the fixed ring of `vnodes` nodes per shard, at
    /// version 0 so that any catalog version supersedes it.
    pub fn from_specs(
        specs: &[ShardSpec],
        strategy: Strategy,
        vnodes: u32,
    ) -> Result<Self, MapError> {
        let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(MapError::DuplicateName(w[0].to_owned()));
        }
        let shards: Vec<ShardInfo> = specs
            .iter()
            .map(|s| ShardInfo {
                id: s.id,
                name: s.name.clone(),
                url: s.url.clone(),
                state: ShardState::Active,
                pool_size: s.pool_size,
                capacity_hint: None,
            })
            .collect();
        let ring = match strategy {
            Strategy::Hash => build_ring(&shards.iter().map(|s| s.id).collect::<Vec<_>>(), vnodes),
            Strategy::Directory => Vec::new(),
        };
        Self::new(0, strategy, shards, ring, HashMap::new())
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    pub fn shard(&self, id: ShardId) -> Option<&ShardInfo> {
        self.shards
            .binary_search_by_key(&id, |s| s.id)
            .ok()
            .map(|i| &self.shards[i])
    }

    pub fn ring(&self) -> &[(u64, ShardId)] {
        &self.ring
    }

    pub fn tenants(&self) -> impl Iterator<Item = (&TenantKey, ShardId, TenantState)> {
        self.tenants.iter().map(|(k, (s, st))| (k, *s, *st))
    }

    /// The shard that holds `key`: its tenant row if it has one, else (hash strategy) the
    /// first virtual node at or after its hash, wrapping around.
    pub fn locate(&self, key: &TenantKey) -> Result<Placement, LocateError> {
        if let Some(&(shard, state)) = self.tenants.get(key) {
            return Ok(Placement {
                shard,
                state,
                pinned: true,
            });
        }
        match self.strategy {
            Strategy::Directory => Err(LocateError::UnknownTenant(key.clone())),
            Strategy::Hash => Ok(Placement {
                shard: self.ring_lookup(key.hash()),
                state: TenantState::Active,
                pinned: false,
            }),
        }
    }

    fn ring_lookup(&self, h: u64) -> ShardId {
        let i = self.ring.partition_point(|&(pos, _)| pos < h);
        self.ring[i % self.ring.len()].1
    }
}

/// The virtual nodes of `shards`, `vnodes` each: shard `s`'s node `i` sits at the hash of
/// the text `"s:i"`. Like the tenant hash, this is fixed once data exists.
pub fn build_ring(shards: &[ShardId], vnodes: u32) -> Vec<(u64, ShardId)> {
    let mut ring: Vec<_> = shards
        .iter()
        .flat_map(|&s| (0..vnodes).map(move |i| (vnode_position(s, i), s)))
        .collect();
    ring.sort_unstable();
    ring
}

pub fn vnode_position(shard: ShardId, index: u32) -> u64 {
    hash_bytes_extended(format!("{shard}:{index}").as_bytes(), PARTITION_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: ShardId) -> ShardInfo {
        ShardInfo {
            id,
            name: format!("s{id}"),
            url: format!("postgres://u@h:1/d{id}"),
            state: ShardState::Active,
            pool_size: 10,
            capacity_hint: None,
        }
    }

    fn hash_map(n: u32) -> ShardMap {
        let ids: Vec<_> = (0..n).collect();
        ShardMap::new(
            1,
            Strategy::Hash,
            ids.iter().map(|&i| shard(i)).collect(),
            build_ring(&ids, 256),
            HashMap::new(),
        )
        .unwrap()
    }

    #[test]
    fn ring_spreads_tenants_over_every_shard() {
        let map = hash_map(4);
        let mut counts = [0u32; 4];
        for t in 0..20_000 {
            counts[map.locate(&TenantKey::Int(t)).unwrap().shard as usize] += 1;
        }
        for c in counts {
            assert!((3_500..6_500).contains(&c), "unbalanced: {counts:?}");
        }
    }

    #[test]
    fn adding_a_shard_moves_only_a_share_of_tenants() {
        let four = hash_map(4);
        let five = hash_map(5);
        let moved = (0..10_000)
            .filter(|&t| {
                let k = TenantKey::Int(t);
                four.locate(&k).unwrap().shard != five.locate(&k).unwrap().shard
            })
            .count();
        assert!((1_000..3_000).contains(&moved), "moved {moved} of 10000");
    }

    #[test]
    fn tenant_rows_override_the_ring_and_directory_refuses_strangers() {
        let mut tenants = HashMap::new();
        tenants.insert(TenantKey::Int(7), (3, TenantState::Gated));
        let ids = [0, 1, 2, 3];
        let map = ShardMap::new(
            2,
            Strategy::Hash,
            ids.iter().map(|&i| shard(i)).collect(),
            build_ring(&ids, 16),
            tenants.clone(),
        )
        .unwrap();
        let p = map.locate(&TenantKey::Int(7)).unwrap();
        assert_eq!((p.shard, p.state, p.pinned), (3, TenantState::Gated, true));

        let dir = ShardMap::new(
            2,
            Strategy::Directory,
            ids.iter().map(|&i| shard(i)).collect(),
            vec![],
            tenants,
        )
        .unwrap();
        assert_eq!(dir.locate(&TenantKey::Int(7)).unwrap().shard, 3);
        assert_eq!(
            dir.locate(&TenantKey::Int(8)),
            Err(LocateError::UnknownTenant(TenantKey::Int(8)))
        );
    }

    #[test]
    fn lookup_wraps_around_the_ring() {
        let ring = vec![(100, 0), (200, 1)];
        let map = ShardMap::new(
            1,
            Strategy::Hash,
            vec![shard(0), shard(1)],
            ring,
            HashMap::new(),
        )
        .unwrap();
        assert_eq!(map.ring_lookup(50), 0);
        assert_eq!(map.ring_lookup(100), 0);
        assert_eq!(map.ring_lookup(150), 1);
        assert_eq!(
            map.ring_lookup(250),
            0,
            "past the last node wraps to the first"
        );
    }

    #[test]
    fn invalid_maps_are_refused() {
        assert_eq!(
            ShardMap::new(1, Strategy::Hash, vec![], vec![], HashMap::new()).unwrap_err(),
            MapError::NoShards
        );
        assert!(matches!(
            ShardMap::new(
                1,
                Strategy::Hash,
                vec![shard(0)],
                vec![(1, 9)],
                HashMap::new()
            ),
            Err(MapError::UnknownShard { .. })
        ));
        assert_eq!(
            ShardMap::new(
                1,
                Strategy::Hash,
                vec![shard(0), shard(0)],
                vec![],
                HashMap::new()
            )
            .unwrap_err(),
            MapError::DuplicateShard(0)
        );
        assert_eq!(
            ShardMap::new(1, Strategy::Hash, vec![shard(0)], vec![], HashMap::new()).unwrap_err(),
            MapError::EmptyRing
        );
    }

    fn spec(id: ShardId, name: &str) -> ShardSpec {
        ShardSpec {
            id,
            name: name.into(),
            url: format!("postgres://u@h:1/{name}"),
            pool_size: 7,
        }
    }

    #[test]
    fn from_specs_builds_the_same_ring_as_the_catalog_would() {
        let specs = [spec(2, "b"), spec(0, "a")];
        let map = ShardMap::from_specs(&specs, Strategy::Hash, 8).unwrap();
        assert_eq!(map.version(), 0);
        assert_eq!(map.ring(), build_ring(&[0, 2], 8).as_slice());
        assert_eq!(map.ring().len(), 16);
        let ids: Vec<_> = map.shards().iter().map(|s| s.id).collect();
        assert_eq!(ids, [0, 2]);
        let b = map.shard(2).unwrap();
        assert_eq!(
            (b.name.as_str(), b.pool_size, b.state),
            ("b", 7, ShardState::Active)
        );
        assert_eq!(map.tenants().count(), 0);
        // Every key lands on a configured shard, and both shards get some.
        let hits: std::collections::HashSet<_> = (0..200)
            .map(|t| map.locate(&TenantKey::Int(t)).unwrap().shard)
            .collect();
        assert_eq!(hits.len(), 2);
    }

    #[test]
    fn from_specs_refuses_what_config_validation_might_miss() {
        let dir = ShardMap::from_specs(&[spec(0, "a")], Strategy::Directory, 256).unwrap();
        assert!(dir.ring().is_empty());
        assert!(dir.locate(&TenantKey::Int(1)).is_err());
        assert_eq!(
            ShardMap::from_specs(&[spec(0, "a"), spec(1, "a")], Strategy::Hash, 4).unwrap_err(),
            MapError::DuplicateName("a".into())
        );
        assert_eq!(
            ShardMap::from_specs(&[spec(0, "a"), spec(0, "b")], Strategy::Hash, 4).unwrap_err(),
            MapError::DuplicateShard(0)
        );
        assert_eq!(
            ShardMap::from_specs(&[], Strategy::Hash, 4).unwrap_err(),
            MapError::NoShards
        );
        assert_eq!(
            ShardMap::from_specs(&[spec(0, "a")], Strategy::Hash, 0).unwrap_err(),
            MapError::EmptyRing
        );
    }

    #[test]
    fn uuid_keys_print_canonically() {
        let k = TenantKey::Uuid([
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ]);
        assert_eq!(k.to_string(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    }
}
