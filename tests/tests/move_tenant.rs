//! `shardctl move` end to end: a tenant with 10,000 rows moves to another shard while eight
//! clients keep inserting and updating through the proxy, and not one statement fails, not
//! one acknowledged write is lost or duplicated, and nothing of the move is left behind. A
//! move the plan refuses, and a dry run, change nothing; a gate that times out rolls back.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::client;
use shardctl::move_cmd::{self, Hooks, MoveError, MoveOutcome, MoveRequest, Progress};
use shardctl::pg::{PgCluster, PgOptions};
use shardgate_catalog::db::{self, NewShard, jobs::JobState};
use shardgate_catalog::schema::{self, InitOptions};
use shardgate_catalog::{TenantKey, TenantState};
use shardgate_e2e::{Fixture, ProxyHandle, ScratchDir};
use tokio_postgres::Client;

const SCHEMA: &str = "create table orders (tenant_id bigint not null, id bigint not null, \
                      note text, primary key (tenant_id, id))";

/// The tenant that moves.
const T: i64 = 4242;
const T_ROWS: i64 = 10_000;
/// Other tenants written alongside it.
const OTHERS: std::ops::RangeInclusive<i64> = 1..=12;

struct Fleet {
    fx: Fixture,
    catalog: PgCluster,
    _dir: ScratchDir,
    proxy: ProxyHandle,
}

impl Fleet {
    /// 4 shards (wal_level = logical) registered in a catalog, and a proxy that reads its
    /// map from there.
    async fn start(poll_ms: u64) -> Fleet {
        let fx = Fixture::builder().shards(4).without_proxy().start().await;
        for i in 0..4 {
            fx.connect_shard(i)
                .await
                .batch_execute(SCHEMA)
                .await
                .unwrap();
        }
        let dir = ScratchDir::new("catalog");
        let catalog = PgCluster::start(PgOptions {
            name: "catalog".into(),
            base_dir: dir.path().to_owned(),
            superuser_password: "cat".into(),
            ..PgOptions::default()
        })
        .await
        .unwrap();
        catalog.create_database("shardgate").await.unwrap();
        let url = catalog.url("postgres", "cat", "shardgate");
        let mut c = db::connect(&url).await.unwrap();
        schema::migrate(&mut c, InitOptions::default())
            .await
            .unwrap();
        for spec in &fx.config.shards {
            db::add_shard(&mut c, &NewShard::new(spec.name.clone(), spec.url.clone()))
                .await
                .unwrap();
        }
        let mut config = fx.config.clone();
        config.shards.clear();
        config.catalog = Some(shardgate::config::CatalogConfig { url, poll_ms });
        config.sharding.sharded_tables = vec!["orders".into()];
        let proxy = shardgate_e2e::start_proxy(config).await;
        Fleet {
            fx,
            catalog,
            _dir: dir,
            proxy,
        }
    }

    fn catalog_url(&self) -> String {
        self.catalog.url("postgres", "cat", "shardgate")
    }

    async fn catalog_client(&self) -> Client {
        db::connect(&self.catalog_url()).await.unwrap()
    }

    /// The shard index the catalog's map gives tenant `t`, and its state.
    async fn placement(&self, t: i64) -> (usize, TenantState) {
        let map = db::load_map(&mut self.catalog_client().await)
            .await
            .unwrap();
        let p = map.locate(&TenantKey::Int(t)).unwrap();
        (p.shard as usize, p.state)
    }

    /// Tenant `t`'s rows on shard `i`, read directly: id -> note.
    async fn rows_on(&self, i: usize, t: i64) -> HashMap<i64, String> {
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

    /// Publications, subscriptions and slots named sg_move_% on every shard.
    async fn move_leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..4 {
            let c = self.fx.connect_shard(i).await;
            for r in c
                .query(
                    "select 'publication ' || pubname from pg_publication \
                     where pubname like 'sg\\_move\\_%' \
                     union all select 'subscription ' || subname from pg_subscription \
                     where subname like 'sg\\_move\\_%' \
                     union all select 'slot ' || slot_name from pg_replication_slots \
                     where slot_name like 'sg\\_move\\_%'",
                    &[],
                )
                .await
                .unwrap()
            {
                out.push(format!("s{i}: {}", r.get::<_, String>(0)));
            }
        }
        out
    }
}

/// The state the proxy's map gives `tenant`, from the admin console.
async fn state_seen(admin_url: &str, tenant: i64) -> String {
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

/// The proxy has no catalog heartbeat on this branch: the gate also waits until its admin
/// console shows the tenant gated.
fn hooks(fleet: &Fleet) -> Hooks {
    let (user, password) = shardgate_e2e::ADMIN_USER;
    let admin_url = fleet.proxy.url(user, password, "shardgate");
    Hooks {
        progress: Some(Arc::new(|p: &Progress| eprintln!("{p}"))),
        gate_ack: Some(Arc::new(move |_version| {
            let url = admin_url.clone();
            Box::pin(async move { state_seen(&url, T).await == "gated" })
        })),
    }
}

/// What one writer had acknowledged: (tenant, id) -> the last note it wrote there.
#[derive(Default)]
struct WriterLog {
    acked: HashMap<(i64, i64), String>,
    failures: Vec<String>,
    writes: u64,
}

/// Writer `w`: inserts and updates rows of T and of other tenants until `stop`, each id
/// range its own so the last acknowledged value of every row is known.
async fn writer(proxy: tokio_postgres::Config, w: i64, stop: Arc<AtomicBool>) -> WriterLog {
    let c = common::connect_with(&proxy).await.unwrap();
    let mut log = WriterLog::default();
    let mut mine: Vec<i64> = Vec::new();
    let base = 1_000_000 + w * 100_000;
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let note = format!("w{w}-{n}");
        let (tenant, id, result) = match n % 4 {
            0 => {
                let id = base + n;
                let r = c
                    .execute(
                        "insert into orders (tenant_id, id, note) values ($1, $2, $3)",
                        &[&T, &id, &note],
                    )
                    .await;
                if r.is_ok() {
                    mine.push(id);
                }
                (T, id, r)
            }
            1 => {
                // The loaded rows whose id is w + 1 modulo 8 are this writer's to update.
                let id = ((n / 4) * 8 + w) % T_ROWS + 1;
                let r = update(&c, T, id, &note).await;
                (T, id, r)
            }
            2 => {
                let t = *OTHERS.start() + n % OTHERS.clone().count() as i64;
                let id = base + n;
                let r = c
                    .execute(
                        "insert into orders (tenant_id, id, note) values ($1, $2, $3)",
                        &[&t, &id, &note],
                    )
                    .await;
                (t, id, r)
            }
            _ => match mine.last() {
                Some(&id) => (T, id, update(&c, T, id, &note).await),
                None => continue,
            },
        };
        match result {
            Ok(1) => {
                log.acked.insert((tenant, id), note);
                log.writes += 1;
            }
            Ok(k) => log
                .failures
                .push(format!("({tenant}, {id}): {k} rows affected")),
            Err(e) => log.failures.push(format!("({tenant}, {id}): {e:?}")),
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    log
}

async fn update(c: &Client, t: i64, id: i64, note: &str) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        "update orders set note = $3 where tenant_id = $1 and id = $2",
        &[&t, &id, &note],
    )
    .await
}

async fn load(c: &Client, t: i64, ids: std::ops::RangeInclusive<i64>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_moves_under_writes_with_no_failed_lost_or_duplicated_write() {
    let fleet = Fleet::start(200).await;
    let (source, state) = fleet.placement(T).await;
    assert_eq!(state, TenantState::Active);
    let target = (source + 1) % 4;
    let c = client(&fleet.proxy).await;
    load(&c, T, 1..=T_ROWS).await;
    for t in OTHERS {
        load(&c, t, 1..=50).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let proxy = common::proxy_config(&fleet.proxy);
            let stop = stop.clone();
            tokio::spawn(writer(proxy, w, stop))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let req = MoveRequest::new(T.to_string(), format!("s{target}"));
    let outcome = common::within(
        120,
        "the move",
        move_cmd::run(&fleet.catalog_url(), &req, &hooks(&fleet)),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: {e}", e.code()));
    // Writes go on after the flip, now to the target.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for w in writers {
        logs.push(w.await.unwrap());
    }

    let MoveOutcome::Moved(moved) = outcome else {
        panic!("not moved: {outcome:?}");
    };
    let failures: Vec<&String> = logs.iter().flat_map(|l| &l.failures).collect();
    let writes: u64 = logs.iter().map(|l| l.writes).sum();
    assert!(
        failures.is_empty(),
        "{} of {writes} statements failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!(
        "moved tenant {T} s{source} -> s{target} under {writes} writes; gate held {} ms",
        moved.gate_hold.as_millis()
    );
    let steps: String = fleet
        .catalog_client()
        .await
        .query_one(
            "select detail->>'steps_ms' from shardgate.events \
             where kind = 'move_flipped' and job_id = $1",
            &[&moved.job],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("gate hold by step (ms): {steps}");
    assert!(
        moved.gate_hold < Duration::from_secs(2),
        "gate held {:?}",
        moved.gate_hold
    );

    // Every acknowledged write of T, exactly once, with its last value, on the target only.
    let mut expected: HashMap<(i64, i64), String> = (1..=T_ROWS)
        .map(|id| ((T, id), "init".to_owned()))
        .chain(OTHERS.flat_map(|t| (1..=50).map(move |id| ((t, id), "init".to_owned()))))
        .collect();
    for l in &logs {
        expected.extend(l.acked.iter().map(|(k, v)| (*k, v.clone())));
    }
    let want_t: HashMap<i64, String> = expected
        .iter()
        .filter(|((t, _), _)| *t == T)
        .map(|((_, id), v)| (*id, v.clone()))
        .collect();
    let on_target = fleet.rows_on(target, T).await;
    let wrong: Vec<_> = want_t
        .iter()
        .filter(|(id, v)| on_target.get(id) != Some(v))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "rows wrong or missing on the target: {wrong:?}"
    );
    assert_eq!(on_target.len(), want_t.len(), "extra rows on the target");
    assert!(
        fleet.rows_on(source, T).await.is_empty(),
        "rows left on the source"
    );
    for i in (0..4).filter(|&i| i != target) {
        assert!(
            fleet.rows_on(i, T).await.is_empty(),
            "tenant {T} rows on s{i}"
        );
    }
    // Other tenants lost nothing either.
    for t in OTHERS {
        let rows: HashMap<i64, String> = c
            .query("select id, note from orders where tenant_id = $1", &[&t])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let want: HashMap<i64, String> = expected
            .iter()
            .filter(|((tt, _), _)| *tt == t)
            .map(|((_, id), v)| (*id, v.clone()))
            .collect();
        assert_eq!(rows, want, "tenant {t}");
    }

    assert_eq!(fleet.move_leftovers().await, Vec::<String>::new());
    assert_eq!(fleet.placement(T).await, (target, TenantState::Active));
    let job = db::jobs::get_job(&fleet.catalog_client().await, moved.job)
        .await
        .unwrap();
    assert_eq!((job.state, job.phase.as_str()), (JobState::Done, "done"));
    // The source keeps the fence: a write that bypasses the proxy fails loudly there.
    let e = fleet
        .fx
        .connect_shard(source)
        .await
        .execute(
            "insert into orders (tenant_id, id, note) values ($1, 1, 'stale')",
            &[&T],
        )
        .await
        .expect_err("the fence rejects the moved tenant's writes on the source");
    assert_eq!(
        common::db_error(&e).code().code(),
        move_cmd::shard::FENCE_SQLSTATE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_and_a_refused_plan_change_nothing() {
    let fleet = Fleet::start(200).await;
    let (source, _) = fleet.placement(T).await;
    let (good, bad) = ((source + 1) % 4, (source + 2) % 4);
    let c = client(&fleet.proxy).await;
    load(&c, T, 1..=300).await;
    fleet
        .fx
        .connect_shard(bad)
        .await
        .batch_execute("drop table orders")
        .await
        .unwrap();
    let cat = fleet.catalog_client().await;
    let version = db::map_version(&cat).await.unwrap();
    let url = fleet.catalog_url();

    let dry = MoveRequest {
        dry_run: true,
        ..MoveRequest::new(T.to_string(), format!("s{good}"))
    };
    match move_cmd::run(&url, &dry, &Hooks::default()).await.unwrap() {
        MoveOutcome::Planned(plan) => {
            assert_eq!(plan.tables, vec![("public.orders".to_owned(), 300)]);
        }
        other => panic!("a dry run moved: {other:?}"),
    }

    let req = MoveRequest::new(T.to_string(), format!("s{bad}"));
    let e = move_cmd::run(&url, &req, &Hooks::default())
        .await
        .expect_err("a target without the table is refused");
    assert!(matches!(e, MoveError::SchemaMismatch(_)), "{e:?}");
    assert_eq!(e.code(), "E_SCHEMA_MISMATCH");
    assert!(e.to_string().contains("orders"), "{e}");

    // Nothing changed: map, jobs, shards.
    assert_eq!(db::map_version(&cat).await.unwrap(), version);
    assert_eq!(db::jobs::list_jobs(&cat, true).await.unwrap(), vec![]);
    assert_eq!(fleet.placement(T).await, (source, TenantState::Active));
    assert_eq!(fleet.rows_on(source, T).await.len(), 300);
    assert!(fleet.rows_on(good, T).await.is_empty());
    assert_eq!(fleet.move_leftovers().await, Vec::<String>::new());

    // A gate no proxy acknowledges: rolled back after --gate-timeout, the tenant active on
    // its source again, the copy gone, the job failed; its clients write as before.
    let never = Hooks {
        progress: None,
        gate_ack: Some(Arc::new(|_| Box::pin(async { false }))),
    };
    let req = MoveRequest {
        gate_timeout: Duration::from_millis(800),
        ..MoveRequest::new(T.to_string(), format!("s{good}"))
    };
    let e = move_cmd::run(&url, &req, &never)
        .await
        .expect_err("an unacknowledged gate times out");
    assert_eq!(e.code(), "E_GATE_TIMEOUT", "{e}");
    assert_eq!(fleet.placement(T).await, (source, TenantState::Active));
    assert_eq!(fleet.move_leftovers().await, Vec::<String>::new());
    assert!(fleet.rows_on(good, T).await.is_empty(), "the copy was left");
    let jobs = db::jobs::list_jobs(&cat, true).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Failed);
    assert!(
        jobs[0]
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("E_GATE_TIMEOUT")
    );
    common::within(
        15,
        "a write after the rollback",
        c.execute(
            "insert into orders (tenant_id, id, note) values ($1, 301, 'after')",
            &[&T],
        ),
    )
    .await
    .unwrap();
    assert_eq!(fleet.rows_on(source, T).await.len(), 301);
}
