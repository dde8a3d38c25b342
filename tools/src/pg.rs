//! Local Postgres clusters run from the machine's own binaries, for the test harness and
//! `shardctl dev`. Real servers, not mocks: the proxy's correctness is only as good as the
//! Postgres it is tested against.
//!
//! Starting is async (initdb and startup take seconds and tests start several clusters at
//! once); stopping is blocking so that `Drop` can do it.

pub mod conf;
mod os;

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use conf::HostAuth;
pub use os::{bin_dir, choose_bin_dir, unreachable_ancestor};

use conf::{INCLUDE_FILE, INCLUDE_LINE, ServerSettings, render_hba};

/// How many times an automatically chosen port is replaced after losing a race for it.
const PORT_ATTEMPTS: usize = 6;
/// Longest wait for a started server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Socket paths longer than this fail to bind (sun_path is 108 bytes, NUL included).
const MAX_SOCKET_PATH: usize = 100;
/// Lines of server log quoted in errors.
const LOG_TAIL_LINES: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("Postgres binaries not found: {searched}")]
    BinariesNotFound { searched: String },
    #[error("{0}")]
    User(String),
    #[error(
        "`{command}` failed ({status})\n--- stderr ---\n{stderr}\n--- server log tail ---\n{log_tail}"
    )]
    Command {
        command: String,
        status: String,
        stderr: String,
        log_tail: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the `postgres` OS user cannot reach {data_dir}: {blocker} is not traversable; \
         choose a directory it can reach (e.g. under /tmp) or run `chmod o+x {blocker}`"
    )]
    Unreachable { data_dir: PathBuf, blocker: PathBuf },
    #[error("data dir {0} already exists (set reuse_existing to start it again)")]
    DataDirExists(PathBuf),
    #[error(
        "server at {data_dir} did not accept connections within {secs}s\n--- server log tail ---\n{log_tail}"
    )]
    NotReady {
        data_dir: PathBuf,
        secs: u64,
        log_tail: String,
    },
    #[error("gave up after {0} ports were taken between choosing and binding them")]
    NoFreePort(usize),
    #[error("sql on {url}: {source}")]
    Sql {
        url: String,
        source: tokio_postgres::Error,
    },
}

impl PgError {
    fn io(path: &Path, source: io::Error) -> Self {
        PgError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// How a cluster is created and run. `Default` is tuned for tests.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Directory name under `base_dir`; the data dir is `base_dir/name`.
    pub name: String,
    pub base_dir: PathBuf,
    /// `None` picks a free loopback port (and another one if that is lost to a race).
    pub port: Option<u16>,
    pub auth: HostAuth,
    /// Password of the `postgres` superuser; unused when `auth` is trust.
    pub superuser_password: String,
    /// fsync, full_page_writes and synchronous_commit off (and `initdb -N`).
    pub unsafe_fast: bool,
    pub wal_logical: bool,
    /// Appended after our settings, so they override them.
    pub extra_conf: Vec<(String, String)>,
    /// Keep the data dir when the cluster is dropped.
    pub keep: bool,
    /// Start an existing data dir instead of refusing it (`dev up` after `dev down`).
    pub reuse_existing: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        Self {
            name: format!("pg-{}-{n}", std::process::id()),
            base_dir: PathBuf::from("/tmp/shardgate-pg"),
            port: None,
            auth: HostAuth::ScramSha256,
            superuser_password: "postgres-test-pw".into(),
            unsafe_fast: true,
            wal_logical: true,
            extra_conf: Vec::new(),
            keep: false,
            reuse_existing: false,
        }
    }
}

/// Fast or immediate shutdown, as `pg_ctl stop -m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Fast,
    /// A crash as far as the data is concerned: the next start runs WAL recovery.
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running (or stopped, restartable) Postgres cluster that we own.
#[derive(Debug)]
pub struct PgCluster {
    opts: PgOptions,
    bin: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    /// Set when the socket dir had to live outside the data dir and is ours to remove.
    own_socket_dir: bool,
    port: u16,
    running: bool,
}

impl PgCluster {
    /// Creates (initdb) and starts a cluster, or starts an existing one when
    /// `opts.reuse_existing` is set; an existing one that is already running is adopted.
    pub async fn start(opts: PgOptions) -> Result<PgCluster, PgError> {
        let bin = bin_dir()?;
        let data_dir = opts.base_dir.join(&opts.name);
        prepare_base(&opts.base_dir, &data_dir)?;
        let existing = data_dir.join("PG_VERSION").is_file();
        if existing && !opts.reuse_existing {
            return Err(PgError::DataDirExists(data_dir));
        }
        if !existing {
            os::private_dir(&data_dir)?;
            initdb(&bin, &data_dir, &opts).await?;
        }
        let (socket_dir, own_socket_dir) = socket_dir_for(&data_dir)?;
        let previous_port = configured_port(&data_dir);
        let mut cluster = PgCluster {
            port: opts.port.or(previous_port).unwrap_or(0),
            opts,
            bin,
            data_dir,
            socket_dir,
            own_socket_dir,
            running: false,
        };
        if existing && is_running(&cluster.data_dir)? {
            if let Some(p) = previous_port {
                cluster.port = p;
            }
            cluster.running = true;
            cluster.wait_ready().await?;
            return Ok(cluster);
        }
        if cluster.opts.port.is_none() && !port_is_free(cluster.port) {
            cluster.port = free_port()?;
        }
        cluster.start_server().await?;
        if !existing && cluster.opts.auth == HostAuth::Md5 {
            cluster.rehash_superuser_password().await?;
        }
        Ok(cluster)
    }

    /// Starts the server on `self.port`, moving to a fresh port when an automatically
    /// chosen one was taken in the meantime (parallel tests race for them).
    async fn start_server(&mut self) -> Result<(), PgError> {
        for _ in 0..PORT_ATTEMPTS {
            self.write_config()?;
            match self.pg_ctl_start().await {
                Ok(()) => {
                    self.running = true;
                    return self.wait_ready().await;
                }
                Err(e) if self.opts.port.is_none() && port_was_taken(&e) => {
                    self.port = free_port()?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(PgError::NoFreePort(PORT_ATTEMPTS))
    }

    fn write_config(&self) -> Result<(), PgError> {
        let settings = ServerSettings {
            port: self.port,
            socket_dir: &self.socket_dir,
            auth: self.opts.auth,
            unsafe_fast: self.opts.unsafe_fast,
            wal_logical: self.opts.wal_logical,
            extra: &self.opts.extra_conf,
        };
        write_owned(&self.data_dir.join(INCLUDE_FILE), &settings.render())?;
        write_owned(
            &self.data_dir.join("pg_hba.conf"),
            &render_hba(self.opts.auth),
        )?;
        let main = self.data_dir.join("postgresql.conf");
        let text = std::fs::read_to_string(&main).map_err(|e| PgError::io(&main, e))?;
        if !text.lines().any(|l| l.trim() == INCLUDE_LINE) {
            write_owned(&main, &format!("{text}\n{INCLUDE_LINE}\n"))?;
        }
        Ok(())
    }

    async fn pg_ctl_start(&self) -> Result<(), PgError> {
        let mut cmd = os::server_command(&self.bin.join("pg_ctl"))?;
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"]);
        run_async(cmd, Some(&self.log_path())).await.map(drop)
    }

    /// `pg_ctl -w` already waits for the postmaster; this also proves that TCP on our
    /// port answers, which is what every caller needs next.
    async fn wait_ready(&self) -> Result<(), PgError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = tokio::process::Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-t", "2", "-d", "postgres", "-p"])
                .arg(self.port.to_string())
                .output()
                .await
                .map_err(|e| PgError::io(&self.bin.join("pg_isready"), e))?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PgError::NotReady {
                    data_dir: self.data_dir.clone(),
                    secs: READY_TIMEOUT.as_secs(),
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// initdb stores a SCRAM verifier whatever the host method; an md5 cluster needs an md5
    /// hash or its md5 logins silently become SCRAM ones.
    async fn rehash_superuser_password(&self) -> Result<(), PgError> {
        let sql = format!(
            "SET password_encryption = 'md5'; ALTER ROLE postgres PASSWORD {}",
            quote_literal(&self.opts.superuser_password)
        );
        self.execute_batch("postgres", &sql).await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn name(&self) -> &str {
        &self.opts.name
    }

    pub fn options(&self) -> &PgOptions {
        &self.opts
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }

    /// The end of the server log, for error messages and failing tests.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    /// A `postgres://` URL for TCP on this cluster; parts are percent-encoded.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            pct(user),
            pct(password),
            self.port,
            pct(db)
        )
    }

    pub fn superuser_url(&self, db: &str) -> String {
        self.url("postgres", &self.opts.superuser_password, db)
    }

    /// A superuser client; its connection task is spawned on the current runtime.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, PgError> {
        let url = self.superuser_url(db);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|source| PgError::Sql {
                url: redact(&url),
                source,
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub async fn execute_batch(&self, db: &str, sql: &str) -> Result<(), PgError> {
        let client = self.connect(db).await?;
        client
            .batch_execute(sql)
            .await
            .map_err(|source| PgError::Sql {
                url: redact(&self.superuser_url(db)),
                source,
            })
    }

    /// Creates the database unless it exists, so `dev up` can run again on old data.
    pub async fn create_database(&self, name: &str) -> Result<(), PgError> {
        let client = self.connect("postgres").await?;
        let sql_err = |source| PgError::Sql {
            url: redact(&self.superuser_url("postgres")),
            source,
        };
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map_err(sql_err)?
            .is_some();
        if !exists {
            let sql = format!("CREATE DATABASE {}", quote_ident(name));
            client.batch_execute(&sql).await.map_err(sql_err)?;
        }
        Ok(())
    }

    /// Creates a login role, or resets the password and superuser flag of an existing one.
    pub async fn create_role(
        &self,
        name: &str,
        password: &str,
        superuser: bool,
    ) -> Result<(), PgError> {
        let client = self.connect("postgres").await?;
        let sql_err = |source| PgError::Sql {
            url: redact(&self.superuser_url("postgres")),
            source,
        };
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .map_err(sql_err)?
            .is_some();
        let sql = format!(
            "{} ROLE {} LOGIN PASSWORD {} {}",
            if exists { "ALTER" } else { "CREATE" },
            quote_ident(name),
            quote_literal(password),
            if superuser {
                "SUPERUSER"
            } else {
                "NOSUPERUSER"
            }
        );
        client.batch_execute(&sql).await.map_err(sql_err)
    }

    /// Clean shutdown (`-m fast`), falling back to immediate if the server won't go.
    pub fn stop(&mut self) -> Result<(), PgError> {
        if !self.running {
            return Ok(());
        }
        let result = stop_data_dir(&self.data_dir, StopMode::Fast)
            .or_else(|_| stop_data_dir(&self.data_dir, StopMode::Immediate));
        self.running = false;
        result.map(drop)
    }

    /// Stops without a checkpoint, like a crash; for fault-injection tests.
    pub fn stop_immediate(&mut self) -> Result<(), PgError> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        stop_data_dir(&self.data_dir, StopMode::Immediate).map(drop)
    }

    /// Same as [`PgCluster::stop_immediate`]: what a fault test calls "killing the shard".
    /// With `unsafe_fast` (synchronous_commit off) the last moments of commits may be lost;
    /// a test that checks durability across a kill turns `unsafe_fast` off.
    pub fn kill(&mut self) -> Result<(), PgError> {
        self.stop_immediate()
    }

    /// Starts again on the same data dir and the same port (clients' URLs stay valid);
    /// stops first if it is running.
    pub async fn restart(&mut self) -> Result<(), PgError> {
        self.stop()?;
        self.write_config()?;
        self.pg_ctl_start().await?;
        self.running = true;
        self.wait_ready().await
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = stop_data_dir(&self.data_dir, StopMode::Immediate);
        }
        if self.own_socket_dir {
            let _ = std::fs::remove_dir_all(&self.socket_dir);
        }
        if !self.opts.keep {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Whether a server runs on `data_dir` (`pg_ctl status`).
pub fn is_running(data_dir: &Path) -> Result<bool, PgError> {
    let mut cmd = os::server_command(&bin_dir()?.join("pg_ctl"))?;
    cmd.arg("-D").arg(data_dir).arg("status");
    let out = cmd
        .output()
        .map_err(|e| PgError::io(Path::new("pg_ctl"), e))?;
    Ok(out.status.success())
}

/// Stops the server on `data_dir` if one runs; returns whether one did. Works on
/// clusters this process did not start (`dev down`).
pub fn stop_data_dir(data_dir: &Path, mode: StopMode) -> Result<bool, PgError> {
    if !is_running(data_dir)? {
        return Ok(false);
    }
    let mut cmd = os::server_command(&bin_dir()?.join("pg_ctl"))?;
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-m", mode.as_str(), "-w", "-t", "60", "stop"]);
    run_blocking(cmd, Some(&data_dir.join("server.log")))?;
    Ok(true)
}

/// The port a cluster was last configured with, read from its include file.
pub fn configured_port(data_dir: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(data_dir.join(INCLUDE_FILE)).ok()?;
    conf::parse_port(&text)
}

/// A loopback port that was free a moment ago. Another process can take it before the
/// server binds it; [`PgCluster::start`] retries when that happens.
pub fn free_port() -> Result<u16, PgError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| PgError::io(Path::new("127.0.0.1:0"), e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| PgError::io(Path::new("127.0.0.1:0"), e))
}

fn port_is_free(port: u16) -> bool {
    port != 0 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn port_was_taken(e: &PgError) -> bool {
    matches!(e, PgError::Command { log_tail, stderr, .. }
        if [log_tail, stderr].iter().any(|t| t.contains("Address already in use")
            || t.contains("could not create any TCP/IP sockets")))
}

/// Creates the base dir and, when root, checks that `postgres` can walk to the data dir
/// before initdb fails with a less helpful message.
fn prepare_base(base: &Path, data_dir: &Path) -> Result<(), PgError> {
    std::fs::create_dir_all(base).map_err(|e| PgError::io(base, e))?;
    match os::unreachable_ancestor(data_dir)? {
        Some(blocker) => Err(PgError::Unreachable {
            data_dir: data_dir.to_owned(),
            blocker,
        }),
        None => Ok(()),
    }
}

/// The data dir doubles as socket dir when its path is short enough; otherwise a private
/// dir under /tmp, because socket paths are limited to about 107 bytes.
fn socket_dir_for(data_dir: &Path) -> Result<(PathBuf, bool), PgError> {
    let probe = data_dir.join(".s.PGSQL.65535");
    if probe.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok((data_dir.to_owned(), false));
    }
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(format!(
        "/tmp/sgs-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    os::private_dir(&dir)?;
    Ok((dir, true))
}

async fn initdb(bin: &Path, data_dir: &Path, opts: &PgOptions) -> Result<(), PgError> {
    let mut cmd = os::server_command(&bin.join("initdb"))?;
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-U", "postgres", "--auth-local=trust", "-E", "UTF8"])
        .args(["--locale=C", "--no-instructions"])
        .arg(format!("--auth-host={}", opts.auth.as_str()));
    if opts.unsafe_fast {
        cmd.arg("--no-sync");
    }
    let pwfile = opts.base_dir.join(format!(".{}.pw", opts.name));
    if opts.auth != HostAuth::Trust {
        write_private(&pwfile, &opts.superuser_password)?;
        cmd.arg(format!("--pwfile={}", pwfile.display()));
    }
    let result = run_async(cmd, None).await;
    let _ = std::fs::remove_file(&pwfile);
    result.map(drop)
}

/// Writes a file readable only by the server's user (the initdb password file).
fn write_private(path: &Path, text: &str) -> Result<(), PgError> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| PgError::io(path, e))?;
    io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| PgError::io(path, e))?;
    os::hand_over(path)
}

/// Writes a file in the data dir and gives it to the server's user, so the data dir stays
/// entirely theirs (pg_basebackup and pg_rewind expect that).
fn write_owned(path: &Path, text: &str) -> Result<(), PgError> {
    std::fs::write(path, text).map_err(|e| PgError::io(path, e))?;
    os::hand_over(path)
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn checked(cmd_text: String, out: Output, log: Option<&Path>) -> Result<Output, PgError> {
    if out.status.success() {
        return Ok(out);
    }
    Err(PgError::Command {
        command: cmd_text,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        log_tail: log.map_or_else(|| "(no server log yet)".into(), log_tail),
    })
}

/// Runs a tool to completion. Output is captured, so tools that start a daemon must
/// redirect its output elsewhere (`pg_ctl -l`) or this would wait for the daemon.
async fn run_async(cmd: Command, log: Option<&Path>) -> Result<Output, PgError> {
    let text = describe(&cmd);
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .map_err(|e| PgError::io(Path::new(&text), e))?;
    checked(text, out, log)
}

fn run_blocking(mut cmd: Command, log: Option<&Path>) -> Result<Output, PgError> {
    let text = describe(&cmd);
    let out = cmd.output().map_err(|e| PgError::io(Path::new(&text), e))?;
    checked(text, out, log)
}

fn log_tail(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return format!("(no log at {})", path.display());
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Drops the password from a URL before it goes into an error message.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_are_percent_encoded() {
        assert_eq!(pct("app"), "app");
        assert_eq!(pct("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
    }

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://postgres:secret@127.0.0.1:5/db"),
            "postgres://postgres@127.0.0.1:5/db"
        );
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn taken_port_is_recognised_from_the_log() {
        let e = PgError::Command {
            command: "pg_ctl start".into(),
            status: "exit status: 1".into(),
            stderr: "pg_ctl: could not start server".into(),
            log_tail: "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
                .into(),
        };
        assert!(port_was_taken(&e));
        let other = PgError::Command {
            command: "pg_ctl start".into(),
            status: "exit status: 1".into(),
            stderr: String::new(),
            log_tail: "FATAL:  invalid value for parameter".into(),
        };
        assert!(!port_was_taken(&other));
    }
}
