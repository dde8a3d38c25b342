//! TLS between clients and the proxy, with psql as the client and a self-signed
//! certificate made by the `openssl` command (Debian's postgresql-common pulls it in).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use shardgate::config::Config;
use shardgate_e2e::{Fixture, ProxyHandle, ScratchDir, bin, psql, start_proxy, wait_until};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn run_psql(url: &str, args: &[&str]) -> Output {
    tokio::time::timeout(CLIENT_TIMEOUT, psql(url, args))
        .await
        .unwrap_or_else(|_| panic!("psql {args:?} did not finish within {CLIENT_TIMEOUT:?}"))
}

async fn psql_ok(url: &str, args: &[&str]) -> String {
    let out = run_psql(url, args).await;
    assert!(
        out.status.success(),
        "psql {args:?} against {url} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

struct Cert {
    cert: PathBuf,
    key: PathBuf,
}

/// A self-signed P-256 certificate for 127.0.0.1 and localhost (PKCS#8 key), which also
/// serves as its own root for `sslmode=verify-full`.
fn self_signed(dir: &Path) -> Cert {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("the openssl command could not be started ({e}); install Debian's openssl")
        });
    assert!(
        out.status.success(),
        "openssl req failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Cert { cert, key }
}

/// Clusters, a certificate, and a proxy configured with it.
async fn tls_fixture() -> (Fixture, ScratchDir, Cert, ProxyHandle) {
    let fx = Fixture::builder().without_proxy().start().await;
    let dir = ScratchDir::new("tls");
    let cert = self_signed(dir.path());
    let mut config = fx.config.clone();
    config.proxy.tls_cert = Some(cert.cert.clone());
    config.proxy.tls_key = Some(cert.key.clone());
    let proxy = start_proxy(config).await;
    (fx, dir, cert, proxy)
}

fn app_url(proxy: &ProxyHandle, query: &str) -> String {
    format!("{}?{query}", proxy.url("app", "app", "app"))
}

fn root_cert_query(cert: &Cert, mode: &str) -> String {
    format!(
        "sslmode={mode}&sslrootcert={}",
        cert.cert.to_str().expect("UTF-8 path")
    )
}

#[tokio::test]
async fn psql_with_sslmode_require_gets_an_encrypted_session() {
    let (_fx, _dir, cert, proxy) = tls_fixture().await;
    let out = psql_ok(
        &app_url(&proxy, "sslmode=require"),
        &["-c", "\\conninfo", "-tA", "-c", "select 'over tls'"],
    )
    .await;
    assert!(out.contains("SSL connection (protocol: TLSv1."), "{out}");
    assert!(out.contains("over tls"), "{out}");

    // verify-full: the proxy presents exactly the configured certificate, valid for the
    // address psql dialled.
    let out = psql_ok(
        &app_url(&proxy, &root_cert_query(&cert, "verify-full")),
        &["-c", "\\conninfo"],
    )
    .await;
    assert!(out.contains("SSL connection"), "{out}");
}

#[tokio::test]
async fn copy_and_queries_work_over_tls() {
    const N: usize = 20_000;
    let (fx, dir, _cert, proxy) = tls_fixture().await;
    let url = app_url(&proxy, "sslmode=require");
    let input = dir.path().join("rows.tsv");
    let text: String = (1..=N)
        .map(|i| format!("{i}\t{}\n", "x".repeat(i % 200)))
        .collect();
    std::fs::write(&input, &text).unwrap();
    let out = psql_ok(
        &url,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "create table big(id int primary key, pad text not null)",
            "-c",
            &format!("\\copy big from '{}'", input.to_str().unwrap()),
        ],
    )
    .await;
    assert!(out.contains(&format!("COPY {N}")), "{out}");
    let back = psql_ok(
        &url,
        &[
            "-q",
            "-c",
            "\\copy (select * from big order by id) to stdout",
        ],
    )
    .await;
    assert!(back == text, "COPY out over TLS differs from what went in");
    let count: i64 = fx
        .connect_shard(0)
        .await
        .query_one("select count(*) from big", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, N as i64);
}

#[tokio::test]
async fn ctrl_c_cancels_a_psql_session_over_tls() {
    let (fx, _dir, _cert, proxy) = tls_fixture().await;
    let shard = fx.connect_shard(0).await;
    let child = tokio::process::Command::new(bin("psql"))
        .arg(app_url(&proxy, "sslmode=require"))
        .args(["-X", "-c", "select pg_sleep(30)"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("psql could not be started");
    let pid = child.id().expect("psql has a pid");
    let shard_ref = &shard;
    let active = wait_until(Duration::from_secs(20), || async move {
        let n: i64 = shard_ref
            .query_one(
                "select count(*) from pg_stat_activity where state = 'active' \
                 and pid <> pg_backend_pid() and query like '%pg_sleep(30)%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 1
    })
    .await;
    assert!(active, "pg_sleep never became active on the shard");
    let signalled = Instant::now();
    let kill = std::process::Command::new("sh")
        .args(["-c", "kill -INT \"$1\"", "sh", &pid.to_string()])
        .status()
        .expect("sh could not be started");
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(2), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("psql still running 2s after SIGINT"))
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("canceling statement due to user request"),
        "after {:?}: {}",
        signalled.elapsed(),
        stderr(&out)
    );
}

#[tokio::test]
async fn sslmode_require_against_a_proxy_without_tls_is_refused() {
    let fx = Fixture::start().await;
    let out = run_psql(
        &format!("{}?sslmode=require", fx.proxy_url("app")),
        &["-c", "select 1"],
    )
    .await;
    assert!(!out.status.success(), "psql got in: {}", stdout(&out));
    assert!(
        stderr(&out).contains("server does not support SSL, but SSL was required"),
        "{}",
        stderr(&out)
    );
    // The same proxy still serves the client that does not insist.
    let out = psql_ok(
        &format!("{}?sslmode=prefer", fx.proxy_url("app")),
        &["-c", "\\conninfo", "-tA", "-c", "select 'plain'"],
    )
    .await;
    assert!(!out.contains("SSL connection"), "{out}");
    assert!(out.contains("plain"), "{out}");
}

#[tokio::test]
async fn sslmode_disable_still_works_when_tls_is_configured() {
    let (_fx, _dir, _cert, proxy) = tls_fixture().await;
    let out = psql_ok(
        &app_url(&proxy, "sslmode=disable"),
        &["-c", "\\conninfo", "-tA", "-c", "select 'no tls'"],
    )
    .await;
    assert!(!out.contains("SSL connection"), "{out}");
    assert!(out.contains("no tls"), "{out}");
    // tokio-postgres without TLS support (no SSLRequest) gets in too.
    let (client, conn) =
        tokio_postgres::connect(&proxy.url("app", "app", "app"), tokio_postgres::NoTls)
            .await
            .expect("plain connection to a TLS-enabled proxy");
    tokio::spawn(conn);
    let n: i32 = client.query_one("select 7", &[]).await.unwrap().get(0);
    assert_eq!(n, 7);
}

#[tokio::test]
async fn wrong_password_over_tls_is_refused() {
    let (_fx, _dir, _cert, proxy) = tls_fixture().await;
    let url = format!("{}?sslmode=require", proxy.url("app", "wrong", "app"));
    let out = run_psql(&url, &["-w", "-c", "select 1"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("password authentication failed for user \"app\""),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn unreadable_certificate_stops_the_proxy_with_the_path_in_the_error() {
    let dir = ScratchDir::new("tls-bad");
    let missing = dir.path().join("missing.crt");
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\n\n\
         [[shards]]\nid = 0\nname = \"s0\"\nurl = \"postgres://postgres:x@127.0.0.1:1/app\"\n",
        missing.display(),
        dir.path().join("missing.key").display()
    );
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let proxy = start_proxy(config).await;
    let stopped = wait_until(Duration::from_secs(10), || {
        let done = proxy.is_finished();
        async move { done }
    })
    .await;
    assert!(stopped, "a proxy with a missing certificate kept running");
    let err = proxy
        .shutdown()
        .await
        .expect_err("a missing certificate must be an error");
    assert!(err.to_string().contains("missing.crt"), "{err}");
}
