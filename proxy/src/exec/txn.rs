//! Lazy BEGIN: a transaction is begun on a server only when its first statement shows
//! which shard it belongs to (DESIGN.md §3 step 5). Until then the proxy answers BEGIN,
//! and a COMMIT or ROLLBACK of a transaction that never ran anything, itself.

use bytes::BytesMut;

use super::client_msgs::Plan;
use super::replies::{Expect, Mode, Undo, Unit};
use super::session::Session;
use crate::classify::StatementKind;
use crate::frontend::Statement;
use crate::wire;

/// The proxy's record of a transaction it has answered BEGIN for but not begun anywhere.
#[derive(Debug, Default)]
pub(super) struct PendingTxn {
    /// The client's BEGIN statement (isolation level and all), replayed on the server.
    pub begin: Option<String>,
    /// A statement of the transaction failed before it reached a server.
    pub failed: bool,
    /// The unnamed portal is the proxy's own (a BEGIN bound through the extended
    /// protocol), answered without a server.
    pub local_portal: Option<&'static str>,
}

impl Session<'_> {
    /// Answers transaction control the proxy can answer alone: BEGIN outside a
    /// transaction, and COMMIT/ROLLBACK of one not begun on a server yet. `sql` must hold
    /// exactly one statement of `kind`.
    pub(super) fn txn_control_locally(&mut self, kind: StatementKind, sql: &[u8]) -> bool {
        if self.server.is_some() {
            return false;
        }
        let tag = match kind {
            StatementKind::Begin if !self.in_transaction() => {
                self.pending.begin = Some(String::from_utf8_lossy(sql).into_owned());
                self.pending.failed = false;
                self.session.txn_status = b'T';
                "BEGIN"
            }
            StatementKind::Commit | StatementKind::Rollback if self.pending.begin.is_some() => {
                let committed = kind == StatementKind::Commit && !self.pending.failed;
                self.end_pending();
                if committed { "COMMIT" } else { "ROLLBACK" }
            }
            _ => return false,
        };
        let mut answer = BytesMut::new();
        wire::encode_command_complete(&mut answer, tag);
        wire::encode_ready_for_query(&mut answer, self.session.txn_status);
        self.answer(Unit::Query, answer);
        true
    }

    fn end_pending(&mut self) {
        self.pending = PendingTxn::default();
        self.session.txn_status = b'I';
        self.end_txn_tenants();
    }

    /// In a transaction that failed before reaching a server, Postgres's answer to
    /// everything but the end of the transaction.
    pub(super) fn aborted_locally(&self) -> bool {
        self.server.is_none() && self.pending.begin.is_some() && self.pending.failed
    }

    pub(super) fn abort_error(&mut self) {
        let mut answer = BytesMut::new();
        crate::wire::PgError::error(
            "25P02",
            "current transaction is aborted, commands ignored until end of transaction block",
        )
        .encode(&mut answer);
        wire::encode_ready_for_query(&mut answer, b'E');
        self.answer(Unit::Query, answer);
    }

    /// A refusal inside a transaction not begun on a server: the transaction is failed.
    pub(super) fn fail_pending(&mut self) {
        if self.pending.begin.is_some() {
            self.pending.failed = true;
            self.session.txn_status = b'E';
        }
    }

    /// Just after a server was lent: begin the pending transaction there first.
    pub(super) fn begin_on_server(&mut self) {
        let Some(begin) = self.pending.begin.take() else {
            return;
        };
        self.pending = PendingTxn::default();
        wire::encode_query(&mut self.to_server, &begin);
        self.push(Expect {
            unit: Unit::Query,
            mode: Mode::Injected,
            undo: Undo::default(),
        });
    }

    /// A Bind the proxy answers alone: BEGIN bound through the extended protocol outside
    /// a transaction, with no server lent.
    pub(super) fn bind_locally<'a>(&mut self, stmt: &Statement, portal: &[u8]) -> Option<Plan<'a>> {
        let info = stmt.classified.as_ref()?;
        if self.server.is_some() || !portal.is_empty() {
            return None;
        }
        let tag = match info.template.kind {
            StatementKind::Begin if !self.in_transaction() => {
                let query = stmt
                    .parse_tail
                    .split(|&b| b == 0)
                    .next()
                    .unwrap_or_default();
                self.pending.begin = Some(String::from_utf8_lossy(query).into_owned());
                self.pending.failed = false;
                "BEGIN"
            }
            StatementKind::Commit if self.pending.begin.is_some() && !self.pending.failed => {
                "COMMIT"
            }
            StatementKind::Commit | StatementKind::Rollback if self.pending.begin.is_some() => {
                "ROLLBACK"
            }
            _ => return None,
        };
        self.pending.local_portal = Some(tag);
        let mut answer = BytesMut::new();
        wire::encode_bind_complete(&mut answer);
        self.answer(Unit::Bind, answer);
        Some(Plan::Done)
    }

    /// Execute or Describe of the proxy's own portal.
    pub(super) fn portal_locally<'a>(&mut self, execute: bool) -> Option<Plan<'a>> {
        if self.server.is_some() {
            return None;
        }
        let tag = self.pending.local_portal?;
        let mut answer = BytesMut::new();
        if execute {
            wire::encode_command_complete(&mut answer, tag);
            self.pending.local_portal = None;
            if tag == "BEGIN" {
                self.session.txn_status = b'T';
            } else {
                self.end_pending();
            }
        } else {
            wire::encode_no_data(&mut answer);
        }
        self.answer(Unit::Execute, answer);
        Some(Plan::Done)
    }
}
