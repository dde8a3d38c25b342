//! `shardctl move` killed and picked up again: a move stopped as if killed after any phase
//! before its flip is finished by `--resume` or undone by `--abort`, under writes, losing
//! nothing; after the flip `--abort` refuses and `--resume` finishes; a second kill leaves
//! no more behind than the first, and a job another `shardctl` still runs cannot be
//! aborted. The uninterrupted move is in `move_tenant.rs`; a killed proxy in
//! `move_proxy_kill.rs`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::client;
use common::moves::{Fleet, WriterLog, hooks_for, load, update};
use shardctl::move_cmd::{self, Hooks, MoveError, MoveOutcome, MoveRequest, Phase};
use shardgate_catalog::TenantState;
use shardgate_catalog::db::jobs::JobState;

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
        // The verification's change-tracking slot, from the gate on.
        if phase >= Phase::Gate {
            expected.push(format!("s{source}: slot {name}_verify"));
        }
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
