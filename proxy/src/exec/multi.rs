//! Statements for several shards at once, outside transactions: DDL and writes to global
//! tables run on every shard (broadcast), and a multi-row INSERT whose rows belong to
//! tenants on several shards runs on each shard with that shard's rows (split).
//!
//! Each shard gets a connection of its own from its pool for the one statement, with the
//! client's settings replayed first. A broadcast runs on every shard but one here and, if
//! all of them succeeded, on the last one through the session's own connection, so the
//! client sees one shard's ordinary replies; if some failed, the client gets an error that
//! says where it was applied and where not. A split is answered by the proxy: the rows
//! every shard returned and the total count.

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use shardgate_catalog::ShardId;

use super::client_msgs::Plan;
use super::replies::Unit;
use super::route::Target;
use super::session::Session;
use crate::backend::BackendError;
use crate::classify::insert_with_rows;
use crate::wire::{self, Frame, PgError, btag};

/// The statement one shard runs.
pub(super) enum Job {
    Query(String),
    /// A client's unnamed extended-protocol statement with its Bind parameters.
    Extended {
        parse_tail: Bytes,
        bind: Bytes,
    },
    /// Describe a statement (its Parse body).
    Describe(Bytes),
}

pub(super) struct Outcome {
    pub name: String,
    pub result: Result<Vec<Frame>, BackendError>,
}

impl Outcome {
    /// The shard's error, if the statement failed there: SQLSTATE and message.
    pub fn error(&self) -> Option<(String, String)> {
        match &self.result {
            Err(e) => Some((e.sqlstate().to_owned(), e.to_string())),
            Ok(frames) => frames
                .iter()
                .find(|f| f.tag == btag::ERROR_RESPONSE)
                .map(|f| {
                    let e = wire::decode_error(f.body());
                    (e.code, e.message)
                }),
        }
    }
}

impl Session<'_> {
    /// Runs each job on its shard, all at once.
    pub(super) async fn run_on_shards(&self, jobs: Vec<(ShardId, Job)>) -> Vec<Outcome> {
        join_all(jobs.into_iter().map(|(shard, job)| self.run_on(shard, job))).await
    }

    async fn run_on(&self, shard: ShardId, job: Job) -> Outcome {
        let map = self.ctx.routing.map.load_full();
        let name = map
            .shard(shard)
            .map_or_else(|| shard.to_string(), |s| s.name.clone());
        let result = async {
            let info = map.shard(shard).ok_or_else(|| BackendError::Config {
                shard: name.clone(),
                message: "the shard is not in the current map".into(),
            })?;
            let pool = self.ctx.pools.get(info)?;
            let mut pooled = pool.get().await?;
            let conn = pooled.conn_mut();
            if let Some(sql) = conn.gucs.sync_sql(&self.session.gucs) {
                conn.simple_query(&name, &sql).await?;
                conn.gucs = self.session.gucs.clone();
            }
            match job {
                Job::Query(sql) => conn.simple_query(&name, &sql).await,
                Job::Extended { parse_tail, bind } => {
                    conn.extended_query(&name, &parse_tail, &bind).await
                }
                Job::Describe(parse_tail) => conn.describe_statement(&name, &parse_tail).await,
            }
        }
        .await;
        Outcome { name, result }
    }
}

/// The error a client gets when a statement for several shards failed on some of them.
pub(super) fn partial_failure(outcomes: &[Outcome], what: &str) -> Option<PgError> {
    let failed: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.error().map(|e| (o, e)))
        .collect();
    let (_, (code, message)) = failed.first()?;
    let names = |it: &mut dyn Iterator<Item = &Outcome>| {
        it.map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
    };
    let failed_on = names(&mut failed.iter().map(|(o, _)| *o));
    let applied_on = names(&mut outcomes.iter().filter(|o| o.error().is_none()));
    let code = if code.len() == 5 {
        code.clone()
    } else {
        "XX000".to_owned()
    };
    let detail = if applied_on.is_empty() {
        "it was applied on no shard".to_owned()
    } else {
        format!("it was applied on: {applied_on}")
    };
    Some(
        PgError::error(
            code,
            format!("{what} failed on shard(s) {failed_on}: {message}"),
        )
        .with_detail(detail),
    )
}

/// The proxy's reply to a split INSERT that succeeded everywhere: the rows each shard
/// returned (RETURNING), and the total count.
pub(super) fn merge_insert_replies(outcomes: &[Outcome], out: &mut BytesMut) {
    let mut described = false;
    let mut total: u64 = 0;
    for frames in outcomes.iter().filter_map(|o| o.result.as_ref().ok()) {
        for f in frames {
            match f.tag {
                btag::ROW_DESCRIPTION if !described => {
                    described = true;
                    out.extend_from_slice(&f.bytes);
                }
                btag::DATA_ROW => out.extend_from_slice(&f.bytes),
                btag::COMMAND_COMPLETE => {
                    let tag = wire::decode_command_tag(f.body());
                    let count = std::str::from_utf8(tag)
                        .ok()
                        .and_then(|t| t.rsplit(' ').next())
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                    total += count;
                }
                _ => {}
            }
        }
    }
    wire::encode_command_complete(out, &format!("INSERT 0 {total}"));
}

impl Session<'_> {
    /// Runs the multi-shard part of a plan. A broadcast comes back as a plan for the one
    /// remaining shard (or `Done` when it failed somewhere, the client told); a split is
    /// answered here and comes back `Done`.
    pub(super) async fn run_multi<'a>(&mut self, plan: Plan<'a>) -> Plan<'a> {
        let map = self.ctx.routing.map.load_full();
        let mut shards = map.shards().iter().map(|s| s.id);
        let Some(last) = shards.next() else {
            return plan;
        };
        let others: Vec<ShardId> = shards.collect();
        match plan {
            Plan::Broadcast { frame, scan } => {
                let sql =
                    String::from_utf8_lossy(wire::decode_query(frame.body()).unwrap_or_default())
                        .into_owned();
                let jobs = others
                    .iter()
                    .map(|&s| (s, Job::Query(sql.clone())))
                    .collect();
                if self.broadcast_failed(jobs, true).await {
                    return Plan::Done;
                }
                Plan::Query {
                    frame,
                    scan,
                    target: Target::Shard(last),
                }
            }
            Plan::Bind { bind, stmt, .. } => {
                let jobs = others
                    .iter()
                    .map(|&s| {
                        let job = Job::Extended {
                            parse_tail: stmt.parse_tail.clone(),
                            bind: Bytes::copy_from_slice(bind.after_names),
                        };
                        (s, job)
                    })
                    .collect();
                if self.broadcast_failed(jobs, false).await {
                    return Plan::Done;
                }
                Plan::Bind {
                    bind,
                    stmt,
                    target: Target::Shard(last),
                    broadcast: false,
                }
            }
            Plan::Split { sql, parts } => {
                self.run_split(&sql, parts).await;
                Plan::Done
            }
            other => other,
        }
    }

    /// Runs a broadcast's jobs; on a failure the client has its error (and, for a simple
    /// query, its ReadyForQuery) and true is returned.
    async fn broadcast_failed(&mut self, jobs: Vec<(ShardId, Job)>, simple: bool) -> bool {
        let outcomes = self.run_on_shards(jobs).await;
        let Some(err) = partial_failure(&outcomes, "the statement") else {
            return false;
        };
        if simple {
            let mut answer = BytesMut::new();
            err.encode(&mut answer);
            wire::encode_ready_for_query(&mut answer, self.session.txn_status);
            self.answer(Unit::Query, answer);
        } else {
            let _ = self.local_error_with(err);
        }
        true
    }

    async fn run_split(&mut self, sql: &str, parts: Vec<(ShardId, Vec<usize>)>) {
        let mut jobs = Vec::with_capacity(parts.len());
        for (shard, rows) in &parts {
            match insert_with_rows(sql, rows) {
                Some(part) => jobs.push((*shard, Job::Query(part))),
                None => {
                    self.refuse_query(crate::router::RouteError::CrossShardWrite.into());
                    return;
                }
            }
        }
        let outcomes = self.run_on_shards(jobs).await;
        let mut answer = BytesMut::new();
        match partial_failure(&outcomes, "the INSERT") {
            Some(err) => err.encode(&mut answer),
            None => merge_insert_replies(&outcomes, &mut answer),
        }
        wire::encode_ready_for_query(&mut answer, self.session.txn_status);
        self.answer(Unit::Query, answer);
    }
}

impl Session<'_> {
    /// Describes a statement on a connection of its own and answers the client's Describe
    /// with the replies (or the error, skipping to Sync as after any error).
    pub(super) async fn describe_aside(&mut self, stmt: &crate::frontend::Statement) {
        let map = self.ctx.routing.map.load_full();
        let shard = match self.guc_tenant_key() {
            Ok(Some(key)) => map.locate(&key).ok().map(|p| p.shard),
            _ => None,
        }
        .or_else(|| map.shards().first().map(|s| s.id));
        let outcome = match shard {
            Some(shard) => {
                let tail = stmt.parse_tail.clone();
                self.run_on_shards(vec![(shard, Job::Describe(tail))])
                    .await
                    .pop()
            }
            None => None,
        };
        let Some(outcome) = outcome else {
            let _ = self.local_error("08001", "no shard to describe the statement on");
            return;
        };
        if let Some(err) =
            partial_failure(std::slice::from_ref(&outcome), "describing the statement")
        {
            let _ = self.local_error_with(err);
            return;
        }
        let mut answer = BytesMut::new();
        for f in outcome.result.iter().flatten() {
            if matches!(
                f.tag,
                btag::PARAMETER_DESCRIPTION | btag::ROW_DESCRIPTION | btag::NO_DATA
            ) {
                answer.extend_from_slice(&f.bytes);
            }
        }
        self.answer(Unit::Describe, answer);
    }
}
