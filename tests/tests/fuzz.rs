//! Robustness under hostile input: many raw TCP clients send random bytes, broken startup
//! packets, garbage during SCRAM, and after a valid startup random, truncated and oversized
//! frames, while well-behaved clients keep querying. Nothing a client sends may crash the
//! proxy or disturb another client (DESIGN.md §9).
//!
//! The run is seeded: the seed is printed, and `FUZZ_SEED=<n>` replays it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shardgate::config::AuthMethod;
use shardgate_e2e::{Fixture, HostAuth, start_proxy, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use common::{client, connect_with, proxy_config, within};

const TASKS: u64 = 20;
/// Frames each task sends; 20 × 1500 = 30,000 in all. `FUZZ_FRAMES_PER_TASK` overrides it
/// for a longer run.
const FRAMES_PER_TASK: usize = 1500;
/// However far the tasks got, they stop sending here.
const FUZZ_TIME: Duration = Duration::from_secs(30);
/// One connection's whole life, so that no single one can stall a task.
const CONNECTION_TIME: Duration = Duration::from_secs(5);
const POOL_SIZE: u32 = 30;

/// SQL the fuzzer sends in Query and Parse messages: valid, invalid, and statements that
/// change the session or the protocol state (transactions, COPY, session settings).
const SQL: &[&str] = &[
    "select 1",
    "select $1::int",
    "select 1/0",
    "begin",
    "commit",
    "rollback",
    "select pg_backend_pid()",
    "select * from fuzz_t",
    "insert into fuzz_t values (1, 'x')",
    "copy fuzz_t from stdin",
    "copy (select 1) to stdout",
    "set application_name = 'fuzz'",
    "set app.fuzz = '1'",
    "set local app.fuzz = 2",
    "reset all",
    "discard all",
    "deallocate all",
    "listen fuzz",
    "notify fuzz, 'x'",
    "prepare p1 as select 1",
    "execute p1",
    "deallocate p1",
    "select 1; select 2",
    "select repeat('x', 20000)",
    "select generate_series(1, 200)",
    "savepoint s",
    "rollback to s",
    "",
    ";",
    "selec",
    "select 'unterminated",
    "/* comment */ select 1",
    "show all",
    "select $1::text, $2::bytea",
];

fn put_frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.r#gen()).collect()
}

fn startup_packet(params: &[(&[u8], &[u8])]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(196_608);
    for (k, v) in params {
        put_cstr(&mut body, k);
        put_cstr(&mut body, v);
    }
    body.put_u8(0);
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
    out
}

fn valid_startup(rng: &mut StdRng) -> BytesMut {
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"user".to_vec(), b"app".to_vec()),
        (b"database".to_vec(), b"app".to_vec()),
    ];
    let extras: [(&[u8], &[u8]); 6] = [
        (b"application_name", b"fuzzer"),
        (b"options", b"-c app.fuzz=7"),
        (b"client_encoding", b"UTF8"),
        (b"DateStyle", b"ISO, MDY"),
        (b"options", b"-c nonsense_setting=1 --also=2"),
        (b"x_random", b"y"),
    ];
    for (k, v) in extras {
        if rng.gen_bool(0.15) {
            params.push((k.to_vec(), v.to_vec()));
        }
    }
    if rng.gen_bool(0.03) {
        params[1].1 = b"shardgate".to_vec(); // the admin database
    }
    let refs: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    startup_packet(&refs)
}

/// A startup-phase packet that is wrong in one way or another.
fn bad_startup(rng: &mut StdRng) -> BytesMut {
    let mut p = valid_startup(rng);
    match rng.gen_range(0..10) {
        0 => {
            let at = rng.gen_range(0..p.len());
            p.truncate(at);
        }
        1 => {
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..p.len());
                p[at] = rng.r#gen();
            }
        }
        2 => p[..4].copy_from_slice(&rng.r#gen::<i32>().to_be_bytes()),
        3 => {
            let version: i32 = *[0x0002_0000, 0x0003_0001, 0x04d2_162e, rng.r#gen()]
                .choose(rng)
                .unwrap();
            p[4..8].copy_from_slice(&version.to_be_bytes());
        }
        4 => {
            // Parameters without their final terminator.
            p.truncate(p.len() - 1);
            let len = p.len() as i32;
            p[..4].copy_from_slice(&len.to_be_bytes());
        }
        5 => {
            p = startup_packet(&[(b"user", b"\xff\xfe app"), (b"database", b"app")]);
        }
        6 => {
            // Longer than any startup packet may be.
            let big = vec![b'x'; 20_000];
            p = startup_packet(&[(b"user", b"app"), (b"application_name", &big)]);
        }
        7 => {
            // SSLRequest or GSSENCRequest, then garbage.
            p.clear();
            p.put_i32(8);
            p.put_i32(*[80_877_103, 80_877_104].choose(rng).unwrap());
            p.put_slice(&random_bytes(rng, 64));
        }
        8 => {
            // CancelRequest for a random key, sometimes with a wrong length.
            p.clear();
            p.put_i32(if rng.gen_bool(0.5) { 16 } else { 12 });
            p.put_i32(80_877_102);
            p.put_i32(rng.r#gen());
            p.put_i32(rng.r#gen());
        }
        _ => {
            p.clear();
            p.put_slice(&random_bytes(rng, 300));
        }
    }
    p
}

fn pick_sql(rng: &mut StdRng) -> Vec<u8> {
    if rng.gen_bool(0.1) {
        return (0..rng.gen_range(0..80))
            .map(|_| rng.gen_range(b' '..=b'~'))
            .collect();
    }
    SQL.choose(rng).unwrap().as_bytes().to_vec()
}

fn pick_name(rng: &mut StdRng) -> &'static [u8] {
    [&b""[..], b"s1", b"s2", b"p1", b"nope"]
        .choose(rng)
        .unwrap()
}

/// One client message: mostly well-formed (so the connection lives on and reaches the
/// server), sometimes malformed, oversized or of an unknown type. Returns the bytes and
/// whether the proxy should close the connection on it.
fn message(rng: &mut StdRng) -> (BytesMut, bool) {
    let mut out = BytesMut::new();
    let mut body = BytesMut::new();
    let fatal = match rng.gen_range(0..100) {
        0..=17 => {
            put_cstr(&mut body, &pick_sql(rng));
            put_frame(&mut out, b'Q', &body);
            false
        }
        18..=29 => {
            put_cstr(&mut body, pick_name(rng));
            put_cstr(&mut body, &pick_sql(rng));
            let n = rng.gen_range(0..3);
            body.put_i16(n);
            for _ in 0..n {
                body.put_u32(*[0u32, 23, 25, 17, 99_999].choose(rng).unwrap());
            }
            put_frame(&mut out, b'P', &body);
            false
        }
        30..=41 => {
            put_cstr(&mut body, pick_name(rng)); // portal
            put_cstr(&mut body, pick_name(rng)); // statement
            let nfmt = rng.gen_range(0..3);
            body.put_i16(nfmt);
            for _ in 0..nfmt {
                body.put_i16(rng.gen_range(0..2));
            }
            let nparams = rng.gen_range(0..3);
            body.put_i16(nparams);
            for _ in 0..nparams {
                if rng.gen_bool(0.2) {
                    body.put_i32(-1);
                } else {
                    let v = random_bytes(rng, 8);
                    body.put_i32(v.len() as i32);
                    body.put_slice(&v);
                }
            }
            body.put_i16(rng.gen_range(0..2));
            put_frame(&mut out, b'B', &body);
            false
        }
        42..=47 => {
            body.put_u8(*b"SP".choose(rng).unwrap());
            put_cstr(&mut body, pick_name(rng));
            put_frame(&mut out, b'D', &body);
            false
        }
        48..=55 => {
            put_cstr(&mut body, pick_name(rng));
            body.put_i32(rng.gen_range(0..5));
            put_frame(&mut out, b'E', &body);
            false
        }
        56..=58 => {
            body.put_u8(*b"SP".choose(rng).unwrap());
            put_cstr(&mut body, pick_name(rng));
            put_frame(&mut out, b'C', &body);
            false
        }
        59..=69 => {
            put_frame(&mut out, b'S', &[]);
            false
        }
        70..=72 => {
            put_frame(&mut out, b'H', &[]);
            false
        }
        73..=77 => {
            let tag = *b"dcf".choose(rng).unwrap();
            put_frame(&mut out, tag, &random_bytes(rng, 40));
            false
        }
        78..=79 => {
            // FunctionCall: the proxy passes it through; the server judges it.
            put_frame(&mut out, b'F', &random_bytes(rng, 30));
            false
        }
        80..=87 => {
            // A known type with a random body: malformed Bind, Parse, Describe, ...
            let tag = *b"QPBDECSH".choose(rng).unwrap();
            put_frame(&mut out, tag, &random_bytes(rng, 60));
            false // the body may happen to make sense
        }
        88..=91 => {
            let tag = loop {
                let t: u8 = rng.r#gen();
                if !b"QPBDECSHXFdcf".contains(&t) {
                    break t;
                }
            };
            put_frame(&mut out, tag, &random_bytes(rng, 60));
            true
        }
        92..=94 => {
            // A declared length that is impossible or over the limit.
            out.put_u8(*b"QPBX".choose(rng).unwrap());
            out.put_i32(
                *[0, 3, -1, i32::MIN, i32::MAX, 65 << 20]
                    .choose(rng)
                    .unwrap(),
            );
            out.put_slice(&random_bytes(rng, 20));
            true
        }
        95..=97 => {
            // Long but allowed: the proxy buffers it and waits for the rest.
            out.put_u8(b'Q');
            out.put_i32(rng.gen_range(10_000..2_000_000));
            out.put_slice(&random_bytes(rng, 500));
            true
        }
        _ => {
            put_frame(&mut out, b'X', &[]);
            true
        }
    };
    (out, fatal)
}

/// Reads server messages until one with `tag` arrives (true), or the connection ends, an
/// ErrorResponse arrives or 3 s pass (false).
async fn read_until(sock: &mut TcpStream, tag: u8) -> bool {
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            while buf.len() >= 5 {
                let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize + 1;
                if buf.len() < len {
                    break;
                }
                let t = buf[0];
                let _ = buf.split_to(len);
                if t == tag {
                    return true;
                }
                if t == b'E' {
                    return false;
                }
            }
            match sock.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .unwrap_or(false)
}

/// Sends `bytes`, counting it as a frame if it was written.
async fn send(sock: &mut TcpStream, bytes: &[u8], frames: &mut usize) -> bool {
    let ok = sock.write_all(bytes).await.is_ok();
    if ok {
        *frames += 1;
    }
    ok
}

/// Random or broken bytes from the first byte on.
async fn garbage_startup(sock: &mut TcpStream, rng: &mut StdRng, frames: &mut usize) {
    let packet = if rng.gen_bool(0.4) {
        BytesMut::from(&random_bytes(rng, 600)[..])
    } else {
        bad_startup(rng)
    };
    if send(sock, &packet, frames).await && rng.gen_bool(0.3) {
        // Whatever the proxy answered, a valid startup after it must not confuse it.
        let _ = send(sock, &valid_startup(rng), frames).await;
    }
}

/// A valid login on the trust proxy, then a burst of messages.
async fn session(mut sock: TcpStream, rng: &mut StdRng, st: &mut TaskStats) {
    let frames = &mut st.frames;
    if !send(&mut sock, &valid_startup(rng), frames).await || !read_until(&mut sock, b'Z').await {
        return;
    }
    st.sessions += 1;
    let (mut rd, mut wr) = sock.into_split();
    // Drain replies concurrently so the proxy never blocks writing to us.
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 16 * 1024];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let mut batch = BytesMut::new();
    let mut in_batch = 0;
    for _ in 0..rng.gen_range(1..=60) {
        let (msg, fatal) = message(rng);
        batch.extend_from_slice(&msg);
        in_batch += 1;
        if rng.gen_bool(0.5) || fatal {
            if wr.write_all(&batch).await.is_err() {
                in_batch = 0;
                break;
            }
            *frames += in_batch;
            (batch, in_batch) = (BytesMut::new(), 0);
        }
        if fatal && rng.gen_bool(0.7) {
            break;
        }
    }
    if in_batch > 0 && wr.write_all(&batch).await.is_ok() {
        *frames += in_batch;
    }
    if rng.gen_bool(0.15) {
        // Disconnect in the middle of a message.
        let (msg, _) = message(rng);
        let cut = rng.gen_range(1..msg.len());
        if wr.write_all(&msg[..cut]).await.is_ok() {
            *frames += 1;
        }
    } else if rng.gen_bool(0.3) {
        let mut x = BytesMut::new();
        put_frame(&mut x, b'X', &[]);
        let _ = wr.write_all(&x).await;
    }
    if rng.gen_bool(0.3) {
        // Sometimes wait (briefly) for the proxy to hang up.
        let _ = wr.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
    } else {
        drain.abort();
    }
}

/// SCRAM-SHA-256 login with garbage where the client's SASL messages belong.
async fn scram_garbage(sock: &mut TcpStream, rng: &mut StdRng, frames: &mut usize) {
    let user: &[u8] = if rng.gen_bool(0.8) {
        b"app"
    } else {
        b"mallory"
    };
    let startup = startup_packet(&[(b"user", user), (b"database", b"app")]);
    if !send(sock, &startup, frames).await || !read_until(sock, b'R').await {
        return;
    }
    let nonce: String = (0..24).map(|_| rng.gen_range('a'..='z')).collect();
    let mut out = BytesMut::new();
    let mut body = BytesMut::new();
    match rng.gen_range(0..8) {
        0 => put_frame(&mut out, b'p', &random_bytes(rng, 200)),
        1 => {
            // The right mechanism with a nonsensical client-first message.
            put_cstr(&mut body, b"SCRAM-SHA-256");
            let data = random_bytes(rng, 100);
            body.put_i32(data.len() as i32);
            body.put_slice(&data);
            put_frame(&mut out, b'p', &body);
        }
        2 => {
            // A declared data length beyond the message.
            put_cstr(&mut body, b"SCRAM-SHA-256");
            body.put_i32(rng.gen_range(100..i32::MAX));
            body.put_slice(b"n,,n=,r=abc");
            put_frame(&mut out, b'p', &body);
        }
        3 => {
            put_cstr(&mut body, b"SCRAM-SHA-1");
            let data = format!("n,,n=,r={nonce}");
            body.put_i32(data.len() as i32);
            body.put_slice(data.as_bytes());
            put_frame(&mut out, b'p', &body);
        }
        4 => put_frame(
            &mut out,
            *b"QPBX".choose(rng).unwrap(),
            &random_bytes(rng, 50),
        ),
        5 => {
            out.put_u8(b'p');
            out.put_i32(*[i32::MAX, -5, 2, 1 << 20].choose(rng).unwrap());
            out.put_slice(&random_bytes(rng, 30));
        }
        _ => {
            // A proper client-first message, then a broken client-final one.
            put_cstr(&mut body, b"SCRAM-SHA-256");
            let data = format!("n,,n=,r={nonce}");
            body.put_i32(data.len() as i32);
            body.put_slice(data.as_bytes());
            put_frame(&mut out, b'p', &body);
            if !send(sock, &out, frames).await || !read_until(sock, b'R').await {
                return;
            }
            out.clear();
            let finals: [Vec<u8>; 4] = [
                random_bytes(rng, 120),
                format!("c=biws,r={nonce}wrong,p=AAAA").into_bytes(),
                format!("c=biws,r={nonce},p=notbase64!!").into_bytes(),
                b"c=,r=,p=".to_vec(),
            ];
            put_frame(&mut out, b'p', finals.choose(rng).unwrap());
        }
    }
    if rng.gen_bool(0.15) {
        let cut = rng.gen_range(1..out.len());
        out.truncate(cut);
    }
    if send(sock, &out, frames).await && rng.gen_bool(0.3) {
        let mut more = BytesMut::new();
        put_frame(&mut more, b'p', &random_bytes(rng, 50));
        let _ = send(sock, &more, frames).await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Trust,
    Scram,
}

#[derive(Debug, Default)]
struct TaskStats {
    frames: usize,
    connections: usize,
    /// Connections that logged in and reached the message phase.
    sessions: usize,
    connect_errors: usize,
}

async fn one_connection(addr: SocketAddr, target: Target, rng: &mut StdRng, st: &mut TaskStats) {
    let Ok(mut sock) = TcpStream::connect(addr).await else {
        st.connect_errors += 1;
        return;
    };
    sock.set_nodelay(true).ok();
    st.connections += 1;
    let roll = rng.gen_range(0..100);
    match (target, roll) {
        (_, 0..=19) => garbage_startup(&mut sock, rng, &mut st.frames).await,
        (Target::Trust, _) => session(sock, rng, st).await,
        (Target::Scram, _) => scram_garbage(&mut sock, rng, &mut st.frames).await,
    }
}

async fn fuzz_task(addr: SocketAddr, target: Target, seed: u64) -> TaskStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut st = TaskStats::default();
    let deadline = Instant::now() + FUZZ_TIME;
    let quota = std::env::var("FUZZ_FRAMES_PER_TASK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(FRAMES_PER_TASK);
    while st.frames < quota && Instant::now() < deadline {
        let mut conn_rng = StdRng::seed_from_u64(rng.r#gen());
        let _ = tokio::time::timeout(
            CONNECTION_TIME,
            one_connection(addr, target, &mut conn_rng, &mut st),
        )
        .await;
    }
    st
}

/// Runs `select $1::int` until told to stop; every answer must be right.
async fn well_behaved(config: tokio_postgres::Config, stop: Arc<AtomicBool>) -> u64 {
    let c = connect_with(&config).await.expect("good client login");
    let stmt = c.prepare("select $1::int").await.expect("prepare");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let i = n as i32;
        let row = if n.is_multiple_of(2) {
            within(10, "good client query", c.query_one(&stmt, &[&i])).await
        } else {
            within(
                10,
                "good client query",
                c.query_one("select $1::int", &[&i]),
            )
            .await
        };
        let v: i32 = row
            .unwrap_or_else(|e| panic!("good client query #{n} failed: {e}"))
            .get(0);
        assert_eq!(v, i, "good client got another query's answer");
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_many_clients_harms_neither_the_proxy_nor_good_clients() {
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("fuzz seed {seed} (replay with FUZZ_SEED={seed})");
    eprintln!("fuzz seed {seed} (replay with FUZZ_SEED={seed})");

    let fx = Fixture::builder()
        .auth("trust")
        .shard_auth(HostAuth::Trust)
        .without_proxy()
        .start()
        .await;
    fx.shard(0)
        .execute_batch("app", "create table fuzz_t (a int, b text)")
        .await
        .unwrap();
    let mut trust_cfg = fx.config.clone();
    trust_cfg.shards[0].pool_size = POOL_SIZE;
    let mut scram_cfg = trust_cfg.clone();
    scram_cfg.auth.method = AuthMethod::ScramSha256;
    scram_cfg.shards[0].pool_size = 4;
    let trust = start_proxy(trust_cfg).await;
    let scram = start_proxy(scram_cfg).await;

    let stop = Arc::new(AtomicBool::new(false));
    let good = [
        tokio::spawn(well_behaved(proxy_config(&trust), stop.clone())),
        tokio::spawn(well_behaved(proxy_config(&scram), stop.clone())),
    ];

    let started = Instant::now();
    let mut fuzzers = JoinSet::new();
    for t in 0..TASKS {
        let (addr, target) = match t % 5 {
            4 => (scram.addr, Target::Scram),
            _ => (trust.addr, Target::Trust),
        };
        let task_seed = seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        fuzzers.spawn(fuzz_task(addr, target, task_seed));
    }
    let stats = within(60, "fuzz tasks", fuzzers.join_all()).await;
    let fuzz_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut good_queries = Vec::new();
    for g in good {
        good_queries.push(within(20, "good clients", g).await.expect("good client"));
    }

    let frames: usize = stats.iter().map(|s| s.frames).sum();
    let connections: usize = stats.iter().map(|s| s.connections).sum();
    let sessions: usize = stats.iter().map(|s| s.sessions).sum();
    let connect_errors: usize = stats.iter().map(|s| s.connect_errors).sum();
    println!(
        "seed {seed}: {frames} frames over {connections} connections ({sessions} logged in) \
         in {fuzz_time:?}; good clients ran {good_queries:?} queries"
    );
    assert!(frames >= 10_000, "only {frames} frames sent (seed {seed})");
    assert_eq!(connect_errors, 0, "the proxy refused TCP connections");
    assert!(good_queries.iter().all(|&n| n > 0), "{good_queries:?}");
    assert!(
        !trust.is_finished(),
        "the trust proxy stopped (seed {seed})"
    );
    assert!(
        !scram.is_finished(),
        "the SCRAM proxy stopped (seed {seed})"
    );

    // Fresh clients log in and work on both proxies.
    for proxy in [&trust, &scram] {
        let c = within(10, "fresh client", client(proxy)).await;
        let v: i32 = c
            .query_one("select $1::int + 1", &[&41i32])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, 42);
    }

    // No server connection leaked: once the fuzz sessions are gone, the whole pool can be
    // held by concurrent transactions.
    let direct = fx.connect_shard(0).await;
    let settled = wait_until(Duration::from_secs(10), || async {
        let busy: i64 = direct
            .query_one(
                "select count(*) from pg_stat_activity where datname = 'app' \
                 and pid <> pg_backend_pid() and state <> 'idle'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        busy == 0
    })
    .await;
    assert!(
        settled,
        "server connections stay busy after the fuzz clients left"
    );
    let mut holders = Vec::new();
    for _ in 0..POOL_SIZE {
        holders.push(client(&trust).await);
    }
    let mut txs = Vec::new();
    for c in holders.iter_mut() {
        let tx = within(10, "holding the whole pool", c.transaction())
            .await
            .unwrap_or_else(|e| panic!("pool slot missing after fuzzing (seed {seed}): {e:?}"));
        tx.query_one("select 1", &[]).await.unwrap();
        txs.push(tx);
    }
    for tx in txs {
        tx.commit().await.unwrap();
    }
}
