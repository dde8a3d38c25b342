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
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_verifier() -> ScramVerifier {
        let salt = BASE64.decode(RFC_SALT).unwrap();
        ScramVerifier::from_password_with_salt("pencil", &salt, 4096)
    }

    /// An exchange on the RFC 7677 vector that has already answered the client-first message.
    fn rfc_exchange_after_first() -> ScramExchange {
        let mut ex = ScramExchange::with_server_nonce(rfc_verifier(), RFC_SERVER_NONCE);
        ex.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        ex
    }

    #[test]
    fn rfc7677_test_vector() {
        let mut ex = ScramExchange::with_server_nonce(rfc_verifier(), RFC_SERVER_NONCE);
        let server_first = ex.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&server_first).unwrap(),
            RFC_SERVER_FIRST
        );
        let server_final = ex.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&server_final).unwrap(),
            RFC_SERVER_FINAL
        );
        // The exchange is over: a replayed final message is refused.
        assert!(matches!(
            ex.client_final(RFC_CLIENT_FINAL.as_bytes()),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn rfc7677_vector_with_wrong_password_is_rejected() {
        let salt = BASE64.decode(RFC_SALT).unwrap();
        let verifier = ScramVerifier::from_password_with_salt("pencil2", &salt, 4096);
        let mut ex = ScramExchange::with_server_nonce(verifier, RFC_SERVER_NONCE);
        ex.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        assert!(matches!(
            ex.client_final(RFC_CLIENT_FINAL.as_bytes()),
            Err(AuthError::WrongPassword)
        ));
    }

    /// Runs the postgres-protocol client against our server; returns the server's verdict
    /// and, when the server accepted, whether the client accepted the server's signature.
    fn run_with_client(
        client_password: &str,
        verifier: ScramVerifier,
        binding: ChannelBinding,
    ) -> Result<bool, AuthError> {
        let mut client = ScramSha256::new(client_password.as_bytes(), binding);
        let mut server = ScramExchange::new(verifier);
        let server_first = server.client_first(client.message())?;
        client
            .update(&server_first)
            .expect("client accepts server-first");
        let server_final = server.client_final(client.message())?;
        Ok(client.finish(&server_final).is_ok())
    }

    #[test]
    fn round_trip_with_postgres_protocol_client() {
        let verifier = ScramVerifier::from_password("s3cret-Pa55");
        let accepted = run_with_client(
            "s3cret-Pa55",
            verifier.clone(),
            ChannelBinding::unsupported(),
        );
        assert!(matches!(accepted, Ok(true)), "{accepted:?}");
        // "y,," header: the client could bind but the server did not offer it.
        let accepted = run_with_client("s3cret-Pa55", verifier, ChannelBinding::unrequested());
        assert!(matches!(accepted, Ok(true)), "{accepted:?}");
    }

    #[test]
    fn round_trip_with_wrong_password() {
        let verifier = ScramVerifier::from_password("s3cret-Pa55");
        let result = run_with_client("s3cret-Pa56", verifier, ChannelBinding::unsupported());
        assert!(
            matches!(result, Err(AuthError::WrongPassword)),
            "{result:?}"
        );
    }

    #[test]
    fn client_rejects_server_with_wrong_server_key() {
        // Same StoredKey (so the client's proof passes), different ServerKey: the client must
        // refuse the server's signature, which shows the signature really is checked.
        let good = ScramVerifier::from_password_with_salt("pw", b"0123456789abcdef", 4096);
        let mut forged = good.clone();
        forged.server_key[0] ^= 1;
        let accepted = run_with_client("pw", forged, ChannelBinding::unsupported());
        assert!(matches!(accepted, Ok(false)), "{accepted:?}");
    }

    #[test]
    fn random_salts_and_nonces() {
        let a = ScramVerifier::from_password("pw");
        let b = ScramVerifier::from_password("pw");
        assert_eq!(a.salt().len(), 16);
        assert_eq!(a.iterations(), DEFAULT_ITERATIONS);
        assert_ne!(a.salt(), b.salt());
        assert_ne!(a, b);

        let mut ex = ScramExchange::new(a);
        let first = ex.client_first(b"n,,n=,r=abc").unwrap();
        let first = std::str::from_utf8(&first).unwrap();
        let nonce = first
            .strip_prefix("r=abc")
            .and_then(|rest| rest.split(',').next())
            .unwrap();
        assert_eq!(nonce.len(), 24, "{first}");
        assert_eq!(BASE64.decode(nonce).unwrap().len(), 18);
    }

    #[test]
    fn verifier_parse_round_trip() {
        let salt = b"saltsaltsaltsalt";
        let v = ScramVerifier::from_password_with_salt("pencil", salt, 4096);
        let formatted = format!(
            "SCRAM-SHA-256$4096:{}${}:{}",
            BASE64.encode(salt),
            BASE64.encode(v.stored_key),
            BASE64.encode(v.server_key)
        );
        assert_eq!(v.to_string(), formatted);
        let parsed = ScramVerifier::parse(&formatted).unwrap();
        assert_eq!(parsed, v);
        assert_eq!(parsed.iterations(), 4096);
        assert_eq!(parsed.salt(), salt);
        // Debug does not reveal the keys.
        let debug = format!("{parsed:?}");
        assert!(!debug.contains(&BASE64.encode(v.stored_key)), "{debug}");

        // A parsed verifier authenticates the real client.
        let accepted = run_with_client("pencil", parsed, ChannelBinding::unsupported());
        assert!(matches!(accepted, Ok(true)), "{accepted:?}");
    }

    #[test]
    fn verifier_parse_rejects_malformed() {
        let key = BASE64.encode([7u8; 32]);
        let short_key = BASE64.encode([7u8; 31]);
        let salt = BASE64.encode(b"salt");
        let cases = [
            String::new(),
            "SCRAM-SHA-256".to_owned(),
            format!("SCRAM-SHA-1$4096:{salt}${key}:{key}"),
            format!("scram-sha-256$4096:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$4096:{salt}"),
            format!("SCRAM-SHA-256$4096{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$0:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$-1:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$+4096:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$99999999999:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$4096:${key}:{key}"),
            format!("SCRAM-SHA-256$4096:not*base64${key}:{key}"),
            format!("SCRAM-SHA-256$4096:{salt}${key}"),
            format!("SCRAM-SHA-256$4096:{salt}${key}{key}"),
            format!("SCRAM-SHA-256$4096:{salt}${short_key}:{key}"),
            format!("SCRAM-SHA-256$4096:{salt}${key}:{short_key}"),
            format!("SCRAM-SHA-256$4096:{salt}${key}:{key}$"),
            format!("SCRAM-SHA-256$4096:{salt}${key}:{key}:{key}"),
            "md5a3556571e93b0d20722ba62be61e8c2d".to_owned(),
        ];
        for case in &cases {
            let result = ScramVerifier::parse(case);
            assert!(
                matches!(result, Err(AuthError::BadVerifier(_))),
                "{case:?} gave {result:?}"
            );
        }
        // And the well-formed one among them parses.
        assert!(ScramVerifier::parse(&format!("SCRAM-SHA-256$4096:{salt}${key}:{key}")).is_ok());
    }

    #[test]
    fn truncated_client_first_messages() {
        let msg = RFC_CLIENT_FIRST.as_bytes();
        // Up to and including "r=" plus one nonce character the message is incomplete;
        // from there on a prefix is a valid message with a shorter nonce.
        let first_valid = RFC_CLIENT_FIRST.find(",r=").unwrap() + 4;
        for len in 0..=msg.len() {
            let mut ex = ScramExchange::with_server_nonce(rfc_verifier(), RFC_SERVER_NONCE);
            let result = ex.client_first(&msg[..len]);
            if len < first_valid {
                assert!(result.is_err(), "prefix of {len} bytes accepted");
            } else {
                assert!(result.is_ok(), "prefix of {len} bytes: {result:?}");
            }
        }
    }

    #[test]
    fn truncated_client_final_messages() {
        let msg = RFC_CLIENT_FINAL.as_bytes();
        for len in 0..msg.len() {
            let mut ex = rfc_exchange_after_first();
            let result = ex.client_final(&msg[..len]);
            assert!(result.is_err(), "prefix of {len} bytes accepted");
        }
    }

    #[test]
    fn malformed_client_first_messages() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"n,", "one comma"),
            (b"n,,", "no bare message"),
            (b"x,,n=user,r=abc", "bad cbind flag"),
            (b",,n=user,r=abc", "empty cbind flag"),
            (b"n,a=admin,n=user,r=abc", "authzid"),
            (b"n,,m=ext,n=user,r=abc", "mandatory extension"),
            (b"n,,r=abc", "missing user"),
            (b"n,,n=user", "missing nonce"),
            (b"n,,n=user,", "empty attribute"),
            (b"n,,n=user,r=", "empty nonce"),
            (b"n,,n=user,r=a b", "space in nonce"),
            (b"n,,n=user,r=ab\xffc", "non-ASCII nonce"),
            (b"n,,n=user,s=abc", "wrong attribute"),
            (b"n,,n=user,r=abc,", "trailing comma"),
            (b"n,,n=user,r=abc,garbage", "garbage extension"),
            (b"\xff\xfe\x00,,", "binary garbage"),
        ];
        for (msg, what) in cases {
            let mut ex = ScramExchange::with_server_nonce(rfc_verifier(), RFC_SERVER_NONCE);
            let result = ex.client_first(msg);
            assert!(
                matches!(result, Err(AuthError::Malformed(_))),
                "{what}: {result:?}"
            );
        }
        let mut ex = ScramExchange::with_server_nonce(rfc_verifier(), RFC_SERVER_NONCE);
        let result = ex.client_first(b"p=tls-server-end-point,,n=,r=abc");
        assert!(
            matches!(result, Err(AuthError::UnsupportedChannelBinding)),
            "{result:?}"
        );
    }

    #[test]
    fn client_first_ignores_user_name() {
        // Postgres ignores the SCRAM user name, even when it is not valid UTF-8; extensions
        // after the nonce are allowed.
        for msg in [
            &b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"[..],
            b"n,,n=someone=2Celse,r=rOprNGfwEbeRWgbNEkqO",
            b"n,,n=\xff\xfe,r=rOprNGfwEbeRWgbNEkqO",
            b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO,x=ext",
        ] {
            let mut ex = ScramExchange::with_server_nonce(rfc_verifier(), RFC_SERVER_NONCE);
            let first = ex.client_first(msg).unwrap();
            assert_eq!(first, RFC_SERVER_FIRST.as_bytes());
        }
    }

    #[test]
    fn malformed_client_final_messages() {
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let short_proof = BASE64.encode([1u8; 31]);
        let malformed_cases = [
            String::new(),
            "garbage".to_owned(),
            format!("r={nonce},p={proof}"),
            format!("c=biws,p={proof}"),
            format!("c=biws,r={nonce}"),
            format!("c=biws,r={nonce},p="),
            format!("c=biws,r={nonce},p=***"),
            format!("c=biws,r={nonce},p={short_proof}"),
            format!("c=biws,r={nonce},p={proof},x=late"),
            format!("c=biws,r={nonce},junk,p={proof}"),
            format!("c=eSws,r={nonce},p={proof}"), // "y,," but the header was "n,,"
            format!("c=not base64,r={nonce},p={proof}"),
            format!("r={nonce},c=biws,p={proof}"),
        ];
        for msg in &malformed_cases {
            let mut ex = rfc_exchange_after_first();
            let result = ex.client_final(msg.as_bytes());
            assert!(
                matches!(result, Err(AuthError::Malformed(_))),
                "{msg:?}: {result:?}"
            );
        }
        for bad_nonce in [
            "rOprNGfwEbeRWgbNEkqO",
            "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1",
            "",
        ] {
            let mut ex = rfc_exchange_after_first();
            let msg = format!("c=biws,r={bad_nonce},p={proof}");
            let result = ex.client_final(msg.as_bytes());
            assert!(
                matches!(result, Err(AuthError::NonceMismatch)),
                "{msg:?}: {result:?}"
            );
        }
        // A tampered proof is a wrong password, not a protocol error.
        let mut tampered = BASE64.decode(proof).unwrap();
        tampered[0] ^= 0x80;
        let msg = format!("c=biws,r={nonce},p={}", BASE64.encode(tampered));
        let mut ex = rfc_exchange_after_first();
        let result = ex.client_final(msg.as_bytes());
        assert!(
            matches!(result, Err(AuthError::WrongPassword)),
            "{result:?}"
        );
        // Extensions before the proof belong to the signed message and are accepted in form;
        // here they change the AuthMessage, so the RFC proof no longer matches.
        let msg = format!("c=biws,r={nonce},x=ext,p={proof}");
        let mut ex = rfc_exchange_after_first();
        let result = ex.client_final(msg.as_bytes());
        assert!(
            matches!(result, Err(AuthError::WrongPassword)),
            "{result:?}"
        );
    }

    #[test]
    fn exchange_steps_out_of_order() {
        let mut ex = ScramExchange::with_server_nonce(rfc_verifier(), RFC_SERVER_NONCE);
        assert!(ex.client_final(RFC_CLIENT_FINAL.as_bytes()).is_err());
        // After an error the exchange is finished for good.
        assert!(ex.client_first(RFC_CLIENT_FIRST.as_bytes()).is_err());

        let mut ex = rfc_exchange_after_first();
        assert!(ex.client_first(RFC_CLIENT_FIRST.as_bytes()).is_err());
        assert!(ex.client_final(RFC_CLIENT_FINAL.as_bytes()).is_err());

        // A wrong proof ends the exchange: no second guess with the right one.
        let mut ex = rfc_exchange_after_first();
        let wrong = RFC_CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        assert!(matches!(
            ex.client_final(wrong.as_bytes()),
            Err(AuthError::WrongPassword)
        ));
        assert!(ex.client_final(RFC_CLIENT_FINAL.as_bytes()).is_err());
    }

    #[test]
    fn md5_response_matches_postgres_protocol() {
        for salt in [[0, 0, 0, 0], [1, 2, 3, 4], [0xff, 0x80, 0x7f, 0x00]] {
            assert_eq!(
                md5_response("postgres", "secret", salt),
                md5_hash(b"postgres", b"secret", salt)
            );
        }
        // The stored form of this role is md5("secretpostgres").
        assert_eq!(
            md5_inner("postgres", "secret"),
            "53f48b7c4b76a86ce72276c5755f217d"
        );
        assert_ne!(
            md5_response("postgres", "secret", [1, 2, 3, 4]),
            md5_response("postgres", "secret", [1, 2, 3, 5])
        );
    }

    #[test]
    fn md5_verify_plain_and_hashed() {
        let salt = [9, 8, 7, 6];
        let response = md5_hash(b"alice", b"wonderland", salt);
        let hashed = format!("md5{}", md5_inner("alice", "wonderland"));
        assert!(hashed.len() == 35);

        assert!(md5_verify("alice", "wonderland", salt, response.as_bytes()));
        assert!(md5_verify("alice", &hashed, salt, response.as_bytes()));

        let wrong = md5_hash(b"alice", b"wonderlant", salt);
        assert!(!md5_verify("alice", "wonderland", salt, wrong.as_bytes()));
        assert!(!md5_verify("alice", &hashed, salt, wrong.as_bytes()));
        // The user name is part of the hash.
        let other_user = md5_hash(b"bob", b"wonderland", salt);
        assert!(!md5_verify(
            "alice",
            "wonderland",
            salt,
            other_user.as_bytes()
        ));
        // A different salt (a replayed response) fails.
        assert!(!md5_verify(
            "alice",
            &hashed,
            [9, 8, 7, 5],
            response.as_bytes()
        ));
        // Truncated, empty and trailing-garbage responses fail.
        assert!(!md5_verify(
            "alice",
            "wonderland",
            salt,
            &response.as_bytes()[..34]
        ));
        assert!(!md5_verify("alice", "wonderland", salt, b""));
        assert!(!md5_verify(
            "alice",
            "wonderland",
            salt,
            format!("{response}\0").as_bytes()
        ));
        // Uppercase hex is not Postgres's md5 form, so such a secret is a plain password.
        let upper = hashed.to_uppercase().replacen("MD5", "md5", 1);
        let upper_as_plain = md5_hash(b"alice", upper.as_bytes(), salt);
        assert!(md5_verify("alice", &upper, salt, upper_as_plain.as_bytes()));
        // A SCRAM verifier or an empty secret never serves MD5.
        let scram = ScramVerifier::from_password_with_salt("wonderland", b"salt", 1).to_string();
        let scram_as_plain = md5_hash(b"alice", scram.as_bytes(), salt);
        assert!(!md5_verify(
            "alice",
            &scram,
            salt,
            scram_as_plain.as_bytes()
        ));
        let empty = md5_hash(b"alice", b"", salt);
        assert!(!md5_verify("alice", "", salt, empty.as_bytes()));
    }

    #[test]
    fn error_messages_are_readable() {
        assert_eq!(
            AuthError::WrongPassword.to_string(),
            "password authentication failed: wrong password"
        );
        assert!(
            AuthError::BadVerifier("salt is empty".into())
                .to_string()
                .contains("salt is empty")
        );
    }
}
