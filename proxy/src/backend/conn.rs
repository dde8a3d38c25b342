//! One raw server connection: TCP, login (SCRAM, md5, password, trust) and the state the
//! proxy keeps about it (its settings and which proxy-named statements it has prepared).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use shardgate_catalog::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::BackendError;
use crate::gucs::Gucs;
use crate::wire::{self, AuthRequest, btag};

/// Server messages during login are small; a larger one means we are not talking to Postgres.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;
/// Result rows can be large; the server frames them, the proxy only bounds them.
const MAX_RESULT_MESSAGE: usize = 1 << 30;

/// What a CancelRequest for this connection must carry, and where it must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

pub struct ServerConn {
    pub(crate) stream: TcpStream,
    /// Bytes read from the server and not yet handled; empty whenever the connection is idle.
    pub(crate) rbuf: BytesMut,
    pub(crate) key: BackendKey,
    /// ParameterStatus values the server reported at login (server_version, encodings…).
    pub(crate) params: Vec<(String, String)>,
    /// Session settings the proxy applied beyond the server's defaults.
    pub(crate) gucs: Gucs,
    /// Proxy statement ids prepared here, with a use counter for least-recently-used eviction.
    pub(crate) prepared: crate::FastMap<u64, u64>,
    pub(crate) use_tick: u64,
    /// The proxy statement in this connection's unnamed statement slot, if known.
    pub(crate) unnamed: Option<u64>,
    /// A session-mode client left; run `DISCARD ALL` before the next client.
    pub(crate) needs_reset: bool,
    /// Returned in an unknown protocol state: close instead of pooling.
    pub(crate) broken: bool,
    /// Reaper sweeps this connection has sat idle through (reset when it is returned), so
    /// idle expiry needs no clock read per transaction.
    pub(crate) idle_sweeps: u32,
}

impl ServerConn {
    /// Opens a connection and logs in as the endpoint's user.
    pub async fn connect(
        shard: &str,
        ep: &Endpoint,
        timeout: Duration,
    ) -> Result<ServerConn, BackendError> {
        let timed_out = || BackendError::ConnectTimeout {
            shard: shard.into(),
            ms: timeout.as_millis() as u64,
        };
        tokio::time::timeout(timeout, Self::connect_inner(shard, ep))
            .await
            .map_err(|_| timed_out())?
    }

    async fn connect_inner(shard: &str, ep: &Endpoint) -> Result<ServerConn, BackendError> {
        let addr = ep.addr();
        let stream = TcpStream::connect(&addr)
            .await
            .map_err(|source| BackendError::Connect {
                shard: shard.into(),
                addr: addr.clone(),
                source,
            })?;
        stream.set_nodelay(true).ok();
        let peer = stream.peer_addr().map_err(|source| BackendError::Connect {
            shard: shard.into(),
            addr,
            source,
        })?;
        let mut conn = ServerConn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            key: BackendKey {
                addr: peer,
                pid: 0,
                secret: 0,
            },
            params: Vec::new(),
            gucs: Gucs::default(),
            prepared: crate::FastMap::default(),
            use_tick: 0,
            unnamed: None,
            needs_reset: false,
            broken: false,
            idle_sweeps: 0,
        };
        conn.login(shard, ep).await?;
        Ok(conn)
    }

    async fn login(&mut self, shard: &str, ep: &Endpoint) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        wire::encode_startup(&mut out, &[("user", &ep.user), ("database", &ep.database)]);
        self.send(shard, &out).await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.read_frame(shard, MAX_LOGIN_MESSAGE).await?;
            out.clear();
            match frame.tag {
                btag::AUTHENTICATION => {
                    let req = wire::decode_auth(frame.body()).map_err(|e| proto(shard, e))?;
                    let password = || {
                        ep.password.as_deref().ok_or(BackendError::Login {
                            shard: shard.into(),
                            message: "the server asks for a password and the shard url has none"
                                .into(),
                        })
                    };
                    match req {
                        AuthRequest::Ok => continue,
                        AuthRequest::Cleartext => {
                            wire::encode_password(&mut out, password()?.as_bytes());
                        }
                        AuthRequest::Md5 { salt } => {
                            let hash = postgres_protocol::authentication::md5_hash(
                                ep.user.as_bytes(),
                                password()?.as_bytes(),
                                salt,
                            );
                            wire::encode_password(&mut out, hash.as_bytes());
                        }
                        AuthRequest::Sasl { mechanisms } => {
                            if !mechanisms.contains(&&b"SCRAM-SHA-256"[..]) {
                                return Err(login(shard, "server offers no SCRAM-SHA-256"));
                            }
                            let s = ScramSha256::new(
                                password()?.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            wire::encode_sasl_initial(&mut out, "SCRAM-SHA-256", s.message());
                            scram = Some(s);
                        }
                        AuthRequest::SaslContinue(data) => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| login(shard, "unexpected SASL"))?;
                            s.update(data).map_err(|e| login(shard, &e.to_string()))?;
                            wire::encode_sasl_response(&mut out, s.message());
                        }
                        AuthRequest::SaslFinal(data) => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| login(shard, "unexpected SASL"))?;
                            s.finish(data).map_err(|e| login(shard, &e.to_string()))?;
                            continue;
                        }
                        AuthRequest::Unsupported(code) => {
                            return Err(login(
                                shard,
                                &format!("unsupported authentication request {code}"),
                            ));
                        }
                    }
                    self.send(shard, &out).await?;
                }
                btag::PARAMETER_STATUS => {
                    let (k, v) =
                        wire::decode_parameter_status(frame.body()).map_err(|e| proto(shard, e))?;
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    self.params.push((text(k), text(v)));
                }
                btag::BACKEND_KEY_DATA => {
                    let (pid, secret) =
                        wire::decode_backend_key(frame.body()).map_err(|e| proto(shard, e))?;
                    self.key.pid = pid;
                    self.key.secret = secret;
                }
                btag::READY_FOR_QUERY => return Ok(()),
                btag::ERROR_RESPONSE => {
                    let e = wire::decode_error(frame.body());
                    return Err(login(shard, &format!("{} ({})", e.message, e.code)));
                }
                _ => {} // NoticeResponse, NegotiateProtocolVersion: nothing to do
            }
        }
    }

    pub(crate) async fn send(&mut self, shard: &str, bytes: &[u8]) -> Result<(), BackendError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|source| BackendError::Io {
                shard: shard.into(),
                source,
            })
    }

    pub(crate) async fn read_frame(
        &mut self,
        shard: &str,
        max: usize,
    ) -> Result<wire::Frame, BackendError> {
        loop {
            if let Some(f) = wire::next_frame(&mut self.rbuf, max).map_err(|e| proto(shard, e))? {
                return Ok(f);
            }
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|source| BackendError::Io {
                    shard: shard.into(),
                    source,
                })?;
            if n == 0 {
                return Err(BackendError::Closed {
                    shard: shard.into(),
                });
            }
        }
    }

    /// Runs one simple query to completion and returns every reply frame, ReadyForQuery
    /// included. For the proxy's own work (schema discovery, multi-shard statements), on a
    /// connection nobody else is using.
    pub async fn simple_query(
        &mut self,
        shard: &str,
        sql: &str,
    ) -> Result<Vec<wire::Frame>, BackendError> {
        let mut out = BytesMut::new();
        wire::encode_query(&mut out, sql);
        self.unnamed = None;
        self.exchange(shard, &out).await
    }

    /// Sends `out` and reads every reply up to and including ReadyForQuery.
    async fn exchange(
        &mut self,
        shard: &str,
        out: &[u8],
    ) -> Result<Vec<wire::Frame>, BackendError> {
        if let Err(e) = self.send(shard, out).await {
            self.broken = true;
            return Err(e);
        }
        let mut frames = Vec::new();
        loop {
            let frame = match self.read_frame(shard, MAX_RESULT_MESSAGE).await {
                Ok(f) => f,
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            };
            let done = frame.tag == btag::READY_FOR_QUERY;
            frames.push(frame);
            if done {
                return Ok(frames);
            }
        }
    }

    /// Runs an unnamed statement with the given Bind parameters through the extended
    /// protocol (Parse, Bind, Execute, Sync) and returns every reply frame.
    pub async fn extended_query(
        &mut self,
        shard: &str,
        parse_tail: &[u8],
        bind_after_names: &[u8],
    ) -> Result<Vec<wire::Frame>, BackendError> {
        let mut out = BytesMut::new();
        wire::encode_parse(&mut out, b"", parse_tail);
        wire::encode_bind(&mut out, b"", b"", bind_after_names);
        wire::encode_execute(&mut out, b"", 0);
        wire::encode_sync(&mut out);
        self.unnamed = None;
        self.exchange(shard, &out).await
    }

    /// Describes an unnamed statement (Parse, Describe, Sync) and returns every reply
    /// frame: ParameterDescription and RowDescription/NoData, or the error.
    pub async fn describe_statement(
        &mut self,
        shard: &str,
        parse_tail: &[u8],
    ) -> Result<Vec<wire::Frame>, BackendError> {
        let mut out = BytesMut::new();
        wire::encode_parse(&mut out, b"", parse_tail);
        wire::encode_describe(&mut out, b'S', b"");
        wire::encode_sync(&mut out);
        self.unnamed = None;
        self.exchange(shard, &out).await
    }

    /// Whether an idle connection is still usable, usually without a syscall: an idle
    /// Postgres connection sends nothing, so if the runtime has seen it become readable,
    /// bytes or EOF arrived (e.g. the FATAL of `pg_terminate_backend` or a shutdown) and it
    /// is gone. Only a readable-looking socket is confirmed with a read.
    pub(crate) fn is_alive(&self) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut probe = [0u8; 1];
        match self.stream.try_read(&mut probe) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }

    /// Marks `id` as prepared here, returning the least recently used statement to close when
    /// the cache is over `cap`.
    pub(crate) fn note_prepared(&mut self, id: u64, cap: usize) -> Option<u64> {
        self.use_tick += 1;
        self.prepared.insert(id, self.use_tick);
        if self.prepared.len() <= cap.max(1) {
            return None;
        }
        let (&victim, _) = self
            .prepared
            .iter()
            .filter(|(k, _)| **k != id)
            .min_by_key(|(_, tick)| **tick)?;
        self.prepared.remove(&victim);
        Some(victim)
    }

    pub(crate) fn touch_prepared(&mut self, id: u64) -> bool {
        self.use_tick += 1;
        match self.prepared.get_mut(&id) {
            Some(t) => {
                *t = self.use_tick;
                true
            }
            None => false,
        }
    }
}

fn proto(shard: &str, e: wire::WireError) -> BackendError {
    BackendError::Protocol {
        shard: shard.into(),
        source: e,
    }
}

fn login(shard: &str, message: &str) -> BackendError {
    BackendError::Login {
        shard: shard.into(),
        message: message.into(),
    }
}
