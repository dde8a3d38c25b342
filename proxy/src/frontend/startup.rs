//! A client's first exchange: SSL/GSS negotiation, StartupMessage or CancelRequest, then
//! authentication against the proxy's own user list.

use std::collections::HashMap;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::auth::{self, AuthError, ScramExchange, ScramVerifier};
use super::{ClientError, ClientStream};
use crate::config::{AuthMethod, Config};
use crate::wire::{self, PgError, StartupPacket, tag};

/// Authentication messages are small; anything larger is not a client we can talk to.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// What a new connection asked for.
pub enum Hello {
    Startup(StartupRequest),
    Cancel { pid: i32, secret: i32 },
}

pub struct StartupRequest {
    pub stream: ClientStream,
    /// Bytes the client sent after its StartupMessage (pipelined messages).
    pub buf: BytesMut,
    pub params: Vec<(String, String)>,
}

/// Reads the startup phase up to a StartupMessage or CancelRequest, answering SSLRequest
/// ('S' and a TLS handshake when TLS is configured, 'N' otherwise) and GSSENCRequest ('N').
pub async fn handshake(tcp: TcpStream, tls: Option<&TlsAcceptor>) -> Result<Hello, ClientError> {
    let mut stream = ClientStream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let packet = loop {
            if let Some(p) = wire::next_startup(&mut buf)? {
                break p;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        };
        match packet {
            StartupPacket::SslRequest => match (tls, stream) {
                (Some(acceptor), ClientStream::Plain(tcp)) => {
                    if !buf.is_empty() {
                        // Bytes sent before the handshake would bypass encryption.
                        return Err(ClientError::Protocol(
                            "data received before the TLS handshake".into(),
                        ));
                    }
                    let mut tcp = tcp;
                    tcp.write_all(b"S").await?;
                    let tls = acceptor.accept(tcp).await.map_err(ClientError::Tls)?;
                    stream = ClientStream::Tls(Box::new(tls));
                }
                (_, mut s) => {
                    s.write_all(b"N").await?;
                    stream = s;
                }
            },
            StartupPacket::GssEncRequest => stream.write_all(b"N").await?,
            StartupPacket::Cancel { pid, secret } => return Ok(Hello::Cancel { pid, secret }),
            StartupPacket::Startup { params } => {
                return Ok(Hello::Startup(StartupRequest {
                    stream,
                    buf,
                    params,
                }));
            }
        }
    }
}

/// A configured user's secrets in the forms each method needs, derived once at start.
#[derive(Clone)]
pub struct UserSecret {
    /// Plain text or `md5…`: what md5 authentication checks against.
    md5_stored: Option<String>,
    scram: Option<ScramVerifier>,
}

/// The proxy's users, ready for authentication.
pub struct Credentials {
    method: AuthMethod,
    users: HashMap<String, UserSecret>,
}

impl Credentials {
    pub fn from_config(config: &Config) -> Result<Self, AuthError> {
        let mut users = HashMap::new();
        for u in &config.users {
            let pw = u.password.clone().unwrap_or_default();
            let secret = if pw.starts_with("SCRAM-SHA-256$") {
                UserSecret {
                    md5_stored: None,
                    scram: Some(ScramVerifier::parse(&pw)?),
                }
            } else if is_md5_hash(&pw) {
                UserSecret {
                    md5_stored: Some(pw),
                    scram: None,
                }
            } else {
                UserSecret {
                    scram: Some(ScramVerifier::from_password(&pw)),
                    md5_stored: Some(pw),
                }
            };
            users.insert(u.name.clone(), secret);
        }
        Ok(Self {
            method: config.auth.method,
            users,
        })
    }
}

fn is_md5_hash(s: &str) -> bool {
    s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs the configured authentication method; on failure the client has been sent a FATAL
/// error (28P01, like Postgres) and the error is returned.
pub async fn authenticate(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user: &str,
    creds: &Credentials,
) -> Result<(), ClientError> {
    let secret = creds.users.get(user);
    let result = match creds.method {
        // Trust skips the password, not the user list (as in PgBouncer).
        AuthMethod::Trust if secret.is_none() => {
            let mut out = BytesMut::new();
            PgError::fatal(
                "28000",
                format!("user \"{user}\" is not a shardgate user (see [[users]])"),
            )
            .encode(&mut out);
            let _ = stream.write_all(&out).await;
            return Err(ClientError::Auth("unknown user (trust)".into()));
        }
        AuthMethod::Trust => Ok(()),
        AuthMethod::Md5 => md5(stream, buf, user, secret).await,
        AuthMethod::ScramSha256 => scram(stream, buf, secret).await,
    };
    match result {
        Ok(()) => Ok(()),
        Err(ClientError::Auth(reason)) => {
            let mut out = BytesMut::new();
            PgError::fatal(
                "28P01",
                format!("password authentication failed for user \"{user}\""),
            )
            .encode(&mut out);
            let _ = stream.write_all(&out).await;
            Err(ClientError::Auth(reason))
        }
        Err(e) => Err(e),
    }
}

async fn md5(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user: &str,
    secret: Option<&UserSecret>,
) -> Result<(), ClientError> {
    let salt: [u8; 4] = rand::random();
    let mut out = BytesMut::new();
    wire::encode_auth_md5(&mut out, salt);
    stream.write_all(&out).await?;
    let frame = read_auth_frame(stream, buf).await?;
    let response = wire::decode_password(frame.body())?;
    let stored = secret.and_then(|s| s.md5_stored.as_deref());
    match stored {
        Some(stored) if auth::md5_verify(user, stored, salt, response) => Ok(()),
        Some(_) => Err(ClientError::Auth("wrong password (md5)".into())),
        None => Err(ClientError::Auth(
            "unknown user, or a user whose password is stored as a SCRAM verifier (md5)".into(),
        )),
    }
}

async fn scram(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    secret: Option<&UserSecret>,
) -> Result<(), ClientError> {
    // An unknown user still goes through the whole exchange against a throwaway verifier,
    // so a client cannot tell unknown users from wrong passwords.
    let verifier = match secret.and_then(|s| s.scram.clone()) {
        Some(v) => v,
        None => ScramVerifier::from_password_with_salt(
            &format!("{:x}", rand::random::<u128>()),
            &rand::random::<[u8; 16]>(),
            1,
        ),
    };
    let known = secret.is_some_and(|s| s.scram.is_some());
    let mut exchange = ScramExchange::new(verifier);
    let mut out = BytesMut::new();
    wire::encode_auth_sasl(&mut out, &[auth::SCRAM_SHA_256]);
    stream.write_all(&out).await?;

    let frame = read_auth_frame(stream, buf).await?;
    let (mechanism, data) = wire::decode_sasl_initial(frame.body())?;
    if mechanism != auth::SCRAM_SHA_256.as_bytes() {
        return Err(ClientError::Auth("unsupported SASL mechanism".into()));
    }
    let server_first = exchange.client_first(data).map_err(auth_err)?;
    out.clear();
    wire::encode_auth_sasl_continue(&mut out, &server_first);
    stream.write_all(&out).await?;

    let frame = read_auth_frame(stream, buf).await?;
    let server_final = exchange.client_final(frame.body()).map_err(auth_err)?;
    if !known {
        return Err(ClientError::Auth("unknown user".into()));
    }
    out.clear();
    wire::encode_auth_sasl_final(&mut out, &server_final);
    stream.write_all(&out).await?;
    Ok(())
}

fn auth_err(e: AuthError) -> ClientError {
    ClientError::Auth(e.to_string())
}

async fn read_auth_frame(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<wire::Frame, ClientError> {
    loop {
        if let Some(f) = wire::next_frame(buf, MAX_AUTH_MESSAGE)? {
            if f.tag != tag::PASSWORD {
                return Err(ClientError::Protocol(format!(
                    "expected a password message, got {:?}",
                    f.tag as char
                )));
            }
            return Ok(f);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ClientError::Closed);
        }
    }
}
