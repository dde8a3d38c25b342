//! Runs the real `shardctl` binary: `dev up` twice on one state dir (the second run must
//! reuse data, passwords and the loaded demo), `dev down`, and the signal-driven shutdown
//! of `dev up`. In between, the demo fleet is checked through the proxy and on the shards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shardctl::demo;
use shardctl::dev::{self, Secrets};
use shardctl::pg;

const SHARDCTL: &str = env!("CARGO_BIN_EXE_shardctl");

/// The state dir and any `dev up` child; on drop (also when the test fails) the child is
/// killed, the clusters stopped and the directory removed.
struct DevDir {
    dir: PathBuf,
    child: Option<Child>,
}

impl DevDir {
    fn new() -> DevDir {
        let dir = PathBuf::from(format!("/tmp/sg-devup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        DevDir { dir, child: None }
    }

    fn up(&mut self, listen: &str) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(SHARDCTL)
            .args(["dev", "up", "--shards", "2", "--dir"])
            .arg(&self.dir)
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn log_path(&self) -> PathBuf {
        self.dir.with_extension("log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success());
    }

    /// Polls for the child's exit; `None` if it is still running after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DevDir {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = dev::down(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.log_path());
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn accepts(data_dir: &Path, password: &str, db: &str) -> bool {
    let Some(port) = pg::configured_port(data_dir) else {
        return false;
    };
    let url = format!("postgres://postgres:{password}@127.0.0.1:{port}/{db}");
    match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((_client, conn)) => {
            drop(conn);
            true
        }
        Err(_) => false,
    }
}

/// Waits until `dev up` has reached the proxy and every cluster accepts logins to its
/// database. Fails early if the child exits.
async fn wait_ready(dev: &mut DevDir, listen: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = dev.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("dev up exited early ({status}):\n{}", dev.log());
        }
        if dev.log().contains(&format!("proxy listening on {listen}")) && ready(&dev.dir).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dev up not ready:\n{}",
            dev.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(dir: &Path) -> bool {
    if !dir.join(dev::CONFIG_FILE).is_file() {
        return false;
    }
    let Ok(secrets) = Secrets::load(dir) else {
        return false;
    };
    for (name, db) in [
        ("catalog", "shardgate"),
        ("shard0", "app"),
        ("shard1", "app"),
    ] {
        if !accepts(&dir.join(name), &secrets.superuser_password, db).await {
            return false;
        }
    }
    true
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    tokio::spawn(conn);
    client
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The demo as `dev up` promises it: every tenant on exactly the shard the admin console
/// names, with its Zipfian number of orders, readable through the proxy; the global plans
/// on every shard; row-level security on the tenant setting.
async fn check_demo(dir: &Path, listen: &str, secrets: &Secrets) {
    let proxy = connect(&format!("postgres://app:app@{listen}/app")).await;
    let admin = connect(&format!(
        "postgres://admin:{}@{listen}/shardgate",
        secrets.admin_password
    ))
    .await;
    let mut shards = Vec::new();
    for name in ["shard0", "shard1"] {
        let port = pg::configured_port(&dir.join(name)).unwrap();
        let su = format!(
            "postgres://postgres:{}@127.0.0.1:{port}/app",
            secrets.superuser_password
        );
        let app = format!(
            "postgres://app:{}@127.0.0.1:{port}/app",
            secrets.superuser_password
        );
        shards.push((name, connect(&su).await, connect(&app).await));
    }
    let mut per_shard = [0i64; 2];
    for t in 1..=demo::TENANTS {
        let want = demo::orders_of(t) as i64;
        if t % 10 == 1 || t == demo::TENANTS {
            assert_eq!(count(&proxy, &demo::count_sql(t)).await, want, "tenant {t}");
        }
        let rows = admin
            .simple_query(&format!("SHOW TENANT {t}"))
            .await
            .unwrap();
        let home = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get("shard").map(String::from),
                _ => None,
            })
            .unwrap();
        for (i, (name, su, _)) in shards.iter().enumerate() {
            let here = count(su, &demo::count_sql(t)).await;
            if *name == home {
                assert_eq!(here, want, "tenant {t} on its shard {name}");
                per_shard[i] += 1;
            } else {
                assert_eq!(here, 0, "tenant {t} also on {name}");
            }
        }
    }
    assert!(per_shard.iter().all(|n| *n > 0), "{per_shard:?}");
    for (name, su, app) in &shards {
        assert_eq!(count(su, "SELECT count(*) FROM plans").await, 3, "{name}");
        // The app role is subject to the policies: with a tenant named, only its rows.
        app.batch_execute("SET app.tenant_id = 1").await.unwrap();
        assert!(count(app, "SELECT count(DISTINCT tenant_id) FROM orders").await <= 1);
    }
    // Through the proxy with no WHERE at all: the comment routes, the policy filters.
    assert_eq!(
        count(&proxy, "/* tenant_id=1 */ SELECT count(*) FROM orders").await,
        demo::LARGEST as i64
    );
    let items = count(&proxy, "/* tenant_id=3 */ SELECT count(*) FROM line_items").await;
    assert_eq!(items, (demo::orders_of(3) * demo::LINES) as i64);
}

fn assert_all_stopped(dir: &Path) {
    for name in dev::cluster_names(2) {
        assert!(
            !pg::is_running(&dir.join(&name)).unwrap(),
            "{name} still running"
        );
    }
}

#[tokio::test]
async fn dev_up_runs_the_fleet_and_stops_it_on_signal() {
    let mut dev = DevDir::new();
    let listen = free_addr();
    dev.up(&listen);
    wait_ready(&mut dev, &listen).await;

    let config = shardgate::config::Config::load(&dev.dir.join(dev::CONFIG_FILE)).unwrap();
    assert_eq!(config.proxy.listen, listen);
    assert!(config.catalog.is_some() && config.shards.is_empty());
    let log = dev.log();
    assert!(log.contains("psql \"postgres://app:app@"), "{log}");
    assert!(log.contains("loaded through the proxy"), "{log}");
    let secrets = Secrets::load(&dev.dir).unwrap();
    check_demo(&dev.dir, &listen, &secrets).await;
    let mode = std::fs::metadata(dev.dir.join(dev::SECRETS_FILE)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    // Leave a mark on shard1 to find after the restart.
    let port = pg::configured_port(&dev.dir.join("shard1")).unwrap();
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{port}/app",
        secrets.superuser_password
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("create table mark(x int); insert into mark values (5)")
        .await
        .unwrap();
    drop(client);

    dev.signal("-INT");
    let status = dev
        .wait_exit(Duration::from_secs(120))
        .expect("dev up ignored SIGINT");
    assert!(status.success(), "{status}:\n{}", dev.log());
    assert_all_stopped(&dev.dir);

    // Second run: same data dirs, same passwords, nothing re-initialised.
    let listen = free_addr();
    dev.up(&listen);
    wait_ready(&mut dev, &listen).await;
    assert_eq!(Secrets::load(&dev.dir).unwrap(), secrets);
    assert!(dev.log().contains("(loaded before)"), "{}", dev.log());
    check_demo(&dev.dir, &listen, &secrets).await;
    let port = pg::configured_port(&dev.dir.join("shard1")).unwrap();
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{port}/app",
        secrets.superuser_password
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let x: i32 = client
        .query_one("select x from mark", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 5);
    drop(client);

    // `dev down` stops the clusters under a running `dev up`; SIGTERM then ends it cleanly.
    let out = Command::new(SHARDCTL)
        .args(["dev", "down", "--dir"])
        .arg(&dev.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    for name in dev::cluster_names(2) {
        assert!(said.contains(&format!("stopped {name}")), "{said}");
    }
    assert_all_stopped(&dev.dir);
    dev.signal("-TERM");
    let status = dev
        .wait_exit(Duration::from_secs(120))
        .expect("dev up ignored SIGTERM");
    assert!(status.success(), "{status}:\n{}", dev.log());
}
