//! Server replies on their way to the client: forwarded as the raw bytes they arrived as,
//! except the replies to the proxy's own messages, which are dropped (or, for a failed
//! settings replay, turned into a warning).

use bytes::{Buf, BytesMut};

use super::replies::{Action, Effects};
use super::session::{Session, SessionEnd};
use crate::backend::BackendError;
use crate::classify::SessionCommand;
use crate::gucs::Gucs;
use crate::wire::{self, PgError, btag};

/// Server frames are not size-limited by the proxy (a row may be large); the server is
/// trusted to frame correctly, and a broken length is caught as a protocol error.
const MAX_SERVER_MESSAGE: usize = 1 << 30;

impl Session<'_> {
    /// Handles every complete message in the server's buffer.
    pub(super) fn on_server_data(&mut self) -> Result<(), SessionEnd> {
        let server = self.server.as_mut().expect("attached");
        let mut rbuf = std::mem::take(&mut server.conn_mut().rbuf);
        let result = self.relay(&mut rbuf);
        if let Some(server) = self.server.as_mut() {
            server.conn_mut().rbuf = rbuf;
        }
        result
    }

    fn relay(&mut self, rbuf: &mut BytesMut) -> Result<(), SessionEnd> {
        // Forwarded frames are copied in runs: [run_start, pos) is forwarded and not yet copied.
        let mut pos = 0;
        let mut run_start = 0;
        loop {
            let len = match wire::frame_len(&rbuf[pos..], MAX_SERVER_MESSAGE) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(source) => {
                    return Err(self.server_protocol_error(BackendError::Protocol {
                        shard: self.lent_shard_name(),
                        source,
                    }));
                }
            };
            let frame = &rbuf[pos..pos + len];
            let tag = frame[0];
            let mut fx = Effects::default();
            let action = match self.replies.on_frame(tag, &mut fx) {
                Ok(a) => a,
                Err(e) => {
                    let shard = self.lent_shard_name();
                    tracing::error!(shard, error = %e, "server reply out of step");
                    return Err(self.server_protocol_error(BackendError::Protocol {
                        shard,
                        source: wire::WireError::Malformed {
                            what: "unexpected reply",
                        },
                    }));
                }
            };
            self.observe(tag, &frame[5..], &action, &fx);
            if action != Action::Forward {
                copy_run(&mut self.to_client, rbuf, run_start, pos);
                if action == Action::Warn {
                    let e = wire::decode_error(&frame[5..]);
                    let mut w = PgError::error(
                        "01000",
                        format!(
                            "shardgate could not restore a session setting: {}",
                            e.message
                        ),
                    );
                    w.severity = wire::Severity::Warning;
                    w.encode(&mut self.to_client);
                }
                run_start = pos + len;
            }
            pos += len;
            if !fx.undo.is_empty() {
                for undo in fx.undo {
                    self.undo(undo);
                }
            }
            if self.replies.front_is_answer() {
                copy_run(&mut self.to_client, rbuf, run_start, pos);
                run_start = pos;
                self.replies.answer_ready(&mut self.to_client);
            }
        }
        if run_start == 0 && pos > 0 && self.to_client.is_empty() {
            // The whole chunk goes to the client: hand over the bytes instead of copying.
            self.to_client = rbuf.split_to(pos);
            return Ok(());
        }
        copy_run(&mut self.to_client, rbuf, run_start, pos);
        rbuf.advance(pos);
        Ok(())
    }

    /// Keeps the session's view of the server current: transaction status, COPY state,
    /// session commands that took effect, a failed replay.
    fn observe(&mut self, tag: u8, body: &[u8], action: &Action, fx: &Effects) {
        if fx.replay_failed
            && let Some(server) = self.server.as_mut()
        {
            // The server's settings are unknown now: never pool it again.
            server.conn_mut().broken = true;
        }
        if *action != Action::Forward {
            return;
        }
        match tag {
            btag::COPY_IN => self.copy_in = true,
            btag::ERROR_RESPONSE => {
                self.copy_in = false;
                self.settings.on_error();
            }
            btag::COMMAND_COMPLETE => {
                self.copy_in = false;
                if self.settings.is_tracking() {
                    self.settings.on_command_tag(wire::decode_command_tag(body));
                }
            }
            btag::READY_FOR_QUERY if fx.ready => {
                let status = body.first().copied().unwrap_or(b'I');
                self.session.txn_status = status;
                if status == b'I' {
                    self.end_txn_tenants_unless_in_flight();
                }
                for cmd in self.settings.on_ready(status) {
                    self.apply_on_both(&cmd);
                }
            }
            _ => {}
        }
    }

    /// A session command succeeded on the server: the client's session and the server's
    /// record both change.
    fn apply_on_both(&mut self, cmd: &SessionCommand) {
        self.session.apply(cmd);
        let Some(server) = self.server.as_mut() else {
            return;
        };
        let conn = server.conn_mut();
        match cmd {
            SessionCommand::Set { name, value } => {
                conn.gucs
                    .set(name, crate::gucs::GucValue::Raw(value.clone()));
            }
            SessionCommand::SetConfig { name, value } => {
                conn.gucs
                    .set(name, crate::gucs::GucValue::Str(value.clone()));
            }
            SessionCommand::Reset { name } => {
                conn.gucs.remove(name);
                self.gucs_dirty |= self.session.gucs.get(name).is_some();
            }
            SessionCommand::ResetAll => {
                conn.gucs = Gucs::default();
                self.gucs_dirty |= !self.session.gucs.is_empty();
            }
            SessionCommand::DiscardAll => {
                conn.gucs = Gucs::default();
                conn.prepared.clear();
                self.gucs_dirty |= !self.session.gucs.is_empty();
            }
            SessionCommand::Deallocate { name: None } => conn.prepared.clear(),
            SessionCommand::Deallocate { name: Some(_) }
            | SessionCommand::Savepoint { .. }
            | SessionCommand::RollbackTo { .. }
            | SessionCommand::Release { .. } => {}
        }
    }

    fn server_protocol_error(&mut self, e: BackendError) -> SessionEnd {
        if let Some(mut s) = self.server.take() {
            s.conn_mut().broken = true;
        }
        self.server_shard = None;
        PgError::fatal(e.sqlstate(), e.to_string()).encode(&mut self.to_client);
        SessionEnd::Server(e)
    }
}

fn copy_run(out: &mut BytesMut, rbuf: &BytesMut, from: usize, to: usize) {
    if to > from {
        out.extend_from_slice(&rbuf[from..to]);
    }
}
