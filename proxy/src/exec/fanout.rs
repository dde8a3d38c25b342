//! Fan-out reads (DESIGN.md §4): one read runs on several shards at once and the client
//! gets the merged result, streamed.
//!
//! Each shard is served by a task of its own that borrows a connection from the shard's
//! pool, replays the client's settings, sends the shard's version of the statement and
//! passes the replies on as events through a small bounded channel: the description, rows
//! in batches, then completion or the shard's error. The session task plans the merge
//! ([`crate::fanout::plan`]), feeds the [`Merger`] from the channels (from the one shard an
//! ordered merge needs next, or from any) and writes merged rows to the client as they come
//! out. A slow client therefore slows the shards down through the channels and TCP, and a
//! fan-out holds a few batches per shard, never the result.
//!
//! A task whose session went away (the client left, or another shard failed the
//! statement) finds its channel closed and closes its connection rather than return one
//! with a result still coming.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shardgate_catalog::{KeyType, ShardId, TenantKey};
use tokio::sync::mpsc;

use super::replies::Unit;
use super::session::{Session, SessionEnd};
use crate::backend::{BackendError, Pool};
use crate::classify::BindParams;
use crate::fanout::merge::{Column, MergeError, Merger, Row, Want};
use crate::fanout::plan::{self, Bound, MergePlan, PlanContext};
use crate::fanout::value::Format;
use crate::frontend::Statement;
use crate::gucs::Gucs;
use crate::wire::{self, FieldDesc, PgError, btag};

/// Rows per event from a shard task; with the channel depth this bounds what a fan-out
/// holds per shard.
const BATCH_ROWS: usize = 256;
const CHANNEL_DEPTH: usize = 2;
/// Bytes of merged rows gathered before a write to the client.
const CLIENT_CHUNK: usize = 64 * 1024;
/// The largest reply message a fan-out accepts from a shard.
const MAX_REPLY: usize = 1 << 30;

enum ShardEvent {
    Fields(Vec<FieldDesc>),
    Rows(Vec<Row>),
    Complete,
    /// The shard's ErrorResponse, as it sent it.
    Error(Bytes),
    Failed(BackendError),
}

/// What every shard is sent (its SQL may differ per shard: see `start_run`).
#[derive(Clone)]
pub(super) enum Request {
    Simple(String),
    Extended {
        sql: String,
        /// The Parse body after the query text: its NUL and the parameter types.
        param_tail: Bytes,
        bind_tail: Bytes,
    },
}

impl Request {
    fn sql(&self) -> &str {
        match self {
            Request::Simple(sql) | Request::Extended { sql, .. } => sql,
        }
    }

    /// The messages for one shard, with `sql` in place of the planned text.
    fn encode(&self, sql: &str) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Request::Simple(_) => wire::encode_query(&mut out, sql),
            Request::Extended {
                param_tail,
                bind_tail,
                ..
            } => {
                let mut parse_tail = sql.as_bytes().to_vec();
                parse_tail.extend_from_slice(param_tail);
                wire::encode_parse(&mut out, b"", &parse_tail);
                wire::encode_bind(&mut out, b"", b"", bind_tail);
                wire::encode_describe(&mut out, b'P', b"");
                wire::encode_execute(&mut out, b"", 0);
                wire::encode_sync(&mut out);
            }
        }
        out.freeze()
    }
}

/// A fan-out bound to a client's portal (extended protocol), from its Bind to its Sync.
pub(super) struct FanoutPortal {
    pub name: Bytes,
    plan: MergePlan,
    limit: Option<u64>,
    offset: u64,
    shards: Vec<ShardId>,
    request: Request,
    run: Option<Run>,
    /// Described to the client already (Describe of the portal).
    described: bool,
}

/// The running shard tasks of one fan-out.
struct Run {
    names: Vec<String>,
    rxs: Vec<mpsc::Receiver<ShardEvent>>,
    fields: Option<Vec<FieldDesc>>,
}

/// Why a fan-out did not produce its result; the client gets it as an ErrorResponse.
enum Failure {
    /// A shard's own error, passed on unchanged.
    Shard(Bytes),
    Proxy(PgError),
}

impl Failure {
    fn encode(&self, out: &mut BytesMut) {
        match self {
            Failure::Shard(frame) => out.extend_from_slice(frame),
            Failure::Proxy(e) => e.encode(out),
        }
    }
}

impl From<MergeError> for Failure {
    fn from(e: MergeError) -> Self {
        Failure::Proxy(PgError::error(
            "SG004",
            format!("cannot merge across shards: {e}"),
        ))
    }
}

fn sg004(message: String) -> PgError {
    PgError::error("SG004", message).with_hint(
        "name one tenant (WHERE on the shard key, a comment or the tenant setting), or \
         rewrite the query into a shape shardgate can merge",
    )
}

impl Session<'_> {
    fn with_plan_context<R>(&self, f: impl FnOnce(&PlanContext) -> R) -> R {
        let routing = &self.ctx.routing;
        let is_sharded = |t: &str| {
            routing.tables.contains(&crate::classify::TableRef {
                schema: None,
                name: t.to_ascii_lowercase(),
            })
        };
        f(&PlanContext {
            key_column: &routing.key_column,
            is_sharded: &is_sharded,
        })
    }

    fn plan_fanout(&self, sql: &str) -> Result<MergePlan, PgError> {
        self.with_plan_context(|ctx| plan::plan(sql, ctx))
            .map_err(|u| sg004(u.to_string()))
    }

    /// A simple-protocol read for several shards, answered in full (ReadyForQuery too).
    pub(super) async fn run_fanout_query(
        &mut self,
        sql: &[u8],
        shards: Vec<ShardId>,
    ) -> Result<(), SessionEnd> {
        let sql = String::from_utf8_lossy(sql);
        let prepared = self.plan_fanout(&sql).and_then(|plan| {
            let limit = const_bound(plan.limit)?;
            let offset = const_bound(plan.offset)?.unwrap_or(0);
            Ok((plan, limit, offset))
        });
        self.replies.answer_ready(&mut self.to_client);
        let result = match prepared {
            Ok((plan, limit, offset)) => {
                let request = Request::Simple(plan.shard_sql.clone());
                let mut run = self.start_run(&shards, request);
                match self.describe_run(&mut run).await {
                    Ok(fields) => {
                        let visible = fields.len() - plan.hidden.min(fields.len());
                        wire::encode_row_description(&mut self.to_client, &fields[..visible]);
                        self.stream_run(&mut run, &plan, &fields, limit, offset)
                            .await?
                            .map(|n| {
                                wire::encode_command_complete(
                                    &mut self.to_client,
                                    &format!("SELECT {n}"),
                                )
                            })
                    }
                    Err(f) => Err(f),
                }
            }
            Err(e) => Err(Failure::Proxy(e)),
        };
        if let Err(f) = result {
            f.encode(&mut self.to_client);
        }
        wire::encode_ready_for_query(&mut self.to_client, self.session.txn_status);
        self.flush_client().await?;
        Ok(())
    }

    /// A Bind whose statement reads several shards: planned now, run at Describe or
    /// Execute. The client gets BindComplete (or the planning error).
    pub(super) fn open_fanout_portal(
        &mut self,
        portal: &[u8],
        stmt: &Statement,
        bind_tail: &[u8],
        shards: Vec<ShardId>,
    ) {
        let sql_end = stmt
            .parse_tail
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(stmt.parse_tail.len());
        let sql = String::from_utf8_lossy(&stmt.parse_tail[..sql_end]);
        let portal_state = self.plan_fanout(&sql).and_then(|plan| {
            let params = BindParams::parse(bind_tail, &stmt.param_types)
                .map_err(|e| PgError::error("08P01", e.to_string()))?;
            let limit = bound(plan.limit, &params)?;
            let offset = bound(plan.offset, &params)?.unwrap_or(0);
            let param_tail = Bytes::copy_from_slice(&stmt.parse_tail[sql_end..]);
            let shard_sql = plan.shard_sql.clone();
            let bind_tail = wire::bind_tail_with_extra_columns(bind_tail, plan.hidden)
                .map_err(|e| PgError::error("08P01", e.to_string()))?;
            Ok(FanoutPortal {
                name: Bytes::copy_from_slice(portal),
                plan,
                limit,
                offset,
                shards,
                request: Request::Extended {
                    sql: shard_sql,
                    param_tail,
                    bind_tail: bind_tail.into(),
                },
                run: None,
                described: false,
            })
        });
        match portal_state {
            Ok(p) => {
                self.fanout = Some(p);
                let mut answer = BytesMut::new();
                wire::encode_bind_complete(&mut answer);
                self.answer(Unit::Bind, answer);
            }
            Err(e) => {
                self.fanout = None;
                let _ = self.local_error_with(e);
            }
        }
    }

    /// Whether `portal` is the client's fan-out portal.
    pub(super) fn is_fanout_portal(&self, portal: &[u8]) -> bool {
        self.fanout.as_ref().is_some_and(|p| p.name == portal)
    }

    /// Describe of the fan-out portal: the merged result's RowDescription.
    pub(super) async fn describe_fanout_portal(&mut self) -> Result<(), SessionEnd> {
        let Some(mut portal) = self.fanout.take() else {
            return Ok(());
        };
        self.replies.answer_ready(&mut self.to_client);
        let mut run = match portal.run.take() {
            Some(run) => run,
            None => self.start_run(&portal.shards, portal.request.clone()),
        };
        match self.describe_run(&mut run).await {
            Ok(fields) => {
                let visible = fields.len() - portal.plan.hidden.min(fields.len());
                wire::encode_row_description(&mut self.to_client, &fields[..visible]);
                portal.run = Some(run);
                portal.described = true;
                self.fanout = Some(portal);
            }
            Err(f) => {
                f.encode(&mut self.to_client);
                self.failed_until_sync = true;
            }
        }
        Ok(())
    }

    /// Execute of the fan-out portal: every row, then CommandComplete. The portal is used
    /// up (a fan-out cannot be suspended and resumed: `max_rows` must be 0).
    pub(super) async fn execute_fanout_portal(&mut self, max_rows: i32) -> Result<(), SessionEnd> {
        let Some(mut portal) = self.fanout.take() else {
            return Ok(());
        };
        self.replies.answer_ready(&mut self.to_client);
        let result = if max_rows != 0 {
            Err(Failure::Proxy(sg004(
                "cannot merge across shards: fetching the result in parts (Execute with a row \
                 limit)"
                    .into(),
            )))
        } else {
            let mut run = match portal.run.take() {
                Some(run) => run,
                None => self.start_run(&portal.shards, portal.request.clone()),
            };
            match self.describe_run(&mut run).await {
                Ok(fields) => self
                    .stream_run(&mut run, &portal.plan, &fields, portal.limit, portal.offset)
                    .await?
                    .map(|n| {
                        wire::encode_command_complete(&mut self.to_client, &format!("SELECT {n}"))
                    }),
                Err(f) => Err(f),
            }
        };
        if let Err(f) = result {
            f.encode(&mut self.to_client);
            self.failed_until_sync = true;
        }
        Ok(())
    }

    /// Starts one task per shard. A shard that holds a copy of a tenant living elsewhere
    /// (a move's) gets the statement with that tenant left out.
    fn start_run(&self, shards: &[ShardId], request: Request) -> Run {
        let map = self.ctx.routing.map.load_full();
        let planned = request.encode(request.sql());
        let timeout = self.ctx.routing.fanout_timeout;
        let mut names = Vec::with_capacity(shards.len());
        let mut rxs = Vec::with_capacity(shards.len());
        for &shard in shards {
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            let name = map
                .shard(shard)
                .map_or_else(|| shard.to_string(), |s| s.name.clone());
            let pool = match map.shard(shard) {
                Some(info) => self.ctx.pools.get(info),
                None => Err(BackendError::Config {
                    shard: name.clone(),
                    message: "the shard is not in the current map".into(),
                }),
            };
            let gucs = self.session.gucs.clone();
            let task_name = name.clone();
            let copies = map.copies_on(shard);
            let bytes = if copies.is_empty() {
                Ok(planned.clone())
            } else {
                let literals: Vec<String> = copies.iter().map(key_literal).collect();
                self.with_plan_context(|ctx| plan::exclude_tenants(request.sql(), ctx, &literals))
                    .map(|sql| request.encode(&sql))
                    .map_err(|u| BackendError::Config {
                        shard: name.clone(),
                        message: format!("cannot leave out the copies of moving tenants: {u}"),
                    })
            };
            let pool = pool.and_then(|p| bytes.map(|b| (p, b)));
            tokio::spawn(async move {
                match pool {
                    Ok((pool, bytes)) => {
                        shard_task(pool, task_name, gucs, bytes, tx, timeout).await
                    }
                    Err(e) => {
                        let _ = tx.send(ShardEvent::Failed(e)).await;
                    }
                }
            });
            names.push(name);
            rxs.push(rx);
        }
        Run {
            names,
            rxs,
            fields: None,
        }
    }

    /// Waits for every shard's RowDescription and checks that they agree.
    async fn describe_run(&mut self, run: &mut Run) -> Result<Vec<FieldDesc>, Failure> {
        if let Some(f) = &run.fields {
            return Ok(f.clone());
        }
        let mut first: Option<Vec<FieldDesc>> = None;
        for i in 0..run.rxs.len() {
            let fields = match run.rxs[i].recv().await {
                Some(ShardEvent::Fields(f)) => f,
                Some(ShardEvent::Error(frame)) => return Err(Failure::Shard(frame)),
                Some(ShardEvent::Failed(e)) => return Err(backend_failure(&e)),
                Some(ShardEvent::Rows(_) | ShardEvent::Complete) => {
                    return Err(Failure::Proxy(PgError::error(
                        "SG004",
                        format!(
                            "cannot merge across shards: shard {} returned no row description \
                             (only SELECT statements fan out)",
                            run.names[i]
                        ),
                    )));
                }
                None => return Err(vanished(&run.names[i])),
            };
            match &first {
                None => first = Some(fields),
                Some(f) => {
                    let same = f.len() == fields.len()
                        && f.iter().zip(&fields).all(|(a, b)| a.same_shape(b));
                    if !same {
                        return Err(Failure::Proxy(PgError::error(
                            "SG004",
                            format!(
                                "cannot merge across shards: shard {} describes the result \
                                 differently from shard {} (a schema that differs between \
                                 shards?)",
                                run.names[i], run.names[0]
                            ),
                        )));
                    }
                }
            }
        }
        let fields = first.unwrap_or_default();
        run.fields = Some(fields.clone());
        Ok(fields)
    }

    /// Merges the shards' rows into the client's output; the count of rows sent, or why
    /// the statement failed. Only a client that cannot be written to ends it early.
    async fn stream_run(
        &mut self,
        run: &mut Run,
        plan: &MergePlan,
        fields: &[FieldDesc],
        limit: Option<u64>,
        offset: u64,
    ) -> Result<Result<u64, Failure>, SessionEnd> {
        let columns = fields
            .iter()
            .map(|f| Column {
                oid: f.type_oid,
                format: Format::from_code(f.format),
            })
            .collect();
        let mut merger = match Merger::new(plan, columns, run.rxs.len(), limit, offset) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e.into())),
        };
        let mut sent: u64 = 0;
        let mut done = vec![false; run.rxs.len()];
        let mut rotate = 0;
        loop {
            while let Some(row) = merger.pop() {
                wire::encode_data_row_raw(&mut self.to_client, &row);
                sent += 1;
                if self.to_client.len() >= CLIENT_CHUNK {
                    self.flush_client().await?;
                }
            }
            let want = merger.wants();
            if want == Want::Nothing {
                return Ok(Ok(sent));
            }
            // Rows merged so far go out before waiting for more.
            self.flush_client().await?;
            let (shard, event) = match want {
                Want::Shard(i) => (i, run.rxs[i].recv().await),
                _ => match recv_any(&mut run.rxs, &done, &mut rotate).await {
                    Some(next) => next,
                    None => return Ok(Ok(sent)),
                },
            };
            let step = match event {
                Some(ShardEvent::Rows(rows)) => rows
                    .into_iter()
                    .try_for_each(|r| merger.push(shard, r))
                    .map_err(Failure::from),
                Some(ShardEvent::Complete) => {
                    done[shard] = true;
                    merger.finish_shard(shard).map_err(Failure::from)
                }
                Some(ShardEvent::Fields(_)) => Ok(()),
                Some(ShardEvent::Error(frame)) => Err(Failure::Shard(frame)),
                Some(ShardEvent::Failed(e)) => Err(backend_failure(&e)),
                None => Err(vanished(&run.names[shard])),
            };
            if let Err(f) = step {
                return Ok(Err(f));
            }
        }
    }
}

/// The next event of any running shard (`None` when every shard is done), trying the
/// shards from a rotating start so that a busy one cannot starve the others.
async fn recv_any(
    rxs: &mut [mpsc::Receiver<ShardEvent>],
    done: &[bool],
    start: &mut usize,
) -> Option<(usize, Option<ShardEvent>)> {
    if done.iter().all(|d| *d) {
        return None;
    }
    let n = rxs.len();
    let from = *start;
    *start = (from + 1) % n.max(1);
    std::future::poll_fn(|cx| {
        for k in 0..n {
            let i = (from + k) % n;
            if done[i] {
                continue;
            }
            if let std::task::Poll::Ready(ev) = rxs[i].poll_recv(cx) {
                return std::task::Poll::Ready(Some((i, ev)));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// A tenant key as a SQL literal.
fn key_literal(key: &TenantKey) -> String {
    match key {
        TenantKey::Int(v) => v.to_string(),
        other => crate::gucs::quote_literal(&other.to_string()),
    }
}

fn backend_failure(e: &BackendError) -> Failure {
    Failure::Proxy(PgError::error(e.sqlstate(), format!("fan-out failed: {e}")))
}

fn vanished(shard: &str) -> Failure {
    Failure::Proxy(PgError::error(
        "XX000",
        format!("fan-out failed: the task serving shard {shard} ended without a result"),
    ))
}

fn const_bound(b: Option<Bound>) -> Result<Option<u64>, PgError> {
    match b {
        None => Ok(None),
        Some(Bound::Const(n)) => Ok(Some(n)),
        Some(Bound::Param(n)) => Err(PgError::error(
            "08P01",
            format!("there is no parameter ${n} in a simple query"),
        )),
    }
}

fn bound(b: Option<Bound>, params: &BindParams<'_>) -> Result<Option<u64>, PgError> {
    match b {
        None => Ok(None),
        Some(Bound::Const(n)) => Ok(Some(n)),
        Some(Bound::Param(n)) => {
            let key = u16::try_from(n)
                .ok()
                .and_then(|n| params.scalar_key(n, KeyType::Bigint).ok());
            match key {
                Some(TenantKey::Int(v)) if v >= 0 => Ok(Some(v as u64)),
                // NULL or a negative bound: Postgres's own error comes from the shards.
                _ => Err(PgError::error(
                    "22023",
                    format!("LIMIT/OFFSET parameter ${n} must be a non-negative integer"),
                )),
            }
        }
    }
}

/// Serves one shard of a fan-out: see the module doc.
async fn shard_task(
    pool: Arc<Pool>,
    name: String,
    gucs: Gucs,
    request: Bytes,
    tx: mpsc::Sender<ShardEvent>,
    timeout: Duration,
) {
    let mut pooled = match pool.get().await {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.send(ShardEvent::Failed(e)).await;
            return;
        }
    };
    let conn = pooled.conn_mut();
    if let Some(sql) = conn.gucs.sync_sql(&gucs) {
        if let Err(e) = conn.simple_query(&name, &sql).await {
            let _ = tx.send(ShardEvent::Failed(e)).await;
            return;
        }
        conn.gucs = gucs;
    }
    conn.unnamed = None;
    if let Err(e) = stream_replies(conn, &name, &request, &tx, timeout).await {
        // Mid-exchange: the connection cannot go back to the pool.
        conn.broken = true;
        let _ = tx.send(ShardEvent::Failed(e)).await;
    }
}

/// Sends the shard its request and passes the replies on until ReadyForQuery. A failure
/// of the connection or of the shard's protocol is returned; a closed channel (nobody
/// listening any more) ends it early with the connection marked broken.
async fn stream_replies(
    conn: &mut crate::backend::ServerConn,
    name: &str,
    request: &[u8],
    tx: &mpsc::Sender<ShardEvent>,
    timeout: Duration,
) -> Result<(), BackendError> {
    let protocol = |source| BackendError::Protocol {
        shard: name.to_owned(),
        source,
    };
    conn.send(name, request).await?;
    let mut batch: Vec<Row> = Vec::new();
    let mut failed = false;
    loop {
        let frame = tokio::time::timeout(timeout, conn.read_frame(name, MAX_REPLY))
            .await
            .map_err(|_| BackendError::Timeout {
                shard: name.to_owned(),
                ms: timeout.as_millis() as u64,
            })??;
        let event = match frame.tag {
            btag::DATA_ROW => {
                let values = wire::decode_data_row(frame.body()).map_err(protocol)?;
                batch.push(
                    values
                        .into_iter()
                        .map(|v| v.map(|v| frame.bytes.slice_ref(v)))
                        .collect(),
                );
                // A full batch, or nothing more buffered (the next read would wait).
                let buffered = matches!(wire::frame_len(&conn.rbuf, MAX_REPLY), Ok(Some(_)));
                if batch.len() >= BATCH_ROWS || !buffered {
                    Some(ShardEvent::Rows(std::mem::take(&mut batch)))
                } else {
                    None
                }
            }
            btag::ROW_DESCRIPTION => Some(ShardEvent::Fields(
                wire::decode_row_description(frame.body()).map_err(protocol)?,
            )),
            btag::ERROR_RESPONSE => {
                failed = true;
                Some(ShardEvent::Error(frame.bytes.clone()))
            }
            btag::READY_FOR_QUERY => {
                if failed {
                    return Ok(()); // the error went out already; the connection is idle again
                }
                let mut last = Vec::new();
                if !batch.is_empty() {
                    last.push(ShardEvent::Rows(std::mem::take(&mut batch)));
                }
                last.push(ShardEvent::Complete);
                for ev in last {
                    if tx.send(ev).await.is_err() {
                        return Ok(()); // idle at ReadyForQuery: the connection goes back
                    }
                }
                return Ok(());
            }
            // CommandComplete, ParseComplete, BindComplete, notices: nothing to pass on.
            _ => None,
        };
        if let Some(ev) = event
            && tx.send(ev).await.is_err()
        {
            // Nobody is listening any more: the rest of this result is not wanted, and the
            // connection cannot go back in the middle of it.
            conn.broken = true;
            return Ok(());
        }
    }
}
