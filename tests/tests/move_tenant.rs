//! `shardctl move` end to end: a tenant with 10,000 rows moves to another shard while eight
//! clients keep inserting and updating through the proxy, and not one statement fails, not
//! one acknowledged write is lost or duplicated, and nothing of the move is left behind. A
//! move the plan refuses, and a dry run, change nothing; a gate that times out rolls back.
//! A move stopped as if killed after any phase before its flip is finished by `--resume`
//! or undone by `--abort`, under writes, losing nothing; after the flip `--abort` refuses.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::client;
use common::moves::{Fleet, WriterLog, hooks_for, load, update};
use shardctl::move_cmd::{self, Hooks, MoveError, MoveOutcome, MoveRequest, Phase};
use shardgate_catalog::TenantState;
use shardgate_catalog::db::{self, jobs::JobState};

/// The tenant that moves.
const T: i64 = 4242;
const T_ROWS: i64 = 10_000;
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

/// Rows of each tenant in the kill-and-resume cases.
const K_ROWS: i64 = 500;

/// Writer `w` of tenant `t`: inserts rows of its own and updates them (and loaded rows)
/// through the proxy until `stop`.
async fn tenant_writer(
    proxy: tokio_postgres::Config,
    t: i64,
    w: i64,
    stop: Arc<AtomicBool>,
) -> WriterLog {
    let c = common::connect_with(&proxy).await.unwrap();
    let mut log = WriterLog::default();
    let base = 1_000_000 + w * 100_000;
    let mut last: Option<i64> = None;
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let note = format!("w{w}-{n}");
        let (id, result) = match (n % 3, last) {
            (0, Some(id)) => (id, update(&c, t, id, &note).await),
            (1, _) => {
                let id = (n * 2 + w) % K_ROWS + 1;
                (id, update(&c, t, id, &note).await)
            }
            _ => {
                let id = base + n;
                let r = c
                    .execute(
                        "insert into orders (tenant_id, id, note) values ($1, $2, $3)",
                        &[&t, &id, &note],
                    )
                    .await;
                if r.is_ok() {
                    last = Some(id);
                }
                (id, r)
            }
        };
        match result {
            Ok(1) => {
                log.acked.insert((t, id), note);
                log.writes += 1;
            }
            Ok(k) => log.failures.push(format!("({t}, {id}): {k} rows affected")),
            Err(e) => log.failures.push(format!("({t}, {id}): {e:?}")),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log
}

/// Writers on one tenant, started and stopped together.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<WriterLog>>,
}

impl Writers {
    fn start(fleet: &Fleet, t: i64, n: i64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|w| {
                let proxy = common::proxy_config(&fleet.proxy);
                tokio::spawn(tenant_writer(proxy, t, w, stop.clone()))
            })
            .collect();
        Writers { stop, tasks }
    }

    /// Stops them; every statement must have succeeded. Returns what tenant `t` must hold:
    /// the loaded rows with every acknowledged write's last value.
    async fn finish(self, t: i64) -> HashMap<i64, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut want: HashMap<i64, String> = (1..=K_ROWS).map(|id| (id, "init".into())).collect();
        let (mut failures, mut writes) = (Vec::new(), 0);
        for task in self.tasks {
            let log = task.await.unwrap();
            writes += log.writes;
            failures.extend(log.failures);
            want.extend(log.acked.into_iter().map(|((_, id), v)| (id, v)));
        }
        assert!(
            failures.is_empty(),
            "tenant {t}: {} of {writes} statements failed, first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        eprintln!("tenant {t}: {writes} acknowledged writes");
        want
    }
}

/// What `jobs.phase` shows for a job killed right after `phase`.
fn recorded(phase: Phase) -> &'static str {
    match phase {
        // The job is created in its first working phase.
        Phase::Plan => "copy",
        // The flip's catalog commit comes before the job records `cleanup`.
        p => p.as_str(),
    }
}

impl Fleet {
    /// The tenant moved: on the target only, active, with exactly `want`; nothing of the
    /// move left anywhere; the job done.
    async fn assert_moved(&self, t: i64, job: i64, target: usize, want: &HashMap<i64, String>) {
        assert_eq!(self.placement(t).await, (target, TenantState::Active));
        let on_target = self.rows_on(target, t).await;
        assert_eq!(
            on_target.len(),
            want.len(),
            "tenant {t}: rows on the target"
        );
        assert!(on_target == *want, "tenant {t}: rows differ on the target");
        for i in (0..4).filter(|&i| i != target) {
            assert!(
                self.rows_on(i, t).await.is_empty(),
                "tenant {t} rows on s{i}"
            );
        }
        assert_eq!(self.move_leftovers().await, Vec::<String>::new());
        assert_eq!(self.markers(job).await, Vec::<usize>::new(), "marker rows");
        assert_eq!(self.job(job).await, (JobState::Done, "done".into()));
    }

    /// The tenant is back as before the move: on the source only, active, with exactly
    /// `want`, unfenced; nothing of the move left; the job aborted.
    async fn assert_restored(&self, t: i64, job: i64, source: usize, want: &HashMap<i64, String>) {
        assert_eq!(self.placement(t).await, (source, TenantState::Active));
        let on_source = self.rows_on(source, t).await;
        assert_eq!(
            on_source.len(),
            want.len(),
            "tenant {t}: rows on the source"
        );
        assert!(on_source == *want, "tenant {t}: rows differ on the source");
        for i in (0..4).filter(|&i| i != source) {
            assert!(
                self.rows_on(i, t).await.is_empty(),
                "tenant {t} rows on s{i}"
            );
        }
        assert!(!self.fenced(source, t).await, "tenant {t} still fenced");
        assert_eq!(self.move_leftovers().await, Vec::<String>::new());
        assert_eq!(self.markers(job).await, Vec::<usize>::new(), "marker rows");
        assert_eq!(self.job(job).await.0, JobState::Aborted);
    }

    /// Loads tenant `t` and moves it to the next shard, stopped right after `phase` as if
    /// killed there, under `writers` writers; checks the job and the shards are left as
    /// a kill leaves them. Returns (job, source, target, writers).
    async fn interrupted_move(
        &self,
        t: i64,
        phase: Phase,
        writers: i64,
    ) -> (i64, usize, usize, Writers) {
        let (source, state) = self.placement(t).await;
        assert_eq!(state, TenantState::Active);
        let target = (source + 1) % 4;
        load(&client(&self.proxy).await, t, 1..=K_ROWS).await;
        let w = Writers::start(self, t, writers);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let req = MoveRequest::new(t.to_string(), format!("s{target}"));
        let e = common::within(
            60,
            "the interrupted move",
            move_cmd::run_stopping_after(&self.catalog_url(), &req, &hooks_for(self, t), phase),
        )
        .await
        .expect_err("the move stops");
        let MoveError::Interrupted { job, phase: at } = e else {
            panic!("tenant {t}, stop after {phase}: {}: {e}", e.code());
        };
        assert_eq!(at, phase);
        eprintln!("tenant {t}: job {job} stopped after {phase}");
        assert_eq!(
            self.job(job).await,
            (JobState::Running, recorded(phase).into())
        );
        // What a kill leaves: the copy's objects from the copy on, the gate and the fence
        // from the gate on, the flip from the flip on.
        let leftovers = self.move_leftovers().await;
        let name = format!("sg_move_{job}");
        let mut expected = match phase {
            Phase::Plan => vec![],
            _ => vec![
                format!("s{source}: publication {name}"),
                format!("s{source}: slot {name}"),
                format!("s{target}: subscription {name}"),
            ],
        };
        let mut leftovers = leftovers;
        leftovers.sort();
        expected.sort();
        assert_eq!(leftovers, expected, "after {phase}");
        let (shard, tenant_state) = self.placement(t).await;
        match phase {
            Phase::Plan | Phase::Copy | Phase::CatchUp => {
                assert_eq!((shard, tenant_state), (source, TenantState::Active));
                assert!(!self.fenced(source, t).await);
            }
            Phase::Gate | Phase::FinalCatchUp | Phase::Verify => {
                assert_eq!((shard, tenant_state), (source, TenantState::Gated));
                assert!(self.fenced(source, t).await);
            }
            _ => {
                assert_eq!((shard, tenant_state), (target, TenantState::Active));
                assert!(self.fenced(source, t).await);
            }
        }
        (job, source, target, w)
    }
}

/// The phases a move can be killed in before its flip, each as persisted.
const BEFORE_FLIP: [Phase; 6] = [
    Phase::Plan,
    Phase::Copy,
    Phase::CatchUp,
    Phase::Gate,
    Phase::FinalCatchUp,
    Phase::Verify,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_killed_before_its_flip_is_resumed_or_aborted_losing_nothing() {
    let fleet = Fleet::start(200).await;
    let url = fleet.catalog_url();
    for (i, phase) in BEFORE_FLIP.into_iter().enumerate() {
        // Killed, then resumed: the move completes.
        let t = 7000 + i as i64 * 2;
        let (job, _, target, writers) = fleet.interrupted_move(t, phase, 2).await;
        let outcome = common::within(
            60,
            "the resume",
            move_cmd::resume(&url, job, &hooks_for(&fleet, t)),
        )
        .await
        .unwrap_or_else(|e| panic!("resuming after {phase}: {}: {e}", e.code()));
        assert!(
            matches!(outcome, MoveOutcome::Moved(ref m) if m.job == job),
            "{outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let want = writers.finish(t).await;
        fleet.assert_moved(t, job, target, &want).await;

        // Killed, then aborted: the fleet is as before, and the tenant's writes go on.
        let t = t + 1;
        let (job, source, _, writers) = fleet.interrupted_move(t, phase, 2).await;
        let outcome = common::within(
            60,
            "the abort",
            move_cmd::abort(&url, job, &Hooks::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("aborting after {phase}: {}: {e}", e.code()));
        assert!(
            matches!(outcome, MoveOutcome::Aborted { job: j, .. } if j == job),
            "{outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut want = writers.finish(t).await;
        common::within(
            15,
            "a write after the abort",
            client(&fleet.proxy).await.execute(
                "insert into orders (tenant_id, id, note) values ($1, 999, 'after')",
                &[&t],
            ),
        )
        .await
        .unwrap();
        want.insert(999, "after".into());
        fleet.assert_restored(t, job, source, &want).await;
        // Aborting twice is refused, and changes nothing.
        let e = move_cmd::abort(&url, job, &Hooks::default())
            .await
            .expect_err("an aborted job cannot be aborted again");
        assert!(e.to_string().contains("already aborted"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_killed_after_its_flip_refuses_abort_and_resumes() {
    let fleet = Fleet::start(200).await;
    let url = fleet.catalog_url();
    for (i, phase) in [Phase::Flip, Phase::Cleanup].into_iter().enumerate() {
        let t = 8000 + i as i64;
        let (job, source, target, writers) = fleet.interrupted_move(t, phase, 2).await;
        let refusal = format!(
            "job {job} has flipped: tenant {t} lives on s{target} now; to undo, move it back \
             with `shardctl move --tenant {t} --to s{source}`"
        );
        let e = move_cmd::abort(&url, job, &Hooks::default())
            .await
            .expect_err("abort after the flip");
        assert_eq!((e.code(), e.to_string()), ("E_INVALID", refusal.clone()));
        assert_eq!(e.exit_code(), 2);
        // The refusal changed nothing.
        assert_eq!(
            fleet.job(job).await,
            (JobState::Running, recorded(phase).into())
        );
        assert_eq!(fleet.placement(t).await, (target, TenantState::Active));

        common::within(
            60,
            "the resume",
            move_cmd::resume(&url, job, &hooks_for(&fleet, t)),
        )
        .await
        .unwrap_or_else(|e| panic!("resuming after {phase}: {}: {e}", e.code()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let want = writers.finish(t).await;
        fleet.assert_moved(t, job, target, &want).await;
        // A finished move cannot be aborted either.
        let e = move_cmd::abort(&url, job, &Hooks::default())
            .await
            .expect_err("abort of a done move");
        assert_eq!(e.to_string(), refusal);
    }

    // Killed in the copy, killed again while its resume is gated, then aborted: a second
    // kill leaves no more behind than the first.
    let t = 8010;
    let (job, source, _, writers) = fleet.interrupted_move(t, Phase::Copy, 2).await;
    let e = move_cmd::resume_stopping_after(&url, job, &hooks_for(&fleet, t), Phase::Verify)
        .await
        .expect_err("the resume stops too");
    assert!(
        matches!(e, MoveError::Interrupted { job: j, phase: Phase::Verify } if j == job),
        "{e:?}"
    );
    assert_eq!(fleet.job(job).await, (JobState::Running, "verify".into()));
    assert_eq!(fleet.placement(t).await.1, TenantState::Gated);
    // While another shardctl still runs the job (holds its catalog lock), abort refuses.
    let other = fleet.catalog_client().await;
    other
        .execute(
            "select pg_advisory_lock(1397181782, $1::int4)",
            &[&(job as i32)],
        )
        .await
        .unwrap();
    let e = move_cmd::abort(&url, job, &Hooks::default())
        .await
        .expect_err("abort under a live run");
    assert!(
        e.to_string().contains("being run by another shardctl"),
        "{e}"
    );
    assert_eq!(fleet.job(job).await, (JobState::Running, "verify".into()));
    drop(other);
    move_cmd::abort(&url, job, &Hooks::default())
        .await
        .unwrap_or_else(|e| panic!("aborting: {}: {e}", e.code()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let want = writers.finish(t).await;
    fleet.assert_restored(t, job, source, &want).await;
}
