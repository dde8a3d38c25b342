//! Changes to the routing state. Each is one transaction that also bumps `map_version`
//! and notifies `shardgate_map`, so a proxy sees either none of a change or all of it, and
//! hears about it the moment it commits.
//!
//! The version bump comes first: its row lock serialises every routing change, which is
//! what makes "the next shard id" and "version + 1" safe without further locking.

use std::fmt;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, Transaction};

use super::key_text;
use crate::error::CatalogError;
use crate::map::{ShardId, ShardState, TenantKey, TenantState, build_ring};
use crate::schema::load_settings;
use crate::shard::Endpoint;
use crate::text::ring_to_db;

/// The channel proxies `LISTEN` on; the payload is the new map version.
pub const NOTIFY_CHANNEL: &str = "shardgate_map";

/// A shard to add. [`NewShard::new`] fills in the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShard {
    /// `None`: one more than the highest id in use.
    pub id: Option<ShardId>,
    pub name: String,
    pub url: String,
    pub pool_size: u32,
    pub capacity_hint: Option<u32>,
    pub max_connections: Option<u32>,
    pub region: Option<String>,
    /// Give the shard its virtual nodes on the hash ring now. Only right for a fleet
    /// without data yet: on a live fleet the new nodes take over ring-placed tenants whose
    /// rows are still on their old shard. A split target is added without them and gets
    /// its share of the ring in the split's flip.
    pub join_ring: bool,
}

impl NewShard {
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        NewShard {
            id: None,
            name: name.into(),
            url: url.into(),
            pool_size: 20,
            capacity_hint: None,
            max_connections: None,
            region: None,
            join_ring: true,
        }
    }
}

/// What [`add_shard`] created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedShard {
    pub id: ShardId,
    /// Virtual nodes placed on the ring.
    pub vnodes: u32,
    pub version: u64,
}

/// A shard named by an operator: by name, or by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardRef {
    Id(ShardId),
    /// Matched against names first; if no shard has that name and it is a number, it is
    /// taken as an id (so `--shard 3` works, and a shard named "3" still wins).
    Name(String),
}

impl From<ShardId> for ShardRef {
    fn from(id: ShardId) -> Self {
        ShardRef::Id(id)
    }
}

impl From<&str> for ShardRef {
    fn from(name: &str) -> Self {
        ShardRef::Name(name.to_owned())
    }
}

impl fmt::Display for ShardRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardRef::Id(id) => write!(f, "id {id}"),
            ShardRef::Name(n) => f.write_str(n),
        }
    }
}

/// Bumps the map version and queues the notification (Postgres sends it at commit).
/// For callers that compose their own routing change in `tx`.
pub async fn bump_version(tx: &Transaction<'_>) -> Result<u64, CatalogError> {
    let row = tx
        .query_one(
            "UPDATE shardgate.map_version SET version = version + 1 RETURNING version",
            &[],
        )
        .await
        .map_err(CatalogError::query("bumping map_version"))?;
    let version: i64 = row.get(0);
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&NOTIFY_CHANNEL, &version.to_string()],
    )
    .await
    .map_err(CatalogError::query("notifying proxies"))?;
    Ok(version as u64)
}

/// The id of the shard `shard` names.
pub async fn resolve_shard(
    client: &impl GenericClient,
    shard: &ShardRef,
) -> Result<ShardId, CatalogError> {
    let row = match shard {
        ShardRef::Id(id) => {
            let id =
                i32::try_from(*id).map_err(|_| CatalogError::UnknownShard(shard.to_string()))?;
            client
                .query_opt(
                    "SELECT shard_id FROM shardgate.shards WHERE shard_id = $1",
                    &[&id],
                )
                .await
        }
        ShardRef::Name(name) => {
            client
                .query_opt(
                    "SELECT shard_id FROM shardgate.shards \
                     WHERE name = $1 OR (shard_id::text = $1 \
                        AND NOT EXISTS (SELECT 1 FROM shardgate.shards WHERE name = $1))",
                    &[name],
                )
                .await
        }
    }
    .map_err(CatalogError::query("looking up a shard"))?;
    let id: i32 = row
        .ok_or_else(|| CatalogError::UnknownShard(shard.to_string()))?
        .get(0);
    Ok(id as ShardId)
}

/// Adds a shard (and, with `join_ring`, its fixed virtual nodes).
pub async fn add_shard(client: &mut Client, shard: &NewShard) -> Result<AddedShard, CatalogError> {
    validate(shard)?;
    let q = CatalogError::query;
    let tx = client
        .transaction()
        .await
        .map_err(q("starting add_shard"))?;
    let version = bump_version(&tx).await?;
    let settings = load_settings(&tx).await?;
    let id: i32 = match shard.id {
        Some(id) => i32::try_from(id)
            .map_err(|_| CatalogError::Invalid(format!("shard id {id} is out of range")))?,
        None => tx
            .query_one(
                "SELECT coalesce(max(shard_id) + 1, 0) FROM shardgate.shards",
                &[],
            )
            .await
            .map_err(q("choosing a shard id"))?
            .get(0),
    };
    let small = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO shardgate.shards \
         (shard_id, name, dsn, state, pool_size, capacity_hint, max_connections, region) \
         VALUES ($1, $2, $3, 'active', $4, $5, $6, $7)",
        &[
            &id,
            &shard.name,
            &shard.url,
            &small(shard.pool_size),
            &shard.capacity_hint.map(small),
            &shard.max_connections.map(small),
            &shard.region,
        ],
    )
    .await
    .map_err(|e| match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
            match e.as_db_error().and_then(|d| d.constraint()) {
                Some("shards_pkey") => CatalogError::Invalid(format!("shard id {id} is taken")),
                _ => CatalogError::ShardExists(shard.name.clone()),
            }
        }
        _ => q("inserting the shard")(e),
    })?;
    let mut vnodes = 0;
    if shard.join_ring {
        let positions: Vec<i64> = build_ring(&[id as ShardId], settings.vnodes_per_shard)
            .into_iter()
            .map(|(pos, _)| ring_to_db(pos))
            .collect();
        // A position another shard already holds (a 64-bit collision) is left to it: the
        // ring loses one node of this shard, which changes nothing else.
        let n = tx
            .execute(
                "INSERT INTO shardgate.ring (vnode_hash, shard_id) \
                 SELECT unnest($1::bigint[]), $2 ON CONFLICT (vnode_hash) DO NOTHING",
                &[&positions, &id],
            )
            .await
            .map_err(q("adding ring nodes"))?;
        vnodes = n as u32;
    }
    event(
        &tx,
        "shard_added",
        None,
        &format!("shard {} (id {id}), {vnodes} vnodes", shard.name),
        version,
    )
    .await?;
    tx.commit().await.map_err(q("committing add_shard"))?;
    Ok(AddedShard {
        id: id as ShardId,
        vnodes,
        version,
    })
}

fn validate(shard: &NewShard) -> Result<(), CatalogError> {
    let invalid = |m: String| Err(CatalogError::Invalid(m));
    if shard.name.trim().is_empty() {
        return invalid("a shard needs a name".into());
    }
    if let Err(e) = Endpoint::parse(&shard.url) {
        return invalid(format!("shard url: {e}"));
    }
    if shard.pool_size == 0 || shard.max_connections == Some(0) {
        return invalid("pool_size and max_connections must be at least 1".into());
    }
    Ok(())
}

/// Pins `key` to `shard` in `state` (creating or replacing its tenant row).
pub async fn set_tenant(
    client: &mut Client,
    key: &TenantKey,
    shard: &ShardRef,
    state: TenantState,
) -> Result<u64, CatalogError> {
    set_tenants(client, std::slice::from_ref(key), shard, state).await
}

/// [`set_tenant`] for a group in one transaction and one map version: a split's tenants
/// are gated, and flipped, together.
pub async fn set_tenants(
    client: &mut Client,
    keys: &[TenantKey],
    shard: &ShardRef,
    state: TenantState,
) -> Result<u64, CatalogError> {
    let q = CatalogError::query;
    let tx = client
        .transaction()
        .await
        .map_err(q("starting set_tenant"))?;
    let version = bump_version(&tx).await?;
    let key_type = load_settings(&tx).await?.key_type;
    let shard_id = resolve_shard(&tx, shard).await? as i32;
    for key in keys {
        let id_text = key_text(key, key_type)?;
        set_tenant_row(&tx, &id_text, shard_id, state, version).await?;
    }
    tx.commit().await.map_err(q("committing set_tenant"))?;
    Ok(version)
}

async fn set_tenant_row(
    tx: &tokio_postgres::Transaction<'_>,
    id_text: &str,
    shard_id: i32,
    state: TenantState,
    version: u64,
) -> Result<(), CatalogError> {
    let q = CatalogError::query;
    tx.execute(
        // A tenant placed on the shard that held its copy leaves the copy on its old
        // home (a move's flip: the source keeps the rows until cleanup).
        "INSERT INTO shardgate.tenants AS t (tenant_id, shard_id, state, updated_at) \
         VALUES ($1, $2, $3, now()) \
         ON CONFLICT (tenant_id) DO UPDATE \
         SET shard_id = excluded.shard_id, state = excluded.state, updated_at = now(), \
             copy_on = CASE WHEN t.copy_on = excluded.shard_id THEN t.shard_id \
                            ELSE t.copy_on END",
        &[&id_text, &shard_id, &state.as_str()],
    )
    .await
    .map_err(q("writing the tenant row"))?;
    let detail = format!("tenant {id_text} -> shard id {shard_id}, {state}");
    event(tx, "tenant_set", Some(id_text), &detail, version).await
}

/// Records (or with `None` clears) a shard that holds a copy of `key`'s rows without
/// being its home: fan-out reads leave the tenant out there. The tenant must have a row.
pub async fn set_copy_on(
    client: &mut Client,
    key: &TenantKey,
    shard: Option<&ShardRef>,
) -> Result<u64, CatalogError> {
    set_copies_on(client, std::slice::from_ref(key), shard).await
}

/// [`set_copy_on`] for a group, in one transaction and one map version.
pub async fn set_copies_on(
    client: &mut Client,
    keys: &[TenantKey],
    shard: Option<&ShardRef>,
) -> Result<u64, CatalogError> {
    let q = CatalogError::query;
    let tx = client
        .transaction()
        .await
        .map_err(q("starting set_copy_on"))?;
    let version = bump_version(&tx).await?;
    let key_type = load_settings(&tx).await?.key_type;
    let shard_id = match shard {
        Some(s) => Some(resolve_shard(&tx, s).await? as i32),
        None => None,
    };
    for key in keys {
        let id_text = key_text(key, key_type)?;
        set_copy_row(&tx, &id_text, shard_id, version).await?;
    }
    tx.commit().await.map_err(q("committing set_copy_on"))?;
    Ok(version)
}

async fn set_copy_row(
    tx: &tokio_postgres::Transaction<'_>,
    id_text: &str,
    shard_id: Option<i32>,
    version: u64,
) -> Result<(), CatalogError> {
    let q = CatalogError::query;
    let n = tx
        .execute(
            "UPDATE shardgate.tenants SET copy_on = $2, updated_at = now() WHERE tenant_id = $1",
            &[&id_text, &shard_id],
        )
        .await
        .map_err(q("writing copy_on"))?;
    if n == 0 {
        return Err(CatalogError::UnknownTenant(id_text.to_owned()));
    }
    let detail = match shard_id {
        Some(s) => format!("tenant {id_text}: a copy on shard id {s}"),
        None => format!("tenant {id_text}: no copy elsewhere"),
    };
    event(tx, "tenant_copy", Some(id_text), &detail, version).await
}

/// Deletes `key`'s tenant row: under `hash` it goes back to its ring position, under
/// `directory` it becomes unknown.
pub async fn remove_tenant(client: &mut Client, key: &TenantKey) -> Result<u64, CatalogError> {
    let q = CatalogError::query;
    let tx = client
        .transaction()
        .await
        .map_err(q("starting remove_tenant"))?;
    let version = bump_version(&tx).await?;
    let id_text = key_text(key, load_settings(&tx).await?.key_type)?;
    let n = tx
        .execute(
            "DELETE FROM shardgate.tenants WHERE tenant_id = $1",
            &[&id_text],
        )
        .await
        .map_err(q("deleting the tenant row"))?;
    if n == 0 {
        return Err(CatalogError::UnknownTenant(id_text));
    }
    event(&tx, "tenant_removed", Some(&id_text), "", version).await?;
    tx.commit().await.map_err(q("committing remove_tenant"))?;
    Ok(version)
}

pub async fn set_shard_state(
    client: &mut Client,
    shard: &ShardRef,
    state: ShardState,
) -> Result<u64, CatalogError> {
    let q = CatalogError::query;
    let tx = client
        .transaction()
        .await
        .map_err(q("starting set_shard_state"))?;
    let version = bump_version(&tx).await?;
    let id = resolve_shard(&tx, shard).await? as i32;
    tx.execute(
        "UPDATE shardgate.shards SET state = $2 WHERE shard_id = $1",
        &[&id, &state.as_str()],
    )
    .await
    .map_err(q("updating the shard state"))?;
    let detail = format!("shard id {id} -> {state}");
    event(&tx, "shard_state", None, &detail, version).await?;
    tx.commit().await.map_err(q("committing set_shard_state"))?;
    Ok(version)
}

/// Appends to `events`: who changed routing, and to which version.
pub(super) async fn event(
    tx: &Transaction<'_>,
    kind: &str,
    tenant: Option<&str>,
    what: &str,
    version: u64,
) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO shardgate.events (kind, tenant_id, detail) \
         VALUES ($1, $2, jsonb_build_object('what', $3::text, 'map_version', $4::bigint))",
        &[&kind, &tenant, &what, &(version as i64)],
    )
    .await
    .map_err(CatalogError::query("recording the event"))?;
    Ok(())
}
