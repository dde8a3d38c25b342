//! The extended query protocol with prepared statements that survive transaction pooling.
//!
//! A client's Parse is remembered, not sent: the proxy answers ParseComplete and prepares
//! the statement on a server only when a Bind or Describe shows which server must run it
//! (with sharding, the Bind's parameters decide the shard). Named statements are prepared
//! under proxy names (`sg<id>`) shared by every client that prepares the same text; an
//! unnamed one goes to the server's unnamed slot, and not again while it is still there.
//! A statement that fails to prepare reports its error where the server would have run it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::client_msgs::Plan;
use super::replies::{Expect, Mode, Undo, Unit};
use super::route::{Decision, Target};
use super::session::Session;
use crate::frontend::Statement;
use crate::router::RouteError;
use crate::wire::{self, BindMsg, FrameRef, WireError};

impl Session<'_> {
    pub(super) fn plan_parse<'a>(&mut self, frame: FrameRef<'a>) -> Result<Plan<'a>, WireError> {
        let parse = wire::decode_parse(frame.body())?;
        let classifier = &self.ctx.routing.classifier;
        let stmt = self.ctx.statements.intern(parse.after_name, |query| {
            classifier.classify(query).statements.into_iter().next()
        });
        let mut undo = Undo::default();
        if parse.name.is_empty() {
            self.session.unnamed = Some(stmt);
        } else {
            let name = Bytes::copy_from_slice(parse.name);
            self.session.statements.insert(name.clone(), stmt);
            undo.client_statement = Some(name);
        }
        let mut answer = BytesMut::new();
        wire::encode_parse_complete(&mut answer);
        self.push(Expect {
            unit: Unit::Parse,
            mode: Mode::Answer(answer.freeze()),
            undo,
        });
        Ok(Plan::Done)
    }

    pub(super) fn plan_bind<'a>(&mut self, frame: FrameRef<'a>) -> Result<Plan<'a>, WireError> {
        let bind = wire::decode_bind(frame.body())?;
        if self.is_fanout_portal(bind.portal) {
            self.fanout = None; // a Bind replaces the portal of its name
        }
        let Some(stmt) = self.client_statement(bind.statement) else {
            return Ok(self.missing_statement(bind.statement));
        };
        if let Some(plan) = self.bind_locally(&stmt, bind.portal) {
            return Ok(plan);
        }
        if self.aborted_locally() {
            return Ok(self.local_error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        Ok(match self.route_bind(&stmt, bind.after_names) {
            Decision::Go(target) => Plan::Bind {
                bind,
                stmt,
                target,
                broadcast: false,
            },
            Decision::Broadcast => Plan::Bind {
                bind,
                stmt,
                target: Target::Any,
                broadcast: true,
            },
            Decision::Hold(tenant) => Plan::Hold { tenant, bind: true },
            Decision::FanOut(shards) => {
                self.open_fanout_portal(bind.portal, &stmt, bind.after_names, shards);
                Plan::Done
            }
            Decision::Split(_) => {
                self.refuse_bind(RouteError::CrossShardWrite.into());
                Plan::Done
            }
            Decision::Refuse(_) if self.awaiting_server() => Plan::Stall,
            Decision::Refuse(r) => {
                self.refuse_bind(r);
                Plan::Done
            }
        })
    }

    pub(super) fn plan_describe<'a>(&mut self, frame: FrameRef<'a>) -> Result<Plan<'a>, WireError> {
        let (kind, name) = wire::decode_target(frame.body(), "Describe")?;
        if kind == b'P' && self.is_fanout_portal(name) {
            return Ok(Plan::FanOutDescribe);
        }
        if kind == b'P' {
            if self.server.is_some() {
                return Ok(Plan::Pass {
                    frame,
                    unit: Some(Unit::Describe),
                });
            }
            return Ok(match self.portal_locally(false) {
                Some(plan) => plan,
                None => self.local_error("34000", "portal does not exist"),
            });
        }
        Ok(match self.client_statement(name) {
            Some(stmt) => Plan::DescribeStatement {
                stmt,
                named: !name.is_empty(),
            },
            None => self.missing_statement(name),
        })
    }

    /// Closing a statement only forgets the client's name for it: the server keeps the
    /// proxy's statement for the next client that prepares the same text.
    pub(super) fn plan_close<'a>(&mut self, frame: FrameRef<'a>) -> Result<Plan<'a>, WireError> {
        let (kind, name) = wire::decode_target(frame.body(), "Close")?;
        if kind == b'P' && self.is_fanout_portal(name) {
            self.fanout = None;
            let mut answer = BytesMut::new();
            wire::encode_close_complete(&mut answer);
            self.answer(Unit::Close, answer);
            return Ok(Plan::Done);
        }
        if kind == b'P' && self.server.is_some() {
            return Ok(Plan::Pass {
                frame,
                unit: Some(Unit::Close),
            });
        }
        if kind == b'S' {
            if name.is_empty() {
                self.session.unnamed = None;
            } else {
                self.session.statements.remove(name);
            }
        }
        // Closing something that does not exist is not an error in Postgres either.
        let mut answer = BytesMut::new();
        wire::encode_close_complete(&mut answer);
        self.answer(Unit::Close, answer);
        Ok(Plan::Done)
    }

    fn missing_statement<'a>(&mut self, name: &[u8]) -> Plan<'a> {
        let msg = if name.is_empty() {
            "unnamed prepared statement does not exist".to_owned()
        } else {
            format!(
                "prepared statement \"{}\" does not exist",
                String::from_utf8_lossy(name)
            )
        };
        self.local_error("26000", &msg)
    }

    fn client_statement(&self, name: &[u8]) -> Option<Arc<Statement>> {
        if name.is_empty() {
            self.session.unnamed.clone()
        } else {
            self.session.statements.get(name).cloned()
        }
    }

    pub(super) fn send_bind(&mut self, bind: &BindMsg<'_>, stmt: &Arc<Statement>) {
        if !stmt.commands.is_empty() {
            self.note_commands(stmt.commands.clone(), 1);
        }
        let name = self.ensure_prepared(stmt, !bind.statement.is_empty());
        wire::encode_bind(&mut self.to_server, bind.portal, &name, bind.after_names);
        self.needs_sync = true;
        self.push(Expect::forward(Unit::Bind));
    }

    /// Makes sure the lent server has `stmt` prepared, silently (the client did not ask for
    /// this Parse, so its ParseComplete is dropped; an error still shows), and returns the
    /// name the server knows it by.
    pub(super) fn ensure_prepared(&mut self, stmt: &Statement, named: bool) -> Bytes {
        let cap = self.ctx.prepared_cache;
        let conn = self.server_conn();
        if !named {
            if conn.unnamed != Some(stmt.id) {
                conn.unnamed = Some(stmt.id);
                wire::encode_parse(&mut self.to_server, b"", &stmt.parse_tail);
                self.push_injected(
                    Unit::Parse,
                    Undo {
                        server_unnamed: true,
                        ..Undo::default()
                    },
                );
            }
            return Bytes::new();
        }
        if conn.touch_prepared(stmt.id) {
            return stmt.server_name.clone();
        }
        if let Some(victim) = conn.note_prepared(stmt.id, cap) {
            wire::encode_close(&mut self.to_server, b'S', format!("sg{victim}").as_bytes());
            self.push_injected(Unit::Close, Undo::default());
        }
        wire::encode_parse(&mut self.to_server, &stmt.server_name, &stmt.parse_tail);
        self.push_injected(
            Unit::Parse,
            Undo {
                server_statement: Some(stmt.id),
                ..Undo::default()
            },
        );
        stmt.server_name.clone()
    }

    fn push_injected(&mut self, unit: Unit, undo: Undo) {
        self.push(Expect {
            unit,
            mode: Mode::Injected,
            undo,
        });
    }
}
