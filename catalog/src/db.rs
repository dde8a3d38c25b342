//! Reading the catalog database: connecting, and building a [`ShardMap`] from one
//! consistent snapshot of its tables. Changes are in [`mutate`]; long-running operations
//! (moves) are persisted by [`jobs`].
//!
//! Nothing here trusts the catalog's contents: a row this build cannot read is an error
//! that names the row, never a panic and never a silently skipped tenant.

pub mod jobs;
mod mutate;
mod place;

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, Config, GenericClient, IsolationLevel, NoTls, Row, Transaction};

pub use mutate::{
    AddedShard, NOTIFY_CHANNEL, NewShard, ShardRef, add_shard, bump_version, remove_tenant,
    resolve_shard, set_copies_on, set_copy_on, set_shard_state, set_tenant, set_tenants,
};
pub use place::{
    AddedTenant, FleetLoad, PlaceError, SAFETY_FACTOR, ShardChoice, ShardLoad, add_tenant, choose,
    fleet_load, suggest_capacity_hint,
};

use crate::error::{CatalogError, redact_url};
use crate::map::{ShardId, ShardInfo, ShardMap, TenantKey, TenantState};
pub use crate::schema::{InitOptions, InitReport, Settings, load_settings, migrate};
use crate::text::{KeyType, ring_from_db};

/// Connect timeout when the url sets none: a proxy must not hang at start on a dead host.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One row of `shardgate.shards`, with the columns the routing map does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRow {
    pub info: ShardInfo,
    pub max_connections: Option<u32>,
    pub region: Option<String>,
}

/// The url parsed, with an `application_name` (so the catalog's `pg_stat_activity` shows
/// who is connected) and a connect timeout unless the url sets its own.
pub fn config(url: &str, application_name: &str) -> Result<Config, CatalogError> {
    let mut config: Config = url.parse().map_err(|source| CatalogError::Url {
        url: redact_url(url),
        source,
    })?;
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// A client of the catalog; its connection runs on a task of its own until the client is
/// dropped. Notifications on it are discarded (the watcher keeps its own connection).
pub async fn connect(url: &str) -> Result<Client, CatalogError> {
    let (client, conn) = config(url, "shardgate")?
        .connect(NoTls)
        .await
        .map_err(|source| CatalogError::Connect {
            url: redact_url(url),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "catalog connection closed");
        }
    });
    Ok(client)
}

/// The current map version, one cheap query.
pub async fn map_version(client: &impl GenericClient) -> Result<u64, CatalogError> {
    let row = client
        .query_one("SELECT version FROM shardgate.map_version", &[])
        .await
        .map_err(CatalogError::query("reading map_version"))?;
    version_of(&row)
}

/// A read-only repeatable-read transaction: everything read in it belongs to one moment.
pub(crate) async fn snapshot(client: &mut Client) -> Result<Transaction<'_>, CatalogError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(CatalogError::query("starting the snapshot"))
}

/// The whole map, read in one repeatable-read snapshot so that shards, ring, tenants and
/// version all belong to the same moment.
pub async fn load_map(client: &mut Client) -> Result<ShardMap, CatalogError> {
    let q = CatalogError::query;
    let tx = snapshot(client).await?;
    let settings = load_settings(&tx).await?;
    let version = map_version(&tx).await?;
    let shards = list_shards(&tx)
        .await?
        .into_iter()
        .map(|r| r.info)
        .collect();
    let ring = tx
        .query("SELECT vnode_hash, shard_id FROM shardgate.ring", &[])
        .await
        .map_err(q("reading the ring"))?
        .iter()
        .map(|r| Ok((ring_from_db(col(r, 0, "ring")?), shard_id(r, 1, "ring")?)))
        .collect::<Result<Vec<_>, CatalogError>>()?;
    let rows = tx
        .query(
            "SELECT tenant_id, shard_id, state, copy_on FROM shardgate.tenants",
            &[],
        )
        .await
        .map_err(q("reading tenants"))?;
    let tenants = rows
        .iter()
        .map(|r| tenant_row(r, &settings))
        .collect::<Result<HashMap<_, _>, CatalogError>>()?;
    let mut copies = Vec::new();
    for r in &rows {
        let copy_on: Option<i32> = col(r, 3, "tenants")?;
        if let Some(shard) = copy_on {
            let (key, _) = tenant_row(r, &settings)?;
            copies.push((key, shard as ShardId));
        }
    }
    tx.commit().await.map_err(q("ending the snapshot"))?;
    Ok(ShardMap::new(version, settings.strategy, shards, ring, tenants)?.with_copies(copies))
}

/// Every shard with all its columns, by id.
pub async fn list_shards(client: &impl GenericClient) -> Result<Vec<ShardRow>, CatalogError> {
    client
        .query(
            "SELECT shard_id, name, dsn, state, pool_size, capacity_hint, max_connections, region \
             FROM shardgate.shards ORDER BY shard_id",
            &[],
        )
        .await
        .map_err(CatalogError::query("reading shards"))?
        .iter()
        .map(shard_row)
        .collect()
}

fn shard_row(r: &Row) -> Result<ShardRow, CatalogError> {
    const T: &str = "shards";
    let name: String = col(r, 1, T)?;
    let bad = |what: &str, e: String| {
        CatalogError::InvalidData(format!("shards row {name:?}: {what}: {e}"))
    };
    let state: String = col(r, 3, T)?;
    let info = ShardInfo {
        id: shard_id(r, 0, T)?,
        url: col(r, 2, T)?,
        state: state.parse().map_err(|e| bad("state", format!("{e}")))?,
        pool_size: non_negative(col(r, 4, T)?).map_err(|e| bad("pool_size", e))?,
        capacity_hint: col::<Option<i32>>(r, 5, T)?
            .map(non_negative)
            .transpose()
            .map_err(|e| bad("capacity_hint", e))?,
        name: name.clone(),
    };
    Ok(ShardRow {
        info,
        max_connections: col::<Option<i32>>(r, 6, T)?
            .map(non_negative)
            .transpose()
            .map_err(|e| bad("max_connections", e))?,
        region: col(r, 7, T)?,
    })
}

fn tenant_row(
    r: &Row,
    settings: &Settings,
) -> Result<(TenantKey, (ShardId, TenantState)), CatalogError> {
    let id: String = col(r, 0, "tenants")?;
    let bad = |e: String| CatalogError::InvalidData(format!("tenants row {id:?}: {e}"));
    let key = settings.key_type.parse_canonical(&id).map_err(|e| {
        bad(format!(
            "{e} (the catalog's key_type is {})",
            settings.key_type
        ))
    })?;
    let state: String = col(r, 2, "tenants")?;
    let state = state.parse().map_err(|e| bad(format!("{e}")))?;
    Ok((key, (shard_id(r, 1, "tenants")?, state)))
}

/// The canonical text a key is stored under, after checking it is of the catalog's type.
pub(crate) fn key_text(key: &TenantKey, key_type: KeyType) -> Result<String, CatalogError> {
    if !key_type.matches(key) {
        return Err(CatalogError::Invalid(format!(
            "tenant {key} is not a {key_type} key, and the catalog's key_type is {key_type}"
        )));
    }
    Ok(key.to_string())
}

fn version_of(row: &Row) -> Result<u64, CatalogError> {
    let v: i64 = col(row, 0, "map_version")?;
    u64::try_from(v)
        .map_err(|_| CatalogError::InvalidData(format!("map_version.version is negative ({v})")))
}

fn shard_id(r: &Row, idx: usize, table: &str) -> Result<ShardId, CatalogError> {
    let v: i32 = col(r, idx, table)?;
    ShardId::try_from(v)
        .map_err(|_| CatalogError::InvalidData(format!("{table}: negative shard_id {v}")))
}

fn non_negative(v: i32) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{v} is negative"))
}

/// A column, or an error naming the table and column when its type is not what this build
/// expects (someone altered the schema by hand).
fn col<'a, T: FromSql<'a>>(r: &'a Row, idx: usize, table: &str) -> Result<T, CatalogError> {
    r.try_get(idx).map_err(|e| {
        let name = r.columns().get(idx).map(|c| c.name()).unwrap_or("?");
        CatalogError::InvalidData(format!("{table}.{name}: {e}"))
    })
}
