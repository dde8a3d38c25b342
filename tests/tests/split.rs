//! `shardctl split` end to end: a shard holding 200 tenants of skewed sizes is split while
//! four clients keep writing random tenants of it through the proxy. About half its rows
//! move to the other shard in one job with one gate, no client statement fails, every
//! acknowledged write is on its tenant's home exactly once, and nothing of the move is
//! left behind.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use shardctl::move_cmd::{Hooks, MoveRequest};
use shardctl::split_cmd::{self, SplitBy, SplitOutcome, SplitRequest};
use shardgate_catalog::db::{self, ShardRef};
use shardgate_catalog::{TenantKey, TenantState};
use shardgate_e2e::{CatalogFleet, wait_until};

const SCHEMA: &str = "create table orders (tenant_id bigint not null, id bigint not null, \
                      note text, primary key (tenant_id, id))";
const TENANTS: i64 = 200;
const WRITERS: i64 = 4;

/// Rows loaded for tenant `t`: 2,010 for the first, 20 for the last.
fn loaded(t: i64) -> i64 {
    10 + 2000 / t
}

/// What one writer had acknowledged: (tenant, id) -> note; and what failed.
#[derive(Default)]
struct Log {
    acked: HashMap<(i64, i64), String>,
    failures: Vec<String>,
}

/// Writer `w`: inserts rows of its own into the 200 tenants in turn, and updates every
/// other one, until `stop`.
async fn writer(
    proxy: tokio_postgres::Config,
    w: i64,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> Log {
    let c = common::connect_with(&proxy).await.unwrap();
    let mut log = Log::default();
    let mut n = 0i64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let t = (n * 37 + w) % TENANTS + 1;
        let id = 1_000_000 + w * 100_000 + n;
        let note = format!("w{w} n{n}");
        match c
            .execute(
                "insert into orders (tenant_id, id, note) values ($1, $2, $3)",
                &[&t, &id, &note],
            )
            .await
        {
            Ok(_) => {
                log.acked.insert((t, id), note.clone());
                written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => log.failures.push(format!("insert ({t}, {id}): {e:?}")),
        }
        if n % 2 == 0 {
            let note = format!("{note} updated");
            match c
                .execute(
                    "update orders set note = $3 where tenant_id = $1 and id = $2",
                    &[&t, &id, &note],
                )
                .await
            {
                Ok(1) => {
                    log.acked.insert((t, id), note);
                }
                Ok(k) => log
                    .failures
                    .push(format!("update ({t}, {id}) hit {k} rows")),
                Err(e) => log.failures.push(format!("update ({t}, {id}): {e:?}")),
            }
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_of_200_tenants_splits_about_in_half_under_one_gate() {
    let fleet = CatalogFleet::start(SCHEMA, &["orders"], 200, |_| {}).await;
    let keys: Vec<TenantKey> = (1..=TENANTS).map(TenantKey::Int).collect();
    let mut cat = fleet.catalog_client().await;
    db::set_tenants(&mut cat, &keys, &ShardRef::Id(0), TenantState::Active)
        .await
        .unwrap();
    let s0 = fleet.fx.connect_shard(0).await;
    s0.batch_execute(&format!(
        "insert into orders select t, g, 'init' from generate_series(1, {TENANTS}) t, \
         lateral generate_series(1, 10 + 2000 / t) g"
    ))
    .await
    .unwrap();
    let total: i64 = (1..=TENANTS).map(loaded).sum();

    // The proxy routes all 200 to s0 before anyone writes.
    let c = common::client(&fleet.proxy).await;
    let routed = wait_until(Duration::from_secs(10), || async {
        let mut seen = 0;
        for t in 1..=TENANTS {
            let n: i64 = c
                .query_one("select count(*) from orders where tenant_id = $1", &[&t])
                .await
                .map(|r| r.get(0))
                .unwrap_or(-1);
            seen += n;
        }
        seen == total
    })
    .await;
    assert!(routed, "the proxy did not pick up the placement");

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stop, written) = (stop.clone(), written.clone());
            tokio::spawn(writer(common::proxy_config(&fleet.proxy), w, stop, written))
        })
        .collect();
    let under_way = wait_until(Duration::from_secs(10), || async {
        written.load(Ordering::Relaxed) >= 40
    })
    .await;
    assert!(under_way, "the writers did not get going");

    let req = SplitRequest {
        shard: "s0".into(),
        by: SplitBy::Rows,
        moves: MoveRequest {
            tenants: Vec::new(),
            gate_timeout: Duration::from_secs(10),
            ..MoveRequest::new(String::new(), "s1")
        },
    };
    let outcome = split_cmd::split(&fleet.catalog_url(), &req, &Hooks::default()).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for w in writers {
        logs.push(w.await.unwrap());
    }
    let (plan, moved) = match outcome {
        Ok(SplitOutcome::Split { plan, moved }) => (plan, moved),
        other => panic!("the split did not run: {other:?}"),
    };
    eprintln!(
        "split: {} tenants, {} of {} rows, gate held {} ms",
        plan.moving.len(),
        plan.moving_load,
        plan.total_load,
        moved.gate_hold.as_millis()
    );

    // No client statement failed; the writers did write.
    let failures: Vec<_> = logs.iter().flat_map(|l| l.failures.clone()).collect();
    assert!(failures.is_empty(), "{failures:?}");
    let acked: HashMap<(i64, i64), String> =
        logs.into_iter().flat_map(|l| l.acked.into_iter()).collect();
    assert!(acked.len() > 50, "only {} writes", acked.len());

    // About half the rows, some of the tenants, one job, one gate.
    assert_eq!(plan.tenants_on_shard, TENANTS as usize);
    assert!(plan.total_load >= total);
    let share = plan.moving_load as f64 / plan.total_load as f64;
    assert!((0.45..=0.5).contains(&share), "moving share {share}");
    assert!(plan.moving.len() > 1 && plan.moving.len() < TENANTS as usize);
    let cat = fleet.catalog_client().await;
    let count = |sql: &'static str| {
        let cat = &cat;
        async move { cat.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("select count(*) from shardgate.jobs").await, 1);
    assert_eq!(
        count("select count(*) from shardgate.events where kind = 'move_flipped'").await,
        1
    );

    // Every tenant on its home only, with its loaded rows and every acknowledged write.
    let map = db::load_map(&mut fleet.catalog_client().await)
        .await
        .unwrap();
    let moving: Vec<String> = plan.moving.iter().map(|(t, _)| t.clone()).collect();
    let s1 = fleet.fx.connect_shard(1).await;
    let mut rows_by_shard = [0i64; 2];
    for t in 1..=TENANTS {
        let home = map.locate(&TenantKey::Int(t)).unwrap();
        assert_eq!(home.state, TenantState::Active);
        let want = if moving.contains(&t.to_string()) {
            1
        } else {
            0
        };
        assert_eq!(home.shard, want, "tenant {t}");
        let (here, there) = if want == 1 { (&s1, &s0) } else { (&s0, &s1) };
        let rows: HashMap<i64, String> = here
            .query("select id, note from orders where tenant_id = $1", &[&t])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let elsewhere: i64 = there
            .query_one("select count(*) from orders where tenant_id = $1", &[&t])
            .await
            .unwrap()
            .get(0);
        assert_eq!(elsewhere, 0, "tenant {t} left rows on its old shard");
        let mine: Vec<_> = acked.iter().filter(|((at, _), _)| *at == t).collect();
        assert_eq!(
            rows.len() as i64,
            loaded(t) + mine.len() as i64,
            "tenant {t}"
        );
        for ((_, id), note) in mine {
            assert_eq!(rows.get(id), Some(note), "tenant {t} row {id}");
        }
        rows_by_shard[want as usize] += rows.len() as i64;
    }
    let moved_share = rows_by_shard[1] as f64 / (rows_by_shard[0] + rows_by_shard[1]) as f64;
    assert!(
        (0.4..=0.6).contains(&moved_share),
        "s1 holds {moved_share} of the rows"
    );
    assert_eq!(fleet.move_leftovers().await, Vec::<String>::new());
}
