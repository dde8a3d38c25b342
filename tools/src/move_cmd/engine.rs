//! The move's phases. Each is idempotent, so a resumed job simply runs its phase again;
//! everything before the flip can be rolled back with the source untouched, everything
//! after it can only go forward (or be moved back by another move).

use std::time::{Duration, Instant};

use serde_json::json;
use shardgate_catalog::db::{self, ShardRef, jobs as catalog_jobs, jobs::JobState};
use shardgate_catalog::{ShardMap, ShardState, TenantKey, TenantState};
use tokio_postgres::Client;

use super::shard::{Shard, Table, object_name};
use super::teardown::{cleanup, rollback};
use super::verify::Tracker;
use super::{Hooks, MoveError, MoveOutcome, MoveRequest, Moved, Phase, Plan, Progress, Spec};

/// How often waits poll the shards and the catalog.
const POLL: Duration = Duration::from_millis(20);
/// How often the waits inside the gate poll: each tick there is hold time.
const GATE_POLL: Duration = Duration::from_millis(4);
/// How often progress is printed during the copy and the catch-up.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// SQLSTATE lock_not_available: the fence could not get its locks in time.
const LOCK_NOT_AVAILABLE: &str = "55P03";
/// First half of the catalog advisory lock a `shardctl` holds on the job it runs ("SGMV").
const JOB_LOCK_CLASS: i32 = 0x5347_4d56;
/// How long a resume or abort waits for the job's lock: a killed run's session may take a
/// moment to go away.
const JOB_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Everything a running job works with.
pub(super) struct Ctx<'h> {
    pub(super) catalog: Client,
    pub(super) hooks: &'h Hooks,
    pub(super) spec: Spec,
    /// The tenants, parsed (one, or a group under one gate).
    pub(super) keys: Vec<TenantKey>,
    pub(super) job: i64,
    pub(super) tables: Vec<Table>,
    pub(super) source: Shard,
    pub(super) target: Shard,
    /// Test hook: stop right after this phase, as if killed (see [`run_stopping_after`]).
    stop_after: Option<Phase>,
}

impl Ctx<'_> {
    /// Where a test may stop the move: `Err(Interrupted)` if it asked to stop after
    /// `phase`. The caller returns it untouched, so nothing is cleaned up or rolled back.
    fn checkpoint(&self, phase: Phase) -> Result<(), MoveError> {
        match self.stop_after == Some(phase) {
            true => Err(MoveError::Interrupted {
                job: self.job,
                phase,
            }),
            false => Ok(()),
        }
    }

    pub(super) fn name(&self) -> String {
        object_name(self.job)
    }

    pub(super) async fn event(
        &self,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<(), MoveError> {
        catalog_jobs::record_event(
            &self.catalog,
            self.job,
            kind,
            self.spec.single(),
            &detail.to_string(),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn enter(&self, phase: Phase) -> Result<(), MoveError> {
        catalog_jobs::set_phase(&self.catalog, self.job, phase.as_str()).await?;
        self.hooks.emit(Progress::Phase {
            job: self.job,
            phase,
        });
        Ok(())
    }
}

/// `shardctl move --tenant ID --to NAME [--dry-run]`.
pub async fn run(
    catalog_url: &str,
    req: &MoveRequest,
    hooks: &Hooks,
) -> Result<MoveOutcome, MoveError> {
    run_inner(catalog_url, req, hooks, None).await
}

/// Test-only: [`run`], stopped right after `phase` as if `shardctl` had been killed there.
///
/// It returns [`MoveError::Interrupted`] with the job's id once `phase` is done and
/// persisted, leaving the job `running` in that phase and the publication, subscription,
/// slot, marker, gate and fence exactly as they are (nothing is rolled back or cleaned up,
/// the connections are simply dropped). `Phase::Plan` stops once the job exists;
/// `Phase::Flip` once the catalog has flipped but before the job records `cleanup`;
/// `Phase::Cleanup` once it has recorded `cleanup` but before the cleanup. Phases the run
/// does not reach (a dry run, a failure first) never stop it.
#[doc(hidden)]
pub async fn run_stopping_after(
    catalog_url: &str,
    req: &MoveRequest,
    hooks: &Hooks,
    phase: Phase,
) -> Result<MoveOutcome, MoveError> {
    run_inner(catalog_url, req, hooks, Some(phase)).await
}

async fn run_inner(
    catalog_url: &str,
    req: &MoveRequest,
    hooks: &Hooks,
    stop_after: Option<Phase>,
) -> Result<MoveOutcome, MoveError> {
    let mut catalog = db::connect(catalog_url).await?;
    let key_type = db::load_settings(&catalog).await?.key_type;
    let mut keys = req
        .tenants
        .iter()
        .map(|t| key_type.parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    keys.sort();
    keys.dedup();
    let map = db::load_map(&mut catalog).await?;
    let from = common_source(&map, &keys)?;
    let to = super::resolve_shard(&catalog, &req.to).await?;
    let (from_info, to_info) = (shard_info(&map, from)?, shard_info(&map, to)?);
    if to == from {
        return Err(MoveError::Invalid(format!(
            "tenant {} already lives on {}",
            keys[0], to_info.name
        )));
    }
    if to_info.state != ShardState::Active {
        return Err(MoveError::Invalid(format!(
            "target shard {} is {}, not active",
            to_info.name, to_info.state
        )));
    }
    let spec = Spec {
        tenants: keys.iter().map(ToString::to_string).collect(),
        from: from_info.id,
        from_name: from_info.name.clone(),
        to,
        to_name: to_info.name.clone(),
        keep_source: req.keep_source,
        max_lag: req.max_lag,
        gate_timeout: req.gate_timeout,
        key_column: req.key_column.clone(),
    };
    let source = Shard::connect(&from_info.name, &from_info.url).await?;
    let target = Shard::connect(&to_info.name, &to_info.url).await?;
    let tables = check_shards(&source, &target, &spec.key_column).await?;
    let mut plan = Plan {
        spec: spec.clone(),
        tables: Vec::new(),
        map_version: map.version(),
    };
    for t in &tables {
        let on_target = target.count(t, &spec.key_column, &keys).await?;
        if on_target > 0 {
            return Err(MoveError::Invalid(format!(
                "target {} already holds {on_target} rows of tenant {} in {}; \
                 delete them first (a move never merges)",
                target.name,
                spec.label(),
                t.display_name()
            )));
        }
        let rows = source.count(t, &spec.key_column, &keys).await?;
        plan.tables.push((t.display_name(), rows));
    }
    if req.dry_run {
        return Ok(MoveOutcome::Planned(plan));
    }
    let job = catalog_jobs::create_job(
        &mut catalog,
        "move",
        &spec.tenants,
        &spec.to_json().to_string(),
        Phase::Copy.as_str(),
    )
    .await?;
    lock_job(&catalog, job).await?;
    let ctx = Ctx {
        catalog,
        hooks,
        spec,
        keys,
        job,
        tables,
        source,
        target,
        stop_after,
    };
    ctx.checkpoint(Phase::Plan)?;
    drive(ctx, Phase::Copy, plan).await
}

/// `shardctl move --resume JOB`: continues a job from its persisted phase.
pub async fn resume(catalog_url: &str, job: i64, hooks: &Hooks) -> Result<MoveOutcome, MoveError> {
    resume_inner(catalog_url, job, hooks, None).await
}

/// Test-only: [`resume`], stopped right after `phase` as [`run_stopping_after`] stops.
#[doc(hidden)]
pub async fn resume_stopping_after(
    catalog_url: &str,
    job: i64,
    hooks: &Hooks,
    phase: Phase,
) -> Result<MoveOutcome, MoveError> {
    resume_inner(catalog_url, job, hooks, Some(phase)).await
}

async fn resume_inner(
    catalog_url: &str,
    job: i64,
    hooks: &Hooks,
    stop_after: Option<Phase>,
) -> Result<MoveOutcome, MoveError> {
    let (ctx, phase) = reopen(catalog_url, job, hooks, stop_after).await?;
    if ctx_state_blocks_resume(&ctx, phase).await? {
        return Err(MoveError::Invalid(format!(
            "job {job} is not resumable (see `shardctl jobs --all`)"
        )));
    }
    // The gate's deadline does not survive a restart: a job stopped anywhere between the
    // gate and the flip goes through the whole gate again (each step is idempotent).
    let mut from = match phase {
        Phase::Plan => Phase::Copy,
        Phase::FinalCatchUp | Phase::Verify => Phase::Gate,
        p => p,
    };
    if from == Phase::Flip {
        from = match flipped_already(&ctx).await? {
            true => Phase::Cleanup,
            false => Phase::Gate,
        };
    }
    let plan = Plan {
        spec: ctx.spec.clone(),
        tables: ctx.tables.iter().map(|t| (t.display_name(), 0)).collect(),
        map_version: 0,
    };
    drive(ctx, from, plan).await
}

/// A job may be resumed while running, or after a failure in cleanup (post-flip).
async fn ctx_state_blocks_resume(ctx: &Ctx<'_>, phase: Phase) -> Result<bool, MoveError> {
    let job = catalog_jobs::get_job(&ctx.catalog, ctx.job).await?;
    Ok(match job.state {
        JobState::Running => false,
        JobState::Failed => !phase.flipped() || phase == Phase::Done,
        JobState::Done | JobState::Aborted => true,
    })
}

/// `shardctl move --abort JOB`: before the flip, undoes everything; after it, refuses.
pub async fn abort(catalog_url: &str, job: i64, hooks: &Hooks) -> Result<MoveOutcome, MoveError> {
    let (mut ctx, phase) = reopen(catalog_url, job, hooks, None).await?;
    let state = catalog_jobs::get_job(&ctx.catalog, job).await?.state;
    if phase.flipped() || (phase == Phase::Flip && flipped_already(&ctx).await?) {
        return Err(MoveError::Invalid(format!(
            "job {job} has flipped: tenant {} lives on {} now; to undo, move it back with \
             `shardctl move --tenant {} --to {}`",
            ctx.spec.label(),
            ctx.spec.to_name,
            ctx.spec.single().unwrap_or("ID"),
            ctx.spec.from_name
        )));
    }
    if matches!(state, JobState::Done | JobState::Aborted) {
        return Err(MoveError::Invalid(format!("job {job} is already {state}")));
    }
    let problems = rollback(&mut ctx).await;
    if let Some(p) = problems.first() {
        return Err(MoveError::Invalid(format!(
            "aborting job {job} left work undone ({p}); run --abort {job} again"
        )));
    }
    catalog_jobs::finish_job(&ctx.catalog, job, JobState::Aborted, None).await?;
    ctx.event("move_aborted", json!({})).await?;
    Ok(MoveOutcome::Aborted {
        job,
        tenant: ctx.spec.label(),
    })
}

/// A job's context rebuilt from its persisted spec.
async fn reopen<'h>(
    catalog_url: &str,
    job: i64,
    hooks: &'h Hooks,
    stop_after: Option<Phase>,
) -> Result<(Ctx<'h>, Phase), MoveError> {
    let mut catalog = db::connect(catalog_url).await?;
    let row = catalog_jobs::get_job(&catalog, job).await?;
    if row.kind != "move" {
        return Err(MoveError::Invalid(format!("job {job} is a {}", row.kind)));
    }
    lock_job(&catalog, job).await?;
    let spec = Spec::from_json(&row.spec)?;
    let phase: Phase = row.phase.parse().map_err(MoveError::Invalid)?;
    let key_type = db::load_settings(&catalog).await?.key_type;
    let keys = spec
        .tenants
        .iter()
        .map(|t| key_type.parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let map = db::load_map(&mut catalog).await?;
    let (from, to) = (shard_info(&map, spec.from)?, shard_info(&map, spec.to)?);
    let source = Shard::connect(&from.name, &from.url).await?;
    let target = Shard::connect(&to.name, &to.url).await?;
    let tables = source.sharded_tables(&spec.key_column).await?;
    let ctx = Ctx {
        catalog,
        hooks,
        spec,
        keys,
        job,
        tables,
        source,
        target,
        stop_after,
    };
    Ok((ctx, phase))
}

/// Takes the job's session-level advisory lock on the catalog, held until this process's
/// catalog connection ends (so a SIGKILL releases it). Refuses a job another `shardctl` is
/// still running: an abort under a live run could let that run flip to a deleted copy.
async fn lock_job(catalog: &Client, job: i64) -> Result<(), MoveError> {
    let deadline = Instant::now() + JOB_LOCK_WAIT;
    loop {
        let got: bool = catalog
            .query_one(
                "SELECT pg_try_advisory_lock($1::int4, $2::int4)",
                &[&JOB_LOCK_CLASS, &(job as i32)],
            )
            .await
            .map_err(|e| MoveError::Invalid(format!("locking job {job}: {e}")))?
            .get(0);
        if got {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MoveError::Invalid(format!(
                "job {job} is being run by another shardctl (it holds the job's lock in the                  catalog); stop that one first"
            )));
        }
        tokio::time::sleep(POLL * 5).await;
    }
}

fn shard_info(map: &ShardMap, id: u32) -> Result<shardgate_catalog::ShardInfo, MoveError> {
    map.shard(id)
        .cloned()
        .ok_or_else(|| MoveError::Invalid(format!("no shard id {id} in the catalog")))
}

/// The plan's checks on the shards: logical WAL on the source, and every sharded table with
/// a primary key and the same columns on both sides.
async fn check_shards(
    source: &Shard,
    target: &Shard,
    key_column: &str,
) -> Result<Vec<Table>, MoveError> {
    let level = source.wal_level().await?;
    if level != "logical" {
        return Err(MoveError::WalLevel {
            shard: source.name.clone(),
            level,
        });
    }
    let tables = source.sharded_tables(key_column).await?;
    if tables.is_empty() {
        return Err(MoveError::SchemaMismatch(format!(
            "shard {} has no table with column {key_column}; nothing to move",
            source.name
        )));
    }
    for t in &tables {
        if t.primary_key.is_empty() {
            return Err(MoveError::SchemaMismatch(format!(
                "{} on {} has no primary key (logical replication needs one)",
                t.display_name(),
                source.name
            )));
        }
        if !t.primary_key.iter().any(|c| c == key_column) {
            return Err(MoveError::SchemaMismatch(format!(
                "{}'s primary key on {} does not include {key_column}: the publication's row \
                 filter needs it in the replica identity (tenant_id leading the key, as \
                 DESIGN.md's data model has it)",
                t.display_name(),
                source.name
            )));
        }
        match target.table(&t.schema, &t.name).await? {
            None => {
                return Err(MoveError::SchemaMismatch(format!(
                    "{} exists on {} but not on {}; create it there first",
                    t.display_name(),
                    source.name,
                    target.name
                )));
            }
            Some(other) if other.columns != t.columns => {
                return Err(MoveError::SchemaMismatch(format!(
                    "{} differs: {} has columns {:?}, {} has {:?}",
                    t.display_name(),
                    source.name,
                    t.columns,
                    target.name,
                    other.columns
                )));
            }
            Some(_) => {}
        }
    }
    Ok(tables)
}

/// Runs the phases from `from` to the end. A failure before the flip rolls everything back
/// and fails the job; after the flip the job fails in cleanup and can be resumed.
async fn drive(mut ctx: Ctx<'_>, from: Phase, plan: Plan) -> Result<MoveOutcome, MoveError> {
    let result = phases(&mut ctx, from).await;
    match result {
        Ok((gate_hold, deleted)) => {
            catalog_jobs::finish_job(&ctx.catalog, ctx.job, JobState::Done, None).await?;
            ctx.enter(Phase::Done).await?;
            Ok(MoveOutcome::Moved(Moved {
                job: ctx.job,
                plan,
                gate_hold,
                deleted,
            }))
        }
        // A test's interruption stands for a kill: nothing may be rolled back or recorded.
        Err((_, e @ MoveError::Interrupted { .. })) => Err(e),
        Err((phase, e)) => {
            let message = format!("{}: {e}", e.code());
            if !phase.flipped() {
                let problems = rollback(&mut ctx).await;
                let reason = match problems.is_empty() {
                    true => message.clone(),
                    false => format!("{message}; rollback incomplete: {}", problems.join("; ")),
                };
                ctx.hooks.emit(Progress::RolledBack {
                    job: ctx.job,
                    reason: reason.clone(),
                });
                let _ = ctx
                    .event("move_rolled_back", json!({ "error": reason }))
                    .await;
            }
            let _ =
                catalog_jobs::finish_job(&ctx.catalog, ctx.job, JobState::Failed, Some(&message))
                    .await;
            Err(e)
        }
    }
}

/// The phases themselves; the error comes with the phase it happened in.
async fn phases(ctx: &mut Ctx<'_>, from: Phase) -> Result<(Duration, u64), (Phase, MoveError)> {
    let mut gate_hold = Duration::ZERO;
    if from <= Phase::Copy {
        copy(ctx).await.map_err(|e| (Phase::Copy, e))?;
        ctx.checkpoint(Phase::Copy).map_err(|e| (Phase::Copy, e))?;
    }
    if from <= Phase::CatchUp {
        catch_up(ctx).await.map_err(|e| (Phase::CatchUp, e))?;
        ctx.checkpoint(Phase::CatchUp)
            .map_err(|e| (Phase::CatchUp, e))?;
    }
    if from <= Phase::Flip {
        gate_hold = gate_to_flip(ctx).await?;
    }
    let deleted = cleanup(ctx).await.map_err(|e| (Phase::Cleanup, e))?;
    Ok((gate_hold, deleted))
}

/// Phase 2: the publication on the source, the subscription on the target, and the wait
/// until every table's initial copy is done.
async fn copy(ctx: &mut Ctx<'_>) -> Result<(), MoveError> {
    ctx.enter(Phase::Copy).await?;
    let name = ctx.name();
    ctx.source.prepare_marker(Some(ctx.job)).await?;
    ctx.target.prepare_marker(None).await?;
    ctx.source
        .create_publication(&name, ctx.job, &ctx.tables, &ctx.spec.key_column, &ctx.keys)
        .await?;
    // Before any row lands on the target: fan-out reads leave the copy out there. The
    // flip's set_tenant turns it around (the copy is then the source's, until cleanup).
    db::set_tenants(
        &mut ctx.catalog,
        &ctx.keys,
        &ShardRef::Id(ctx.spec.from),
        TenantState::Active,
    )
    .await?;
    db::set_copies_on(
        &mut ctx.catalog,
        &ctx.keys,
        Some(&ShardRef::Id(ctx.spec.to)),
    )
    .await?;
    ctx.target
        .create_subscription(&name, &ctx.source.url)
        .await?;
    ctx.event("move_copy_started", json!({ "publication": name }))
        .await?;
    let mut last = Instant::now();
    loop {
        let (ready, total) = ctx.target.sync_state(&name).await?;
        // The tenant's tables and the marker.
        let done = total == ctx.tables.len() as i64 + 1 && ready == total;
        if done || last.elapsed() >= PROGRESS_EVERY {
            let mut rows = 0;
            for t in &ctx.tables {
                rows += ctx.target.count(t, &ctx.spec.key_column, &ctx.keys).await?;
            }
            ctx.hooks.emit(Progress::Copied {
                rows,
                tables_ready: ready,
                tables: ctx.tables.len() as i64,
            });
            last = Instant::now();
        }
        if done {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Phase 3: waits until the subscriber is within `max_lag` bytes of the source.
async fn catch_up(ctx: &mut Ctx<'_>) -> Result<(), MoveError> {
    ctx.enter(Phase::CatchUp).await?;
    let name = ctx.name();
    let mut last = Instant::now();
    loop {
        let lag = ctx.source.slot_lag(&name).await?;
        let close = lag.is_some_and(|l| l <= ctx.spec.max_lag as i64);
        if close || last.elapsed() >= PROGRESS_EVERY {
            ctx.hooks.emit(Progress::Lag {
                bytes: lag.unwrap_or(-1),
            });
            last = Instant::now();
        }
        if close {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Phases 4 to 7 under one deadline: the tenant's clients are held from the gate to the
/// flip, so all of it must fit in the gate timeout or be undone.
async fn gate_to_flip(ctx: &mut Ctx<'_>) -> Result<Duration, (Phase, MoveError)> {
    let at = |phase: Phase| move |e: MoveError| (phase, e);
    ctx.enter(Phase::Gate).await.map_err(at(Phase::Gate))?;
    // The fence's table and function need no locks: made before the clock starts.
    ctx.source.prepare_fence().await.map_err(at(Phase::Gate))?;
    // So is the bulk of the verification: the gate then compares only what changed.
    let tracker = Tracker::start(ctx).await.map_err(at(Phase::Gate))?;
    let version = db::set_tenants(
        &mut ctx.catalog,
        &ctx.keys,
        &ShardRef::Id(ctx.spec.from),
        TenantState::Gated,
    )
    .await
    .map_err(|e| (Phase::Gate, e.into()))?;
    let started = Instant::now();
    // Where the hold time goes, step by step (ms), for the flip's event.
    let mut steps: Vec<(&str, u64)> = Vec::new();
    let mut lap = Instant::now();
    let mut mark = |what: &'static str| {
        steps.push((what, lap.elapsed().as_millis() as u64));
        lap = Instant::now();
    };
    let deadline = started + ctx.spec.gate_timeout;
    let timeout = |what: &str| {
        MoveError::GateTimeout(format!(
            "{what} within the gate timeout ({} ms); un-gated, the source is untouched",
            ctx.spec.gate_timeout.as_millis()
        ))
    };
    if !wait_acknowledged(ctx, version, deadline)
        .await
        .map_err(at(Phase::Gate))?
    {
        return Err((
            Phase::Gate,
            timeout("the proxies did not acknowledge the gate"),
        ));
    }
    mark("acknowledged");
    let wait = deadline.saturating_duration_since(Instant::now());
    let (key_column, tenants, job) = (
        ctx.spec.key_column.clone(),
        ctx.spec.tenants.clone(),
        ctx.job,
    );
    if let Err(e) = ctx
        .source
        .install_fence(&ctx.tables, &key_column, &tenants, job, wait)
        .await
    {
        return Err(match e.sqlstate() {
            Some(LOCK_NOT_AVAILABLE) => {
                (Phase::Gate, timeout("writers on the source did not finish"))
            }
            _ => (Phase::Gate, e),
        });
    }
    // A fence left on the target by an earlier move away from it would reject the
    // tenant's writes there after the flip.
    ctx.target
        .remove_fence(&tenants)
        .await
        .map_err(at(Phase::Gate))?;

    mark("fenced");
    ctx.checkpoint(Phase::Gate).map_err(at(Phase::Gate))?;
    ctx.enter(Phase::FinalCatchUp)
        .await
        .map_err(at(Phase::FinalCatchUp))?;
    let mark_sent = ctx
        .source
        .bump_marker(ctx.job)
        .await
        .map_err(at(Phase::FinalCatchUp))?;
    loop {
        let applied = ctx
            .target
            .marker(ctx.job)
            .await
            .map_err(at(Phase::FinalCatchUp))?;
        if applied >= mark_sent {
            break;
        }
        if Instant::now() >= deadline {
            return Err((
                Phase::FinalCatchUp,
                timeout("the target did not apply the source's last writes"),
            ));
        }
        tokio::time::sleep(GATE_POLL).await;
    }
    mark("caught_up");
    ctx.checkpoint(Phase::FinalCatchUp)
        .map_err(at(Phase::FinalCatchUp))?;
    ctx.enter(Phase::Verify).await.map_err(at(Phase::Verify))?;
    tracker.finish(ctx).await.map_err(at(Phase::Verify))?;
    if Instant::now() >= deadline {
        return Err((Phase::Verify, timeout("the verification did not finish")));
    }

    mark("verified");
    ctx.checkpoint(Phase::Verify).map_err(at(Phase::Verify))?;
    ctx.enter(Phase::Flip).await.map_err(at(Phase::Flip))?;
    let flipped = db::set_tenants(
        &mut ctx.catalog,
        &ctx.keys,
        &ShardRef::Id(ctx.spec.to),
        TenantState::Active,
    )
    .await
    .map_err(|e| (Phase::Flip, e.into()))?;
    let hold = started.elapsed();
    mark("flipped");
    ctx.checkpoint(Phase::Flip).map_err(at(Phase::Flip))?;
    let steps: serde_json::Map<String, serde_json::Value> = steps
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    tracing::info!(?steps, "gate hold by step (ms)");
    ctx.hooks.emit(Progress::GateHeld(hold));
    // Persisted at once: from here on the job can no longer be rolled back.
    catalog_jobs::set_phase(&ctx.catalog, ctx.job, Phase::Cleanup.as_str())
        .await
        .map_err(|e| (Phase::Cleanup, e.into()))?;
    ctx.event(
        "move_flipped",
        json!({
            "map_version": flipped,
            "gate_hold_ms": hold.as_millis() as u64,
            "steps_ms": steps,
        }),
    )
    .await
    .map_err(at(Phase::Cleanup))?;
    ctx.checkpoint(Phase::Cleanup).map_err(at(Phase::Cleanup))?;
    Ok(hold)
}

/// Waits until every live proxy routes on `version` (or later) with no transaction of the
/// tenant open, and the caller's own check agrees; false at the deadline.
async fn wait_acknowledged(
    ctx: &Ctx<'_>,
    version: u64,
    deadline: Instant,
) -> Result<bool, MoveError> {
    loop {
        let pending =
            catalog_jobs::proxies_not_acknowledging(&ctx.catalog, &ctx.spec.tenants, version)
                .await?;
        let extra = match &ctx.hooks.gate_ack {
            Some(ack) => ack(version).await,
            None => true,
        };
        if pending.is_empty() && extra {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            let names: Vec<_> = pending.iter().map(|p| p.proxy_id.as_str()).collect();
            tracing::warn!(proxies = ?names, "gate not acknowledged");
            return Ok(false);
        }
        tokio::time::sleep(GATE_POLL).await;
    }
}

/// Whether the catalog already places every tenant on the target, active.
async fn flipped_already(ctx: &Ctx<'_>) -> Result<bool, MoveError> {
    let row = ctx
        .catalog
        .query_one(
            "SELECT count(*) FROM shardgate.tenants \
             WHERE tenant_id = ANY ($1) AND shard_id = $2 AND state = 'active'",
            &[&ctx.spec.tenants, &(ctx.spec.to as i32)],
        )
        .await
        .map_err(|e| MoveError::Invalid(format!("reading the tenant rows: {e}")))?;
    Ok(row.get::<_, i64>(0) == ctx.spec.tenants.len() as i64)
}

/// The shard every tenant of the request lives on, active; a group moves from one shard.
fn common_source(map: &ShardMap, keys: &[TenantKey]) -> Result<u32, MoveError> {
    let mut from = None;
    for key in keys {
        let placement = map
            .locate(key)
            .map_err(|e| MoveError::Invalid(e.to_string()))?;
        if placement.state != TenantState::Active {
            return Err(MoveError::Invalid(format!(
                "tenant {key} is {}; another move may be running (see `shardctl jobs`)",
                placement.state
            )));
        }
        match from {
            Some((shard, first)) if shard != placement.shard => {
                return Err(MoveError::Invalid(format!(
                    "tenants {first} and {key} live on different shards; a group moves from \
                     one shard"
                )));
            }
            Some(_) => {}
            None => from = Some((placement.shard, key)),
        }
    }
    from.map(|(shard, _)| shard)
        .ok_or_else(|| MoveError::Invalid("no tenant to move".into()))
}
