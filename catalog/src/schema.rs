//! The catalog's schema: versioned migrations embedded in the binary, and the settings
//! that fix how the catalog's contents are read (strategy, key type, ring size).
//!
//! [`migrate`] runs every missing migration and records the settings in one transaction
//! under an advisory lock, so any number of `shardctl init`s (or proxies starting at once)
//! can race: one does the work, the others wait and then find nothing left to do.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::CatalogError;
use crate::map::Strategy;
use crate::text::KeyType;

/// One step of the schema, applied at most once per catalog.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// In order; a released migration is never edited, only followed by a new one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_copy_on",
        sql: include_str!("../migrations/0002_copy_on.sql"),
    },
];

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Serialises migrations across every client of one catalog database ("SGCATALG").
const MIGRATE_LOCK: i64 = 0x5347_4341_5441_4C47;

/// Most virtual nodes per shard we accept: beyond this the ring only costs memory.
pub const MAX_VNODES: u32 = 65_536;

const BOOTSTRAP: &str = "CREATE SCHEMA IF NOT EXISTS shardgate;
CREATE TABLE IF NOT EXISTS shardgate.schema_migrations (
    version    int         PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);";

/// The catalog-wide settings. Fixed at `init`: existing placements depend on all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub strategy: Strategy,
    pub key_type: KeyType,
    pub vnodes_per_shard: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            strategy: Strategy::Hash,
            key_type: KeyType::Bigint,
            vnodes_per_shard: 256,
        }
    }
}

/// What `init` asks for; `None` keeps the stored value, or takes the default on a new
/// catalog, so that re-running a plain `shardctl init` never conflicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitOptions {
    pub strategy: Option<Strategy>,
    pub key_type: Option<KeyType>,
    pub vnodes_per_shard: Option<u32>,
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// Schema version before and after.
    pub from_version: i32,
    pub schema_version: i32,
    /// Names of the migrations this call applied (empty when already up to date).
    pub applied: Vec<&'static str>,
    /// Settings keys this call stored (empty when they were already there).
    pub settings_written: Vec<&'static str>,
    pub settings: Settings,
    pub map_version: u64,
}

const STRATEGY: &str = "strategy";
const KEY_TYPE: &str = "key_type";
const VNODES: &str = "vnodes_per_shard";

/// Brings the catalog's schema up to [`SCHEMA_VERSION`] and records the settings, in one
/// transaction; safe to run any number of times, concurrently too.
pub async fn migrate(client: &mut Client, opts: InitOptions) -> Result<InitReport, CatalogError> {
    if let Some(v) = opts.vnodes_per_shard {
        if v == 0 || v > MAX_VNODES {
            return Err(CatalogError::Invalid(format!(
                "vnodes_per_shard must be between 1 and {MAX_VNODES}, not {v}"
            )));
        }
    }
    let q = CatalogError::query;
    let tx = client
        .transaction()
        .await
        .map_err(q("starting the migration"))?;
    // The IF NOT EXISTS notices of every re-run are noise, not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(q("starting the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(q("taking the migration lock"))?;
    tx.batch_execute(BOOTSTRAP)
        .await
        .map_err(q("creating schema shardgate"))?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM shardgate.schema_migrations", &[])
        .await
        .map_err(q("reading schema_migrations"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let from_version = done.iter().copied().max().unwrap_or(0);
    if from_version > SCHEMA_VERSION {
        return Err(CatalogError::SchemaTooNew {
            found: from_version,
            known: SCHEMA_VERSION,
        });
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        tx.batch_execute(m.sql)
            .await
            .map_err(q("applying a migration"))?;
        tx.execute(
            "INSERT INTO shardgate.schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(q("recording a migration"))?;
        applied.push(m.name);
    }
    let stored = read_settings(&tx).await?;
    let (settings, settings_written) = merge_settings(&stored, opts)?;
    for &key in &settings_written {
        let value = setting_value(&settings, key);
        tx.execute(
            "INSERT INTO shardgate.settings (key, value) VALUES ($1, $2)",
            &[&key, &value],
        )
        .await
        .map_err(q("storing settings"))?;
    }
    let map_version: i64 = tx
        .query_one("SELECT version FROM shardgate.map_version", &[])
        .await
        .map_err(q("reading map_version"))?
        .get(0);
    tx.commit().await.map_err(q("committing the migration"))?;
    Ok(InitReport {
        from_version,
        schema_version: SCHEMA_VERSION,
        applied,
        settings_written,
        settings,
        map_version: map_version as u64,
    })
}

/// The settings as stored; any missing or unreadable one is an error.
pub async fn load_settings(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Settings, CatalogError> {
    let stored = read_settings(client).await?;
    let (settings, missing) = merge_settings(&stored, InitOptions::default())?;
    if let Some(key) = missing.first() {
        return Err(CatalogError::InvalidData(format!(
            "settings has no {key:?} row; run `shardctl init`"
        )));
    }
    Ok(settings)
}

async fn read_settings(
    client: &impl tokio_postgres::GenericClient,
) -> Result<HashMap<String, String>, CatalogError> {
    Ok(client
        .query("SELECT key, value FROM shardgate.settings", &[])
        .await
        .map_err(CatalogError::query("reading settings"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The settings that result from `stored` plus what `opts` asks for, and the keys that
/// were not stored yet. A request that contradicts a stored value is refused.
fn merge_settings(
    stored: &HashMap<String, String>,
    opts: InitOptions,
) -> Result<(Settings, Vec<&'static str>), CatalogError> {
    let d = Settings::default();
    let mut missing = Vec::new();
    let mut pick = |key: &'static str, requested: Option<String>, default: String| match (
        stored.get(key),
        requested,
    ) {
        (Some(s), Some(r)) if *s != r => Err(CatalogError::SettingConflict {
            key,
            stored: s.clone(),
            requested: r,
        }),
        (Some(s), _) => Ok(s.clone()),
        (None, r) => {
            missing.push(key);
            Ok(r.unwrap_or(default))
        }
    };
    let strategy = pick(
        STRATEGY,
        opts.strategy.map(|s| s.to_string()),
        d.strategy.to_string(),
    )?;
    let key_type = pick(
        KEY_TYPE,
        opts.key_type.map(|k| k.to_string()),
        d.key_type.to_string(),
    )?;
    let vnodes = pick(
        VNODES,
        opts.vnodes_per_shard.map(|v| v.to_string()),
        d.vnodes_per_shard.to_string(),
    )?;
    let bad = |key: &str, value: &str, why: String| {
        CatalogError::InvalidData(format!("settings.{key} = {value:?}: {why}"))
    };
    let settings = Settings {
        strategy: strategy
            .parse()
            .map_err(|e| bad(STRATEGY, &strategy, format!("{e}")))?,
        key_type: key_type
            .parse()
            .map_err(|e| bad(KEY_TYPE, &key_type, format!("{e}")))?,
        vnodes_per_shard: vnodes
            .parse()
            .ok()
            .filter(|v| (1..=MAX_VNODES).contains(v))
            .ok_or_else(|| bad(VNODES, &vnodes, format!("expected 1..={MAX_VNODES}")))?,
    };
    Ok((settings, missing))
}

fn setting_value(s: &Settings, key: &str) -> String {
    match key {
        STRATEGY => s.strategy.to_string(),
        KEY_TYPE => s.key_type.to_string(),
        _ => s.vnodes_per_shard.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn migrations_are_ordered_and_named_once() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(MIGRATIONS[0].version, 1);
        for m in MIGRATIONS {
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
            // Schema-qualified throughout: nothing sets search_path.
            for (i, _) in m.sql.match_indices("CREATE TABLE ") {
                let rest = &m.sql[i + "CREATE TABLE ".len()..];
                assert!(rest.starts_with("shardgate."), "{}: {rest:.40}", m.name);
            }
        }
    }

    #[test]
    fn new_catalog_takes_requests_then_defaults() {
        let opts = InitOptions {
            key_type: Some(KeyType::Uuid),
            ..InitOptions::default()
        };
        let (s, written) = merge_settings(&HashMap::new(), opts).unwrap();
        assert_eq!(
            s,
            Settings {
                key_type: KeyType::Uuid,
                ..Settings::default()
            }
        );
        assert_eq!(written, [STRATEGY, KEY_TYPE, VNODES]);
    }

    #[test]
    fn stored_settings_win_and_contradictions_are_refused() {
        let st = stored(&[(STRATEGY, "directory"), (KEY_TYPE, "text"), (VNODES, "64")]);
        let (s, written) = merge_settings(&st, InitOptions::default()).unwrap();
        assert_eq!(s.strategy, Strategy::Directory);
        assert_eq!(s.vnodes_per_shard, 64);
        assert!(written.is_empty());
        let same = InitOptions {
            strategy: Some(Strategy::Directory),
            ..InitOptions::default()
        };
        assert!(merge_settings(&st, same).is_ok());
        let other = InitOptions {
            vnodes_per_shard: Some(256),
            ..InitOptions::default()
        };
        let err = merge_settings(&st, other).unwrap_err().to_string();
        assert!(
            err.contains("vnodes_per_shard = 64") && err.contains("256"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_settings_are_named() {
        let st = stored(&[(STRATEGY, "hash"), (KEY_TYPE, "int"), (VNODES, "8")]);
        let err = merge_settings(&st, InitOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("settings.key_type = \"int\""), "{err}");
        let st = stored(&[(STRATEGY, "hash"), (KEY_TYPE, "uuid"), (VNODES, "0")]);
        assert!(matches!(
            merge_settings(&st, InitOptions::default()),
            Err(CatalogError::InvalidData(_))
        ));
    }
}
