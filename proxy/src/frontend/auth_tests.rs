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
