//! The per-client loop: read what the client sends, lend it a server connection when it
//! needs one, pump bytes both ways, and give the connection back at the end of each
//! transaction (transaction pooling) or of the session (session pooling).
//!
//! The loop never blocks on one direction while the other has data: reads and writes of
//! both sockets are polled together, with outgoing buffers bounded, so a client that
//! pipelines more than the socket buffers hold cannot deadlock against its server.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::ExecContext;
use super::cancel::CancelHandle;
use super::replies::{Expect, Replies};
use super::settings::SettingsTracker;
use super::txn::PendingTxn;
use super::wakers::SessionWakers;
use shardgate_catalog::{ShardId, TenantKey};

use crate::backend::{BackendError, Pooled};
use crate::config::PoolMode;
use crate::frontend::{ClientError, ClientSession, ClientStream};
use crate::wire::{self, PgError};

/// Stop reading from one side while this much is waiting to be written to the other.
const HIGH_WATER: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// How much a stalled session buffers from its client before it stops reading.
const STALLED_READ_LIMIT: usize = 1 << 20;

/// Why a session ended, for the log; the client has been told whatever it needed to know.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Server(#[from] BackendError),
}

pub(super) struct Session<'a> {
    pub(super) ctx: &'a ExecContext,
    pub(super) client: ClientStream,
    /// Bytes from the client not yet handled (a partial message at most, between reads).
    pub(super) cbuf: BytesMut,
    pub(super) to_client: BytesMut,
    pub(super) to_server: BytesMut,
    pub(super) server: Option<Pooled>,
    /// The shard of the lent connection (set exactly when `server` is).
    pub(super) server_shard: Option<ShardId>,
    /// A client message waits for the lent connection of another shard to finish; no more
    /// client input is read until it has.
    pub(super) stalled: bool,
    /// A transaction answered BEGIN for but not begun on a server yet.
    pub(super) pending: PendingTxn,
    /// The tenant the message being routed names, when row-level security on its tables
    /// needs the tenant setting on the server too.
    pub(super) rls_tenant: Option<TenantKey>,
    pub(super) session: ClientSession,
    pub(super) replies: Replies,
    /// Extended-protocol messages were sent since the last Sync: the server is inside an
    /// implicit transaction until it sees one.
    pub(super) needs_sync: bool,
    /// The server is in COPY FROM STDIN and consumes CopyData until CopyDone/CopyFail.
    pub(super) copy_in: bool,
    /// No server could be had: answer the client's messages with nothing until its Sync.
    pub(super) failed_until_sync: bool,
    /// Which session commands took effect.
    pub(super) settings: SettingsTracker,
    /// The session's settings changed under a held server connection in a way the server
    /// did not follow (RESET to a startup value): replay before the next statement.
    pub(super) gucs_dirty: bool,
    pub(super) cancel: CancelHandle,
    /// The client's portal for a read on several shards, from its Bind to its Sync.
    pub(super) fanout: Option<super::fanout::FanoutPortal>,
    /// The message being held at a tenant's gate, and its deadline (kept while the same
    /// message is routed again after a map change).
    pub(super) held: Option<(TenantKey, std::time::Instant)>,
    /// Tenants the open transaction routed statements for (counted in `open_txns`).
    pub(super) txn_tenants: Vec<TenantKey>,
    /// Which socket woke the task (see `wakers`); built on the first poll.
    pub(super) wakers: Option<SessionWakers>,
}

enum Event {
    Client,
    Server,
    /// A stalled client message can be taken up again: the server owes nothing more.
    Resume,
}

/// Greets an authenticated client and serves it until it leaves.
pub async fn run(
    ctx: &ExecContext,
    client: ClientStream,
    cbuf: BytesMut,
    session: ClientSession,
) -> Result<(), SessionEnd> {
    let mut s = Session {
        ctx,
        client,
        cbuf,
        to_client: BytesMut::with_capacity(READ_CHUNK),
        to_server: BytesMut::with_capacity(READ_CHUNK),
        server: None,
        server_shard: None,
        stalled: false,
        pending: PendingTxn::default(),
        rls_tenant: None,
        session,
        replies: Replies::default(),
        needs_sync: false,
        copy_in: false,
        failed_until_sync: false,
        settings: SettingsTracker::default(),
        gucs_dirty: false,
        cancel: ctx.cancels.register(),
        fanout: None,
        held: None,
        txn_tenants: Vec::new(),
        wakers: None,
    };
    s.greet().await?;
    let result = s.serve().await;
    s.finish(result.is_ok()).await;
    result
}

impl Session<'_> {
    /// AuthenticationOk, the server's parameters as this client should see them, the cancel
    /// key and ReadyForQuery.
    async fn greet(&mut self) -> Result<(), SessionEnd> {
        let params = match self.server_params().await {
            Ok(p) => p,
            Err(e) => {
                let mut out = BytesMut::new();
                PgError::fatal(e.sqlstate(), e.to_string()).encode(&mut out);
                let _ = self.client.write_all(&out).await;
                return Err(e.into());
            }
        };
        let out = &mut self.to_client;
        wire::encode_auth_ok(out);
        for (name, value) in &params {
            let value = match self.session.startup.get(name) {
                Some(crate::gucs::GucValue::Str(v)) => v,
                _ => value,
            };
            wire::encode_parameter_status(out, name, value);
        }
        wire::encode_backend_key(out, self.cancel.pid, self.cancel.secret);
        wire::encode_ready_for_query(out, b'I');
        self.flush_client().await?;
        Ok(())
    }

    /// ParameterStatus values for the client: those of the first shard that answers.
    async fn server_params(&self) -> Result<Vec<(String, String)>, BackendError> {
        let map = self.ctx.routing.map.load_full();
        let mut last = None;
        for info in map.shards() {
            let result = match self.ctx.pools.get(info) {
                Ok(pool) => pool.server_params().await,
                Err(e) => Err(e),
            };
            match result {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(BackendError::Config {
            shard: "-".into(),
            message: "the shard map has no shards".into(),
        }))
    }

    async fn serve(&mut self) -> Result<(), SessionEnd> {
        // Messages the client pipelined behind its StartupMessage.
        if !self.cbuf.is_empty() && !self.on_client_data().await? {
            return Ok(());
        }
        loop {
            match self.next_event().await? {
                Event::Client => {
                    if !self.on_client_data().await? {
                        return Ok(());
                    }
                }
                Event::Server => {
                    self.on_server_data()?;
                    self.maybe_release();
                }
                Event::Resume => {
                    self.stalled = false;
                    if !self.on_client_data().await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Writes what can be written, then waits for bytes from either side.
    async fn next_event(&mut self) -> Result<Event, SessionEnd> {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, SessionEnd>> {
        SessionWakers::for_task(&mut self.wakers, cx);
        let wakers = self.wakers.as_ref().expect("just set");
        if let Some(server) = self.server.as_mut()
            && !self.to_server.is_empty()
        {
            let mut cx = wakers.server.context();
            let stream = &mut server.conn_mut().stream;
            if let Err(e) = poll_write_buf(stream, &mut cx, &mut self.to_server) {
                return Poll::Ready(Err(self.server_io_error(e)));
            }
        }
        if !self.to_client.is_empty() {
            let mut cx = wakers.client.context();
            if let Err(e) = poll_write_buf(&mut self.client, &mut cx, &mut self.to_client) {
                return Poll::Ready(Err(ClientError::Io(e).into()));
            }
        }
        if self.stalled && !self.awaiting_server() {
            return Poll::Ready(Ok(Event::Resume));
        }
        // A stalled session still reads (bounded), so that a client that leaves is noticed.
        let room = if self.stalled {
            self.cbuf.len() < STALLED_READ_LIMIT
        } else {
            self.to_server.len() < HIGH_WATER
        };
        if room && wakers.client.take() {
            let mut cx = wakers.client.context();
            match poll_read_buf(&mut self.client, &mut cx, &mut self.cbuf) {
                Poll::Pending => {}
                Poll::Ready(r) => {
                    wakers.client.poll_again();
                    return Poll::Ready(match r {
                        Ok(0) => Err(ClientError::Closed.into()),
                        Ok(_) => Ok(Event::Client),
                        Err(e) => Err(ClientError::Io(e).into()),
                    });
                }
            }
        }
        if self.to_client.len() < HIGH_WATER
            && let Some(server) = self.server.as_mut()
            && wakers.server.take()
        {
            let mut cx = wakers.server.context();
            let conn = server.conn_mut();
            match poll_read_buf(&mut conn.stream, &mut cx, &mut conn.rbuf) {
                Poll::Pending => {}
                Poll::Ready(r) => {
                    wakers.server.poll_again();
                    return Poll::Ready(match r {
                        Ok(0) => {
                            let shard = server.pool().shard().to_owned();
                            Err(self.server_lost(BackendError::Closed { shard }))
                        }
                        Ok(_) => Ok(Event::Server),
                        Err(e) => Err(self.server_io_error(e)),
                    });
                }
            }
        }
        Poll::Pending
    }

    fn server_io_error(&mut self, source: io::Error) -> SessionEnd {
        let shard = self.lent_shard_name();
        self.server_lost(BackendError::Io { shard, source })
    }

    /// The name of the lent server's shard, for errors (empty when none is lent).
    pub(super) fn lent_shard_name(&self) -> String {
        self.server
            .as_ref()
            .map(|s| s.pool().shard().to_owned())
            .unwrap_or_default()
    }

    /// The server connection died under the client. The client is told with a FATAL error
    /// and disconnected: whatever it had in flight may or may not have happened, and only
    /// a new session makes that plain to its driver.
    fn server_lost(&mut self, e: BackendError) -> SessionEnd {
        if let Some(mut s) = self.server.take() {
            s.conn_mut().broken = true;
        }
        self.server_shard = None;
        self.cancel.slot.set(None);
        PgError::fatal(e.sqlstate(), e.to_string())
            .with_hint("the server connection was lost; reconnect and retry")
            .encode(&mut self.to_client);
        SessionEnd::Server(e)
    }

    /// The client is leaving: a server connection still lent is returned if it is idle
    /// and otherwise closed.
    async fn finish(&mut self, clean: bool) {
        if let Some(mut server) = self.server.take() {
            let idle = clean
                && self.replies.is_empty()
                && !self.needs_sync
                && !self.copy_in
                && self.session.txn_status == b'I';
            let conn = server.conn_mut();
            if !idle {
                conn.broken = true;
            } else if self.ctx.pool_mode == PoolMode::Session {
                conn.needs_reset = true;
            }
        }
        self.cancel.slot.set(None);
        self.end_txn_tenants();
        let _ = self.flush_client().await;
    }

    pub(super) async fn flush_client(&mut self) -> Result<(), ClientError> {
        if !self.to_client.is_empty() {
            self.client.write_all(&self.to_client).await?;
            self.to_client.clear();
        }
        Ok(())
    }

    /// Queues replies for a message; if the server is going to skip it, undoes its effects.
    pub(super) fn push(&mut self, e: Expect) {
        if let Some(undo) = self.replies.push(e) {
            self.undo(undo);
        }
    }
}

/// Writes as much of `buf` as the socket takes without blocking.
fn poll_write_buf<W: AsyncWrite + Unpin>(
    w: &mut W,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> io::Result<()> {
    while !buf.is_empty() {
        match Pin::new(&mut *w).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => buf.advance(n),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(()),
        }
    }
    // TLS streams buffer inside; plain TCP flush is a no-op.
    match Pin::new(&mut *w).poll_flush(cx) {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

fn poll_read_buf<R: AsyncRead + Unpin>(
    r: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(r), cx, buf)
}
