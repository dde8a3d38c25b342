//! Placement by capacity (DESIGN.md §5): which shard a new tenant goes to, and recording it.
//!
//! The choice is the pure [`choose`]; [`fleet_load`] reads what it needs for a preview and
//! [`add_tenant`] runs the count, the choice and the insert in one locked transaction, so
//! that two concurrent adds cannot both take a shard's last slot.

use tokio_postgres::{Client, GenericClient, Row, Transaction};

use super::{ShardRow, bump_version, col, key_text, map_version, shard_row, snapshot};
use crate::error::CatalogError;
use crate::map::{ShardId, ShardState, TenantKey};
use crate::schema::load_settings;

/// `capacity_hint = floor(max_connections / pool_size / SAFETY_FACTOR)` is what
/// `shardctl shard add` suggests: room for every tenant's pool twice over.
pub const SAFETY_FACTOR: u32 = 2;

/// The capacity hint DESIGN.md §5 suggests for a shard; `None` when `pool_size` is 0.
pub fn suggest_capacity_hint(max_connections: u32, pool_size: u32) -> Option<u32> {
    max_connections
        .checked_div(pool_size)
        .map(|per_pool| per_pool / SAFETY_FACTOR)
}

/// A shard and how many live tenants it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLoad {
    pub shard: ShardRow,
    /// Tenant rows on the shard whose state is not `offboarding`: an offboarding tenant is
    /// on its way out and no longer counts against the shard's capacity.
    pub tenants: u64,
}

impl ShardLoad {
    pub fn name(&self) -> &str {
        &self.shard.info.name
    }

    /// Slots left before `capacity_hint`; `None` when the shard has no hint (unbounded).
    /// A shard already past its hint (a hint lowered later, a `tenant set`) has 0.
    pub fn free(&self) -> Option<u64> {
        self.shard
            .info
            .capacity_hint
            .map(|hint| u64::from(hint).saturating_sub(self.tenants))
    }

    fn is_full(&self) -> bool {
        self.free() == Some(0)
    }

    fn choice(&self) -> ShardChoice {
        ShardChoice {
            id: self.shard.info.id,
            name: self.name().to_owned(),
            tenants: self.tenants,
            capacity_hint: self.shard.info.capacity_hint,
        }
    }
}

/// Where a new tenant goes, and the shard's load before it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardChoice {
    pub id: ShardId,
    pub name: String,
    pub tenants: u64,
    pub capacity_hint: Option<u32>,
}

/// Every shard with its load, and the map version, from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLoad {
    pub version: u64,
    /// By shard id.
    pub shards: Vec<ShardLoad>,
}

/// What [`add_tenant`] recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedTenant {
    /// The canonical spelling the row is stored under.
    pub tenant: String,
    /// The shard, with its load before this tenant.
    pub shard: ShardChoice,
    pub version: u64,
}

/// Why no shard can be chosen. [`PlaceError::code`] is the `E_*` code `shardctl` prints.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("every active shard is full ({active} active, each at its capacity_hint)")]
    AllFull { active: usize },
    #[error("shard {shard} is full ({tenants} live tenants, capacity_hint {capacity_hint})")]
    Full {
        shard: String,
        tenants: u64,
        capacity_hint: u32,
    },
    #[error("shard {shard} is {state}; only active shards take new tenants")]
    NotActive { shard: String, state: ShardState },
    #[error("no active shard in the catalog ({shards} shards, none active)")]
    NoActiveShard { shards: usize },
    #[error("no shard {0:?} in the catalog")]
    ShardNotFound(String),
    #[error("tenant {tenant} already has a row (shard {shard}, {state}); nothing changed")]
    TenantExists {
        tenant: String,
        shard: String,
        state: String,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl PlaceError {
    /// The stable code scripts match on (DESIGN.md §9).
    pub fn code(&self) -> &'static str {
        match self {
            PlaceError::AllFull { .. } | PlaceError::Full { .. } | PlaceError::NotActive { .. } => {
                "E_NO_CAPACITY"
            }
            PlaceError::NoActiveShard { .. } => "E_NO_ACTIVE_SHARD",
            PlaceError::ShardNotFound(_) => "E_SHARD_NOT_FOUND",
            PlaceError::TenantExists { .. } => "E_TENANT_EXISTS",
            PlaceError::Catalog(CatalogError::Invalid(_)) => "E_INVALID_ARGUMENT",
            PlaceError::Catalog(_) => "E_CATALOG",
        }
    }

    /// Whether the error is about the shard the operator named, not the fleet.
    pub fn is_about_named_shard(&self) -> bool {
        matches!(
            self,
            PlaceError::Full { .. } | PlaceError::NotActive { .. } | PlaceError::ShardNotFound(_)
        )
    }
}

/// The shard a new tenant goes to.
///
/// With `preferred`, that shard (by name, or by id when no shard has that name) if it is
/// active and below its capacity_hint; otherwise an error, never another shard. Without:
/// among active shards below their capacity_hint (none = unbounded), the fewest live
/// tenants, then the smallest name (byte order, so the choice does not depend on a
/// collation).
pub fn choose(shards: &[ShardLoad], preferred: Option<&str>) -> Result<ShardChoice, PlaceError> {
    if let Some(want) = preferred {
        let shard = find(shards, want).ok_or_else(|| PlaceError::ShardNotFound(want.into()))?;
        let state = shard.shard.info.state;
        if state != ShardState::Active {
            return Err(PlaceError::NotActive {
                shard: shard.name().into(),
                state,
            });
        }
        return match shard.shard.info.capacity_hint {
            Some(hint) if shard.is_full() => Err(PlaceError::Full {
                shard: shard.name().into(),
                tenants: shard.tenants,
                capacity_hint: hint,
            }),
            _ => Ok(shard.choice()),
        };
    }
    let active: Vec<&ShardLoad> = shards
        .iter()
        .filter(|s| s.shard.info.state == ShardState::Active)
        .collect();
    if active.is_empty() {
        return Err(PlaceError::NoActiveShard {
            shards: shards.len(),
        });
    }
    active
        .iter()
        .filter(|s| !s.is_full())
        .min_by(|a, b| {
            a.tenants
                .cmp(&b.tenants)
                .then_with(|| a.name().cmp(b.name()))
        })
        .map(|s| s.choice())
        .ok_or(PlaceError::AllFull {
            active: active.len(),
        })
}

/// The same rule as [`super::resolve_shard`]: a name first, then an id.
fn find<'a>(shards: &'a [ShardLoad], want: &str) -> Option<&'a ShardLoad> {
    shards.iter().find(|s| s.name() == want).or_else(|| {
        let id: ShardId = want.parse().ok()?;
        shards.iter().find(|s| s.shard.info.id == id)
    })
}

/// Every shard with its live tenant count, and the map version, in one read-only snapshot.
pub async fn fleet_load(client: &mut Client) -> Result<FleetLoad, CatalogError> {
    let tx = snapshot(client).await?;
    let version = map_version(&tx).await?;
    let shards = shard_loads(&tx).await?;
    tx.commit()
        .await
        .map_err(CatalogError::query("ending the snapshot"))?;
    Ok(FleetLoad { version, shards })
}

async fn shard_loads(client: &impl GenericClient) -> Result<Vec<ShardLoad>, CatalogError> {
    client
        .query(
            "SELECT s.shard_id, s.name, s.dsn, s.state, s.pool_size, s.capacity_hint, \
                    s.max_connections, s.region, \
                    count(t.tenant_id) FILTER (WHERE t.state <> 'offboarding') \
             FROM shardgate.shards s \
             LEFT JOIN shardgate.tenants t ON t.shard_id = s.shard_id \
             GROUP BY s.shard_id ORDER BY s.shard_id",
            &[],
        )
        .await
        .map_err(CatalogError::query("counting tenants per shard"))?
        .iter()
        .map(shard_load)
        .collect()
}

fn shard_load(r: &Row) -> Result<ShardLoad, CatalogError> {
    let count: i64 = col(r, 8, "tenants")?;
    Ok(ShardLoad {
        shard: shard_row(r)?,
        tenants: u64::try_from(count).unwrap_or_default(),
    })
}

/// Places a new tenant (on `preferred`, or by [`choose`]) and records it as an active
/// tenant row, in one transaction that bumps the map version.
///
/// Two concurrent adds must not both see a shard's last free slot. The version bump comes
/// first and its row lock already orders every routing change; the tenants table is then
/// locked against every other writer (SHARE ROW EXCLUSIVE conflicts with itself and with
/// INSERT/UPDATE/DELETE, not with readers such as proxies), so the count read after it is
/// the count the insert lands on. Taking the locks in this order, as every mutation takes
/// the version first, cannot deadlock against them. Any error rolls everything back.
pub async fn add_tenant(
    client: &mut Client,
    key: &TenantKey,
    preferred: Option<&str>,
) -> Result<AddedTenant, PlaceError> {
    let q = CatalogError::query;
    let tx = client
        .transaction()
        .await
        .map_err(q("starting add_tenant"))?;
    let version = bump_version(&tx).await?;
    tx.batch_execute("LOCK TABLE shardgate.tenants IN SHARE ROW EXCLUSIVE MODE")
        .await
        .map_err(q("locking the tenants table"))?;
    let tenant = key_text(key, load_settings(&tx).await?.key_type)?;
    refuse_existing(&tx, &tenant).await?;
    let shard = choose(&shard_loads(&tx).await?, preferred)?;
    tx.execute(
        "INSERT INTO shardgate.tenants (tenant_id, shard_id, state, updated_at) \
         VALUES ($1, $2, 'active', now())",
        &[&tenant, &(shard.id as i32)],
    )
    .await
    .map_err(q("inserting the tenant row"))?;
    let what = format!(
        "tenant {tenant} placed on shard {} (id {}), {} live tenants before",
        shard.name, shard.id, shard.tenants
    );
    super::mutate::event(&tx, "tenant_added", Some(&tenant), &what, version).await?;
    tx.commit().await.map_err(q("committing add_tenant"))?;
    Ok(AddedTenant {
        tenant,
        shard,
        version,
    })
}

async fn refuse_existing(tx: &Transaction<'_>, tenant: &str) -> Result<(), PlaceError> {
    let row = tx
        .query_opt(
            "SELECT s.name, t.state FROM shardgate.tenants t \
             JOIN shardgate.shards s USING (shard_id) WHERE t.tenant_id = $1",
            &[&tenant],
        )
        .await
        .map_err(CatalogError::query("looking up the tenant"))?;
    match row {
        None => Ok(()),
        Some(r) => Err(PlaceError::TenantExists {
            tenant: tenant.into(),
            shard: col(&r, 0, "shards")?,
            state: col(&r, 1, "tenants")?,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::ShardInfo;

    fn load(id: ShardId, name: &str, state: ShardState, hint: Option<u32>, n: u64) -> ShardLoad {
        ShardLoad {
            shard: ShardRow {
                info: ShardInfo {
                    id,
                    name: name.into(),
                    url: format!("postgres://u@h/{name}"),
                    state,
                    pool_size: 20,
                    capacity_hint: hint,
                },
                max_connections: None,
                region: None,
            },
            tenants: n,
        }
    }

    use ShardState::{Active, Draining, Offline};

    fn chosen(shards: &[ShardLoad], preferred: Option<&str>) -> String {
        choose(shards, preferred)
            .unwrap_or_else(|e| panic!("{e}"))
            .name
    }

    #[test]
    fn the_shard_with_fewest_tenants_wins() {
        let fleet = [
            load(0, "s0", Active, Some(10), 5),
            load(1, "s1", Active, Some(10), 2),
            load(2, "s2", Active, Some(10), 7),
        ];
        let c = choose(&fleet, None).unwrap();
        assert_eq!(
            c,
            ShardChoice {
                id: 1,
                name: "s1".into(),
                tenants: 2,
                capacity_hint: Some(10)
            }
        );
    }

    #[test]
    fn ties_go_to_the_smallest_name_not_the_smallest_id() {
        let fleet = [
            load(0, "zeta", Active, None, 3),
            load(1, "beta", Active, None, 3),
            load(2, "alpha", Active, None, 4),
        ];
        assert_eq!(chosen(&fleet, None), "beta");
    }

    #[test]
    fn full_shards_are_skipped_even_with_fewest_tenants() {
        let fleet = [
            load(0, "s0", Active, Some(2), 2),
            load(1, "s1", Active, Some(0), 0),
            load(2, "s2", Active, Some(9), 8),
            // Past its hint (lowered after placement): full, not an underflow.
            load(3, "s3", Active, Some(1), 4),
        ];
        assert_eq!(chosen(&fleet, None), "s2");
        assert_eq!(fleet[3].free(), Some(0));
    }

    #[test]
    fn no_capacity_hint_is_unbounded() {
        let fleet = [
            load(0, "s0", Active, Some(3), 3),
            load(1, "s1", Active, None, 1_000_000),
        ];
        assert_eq!(chosen(&fleet, None), "s1");
        assert_eq!(fleet[1].free(), None);
    }

    #[test]
    fn draining_and_offline_shards_take_no_tenants() {
        let fleet = [
            load(0, "s0", Draining, None, 0),
            load(1, "s1", Offline, None, 0),
            load(2, "s2", Active, None, 50),
        ];
        assert_eq!(chosen(&fleet, None), "s2");
    }

    #[test]
    fn a_named_shard_is_taken_if_it_has_room() {
        let fleet = [
            load(0, "s0", Active, Some(5), 0),
            load(1, "s1", Active, Some(5), 4),
        ];
        assert_eq!(chosen(&fleet, Some("s1")), "s1");
        // By id when no shard has that name.
        assert_eq!(chosen(&fleet, Some("1")), "s1");
    }

    #[test]
    fn a_full_named_shard_fails_and_never_falls_back() {
        let fleet = [
            load(0, "s0", Active, Some(5), 0),
            load(1, "s1", Active, Some(5), 5),
        ];
        let err = choose(&fleet, Some("s1")).unwrap_err();
        assert_eq!(err.code(), "E_NO_CAPACITY");
        assert!(err.is_about_named_shard());
        assert!(
            matches!(err, PlaceError::Full { ref shard, tenants: 5, capacity_hint: 5 } if shard == "s1")
        );
        assert!(err.to_string().contains("capacity_hint 5"), "{err}");
    }

    #[test]
    fn a_named_shard_that_is_not_active_has_no_capacity() {
        let fleet = [
            load(0, "s0", Active, None, 0),
            load(1, "s1", Draining, None, 0),
        ];
        let err = choose(&fleet, Some("s1")).unwrap_err();
        assert_eq!(err.code(), "E_NO_CAPACITY");
        assert!(err.to_string().contains("draining"), "{err}");
    }

    #[test]
    fn a_missing_named_shard_is_not_found() {
        let fleet = [load(0, "s0", Active, None, 0)];
        let err = choose(&fleet, Some("nope")).unwrap_err();
        assert_eq!(err.code(), "E_SHARD_NOT_FOUND");
        assert!(err.is_about_named_shard());
        assert_eq!(
            choose(&fleet, Some("7")).unwrap_err().code(),
            "E_SHARD_NOT_FOUND"
        );
    }

    #[test]
    fn no_active_shard_is_its_own_error() {
        let fleet = [
            load(0, "s0", Draining, None, 0),
            load(1, "s1", Offline, None, 0),
        ];
        let err = choose(&fleet, None).unwrap_err();
        assert_eq!(err.code(), "E_NO_ACTIVE_SHARD");
        assert!(!err.is_about_named_shard());
        assert_eq!(choose(&[], None).unwrap_err().code(), "E_NO_ACTIVE_SHARD");
    }

    #[test]
    fn all_active_shards_full_is_no_capacity() {
        let fleet = [
            load(0, "s0", Active, Some(1), 1),
            load(1, "s1", Active, Some(2), 2),
            load(2, "s2", Draining, None, 0),
        ];
        let err = choose(&fleet, None).unwrap_err();
        assert_eq!(err.code(), "E_NO_CAPACITY");
        assert!(!err.is_about_named_shard());
        assert!(matches!(err, PlaceError::AllFull { active: 2 }));
    }

    #[test]
    fn catalog_errors_have_codes_too() {
        let invalid = PlaceError::from(CatalogError::Invalid("bad id".into()));
        assert_eq!(invalid.code(), "E_INVALID_ARGUMENT");
        assert_eq!(
            PlaceError::from(CatalogError::NotInitialised).code(),
            "E_CATALOG"
        );
    }

    #[test]
    fn suggested_capacity_leaves_room_for_every_pool_twice() {
        assert_eq!(suggest_capacity_hint(100, 20), Some(2));
        assert_eq!(suggest_capacity_hint(500, 10), Some(25));
        assert_eq!(suggest_capacity_hint(30, 20), Some(0));
        assert_eq!(suggest_capacity_hint(100, 0), None);
    }
}
