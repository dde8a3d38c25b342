//! Client messages on their way to a server. Each message is first planned (validated,
//! answered by the proxy where it can be, and told which server it needs), then the loop
//! lends that server if needed, then the message is sent with the bookkeeping its replies
//! need. Planning and sending are synchronous; only lending a server waits.

use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::lend::Lent;
use super::replies::{Expect, Mode, Undo, Unit};
use super::route::{Decision, Refusal, Target};
use super::session::{Session, SessionEnd};
use crate::classify::{SessionCommand, SessionScan, scan_session_commands};
use shardgate_catalog::ShardId;

use crate::frontend::{ClientError, Statement};
use crate::wire::{self, BindMsg, FrameRef, PgError, tag};

/// What a client message turned out to need.
pub(super) enum Plan<'a> {
    /// Answered or dropped by the proxy.
    Done,
    /// Cannot be decided while replies are due (a pipelined COMMIT may end the transaction
    /// the decision depends on): taken up again once they are in.
    Stall,
    Terminate,
    Query {
        frame: FrameRef<'a>,
        scan: SessionScan,
        target: Target,
    },
    Bind {
        bind: BindMsg<'a>,
        stmt: Arc<Statement>,
        target: Target,
        /// To run on every shard: the others first, then `target`.
        broadcast: bool,
    },
    /// A simple query for every shard.
    Broadcast {
        frame: FrameRef<'a>,
        scan: SessionScan,
    },
    /// A read on several shards, merged (simple protocol).
    FanOut {
        sql: &'a [u8],
        shards: Vec<ShardId>,
    },
    /// A statement of a gated tenant: wait at the gate, then plan it again.
    Hold {
        tenant: shardgate_catalog::TenantKey,
        bind: bool,
    },
    /// Describe, and Execute, of the client's fan-out portal.
    FanOutDescribe,
    FanOutExecute {
        max_rows: i32,
    },
    /// A multi-row INSERT split by shard: row indexes per shard.
    Split {
        sql: String,
        parts: Vec<(ShardId, Vec<usize>)>,
    },
    DescribeStatement {
        stmt: Arc<Statement>,
        named: bool,
    },
    /// Sent as it is; `unit` says what reply ends it (none for Flush and COPY data).
    Pass {
        frame: FrameRef<'a>,
        unit: Option<Unit>,
    },
}

impl Plan<'_> {
    /// The server the message needs; messages that need the lent one only ever come as
    /// `Pass` when one is lent.
    fn target(&self) -> Target {
        match self {
            Plan::Query { target, .. } | Plan::Bind { target, .. } => *target,
            _ => Target::Any,
        }
    }
}

impl Session<'_> {
    /// Handles every complete message in the client buffer. Returns false when the client
    /// said goodbye (Terminate).
    pub(super) async fn on_client_data(&mut self) -> Result<bool, SessionEnd> {
        if self.stalled {
            return Ok(true); // buffered; handled when the stall ends
        }
        // Messages are handled in place in the receive buffer, which is taken out of `self`
        // meanwhile and given back with what is left (a partial message at most).
        let mut buf = std::mem::take(&mut self.cbuf);
        let result = self.handle_client_messages(&mut buf).await;
        self.cbuf = buf;
        result
    }

    async fn handle_client_messages(&mut self, buf: &mut BytesMut) -> Result<bool, SessionEnd> {
        let max = self.ctx.max_message_size;
        let mut pos = 0;
        let result = loop {
            let len = match wire::frame_len(&buf[pos..], max) {
                Ok(Some(len)) => len,
                Ok(None) => break Ok(true),
                Err(e) => break Err(self.protocol_violation(e.to_string())),
            };
            let frame = FrameRef {
                tag: buf[pos],
                bytes: &buf[pos..pos + len],
            };
            pos += len;
            let plan = match self.plan(frame) {
                Ok(Plan::Done) => continue,
                Ok(Plan::Terminate) => break Ok(false),
                Ok(Plan::Stall) => {
                    pos -= len;
                    self.stalled = true;
                    break Ok(true);
                }
                Ok(plan) => plan,
                Err(e) => break Err(e),
            };
            if !matches!(plan, Plan::Hold { .. }) {
                self.held = None;
            }
            // Work on other shards first; what is left goes to one shard as usual.
            let plan = match plan {
                // Describing a statement must not choose the shard of a transaction that has
                // not begun anywhere yet: any shard describes it on the side.
                Plan::DescribeStatement { stmt, .. }
                    if self.server.is_none() && self.in_transaction() =>
                {
                    self.describe_aside(&stmt).await;
                    continue;
                }
                Plan::FanOut { .. }
                | Plan::FanOutDescribe
                | Plan::FanOutExecute { .. }
                | Plan::Hold { .. }
                    if self.awaiting_server() =>
                {
                    pos -= len;
                    self.stalled = true;
                    break Ok(true);
                }
                Plan::Hold { tenant, bind } => {
                    match self.hold(&tenant).await {
                        // Routed afresh: it goes where the tenant lives now.
                        Ok(()) => pos -= len,
                        Err(r) if bind => self.refuse_bind(r),
                        Err(r) => self.refuse_query(r),
                    }
                    continue;
                }
                Plan::FanOut { sql, shards } => {
                    if let Err(e) = self.run_fanout_query(sql, shards).await {
                        break Err(e);
                    }
                    continue;
                }
                Plan::FanOutDescribe => {
                    if let Err(e) = self.describe_fanout_portal().await {
                        break Err(e);
                    }
                    continue;
                }
                Plan::FanOutExecute { max_rows } => {
                    if let Err(e) = self.execute_fanout_portal(max_rows).await {
                        break Err(e);
                    }
                    continue;
                }
                Plan::Broadcast { .. }
                | Plan::Split { .. }
                | Plan::Bind {
                    broadcast: true, ..
                } => {
                    if self.awaiting_server() {
                        pos -= len;
                        self.stalled = true;
                        break Ok(true);
                    }
                    match self.run_multi(plan).await {
                        Plan::Done => continue,
                        plan => plan,
                    }
                }
                plan => plan,
            };
            match self.lend(plan.target()).await {
                Lent::Ready => self.send(plan),
                Lent::Wait => {
                    // Taken up again once the other shard's replies are in.
                    pos -= len;
                    self.stalled = true;
                    break Ok(true);
                }
                Lent::CrossShard(e) => self.refuse(&plan, e.into()),
                Lent::Failed(e) => {
                    tracing::warn!(error = %e, "no server connection for client");
                    self.fail_without_server(&plan, &e);
                }
            }
        };
        buf.advance(pos);
        self.replies.answer_ready(&mut self.to_client);
        result
    }

    /// Validates one message and decides what it needs. Messages the proxy answers itself
    /// queue their answer behind the replies still due, so the order holds.
    fn plan<'a>(&mut self, frame: FrameRef<'a>) -> Result<Plan<'a>, SessionEnd> {
        let bad = |s: &mut Self, e: wire::WireError| s.protocol_violation(e.to_string());
        if self.failed_until_sync {
            return Ok(self.after_local_error(frame));
        }
        if self.copy_in
            && !matches!(
                frame.tag,
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL | tag::TERMINATE
            )
        {
            // Postgres takes anything else during COPY FROM STDIN as part of the COPY
            // (Flush and Sync are ignored, others end it with an error): no reply of its own.
            return Ok(Plan::Pass { frame, unit: None });
        }
        let attached = self.server.is_some();
        if frame.tag == tag::SYNC {
            // A fan-out portal ends with its transaction: the implicit one, at Sync.
            self.fanout = None;
        }
        Ok(match frame.tag {
            tag::TERMINATE => Plan::Terminate,
            tag::QUERY => {
                let sql = wire::decode_query(frame.body()).map_err(|e| bad(self, e))?;
                let scan = scan_session_commands(sql);
                if self.answer_locally(&scan) {
                    return Ok(Plan::Done);
                }
                let (decision, kind) = self.route_query(sql);
                if let Some(kind) = kind
                    && self.txn_control_locally(kind, sql)
                {
                    return Ok(Plan::Done);
                }
                if self.aborted_locally() {
                    self.abort_error();
                    return Ok(Plan::Done);
                }
                match decision {
                    Decision::Go(target) => Plan::Query {
                        frame,
                        scan,
                        target,
                    },
                    Decision::Broadcast => Plan::Broadcast { frame, scan },
                    Decision::FanOut(shards) => Plan::FanOut { sql, shards },
                    Decision::Hold(tenant) => Plan::Hold {
                        tenant,
                        bind: false,
                    },
                    Decision::Split(parts) => Plan::Split {
                        sql: String::from_utf8_lossy(sql).into_owned(),
                        parts,
                    },
                    Decision::Refuse(_) if self.awaiting_server() => Plan::Stall,
                    Decision::Refuse(r) => {
                        self.refuse_query(r);
                        Plan::Done
                    }
                }
            }
            tag::PARSE => self.plan_parse(frame).map_err(|e| bad(self, e))?,
            tag::BIND => self.plan_bind(frame).map_err(|e| bad(self, e))?,
            tag::DESCRIBE => self.plan_describe(frame).map_err(|e| bad(self, e))?,
            tag::CLOSE => self.plan_close(frame).map_err(|e| bad(self, e))?,
            tag::EXECUTE
                if self.fanout.is_some()
                    && wire::decode_execute(frame.body())
                        .is_ok_and(|(portal, _)| self.is_fanout_portal(portal)) =>
            {
                let (_, max_rows) = wire::decode_execute(frame.body()).map_err(|e| bad(self, e))?;
                Plan::FanOutExecute { max_rows }
            }
            tag::EXECUTE if attached => Plan::Pass {
                frame,
                unit: Some(Unit::Execute),
            },
            tag::EXECUTE => match self.portal_locally(true) {
                Some(plan) => plan,
                None => self.local_error("34000", "portal does not exist"),
            },
            tag::SYNC if attached => Plan::Pass {
                frame,
                unit: Some(Unit::Sync),
            },
            tag::SYNC => self.answer_sync(),
            tag::FUNCTION_CALL => Plan::Pass {
                frame,
                unit: Some(Unit::Query),
            },
            tag::FLUSH | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL if attached => {
                Plan::Pass { frame, unit: None }
            }
            // Nothing lent: a Flush has nothing to flush, and COPY data after a failed COPY
            // is ignored by Postgres too.
            tag::FLUSH | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => Plan::Done,
            other => {
                let msg = format!("unexpected message type {:?}", other as char);
                return Err(self.protocol_violation(msg));
            }
        })
    }

    /// Sends a planned message to the lent server.
    fn send(&mut self, plan: Plan<'_>) {
        if matches!(plan, Plan::Query { .. } | Plan::Bind { .. })
            && let Some(tenant) = self.rls_tenant.take()
        {
            self.set_tenant_setting(&tenant);
        }
        match plan {
            Plan::Query { frame, scan, .. } => {
                self.note_commands(scan.commands, scan.statements);
                self.to_server.extend_from_slice(frame.bytes);
                self.push(Expect::forward(Unit::Query));
                // A simple query replaces the server's unnamed statement.
                self.server_conn().unnamed = None;
            }
            Plan::Bind { bind, stmt, .. } => self.send_bind(&bind, &stmt),
            Plan::DescribeStatement { stmt, named } => {
                let name = self.ensure_prepared(&stmt, named);
                wire::encode_describe(&mut self.to_server, b'S', &name);
                self.needs_sync = true;
                self.push(Expect::forward(Unit::Describe));
            }
            Plan::Pass { frame, unit } => {
                self.to_server.extend_from_slice(frame.bytes);
                match unit {
                    Some(Unit::Sync) => self.needs_sync = false,
                    Some(Unit::Query) | None => {}
                    Some(_) => self.needs_sync = true,
                }
                if let Some(unit) = unit {
                    self.push(Expect::forward(unit));
                }
            }
            // Handled before a server is lent (`run_multi`).
            Plan::Done
            | Plan::Stall
            | Plan::Terminate
            | Plan::Broadcast { .. }
            | Plan::FanOut { .. }
            | Plan::FanOutDescribe
            | Plan::FanOutExecute { .. }
            | Plan::Hold { .. }
            | Plan::Split { .. } => {}
        }
    }

    /// A statement the proxy will not route. Inside a transaction that runs on a shard the
    /// server's transaction is made to fail with the same error (so a later COMMIT commits
    /// nothing, exactly as after any error); otherwise the proxy answers alone.
    fn refuse(&mut self, plan: &Plan<'_>, r: Refusal) {
        if !self.in_transaction() {
            self.end_txn_tenants_unless_in_flight();
        }
        match plan {
            Plan::Bind { .. } => self.refuse_bind(r),
            Plan::DescribeStatement { .. } | Plan::Pass { .. } => {
                let _ = self.local_error(r.code, &r.message);
            }
            _ => self.refuse_query(r),
        }
    }

    pub(super) fn refuse_query(&mut self, r: Refusal) {
        if self.server.is_some() && self.in_transaction() {
            wire::encode_query(&mut self.to_server, &abort_sql(&r));
            self.push(Expect::forward(Unit::Query));
            return;
        }
        self.fail_pending();
        let mut answer = BytesMut::new();
        refusal_error(&r).encode(&mut answer);
        wire::encode_ready_for_query(&mut answer, self.session.txn_status);
        self.answer(Unit::Query, answer);
    }

    pub(super) fn refuse_bind(&mut self, r: Refusal) {
        // Also outside a transaction block: the statements since the last Sync form the
        // server's implicit transaction (a driver's executemany), which must not commit.
        if self.server.is_some() && (self.in_transaction() || self.needs_sync) {
            // Run the failing statement in the extended protocol, so the server skips to
            // the client's Sync exactly as after any error.
            wire::encode_parse(&mut self.to_server, b"", &abort_parse_tail(&r));
            wire::encode_bind(&mut self.to_server, b"", b"", &[0, 0, 0, 0, 0, 0]);
            wire::encode_execute(&mut self.to_server, b"", 0);
            self.server_conn().unnamed = None;
            self.needs_sync = true;
            for unit in [Unit::Parse, Unit::Bind, Unit::Execute] {
                self.push(Expect {
                    unit,
                    mode: Mode::Injected,
                    undo: Undo::default(),
                });
            }
            return;
        }
        self.fail_pending();
        let _ = self.local_error_with(refusal_error(&r));
    }

    /// Tells the client its stream made no sense and ends the session.
    pub(super) fn protocol_violation(&mut self, message: String) -> SessionEnd {
        PgError::fatal("08P01", format!("protocol violation: {message}"))
            .encode(&mut self.to_client);
        SessionEnd::Client(ClientError::Protocol(message))
    }

    /// An error the proxy raises in place of a server's, with Postgres's extended-protocol
    /// rule: everything up to the next Sync is then ignored.
    pub(super) fn local_error<'a>(&mut self, code: &'static str, message: &str) -> Plan<'a> {
        self.local_error_with(PgError::error(code, message))
    }

    pub(super) fn local_error_with<'a>(&mut self, e: PgError) -> Plan<'a> {
        let mut answer = BytesMut::new();
        e.encode(&mut answer);
        self.answer(Unit::Execute, answer);
        self.failed_until_sync = true;
        Plan::Done
    }

    /// After a local error: messages are dropped until Sync, which gets its ReadyForQuery
    /// from the lent server (if any, so its state stays in step) or from the proxy.
    fn after_local_error<'a>(&mut self, frame: FrameRef<'a>) -> Plan<'a> {
        if frame.tag != tag::SYNC {
            return Plan::Done;
        }
        self.failed_until_sync = false;
        self.fanout = None;
        if self.server.is_some() {
            return Plan::Pass {
                frame,
                unit: Some(Unit::Sync),
            };
        }
        self.answer_sync()
    }

    fn answer_sync<'a>(&mut self) -> Plan<'a> {
        let mut answer = BytesMut::new();
        wire::encode_ready_for_query(&mut answer, self.session.txn_status);
        self.answer(Unit::Sync, answer);
        Plan::Done
    }

    /// Queues a reply the proxy makes itself.
    pub(super) fn answer(&mut self, unit: Unit, bytes: BytesMut) {
        self.push(Expect {
            unit,
            mode: Mode::Answer(bytes.freeze()),
            undo: Undo::default(),
        });
    }

    fn fail_without_server(&mut self, plan: &Plan<'_>, e: &crate::backend::BackendError) {
        if !self.in_transaction() {
            self.end_txn_tenants_unless_in_flight();
        }
        let mut answer = BytesMut::new();
        PgError::error(e.sqlstate(), e.to_string()).encode(&mut answer);
        let ends_with_ready = matches!(
            plan,
            Plan::Query { .. }
                | Plan::Pass {
                    unit: Some(Unit::Query),
                    ..
                }
        );
        if ends_with_ready {
            wire::encode_ready_for_query(&mut answer, self.session.txn_status);
        } else {
            self.failed_until_sync = true;
        }
        self.answer(Unit::Query, answer);
    }

    /// Statements the proxy answers without a server: `DEALLOCATE` of a statement it
    /// manages (servers know it by another name), and `DISCARD ALL` between transactions
    /// (no server is lent then, and the proxy's record of the session is all there is to
    /// discard).
    fn answer_locally(&mut self, scan: &SessionScan) -> bool {
        let [cmd] = scan.commands.as_slice() else {
            return false;
        };
        if scan.statements != 1 {
            return false;
        }
        let tag = match cmd {
            SessionCommand::DiscardAll if self.server.is_none() => "DISCARD ALL",
            SessionCommand::Deallocate { name: Some(n) }
                if self.session.statements.contains_key(n.as_bytes()) =>
            {
                "DEALLOCATE"
            }
            _ => return false,
        };
        self.session.apply(cmd);
        let mut answer = BytesMut::new();
        wire::encode_command_complete(&mut answer, tag);
        wire::encode_ready_for_query(&mut answer, self.session.txn_status);
        self.answer(Unit::Query, answer);
        true
    }

    /// Remembers session commands until the server says whether they took effect. A
    /// `DISCARD ALL` or `DEALLOCATE ALL` also wipes the server's prepared statements; one in
    /// a multi-statement string leaves the server in a state not worth tracking, so that
    /// connection is closed after this client is done with it.
    pub(super) fn note_commands(&mut self, commands: Vec<SessionCommand>, statements: usize) {
        if commands.is_empty() {
            return;
        }
        let wipes = commands.iter().any(|c| {
            matches!(
                c,
                SessionCommand::DiscardAll | SessionCommand::Deallocate { name: None }
            )
        });
        if wipes
            && statements > 1
            && let Some(server) = self.server.as_mut()
        {
            server.conn_mut().broken = true;
        }
        self.settings.note(commands);
    }

    pub(super) fn undo(&mut self, undo: Undo) {
        if let Some(server) = self.server.as_mut() {
            let conn = server.conn_mut();
            if let Some(id) = undo.server_statement {
                conn.prepared.remove(&id);
            }
            if undo.server_unnamed {
                conn.unnamed = None;
            }
        }
        if let Some(name) = undo.client_statement {
            self.session.statements.remove(&name);
        }
    }

    pub(super) fn server_conn(&mut self) -> &mut crate::backend::ServerConn {
        self.server.as_mut().expect("attached").conn_mut()
    }
}

fn refusal_error(r: &Refusal) -> PgError {
    let e = PgError::error(r.code, r.message.clone());
    match r.hint {
        Some(h) => e.with_hint(h),
        None => e,
    }
}

/// A statement that fails on the server with the refusal's code, message and hint.
fn abort_sql(r: &Refusal) -> String {
    use crate::gucs::quote_literal;
    let mut using = format!(
        "ERRCODE = {}, MESSAGE = {}",
        quote_literal(r.code),
        quote_literal(&r.message)
    );
    if let Some(h) = r.hint {
        using.push_str(&format!(", HINT = {}", quote_literal(h)));
    }
    format!("DO $shardgate$ BEGIN RAISE EXCEPTION USING {using}; END $shardgate$")
}

/// The Parse body (query text, no parameter types) of [`abort_sql`].
fn abort_parse_tail(r: &Refusal) -> Vec<u8> {
    let mut tail = abort_sql(r).into_bytes();
    tail.extend_from_slice(&[0, 0, 0]);
    tail
}
