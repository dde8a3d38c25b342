//! Client authentication as the proxy performs it itself: SCRAM-SHA-256 (server side) and
//! MD5 passwords, as pure functions and state machines with no I/O.
//!
//! The caller owns the wire: it sends `AuthenticationSASL` advertising only
//! `SCRAM-SHA-256`, hands the `SASLInitialResponse` data to [`ScramExchange::client_first`],
//! sends the returned bytes in `AuthenticationSASLContinue`, hands the `SASLResponse` data to
//! [`ScramExchange::client_final`], and on success sends the returned bytes in
//! `AuthenticationSASLFinal` followed by `AuthenticationOk`. For MD5 it sends
//! `AuthenticationMD5Password` with a random salt and checks the reply with [`md5_verify`].
//!
//! Channel binding (`SCRAM-SHA-256-PLUS`) is not offered, so a client's GS2 header must be
//! `n,,` or `y,,`. As in Postgres, the user name inside the SCRAM messages is ignored: the
//! user of the startup packet is the one being authenticated.
//!
//! Passwords are used as the exact bytes of their UTF-8 text, without SASLprep
//! normalisation. Postgres (and every client library) applies SASLprep, which leaves ASCII
//! passwords unchanged, so the two agree for every ASCII password; a non-ASCII password that
//! SASLprep would alter may fail to authenticate here.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;

/// The mechanism name the proxy advertises in `AuthenticationSASL`.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// PBKDF2 iterations for verifiers derived by [`ScramVerifier::from_password`] (the
/// Postgres default, `scram_iterations = 4096`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

const SALT_LEN: usize = 16;
const SERVER_NONCE_LEN: usize = 18;
const KEY_LEN: usize = 32;

/// Why authenticating a client failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The client's authentication message does not follow the protocol.
    #[error("malformed SCRAM authentication message from client: {0}")]
    Malformed(String),
    /// The client asked for SCRAM channel binding, which the proxy does not offer.
    #[error(
        "client requested SCRAM channel binding (SCRAM-SHA-256-PLUS), which this proxy does not support"
    )]
    UnsupportedChannelBinding,
    /// The nonce in the client's final message is not the one of this exchange.
    #[error("SCRAM nonce in the client's final message does not match this exchange")]
    NonceMismatch,
    /// The client's proof does not match the stored password.
    #[error("password authentication failed: wrong password")]
    WrongPassword,
    /// A stored SCRAM verifier is not in Postgres's `SCRAM-SHA-256$...` form.
    #[error("invalid stored SCRAM-SHA-256 verifier: {0}")]
    BadVerifier(String),
}

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8], data: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in data {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    use sha2::Digest as _;
    Sha256::digest(data).into()
}

/// Compares two byte strings in time independent of where they differ (the lengths are not
/// treated as secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What the server stores to check a SCRAM-SHA-256 password: never the password itself.
///
/// The [`fmt::Display`] form is Postgres's stored form
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields), which
/// [`ScramVerifier::parse`] reads back. `Debug` does not print the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl ScramVerifier {
    /// Derives a verifier from a plain password with a random 16-byte salt and
    /// [`DEFAULT_ITERATIONS`] iterations. The password is used as-is (no SASLprep; see the
    /// module documentation).
    pub fn from_password(password: &str) -> Self {
        let salt: [u8; SALT_LEN] = rand::random();
        Self::from_password_with_salt(password, &salt, DEFAULT_ITERATIONS)
    }

    /// Derives a verifier from a plain password with the given salt and iteration count.
    /// An iteration count of 0 is taken as 1 (PBKDF2 always runs at least one round).
    pub fn from_password_with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        let server_key = hmac_sha256(&salted, &[b"Server Key"]);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key,
        }
    }

    /// Parses Postgres's stored form
    /// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`,
    /// as found in `pg_authid.rolpassword`.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let bad = |why: &str| AuthError::BadVerifier(why.to_owned());
        let (mechanism, rest) = s.split_once('$').ok_or_else(|| {
            bad("expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")
        })?;
        if mechanism != SCRAM_SHA_256 {
            return Err(bad("does not start with \"SCRAM-SHA-256$\""));
        }
        let (params, keys) = rest
            .split_once('$')
            .ok_or_else(|| bad("missing '$' between the salt and the keys"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or_else(|| bad("missing ':' between the iteration count and the salt"))?;
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("iteration count is not a number"));
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| bad("iteration count is out of range"))?;
        if iterations == 0 {
            return Err(bad("iteration count is zero"));
        }
        let salt = BASE64
            .decode(salt)
            .map_err(|_| bad("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(bad("salt is empty"));
        }
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or_else(|| bad("missing ':' between StoredKey and ServerKey"))?;
        let decode_key = |b64: &str, name: &str| -> Result<[u8; KEY_LEN], AuthError> {
            let bytes = BASE64
                .decode(b64)
                .map_err(|_| AuthError::BadVerifier(format!("{name} is not valid base64")))?;
            <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
                AuthError::BadVerifier(format!(
                    "{name} is {} bytes long, expected {KEY_LEN}",
                    bytes.len()
                ))
            })
        };
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: decode_key(stored_key, "StoredKey")?,
            server_key: decode_key(server_key, "ServerKey")?,
        })
    }

    /// The PBKDF2 iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The PBKDF2 salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_SHA_256}${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &BASE64.encode(&self.salt))
            .finish_non_exhaustive()
    }
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// The client's GS2 header (`n,,` or `y,,`), which `c=` must echo.
        gs2_header: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        /// Client nonce followed by server nonce.
        nonce: Vec<u8>,
    },
    Done,
}

/// One SCRAM-SHA-256 exchange with one client (server side, no channel binding).
///
/// Each method must be called once, in order; a call out of order, or any call after an
/// error, fails with [`AuthError::Malformed`]. [`ScramExchange::client_final`] returning
/// `Ok` means the client proved it knows the password.
pub struct ScramExchange {
    verifier: ScramVerifier,
    server_nonce: String,
    state: State,
}

impl ScramExchange {
    /// Starts an exchange with a random server nonce (18 random bytes, base64).
    pub fn new(verifier: ScramVerifier) -> Self {
        let nonce: [u8; SERVER_NONCE_LEN] = rand::random();
        Self::with_server_nonce(verifier, &BASE64.encode(nonce))
    }

    /// Starts an exchange with a fixed server nonce, for tests. The nonce must consist of
    /// printable ASCII other than `,`.
    pub fn with_server_nonce(verifier: ScramVerifier, nonce: &str) -> Self {
        debug_assert!(
            is_valid_nonce(nonce.as_bytes()),
            "SCRAM nonce must be printable ASCII without ','"
        );
        ScramExchange {
            verifier,
            server_nonce: nonce.to_owned(),
            state: State::AwaitingClientFirst,
        }
    }

    /// Takes the data of the client's `SASLInitialResponse` (the client-first-message) and
    /// returns the server-first-message, to send in `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(
            std::mem::replace(&mut self.state, State::Done),
            State::AwaitingClientFirst
        ) {
            return Err(malformed(
                "unexpected SASLInitialResponse at this point of the exchange",
            ));
        }
        let first = parse_client_first(data)?;
        let mut nonce = first.client_nonce.to_vec();
        nonce.extend_from_slice(self.server_nonce.as_bytes());
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(BASE64.encode(&self.verifier.salt).as_bytes());
        server_first.extend_from_slice(format!(",i={}", self.verifier.iterations).as_bytes());
        self.state = State::AwaitingClientFinal {
            gs2_header: first.gs2_header.to_vec(),
            client_first_bare: first.bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Takes the data of the client's `SASLResponse` (the client-final-message), checks the
    /// channel-binding echo, the nonce and the proof, and returns the server-final-message
    /// (`v=<ServerSignature>`), to send in `AuthenticationSASLFinal`. A proof that does not
    /// match the verifier is [`AuthError::WrongPassword`].
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::AwaitingClientFinal {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(malformed(
                "unexpected SASLResponse at this point of the exchange",
            ));
        };
        let last = parse_client_final(data)?;
        let binding = BASE64
            .decode(last.channel_binding)
            .map_err(|_| malformed("channel-binding attribute (c=) is not valid base64"))?;
        if binding != gs2_header {
            return Err(malformed(
                "channel-binding attribute (c=) does not match the GS2 header of the first message",
            ));
        }
        if last.nonce != nonce.as_slice() {
            return Err(AuthError::NonceMismatch);
        }
        let proof = BASE64
            .decode(last.proof)
            .map_err(|_| malformed("client proof (p=) is not valid base64"))?;
        if proof.len() != KEY_LEN {
            return Err(malformed("client proof (p=) has the wrong length"));
        }

        let auth_message: [&[u8]; 5] = [
            &client_first_bare,
            b",",
            &server_first,
            b",",
            last.without_proof,
        ];
        let client_signature = hmac_sha256(&self.verifier.stored_key, &auth_message);
        let mut client_key = [0u8; KEY_LEN];
        for ((k, p), s) in client_key.iter_mut().zip(&proof).zip(&client_signature) {
            *k = p ^ s;
        }
        if !ct_eq(&sha256(&client_key), &self.verifier.stored_key) {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, &auth_message);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(BASE64.encode(server_signature).as_bytes());
        Ok(server_final)
    }
}

fn malformed(why: &str) -> AuthError {
    AuthError::Malformed(why.to_owned())
}

/// RFC 5802 `printable`: `%x21-2B / %x2D-7E` (visible ASCII except `,`).
fn is_valid_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Splits `name=value` where `name` is the given attribute letter.
fn attr(part: &[u8], name: u8) -> Option<&[u8]> {
    match part {
        [n, b'=', value @ ..] if *n == name => Some(value),
        _ => None,
    }
}

/// An optional extension attribute: `ALPHA "=" 1*value-char`.
fn is_extension(part: &[u8]) -> bool {
    matches!(part, [n, b'=', value @ ..] if n.is_ascii_alphabetic() && !value.is_empty())
}

struct ClientFirst<'a> {
    gs2_header: &'a [u8],
    bare: &'a [u8],
    client_nonce: &'a [u8],
}

fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, AuthError> {
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let mut commas = data
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b',')
        .map(|(i, _)| i);
    let (Some(first_comma), Some(second_comma)) = (commas.next(), commas.next()) else {
        return Err(malformed(
            "client-first-message lacks the GS2 header (expected \"n,,\")",
        ));
    };
    let (gs2_header, bare) = data.split_at(second_comma + 1);
    let cbind_flag = &data[..first_comma];
    let authzid = &data[first_comma + 1..second_comma];
    match cbind_flag {
        b"n" | b"y" => {}
        [b'p', b'=', ..] => return Err(AuthError::UnsupportedChannelBinding),
        _ => {
            return Err(malformed(
                "unexpected channel-binding flag in the GS2 header (expected 'n' or 'y')",
            ));
        }
    }
    if !authzid.is_empty() {
        return Err(malformed(
            "client uses an authorization identity (a=), which is not supported",
        ));
    }

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    let mut parts = bare.split(|&b| b == b',');
    let user = parts.next().unwrap_or_default();
    if attr(user, b'm').is_some() {
        return Err(malformed(
            "mandatory SCRAM extensions (m=) are not supported",
        ));
    }
    // The user name is ignored (the startup packet's user is authenticated), as in Postgres.
    if attr(user, b'n').is_none() {
        return Err(malformed(
            "client-first-message lacks the user name attribute (n=)",
        ));
    }
    let client_nonce = parts
        .next()
        .and_then(|part| attr(part, b'r'))
        .ok_or_else(|| malformed("client-first-message lacks the nonce attribute (r=)"))?;
    if !is_valid_nonce(client_nonce) {
        return Err(malformed(
            "client nonce is empty or contains invalid characters",
        ));
    }
    if !parts.all(is_extension) {
        return Err(malformed("garbage after the nonce in client-first-message"));
    }
    Ok(ClientFirst {
        gs2_header,
        bare,
        client_nonce,
    })
}

struct ClientFinal<'a> {
    channel_binding: &'a [u8],
    nonce: &'a [u8],
    /// client-final-message-without-proof, part of the AuthMessage.
    without_proof: &'a [u8],
    proof: &'a [u8],
}

fn parse_client_final(data: &[u8]) -> Result<ClientFinal<'_>, AuthError> {
    // client-final-message = "c=" cbind ",r=" nonce ["," extensions] ",p=" proof
    let proof_at = data
        .windows(3)
        .rposition(|w| w == b",p=")
        .ok_or_else(|| malformed("client-final-message lacks the proof attribute (p=)"))?;
    let (without_proof, proof_part) = data.split_at(proof_at);
    let proof = proof_part.get(3..).unwrap_or_default();
    if proof.contains(&b',') {
        return Err(malformed("garbage after the proof in client-final-message"));
    }
    let mut parts = without_proof.split(|&b| b == b',');
    let channel_binding = parts
        .next()
        .and_then(|part| attr(part, b'c'))
        .ok_or_else(|| {
            malformed("client-final-message lacks the channel-binding attribute (c=)")
        })?;
    let nonce = parts
        .next()
        .and_then(|part| attr(part, b'r'))
        .ok_or_else(|| malformed("client-final-message lacks the nonce attribute (r=)"))?;
    if !parts.all(is_extension) {
        return Err(malformed("unexpected attribute in client-final-message"));
    }
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// `"md5" + hex(md5(inner + salt))`, where `inner` is the hex form of md5(password + user).
fn md5_salted(inner_hex: &[u8], salt: [u8; 4]) -> String {
    let mut md5 = Md5::new();
    md5.update(inner_hex);
    md5.update(salt);
    format!("md5{}", hex(&md5.finalize()))
}

/// The hex form of md5(password + user), which Postgres stores (after `md5`) for MD5 roles.
fn md5_inner(user: &str, password: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(password.as_bytes());
    md5.update(user.as_bytes());
    hex(&md5.finalize())
}

/// `"md5" + hex(md5(hex(md5(password + user)) + salt))`: the `PasswordMessage` a client
/// sends in answer to `AuthenticationMD5Password` with this salt.
pub fn md5_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    md5_salted(md5_inner(user, password).as_bytes(), salt)
}

/// Verifies a client's `PasswordMessage` body (without its trailing NUL) sent in answer to
/// `AuthenticationMD5Password` with `salt`.
///
/// `stored` is either the plain-text password or Postgres's `md5<32 lowercase hex>` form of
/// md5(password + user). As in Postgres, a plain-text password that happens to look like
/// that form is taken as the hashed form; a SCRAM verifier cannot serve MD5 authentication
/// and an empty stored secret never matches, so both give `false`. The comparison is in
/// constant time.
pub fn md5_verify(user: &str, stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    if stored.is_empty() || ScramVerifier::parse(stored).is_ok() {
        return false;
    }
    let expected = match stored.strip_prefix("md5") {
        Some(inner)
            if inner.len() == 32
                && inner
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            md5_salted(inner.as_bytes(), salt)
        }
        _ => md5_response(user, stored, salt),
    };
    ct_eq(expected.as_bytes(), response)
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
