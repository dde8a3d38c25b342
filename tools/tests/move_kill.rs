//! The real `shardctl move` killed with SIGKILL before its flip: `--resume` finishes the
//! move and `--abort` restores the source, with no row lost either way. A live proxy
//! heartbeat that never acknowledges the gate (a row in `shardgate.proxies`) keeps each
//! move from flipping on its own, so the kill always lands before the flip; the in-process
//! phase-by-phase cases are in `tests/tests/move_resume.rs`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use shardctl::pg::{PgCluster, PgOptions};
use shardgate_catalog::db::{self, NewShard, jobs::JobState};
use shardgate_catalog::{TenantKey, TenantState};
use tokio_postgres::{Client, NoTls};

const SHARDCTL: &str = env!("CARGO_BIN_EXE_shardctl");
const SCHEMA: &str = "create table orders (tenant_id bigint not null, id bigint not null, \
                      note text, primary key (tenant_id, id))";
const ROWS: i64 = 50_000;

async fn connect(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

struct Fleet {
    shards: [PgCluster; 2],
    catalog: String,
    /// Kept open: the kill must follow the move closely.
    clients: Vec<Client>,
    cat: Client,
}

impl Fleet {
    fn shard_url(&self, i: usize) -> String {
        self.shards[i].superuser_url("app")
    }

    async fn shard(&self, i: usize) -> &Client {
        &self.clients[i]
    }

    /// (shard index, state) of tenant `t` in the catalog's map.
    async fn placement(&self, t: i64) -> (usize, TenantState) {
        let mut c = db::connect(&self.catalog).await.unwrap();
        let map = db::load_map(&mut c).await.unwrap();
        let p = map.locate(&TenantKey::Int(t)).unwrap();
        let name = &map.shard(p.shard).unwrap().name;
        (name[1..].parse().unwrap(), p.state)
    }

    async fn rows(&self, i: usize, t: i64) -> BTreeMap<i64, String> {
        self.shard(i)
            .await
            .query("select id, note from orders where tenant_id = $1", &[&t])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    async fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..2 {
            for r in self
                .shard(i)
                .await
                .query(shardctl::move_cmd::shard::MOVE_OBJECTS_SQL, &[])
                .await
                .unwrap()
            {
                out.push(format!("s{i}: {}", r.get::<_, String>(0)));
            }
        }
        out
    }

    /// The one running job's (id, phase), if any.
    async fn running_job(&self) -> Option<(i64, String)> {
        let jobs = db::jobs::list_jobs(&self.cat, false).await.unwrap();
        jobs.first().map(|j| (j.id, j.phase.clone()))
    }

    async fn job(&self, id: i64) -> (JobState, String) {
        let j = db::jobs::get_job(&self.cat, id).await.unwrap();
        (j.state, j.phase)
    }

    /// A live proxy that never acknowledges any gate: no move can pass its gate.
    async fn stick_gate(&self, stuck: bool) {
        let c = db::connect(&self.catalog).await.unwrap();
        let sql = match stuck {
            true => {
                "insert into shardgate.proxies (proxy_id, addr, map_version_seen, last_seen) \
                 values ('stuck', '127.0.0.1:1', 0, now() + interval '1 hour')"
            }
            false => "delete from shardgate.proxies where proxy_id = 'stuck'",
        };
        c.batch_execute(sql).await.unwrap();
    }
}

async fn start() -> Fleet {
    let mut shards = Vec::new();
    for _ in 0..2 {
        let pg = PgCluster::start(PgOptions {
            wal_logical: true,
            ..PgOptions::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        pg.create_database("app").await.unwrap();
        connect(&pg.superuser_url("app"))
            .await
            .batch_execute(SCHEMA)
            .await
            .unwrap();
        shards.push(pg);
    }
    shards[0].create_database("shardgate").await.unwrap();
    let catalog = shards[0].superuser_url("shardgate");
    let shards: [PgCluster; 2] = shards.try_into().unwrap_or_else(|_| unreachable!());
    let clients = vec![
        connect(&shards[0].superuser_url("app")).await,
        connect(&shards[1].superuser_url("app")).await,
    ];
    let cat = db::connect(&catalog).await.unwrap();
    let fleet = Fleet {
        shards,
        catalog,
        clients,
        cat,
    };
    let r = shardctl(&fleet.catalog, &["init"]).await;
    assert_eq!(r.0, Some(0), "init: {}", r.2);
    let mut c = db::connect(&fleet.catalog).await.unwrap();
    for i in 0..2 {
        db::add_shard(&mut c, &NewShard::new(format!("s{i}"), fleet.shard_url(i)))
            .await
            .unwrap();
    }
    fleet
}

/// Runs `shardctl ARGS` to its end: (exit code, stdout, stderr).
async fn shardctl(catalog: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(SHARDCTL)
        .args(args)
        .env("SHARDGATE_CATALOG", catalog)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("shardctl could not be started");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Loads tenant `t` on its shard, starts `shardctl move` to the other one and SIGKILLs it
/// once `killed_at` says so. Returns (job, source, target, the tenant's rows).
async fn kill_move(
    fleet: &Fleet,
    t: i64,
    what: &str,
    killed_at: impl AsyncFn(&Fleet, i64) -> bool,
) -> (i64, usize, usize, BTreeMap<i64, String>) {
    let (source, _) = fleet.placement(t).await;
    let target = 1 - source;
    fleet
        .shard(source)
        .await
        .batch_execute(&format!(
            "insert into orders select {t}, i, md5(i::text) from generate_series(1, {ROWS}) i"
        ))
        .await
        .unwrap();
    let rows = fleet.rows(source, t).await;
    let mut child = tokio::process::Command::new(SHARDCTL)
        .args([
            "move",
            "--tenant",
            &t.to_string(),
            "--to",
            &format!("s{target}"),
        ])
        .args(["--gate-timeout", "60000"])
        .env("SHARDGATE_CATALOG", &fleet.catalog)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let job = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "tenant {t}: never reached {what}"
        );
        if let Some((job, _)) = fleet.running_job().await {
            if killed_at(fleet, job).await {
                break job;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "shardctl move ended");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), None, "shardctl was not killed: {status}");
    let (state, phase) = fleet.job(job).await;
    eprintln!("tenant {t}: job {job} killed ({what}) in phase {phase}");
    assert_eq!(state, JobState::Running);
    (job, source, target, rows)
}

/// In the copy, once the target subscribes.
async fn copying(fleet: &Fleet, job: i64) -> bool {
    let target_has = |i: usize| async move {
        fleet
            .shard(i)
            .await
            .query(
                "select 1 from pg_subscription where subname = $1",
                &[&format!("sg_move_{job}")],
            )
            .await
            .unwrap()
            .len()
            == 1
    };
    (target_has(0).await || target_has(1).await) && fleet.job(job).await.1 == "copy"
}

async fn gated(fleet: &Fleet, job: i64) -> bool {
    let j = db::jobs::get_job(&fleet.cat, job).await.unwrap();
    let t: i64 = serde_json::from_str::<serde_json::Value>(&j.spec).unwrap()["tenant"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    j.phase == "gate" && fleet.placement(t).await.1 == TenantState::Gated
}

async fn assert_moved(
    fleet: &Fleet,
    t: i64,
    job: i64,
    target: usize,
    rows: &BTreeMap<i64, String>,
) {
    assert_eq!(fleet.placement(t).await, (target, TenantState::Active));
    assert!(
        fleet.rows(target, t).await == *rows,
        "tenant {t}: target rows differ"
    );
    assert!(
        fleet.rows(1 - target, t).await.is_empty(),
        "rows left on the source"
    );
    assert_eq!(fleet.leftovers().await, Vec::<String>::new());
    assert_eq!(fleet.job(job).await, (JobState::Done, "done".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shardctl_move_resumes_or_aborts_losing_nothing() {
    let fleet = start().await;
    let cat = fleet.catalog.clone();
    fleet.stick_gate(true).await;

    // Killed during the copy, resumed.
    let (job, _, target, rows) = kill_move(&fleet, 101, "copying", copying).await;
    assert_eq!(fleet.job(job).await.1, "copy");
    fleet.stick_gate(false).await;
    let r = shardctl(&cat, &["move", "--resume", &job.to_string()]).await;
    assert_eq!(r.0, Some(0), "resume: {}\n{}", r.1, r.2);
    assert_moved(&fleet, 101, job, target, &rows).await;
    // After the flip, --abort is refused with its exit code and says how to undo.
    let r = shardctl(&cat, &["move", "--abort", &job.to_string()]).await;
    assert_eq!(r.0, Some(2), "{}", r.2);
    assert!(
        r.2.starts_with(&format!("E_INVALID: job {job} has flipped")),
        "{}",
        r.2
    );

    // Killed while gated, aborted: the tenant active on its source with every row.
    fleet.stick_gate(true).await;
    let (job, source, target, rows) = kill_move(&fleet, 102, "gated", gated).await;
    let r = shardctl(&cat, &["move", "--abort", &job.to_string()]).await;
    assert_eq!(r.0, Some(0), "abort: {}\n{}", r.1, r.2);
    assert_eq!(fleet.placement(102).await, (source, TenantState::Active));
    assert!(fleet.rows(source, 102).await == rows, "source rows differ");
    assert!(
        fleet.rows(target, 102).await.is_empty(),
        "the copy was left"
    );
    assert_eq!(fleet.leftovers().await, Vec::<String>::new());
    assert_eq!(fleet.job(job).await.0, JobState::Aborted);
    // The source takes the tenant's writes again (no fence).
    fleet
        .shard(source)
        .await
        .execute(
            "update orders set note = 'after' where tenant_id = 102",
            &[],
        )
        .await
        .unwrap();

    // Killed while gated, resumed.
    let (job, _, target, rows) = kill_move(&fleet, 103, "gated", gated).await;
    fleet.stick_gate(false).await;
    let r = shardctl(&cat, &["move", "--resume", &job.to_string()]).await;
    assert_eq!(r.0, Some(0), "resume: {}\n{}", r.1, r.2);
    assert_moved(&fleet, 103, job, target, &rows).await;
}
