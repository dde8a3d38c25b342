//! The demo fleet of `shardctl dev up`: the demo schema on every shard, the shards in the
//! catalog, and a few hundred tenants with Zipfian sizes loaded through the proxy (so the
//! rows land where the map says, by the same routing every client gets).

use shardgate_catalog::CatalogError;
use shardgate_catalog::db::{self, InitOptions, NewShard};

use crate::pg::{PgCluster, PgError};

/// Applied once per shard by the superuser; see the file for the model.
pub const SCHEMA: &str = include_str!("demo.sql");
/// The role the proxy logs in to the shards as. Not a superuser, so RLS applies to it.
pub const APP_ROLE: &str = "app";
/// Demo tenants are 1..=TENANTS.
pub const TENANTS: u64 = 300;
/// Orders of the largest tenant (tenant 1).
pub const LARGEST: u64 = 2000;
/// Line items per order.
pub const LINES: u64 = 2;
/// Concurrent loader connections.
const LOADERS: u64 = 4;

/// Orders of tenant `t`: Zipf with exponent 1, so tenant 1 has LARGEST, tenant 2 half
/// that, and the long tail a handful each.
pub fn orders_of(tenant: u64) -> u64 {
    LARGEST.div_ceil(tenant.max(1))
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error(
        "the catalog already lists shards {known:?} but this run started {started:?}; \
         run with the --shards of the first run, or use a fresh --dir"
    )]
    FleetChanged {
        known: Vec<String>,
        started: Vec<String>,
    },
    #[error("through the proxy ({url}): {source}")]
    Proxy {
        url: String,
        source: tokio_postgres::Error,
    },
}

/// Creates the app role (password `password`) and, unless the shard has it already, the
/// demo schema. Returns whether the schema was created now.
pub async fn prepare_shard(shard: &PgCluster, db: &str, password: &str) -> Result<bool, DemoError> {
    shard.create_role(APP_ROLE, password, false).await?;
    let client = shard.connect(db).await?;
    let sql_err = |source| PgError::Sql {
        url: shard.url("postgres", "***", db),
        source,
    };
    let exists: bool = client
        .query_one("SELECT to_regclass('public.orders') IS NOT NULL", &[])
        .await
        .map_err(sql_err)?
        .get(0);
    if exists {
        return Ok(false);
    }
    client
        .batch_execute(&format!("BEGIN;\n{SCHEMA}\nCOMMIT;"))
        .await
        .map_err(sql_err)?;
    Ok(true)
}

/// Makes the catalog schema current and lists `shards` in it (ids in order, on the hash
/// ring) the first time. A later run must start the same shards: adding ring nodes to a
/// fleet with data would re-home tenants whose rows did not move.
pub async fn register(catalog_url: &str, shards: &[(String, String)]) -> Result<u64, DemoError> {
    let mut client = db::connect(catalog_url).await?;
    db::migrate(&mut client, InitOptions::default()).await?;
    let known: Vec<String> = db::list_shards(&client)
        .await?
        .into_iter()
        .map(|row| row.info.name)
        .collect();
    let started: Vec<String> = shards.iter().map(|(name, _)| name.clone()).collect();
    if !known.is_empty() {
        if known != started {
            return Err(DemoError::FleetChanged { known, started });
        }
        return Ok(db::map_version(&client).await?);
    }
    let mut version = 0;
    for (i, (name, url)) in shards.iter().enumerate() {
        let added = db::add_shard(
            &mut client,
            &NewShard {
                id: Some(i as u32),
                name: name.clone(),
                url: url.clone(),
                pool_size: 20,
                capacity_hint: None,
                max_connections: None,
                region: None,
                join_ring: true,
            },
        )
        .await?;
        version = added.version;
    }
    Ok(version)
}

/// What [`load`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub tenants: u64,
    pub orders: u64,
    /// False when an earlier run had loaded everything already.
    pub fresh: bool,
}

/// Loads the global plans and every demo tenant through the proxy at `url`, each tenant's
/// rows by one statement routed by a `/* tenant_id=N */` comment. Idempotent: rows that
/// exist are kept, and a fleet whose last tenant is loaded is left alone.
pub async fn load(url: &str) -> Result<Loaded, DemoError> {
    let total = (1..=TENANTS).map(orders_of).sum();
    let client = connect(url).await?;
    let err = |source| DemoError::Proxy {
        url: shardgate_catalog::redact_url(url),
        source,
    };
    let last: i64 = client
        .query_one(&count_sql(TENANTS), &[])
        .await
        .map_err(err)?
        .get(0);
    if last as u64 == orders_of(TENANTS) {
        return Ok(Loaded {
            tenants: TENANTS,
            orders: total,
            fresh: false,
        });
    }
    // A global table: the proxy writes it on every shard.
    client
        .batch_execute(
            "INSERT INTO plans (plan_id, name, max_orders) VALUES \
             (1, 'free', 100), (2, 'team', 10000), (3, 'enterprise', 1000000) \
             ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(err)?;
    drop(client);
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..LOADERS {
        let url = url.to_string();
        set.spawn(async move {
            let client = connect(&url).await?;
            // Largest first across workers, so the big tenants don't end up last on one.
            let mut t = 1 + worker;
            while t <= TENANTS {
                client
                    .batch_execute(&tenant_sql(t))
                    .await
                    .map_err(|source| DemoError::Proxy {
                        url: shardgate_catalog::redact_url(&url),
                        source,
                    })?;
                t += LOADERS;
            }
            Ok::<_, DemoError>(())
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("loader task panicked")?;
    }
    Ok(Loaded {
        tenants: TENANTS,
        orders: total,
        fresh: true,
    })
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, DemoError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|source| DemoError::Proxy {
            url: shardgate_catalog::redact_url(url),
            source,
        })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Counts one tenant's orders (routed by the literal).
pub fn count_sql(tenant: u64) -> String {
    format!("SELECT count(*) FROM orders WHERE tenant_id = {tenant}")
}

/// One tenant's orders and line items, routed by the comment.
pub fn tenant_sql(t: u64) -> String {
    let n = orders_of(t);
    format!(
        "/* tenant_id={t} */ INSERT INTO orders \
         (tenant_id, order_id, customer, status, amount_cents, created_at) \
         SELECT {t}, g, 'customer ' || (g % 97), \
                (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4], \
                100 + (g * 7919 + {t} * 104729) % 50000, \
                timestamptz '2026-01-01' + make_interval(mins => (g * 37)::int) \
         FROM generate_series(1, {n}) g ON CONFLICT DO NOTHING;\n\
         /* tenant_id={t} */ INSERT INTO line_items \
         (tenant_id, order_id, line_no, sku, qty, price_cents) \
         SELECT {t}, o, l, 'sku-' || ((o * 31 + l) % 500), 1 + (o + l) % 5, \
                100 + (o * l * 13) % 9000 \
         FROM generate_series(1, {n}) o, generate_series(1, {LINES}) l ON CONFLICT DO NOTHING"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_zipfian() {
        assert_eq!(orders_of(1), LARGEST);
        assert_eq!(orders_of(2), LARGEST / 2);
        assert_eq!(orders_of(3), 667);
        assert_eq!(orders_of(TENANTS), 7);
        let total: u64 = (1..=TENANTS).map(orders_of).sum();
        assert!((12_000..14_000).contains(&total), "{total}");
    }

    #[test]
    fn tenant_sql_names_its_tenant_in_both_statements() {
        let sql = tenant_sql(42);
        assert_eq!(sql.matches("/* tenant_id=42 */").count(), 2);
        assert!(sql.contains("generate_series(1, 48)"));
    }
}
