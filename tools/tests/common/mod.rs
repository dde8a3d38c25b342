//! Running the real `shardctl` binary: its exit code, stdout and stderr, and the
//! assertions every CLI test makes on them. Each test file compiles this on its own.
#![allow(dead_code)]

use std::process::Output;

use serde_json::Value;

pub const SHARDCTL: &str = env!("CARGO_BIN_EXE_shardctl");

/// Runs `shardctl ARGS` with `SHARDGATE_CATALOG` set to `catalog`.
pub async fn shardctl(catalog: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(SHARDCTL)
        .args(args)
        .env("SHARDGATE_CATALOG", catalog)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("shardctl could not be started")
}

/// What one `shardctl` run printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", self.stdout))
    }
}

pub async fn run(catalog: &str, args: &[&str]) -> Run {
    let out = shardctl(catalog, args).await;
    Run {
        code: out.status.code().expect("shardctl was killed by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts the exit code and that stderr leads with `e_code`.
pub fn fails(r: &Run, exit: i32, e_code: &str) {
    assert_eq!(r.code, exit, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(
        r.stderr.starts_with(&format!("{e_code}: ")),
        "stderr should lead with {e_code}: {}",
        r.stderr
    );
}

pub fn ok(r: &Run) {
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
}

/// One cluster whose database `shardgate` is an initialised catalog (by the real binary)
/// listing two shards, `sa` and `sb`: databases `a` and `b` of the same cluster. Returns
/// the cluster, the catalog's URL and a client of it.
pub async fn two_shard_catalog() -> (shardctl::pg::PgCluster, String, tokio_postgres::Client) {
    use shardgate_catalog::db::{self, NewShard};
    let pg = shardctl::pg::PgCluster::start(shardctl::pg::PgOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for db in ["shardgate", "a", "b"] {
        pg.create_database(db).await.unwrap();
    }
    let url = pg.superuser_url("shardgate");
    ok(&run(&url, &["init"]).await);
    let mut cat = db::connect(&url).await.unwrap();
    for (name, db) in [("sa", "a"), ("sb", "b")] {
        db::add_shard(&mut cat, &NewShard::new(name, pg.superuser_url(db)))
            .await
            .unwrap();
    }
    (pg, url, cat)
}
