//! Client messages on their way to the server: validated, named statements renamed to the
//! proxy's names (and re-prepared where this server connection lacks them), and session
//! commands noted so they follow the client to its next server connection.

use bytes::{Buf, Bytes, BytesMut};

use super::replies::{Expect, Mode, Undo, Unit};
use super::session::{Session, SessionEnd};
use crate::classify::{SessionCommand, SessionScan, scan_session_commands};
use crate::frontend::{ClientError, Statement};
use crate::wire::{self, FrameRef, PgError, tag};

enum Triage {
    Done,
    Terminate,
    Forward(Option<SessionScan>),
}

impl Session<'_> {
    /// Handles every complete message in the client buffer. Returns false when the client
    /// said goodbye (Terminate).
    pub(super) async fn on_client_data(&mut self) -> Result<bool, SessionEnd> {
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
            // Only lending a server connection waits; everything else is synchronous.
            let scan = match self.triage(frame) {
                Ok(Triage::Done) => continue,
                Ok(Triage::Terminate) => break Ok(false),
                Ok(Triage::Forward(scan)) => scan,
                Err(e) => break Err(e),
            };
            if self.server.is_none() {
                if let Err(e) = self.attach().await {
                    tracing::warn!(error = %e, "no server connection for client");
                    self.fail_without_server(frame, &e);
                    continue;
                }
            } else if self.gucs_dirty {
                self.sync_settings();
            }
            if let Err(e) = self.forward(frame, scan) {
                break Err(e);
            }
        };
        buf.advance(pos);
        self.replies.answer_ready(&mut self.to_client);
        result
    }

    /// Decides what a client message needs: nothing more (answered, or ignored), the end
    /// of the session, or a server (with the session commands of a simple query).
    fn triage(&mut self, frame: FrameRef<'_>) -> Result<Triage, SessionEnd> {
        if frame.tag == tag::TERMINATE {
            return Ok(Triage::Terminate);
        }
        if !is_client_tag(frame.tag) {
            let msg = format!("unexpected message type {:?}", frame.tag as char);
            return Err(self.protocol_violation(msg));
        }
        if self.failed_until_sync {
            self.answer_failed(frame);
            return Ok(Triage::Done);
        }
        let scan = match frame.tag {
            tag::QUERY => {
                let sql = wire::decode_query(frame.body())
                    .map_err(|e| self.protocol_violation(e.to_string()))?;
                Some(scan_session_commands(sql))
            }
            _ => None,
        };
        if let Some(scan) = &scan
            && self.answer_locally(scan)
        {
            return Ok(Triage::Done);
        }
        if self.server.is_none() && is_copy_tag(frame.tag) {
            return Ok(Triage::Done); // leftovers of a COPY that failed; Postgres ignores them
        }
        Ok(Triage::Forward(scan))
    }

    /// Tells the client its stream made no sense and ends the session.
    fn protocol_violation(&mut self, message: String) -> SessionEnd {
        PgError::fatal("08P01", format!("protocol violation: {message}"))
            .encode(&mut self.to_client);
        SessionEnd::Client(ClientError::Protocol(message))
    }

    /// Answers a message the way Postgres would after an error, when no server could be had:
    /// nothing until Sync, then ReadyForQuery.
    fn answer_failed(&mut self, frame: FrameRef<'_>) {
        if frame.tag == tag::SYNC {
            self.failed_until_sync = false;
            wire::encode_ready_for_query(&mut self.to_client, self.session.txn_status);
        }
    }

    fn fail_without_server(&mut self, frame: FrameRef<'_>, e: &crate::backend::BackendError) {
        PgError::error(e.sqlstate(), e.to_string()).encode(&mut self.to_client);
        match frame.tag {
            tag::QUERY | tag::FUNCTION_CALL | tag::SYNC => {
                wire::encode_ready_for_query(&mut self.to_client, self.session.txn_status);
            }
            _ => self.failed_until_sync = true,
        }
    }

    /// Statements the proxy answers without a server: `DEALLOCATE` of a statement it
    /// manages (servers know it by another name), and `DISCARD ALL` between transactions
    /// (no server is lent then, and the proxy's record of the session is all there is to
    /// discard). Answers queue behind the replies still due, so the order holds.
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
        self.push(Expect {
            unit: Unit::Query,
            mode: Mode::Answer(answer.freeze()),
            undo: Undo::default(),
        });
        self.replies.answer_ready(&mut self.to_client);
        true
    }

    /// Sends one message to the lent server, with the bookkeeping its replies need.
    fn forward(
        &mut self,
        frame: FrameRef<'_>,
        scan: Option<SessionScan>,
    ) -> Result<(), SessionEnd> {
        let bad = |s: &mut Self, e: wire::WireError| s.protocol_violation(e.to_string());
        match frame.tag {
            tag::QUERY => {
                let scan = scan.unwrap_or_default();
                self.note_commands(scan.commands, scan.statements);
                self.to_server.extend_from_slice(frame.bytes);
                self.push(Expect::forward(Unit::Query));
            }
            tag::PARSE => self.forward_parse(frame).map_err(|e| bad(self, e))?,
            tag::BIND => self.forward_bind(frame).map_err(|e| bad(self, e))?,
            tag::DESCRIBE => self.forward_describe(frame).map_err(|e| bad(self, e))?,
            tag::CLOSE => self.forward_close(frame).map_err(|e| bad(self, e))?,
            tag::EXECUTE => {
                self.needs_sync = true;
                self.to_server.extend_from_slice(frame.bytes);
                self.push(Expect::forward(Unit::Execute));
            }
            tag::SYNC => {
                self.needs_sync = false;
                self.to_server.extend_from_slice(frame.bytes);
                self.push(Expect::forward(Unit::Sync));
            }
            tag::FUNCTION_CALL => {
                self.to_server.extend_from_slice(frame.bytes);
                self.push(Expect::forward(Unit::Query));
            }
            // Flush and COPY data get no reply of their own.
            _ => self.to_server.extend_from_slice(frame.bytes),
        }
        Ok(())
    }

    fn forward_parse(&mut self, frame: FrameRef<'_>) -> Result<(), wire::WireError> {
        let parse = wire::decode_parse(frame.body())?;
        self.needs_sync = true;
        if parse.name.is_empty() {
            // Noted when a Bind runs it: a Parse alone changes nothing.
            self.unnamed_cmds = scan_session_commands(parse.query).commands;
            self.to_server.extend_from_slice(frame.bytes);
            self.push(Expect::forward(Unit::Parse));
            return Ok(());
        }
        let stmt = self.ctx.statements.intern(parse.after_name);
        let client_name = Bytes::copy_from_slice(parse.name);
        self.session
            .statements
            .insert(client_name.clone(), stmt.clone());
        let conn = self.server.as_mut().expect("attached").conn_mut();
        if conn.touch_prepared(stmt.id) {
            let mut answer = BytesMut::new();
            wire::encode_parse_complete(&mut answer);
            self.push(Expect {
                unit: Unit::Parse,
                mode: Mode::Answer(answer.freeze()),
                undo: Undo {
                    server_statement: None,
                    client_statement: Some(client_name),
                },
            });
            return Ok(());
        }
        self.prepare_on_server(&stmt, Mode::Forward, Some(client_name));
        Ok(())
    }

    fn forward_bind(&mut self, frame: FrameRef<'_>) -> Result<(), wire::WireError> {
        let bind = wire::decode_bind(frame.body())?;
        self.needs_sync = true;
        let stmt = self.client_statement(bind.statement);
        let commands = match &stmt {
            Some(stmt) => stmt.commands.as_slice(),
            None if bind.statement.is_empty() => self.unnamed_cmds.as_slice(),
            None => &[],
        };
        if !commands.is_empty() {
            let commands = commands.to_vec();
            self.note_commands(commands, 1);
        }
        match stmt {
            Some(stmt) => {
                self.ensure_prepared(&stmt);
                wire::encode_bind(
                    &mut self.to_server,
                    bind.portal,
                    &stmt.server_name,
                    bind.after_names,
                );
            }
            None => self.to_server.extend_from_slice(frame.bytes),
        }
        self.push(Expect::forward(Unit::Bind));
        Ok(())
    }

    fn forward_describe(&mut self, frame: FrameRef<'_>) -> Result<(), wire::WireError> {
        let (kind, name) = wire::decode_target(frame.body(), "Describe")?;
        self.needs_sync = true;
        match self.client_statement(name).filter(|_| kind == b'S') {
            Some(stmt) => {
                self.ensure_prepared(&stmt);
                wire::encode_describe(&mut self.to_server, b'S', &stmt.server_name);
            }
            None => self.to_server.extend_from_slice(frame.bytes),
        }
        self.push(Expect::forward(Unit::Describe));
        Ok(())
    }

    /// Closing a named statement only forgets the client's name for it: the server keeps
    /// the proxy's statement for the next client that prepares the same text.
    fn forward_close(&mut self, frame: FrameRef<'_>) -> Result<(), wire::WireError> {
        let (kind, name) = wire::decode_target(frame.body(), "Close")?;
        self.needs_sync = true;
        if kind == b'S' && !name.is_empty() {
            self.session.statements.remove(name);
            let mut answer = BytesMut::new();
            wire::encode_close_complete(&mut answer);
            self.push(Expect {
                unit: Unit::Close,
                mode: Mode::Answer(answer.freeze()),
                undo: Undo::default(),
            });
            return Ok(());
        }
        self.to_server.extend_from_slice(frame.bytes);
        self.push(Expect::forward(Unit::Close));
        Ok(())
    }

    fn client_statement(&self, name: &[u8]) -> Option<std::sync::Arc<Statement>> {
        if name.is_empty() {
            return None;
        }
        self.session.statements.get(name).cloned()
    }

    /// Prepares `stmt` on the lent server unless it already is, silently (the client did
    /// not ask for this Parse, so its ParseComplete is dropped; an error still shows).
    fn ensure_prepared(&mut self, stmt: &Statement) {
        let conn = self.server.as_mut().expect("attached").conn_mut();
        if !conn.touch_prepared(stmt.id) {
            self.prepare_on_server(stmt, Mode::Injected, None);
        }
    }

    fn prepare_on_server(&mut self, stmt: &Statement, mode: Mode, client_name: Option<Bytes>) {
        let cap = self.ctx.prepared_cache;
        let conn = self.server.as_mut().expect("attached").conn_mut();
        if let Some(victim) = conn.note_prepared(stmt.id, cap) {
            wire::encode_close(&mut self.to_server, b'S', format!("sg{victim}").as_bytes());
            self.push(Expect {
                unit: Unit::Close,
                mode: Mode::Injected,
                undo: Undo::default(),
            });
        }
        wire::encode_parse(&mut self.to_server, &stmt.server_name, &stmt.parse_tail);
        self.push(Expect {
            unit: Unit::Parse,
            mode,
            undo: Undo {
                server_statement: Some(stmt.id),
                client_statement: client_name,
            },
        });
    }

    /// Remembers session commands until the server says whether they took effect. A
    /// `DISCARD ALL` or `DEALLOCATE ALL` also wipes the server's prepared statements; one in
    /// a multi-statement string leaves the server in a state not worth tracking, so that
    /// connection is closed after this client is done with it.
    fn note_commands(&mut self, commands: Vec<SessionCommand>, statements: usize) {
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
        if let Some(id) = undo.server_statement
            && let Some(server) = self.server.as_mut()
        {
            server.conn_mut().prepared.remove(&id);
        }
        if let Some(name) = undo.client_statement {
            self.session.statements.remove(&name);
        }
    }
}

fn is_client_tag(t: u8) -> bool {
    matches!(
        t,
        tag::QUERY
            | tag::PARSE
            | tag::BIND
            | tag::DESCRIBE
            | tag::EXECUTE
            | tag::CLOSE
            | tag::SYNC
            | tag::FLUSH
            | tag::FUNCTION_CALL
            | tag::COPY_DATA
            | tag::COPY_DONE
            | tag::COPY_FAIL
    )
}

fn is_copy_tag(t: u8) -> bool {
    matches!(t, tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL)
}
