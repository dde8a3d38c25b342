//! `shardctl move` end to end: a tenant with 100,000 rows moves to another shard while eight
//! clients keep inserting and updating through the proxy, and not one statement fails, not
//! one acknowledged write is lost or duplicated, and nothing of the move is left behind. A
//! move the plan refuses, and a dry run, change nothing; a gate that times out rolls back.
//! Moves killed and resumed or aborted are in `move_resume.rs`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::client;
use common::moves::{Fleet, WriterLog, hooks_for, load, update};
use shardctl::move_cmd::{self, Hooks, MoveError, MoveOutcome, MoveRequest};
use shardgate_catalog::TenantState;
use shardgate_catalog::db::{self, jobs::JobState};

/// The tenant that moves.
const T: i64 = 4242;
const T_ROWS: i64 = 100_000;
/// Other tenants written alongside it.
const OTHERS: std::ops::RangeInclusive<i64> = 1..=12;

/// Besides the proxy's catalog heartbeat, the gate also waits until its admin console
/// shows the tenant gated.
fn hooks(fleet: &Fleet) -> Hooks {
    hooks_for(fleet, T)
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
