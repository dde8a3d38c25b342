//! What the tenant-move tests share: a catalog fleet with an `orders` table, reading a
//! tenant's rows and its fence straight from the shards (a move's leftovers are the
//! harness's `CatalogFleet::move_leftovers`), loading rows, and the log
//! a writer keeps of what the proxy acknowledged.

use std::collections::HashMap;
use std::sync::Arc;

use shardctl::move_cmd::{Hooks, Progress};
use shardgate::config::Config;
use shardgate_catalog::db::{self, jobs::JobState};
use shardgate_catalog::{TenantKey, TenantState};
use shardgate_e2e::CatalogFleet;
use tokio_postgres::Client;

pub const SCHEMA: &str = "create table orders (tenant_id bigint not null, id bigint not null, \
                      note text, primary key (tenant_id, id))";

/// The catalog fleet of the harness, with the move tests' helpers.
pub struct Fleet(pub CatalogFleet);

impl std::ops::Deref for Fleet {
    type Target = CatalogFleet;
    fn deref(&self) -> &CatalogFleet {
        &self.0
    }
}

impl std::ops::DerefMut for Fleet {
    fn deref_mut(&mut self) -> &mut CatalogFleet {
        &mut self.0
    }
}

impl Fleet {
    /// 4 shards (wal_level = logical) registered in a catalog, and a proxy that reads its
    /// map from there.
    pub async fn start(poll_ms: u64) -> Fleet {
        Fleet::start_with(poll_ms, |_| {}).await
    }

    /// [`Fleet::start`], with the proxy's config edited by `tweak` first.
    pub async fn start_with(poll_ms: u64, tweak: impl FnOnce(&mut Config)) -> Fleet {
        Fleet(CatalogFleet::start(SCHEMA, &["orders"], poll_ms, tweak).await)
    }

    /// The shard index the catalog's map gives tenant `t`, and its state.
    pub async fn placement(&self, t: i64) -> (usize, TenantState) {
        let map = db::load_map(&mut self.catalog_client().await)
            .await
            .unwrap();
        let p = map.locate(&TenantKey::Int(t)).unwrap();
        (p.shard as usize, p.state)
    }

    /// Tenant `t`'s rows on shard `i`, read directly: id -> note.
    pub async fn rows_on(&self, i: usize, t: i64) -> HashMap<i64, String> {
        self.fx
            .connect_shard(i)
            .await
            .query("select id, note from orders where tenant_id = $1", &[&t])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Whether shard `i` has a fence row for tenant `t`.
    pub async fn fenced(&self, i: usize, t: i64) -> bool {
        let c = self.fx.connect_shard(i).await;
        let has: Option<String> = c
            .query_one("select to_regclass('shardgate.fence')::text", &[])
            .await
            .unwrap()
            .get(0);
        has.is_some()
            && c.query_one(
                "select count(*) from shardgate.fence where tenant_id = $1",
                &[&t.to_string()],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
                > 0
    }

    /// Marker rows of job `job` on every shard.
    pub async fn markers(&self, job: i64) -> Vec<usize> {
        let mut out = Vec::new();
        for i in 0..4 {
            let c = self.fx.connect_shard(i).await;
            let has: Option<String> = c
                .query_one("select to_regclass('shardgate.move_marker')::text", &[])
                .await
                .unwrap()
                .get(0);
            if has.is_none() {
                continue;
            }
            let n: i64 = c
                .query_one(
                    "select count(*) from shardgate.move_marker where job_id = $1",
                    &[&job],
                )
                .await
                .unwrap()
                .get(0);
            if n > 0 {
                out.push(i);
            }
        }
        out
    }

    pub async fn job(&self, job: i64) -> (JobState, String) {
        let j = db::jobs::get_job(&self.catalog_client().await, job)
            .await
            .unwrap();
        (j.state, j.phase)
    }
}

/// The state the proxy's map gives `tenant`, from the admin console.
pub async fn state_seen(admin_url: &str, tenant: i64) -> String {
    let Ok((admin, conn)) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await else {
        return String::new();
    };
    tokio::spawn(conn);
    let Ok(rows) = admin.simple_query(&format!("show tenant {tenant}")).await else {
        return String::new();
    };
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("state").map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default()
}

/// Hooks that print progress and also wait, at the gate, until the in-process proxy's admin
/// console shows `tenant` gated.
pub fn hooks_for(fleet: &Fleet, tenant: i64) -> Hooks {
    let (user, password) = shardgate_e2e::ADMIN_USER;
    let admin_url = fleet.proxy.url(user, password, "shardgate");
    Hooks {
        progress: Some(Arc::new(|p: &Progress| eprintln!("{p}"))),
        gate_ack: Some(Arc::new(move |_version| {
            let url = admin_url.clone();
            Box::pin(async move { state_seen(&url, tenant).await == "gated" })
        })),
    }
}

/// What one writer had acknowledged: (tenant, id) -> the last note it wrote there.
#[derive(Default)]
pub struct WriterLog {
    pub acked: HashMap<(i64, i64), String>,
    pub failures: Vec<String>,
    pub writes: u64,
}

pub async fn update(c: &Client, t: i64, id: i64, note: &str) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        "update orders set note = $3 where tenant_id = $1 and id = $2",
        &[&t, &id, &note],
    )
    .await
}

pub async fn load(c: &Client, t: i64, ids: std::ops::RangeInclusive<i64>) {
    let ids: Vec<i64> = ids.collect();
    for chunk in ids.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| format!("({t}, {id}, 'init')"))
            .collect();
        c.batch_execute(&format!(
            "insert into orders (tenant_id, id, note) values {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    }
}
