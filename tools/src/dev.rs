//! `shardctl dev up|down`: a local fleet (N shard clusters plus a catalog cluster) and the
//! proxy in front of it, from one command, so the README's first command works on a bare
//! machine with Postgres installed.
//!
//! State lives in one directory: a data dir per cluster, `secrets` (the generated
//! superuser and admin passwords, reused on every later run so old data dirs keep
//! working) and the generated `shardgate.toml`.

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shardgate::config::{Config, ConfigError};

use crate::demo::{self, DemoError};
use crate::pg::{self, HostAuth, PgCluster, PgError, PgOptions, StopMode};

/// Name of the catalog cluster's data dir and of the database on it.
pub const CATALOG: &str = "catalog";
pub const CATALOG_DB: &str = "shardgate";
/// Database created on every shard; the proxy's users log in to it.
pub const APP_DB: &str = "app";
pub const CONFIG_FILE: &str = "shardgate.toml";
pub const SECRETS_FILE: &str = "secrets";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the postgres OS user cannot reach {dir}: {blocker} is not traversable by it. \
         Use a --dir it can reach (for example --dir /tmp/sg-dev) or run `chmod o+x {blocker}`"
    )]
    Unreachable { dir: PathBuf, blocker: PathBuf },
    #[error("{0}")]
    Usage(String),
    #[error("generated config is invalid: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("proxy stopped with an error: {0}")]
    Proxy(#[from] shardgate::ProxyError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DevError + '_ {
    move |source| DevError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub shards: usize,
    pub dir: PathBuf,
    pub listen: SocketAddr,
}

/// Passwords generated on the first `dev up` and read back on every later one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    pub superuser_password: String,
    pub admin_password: String,
}

impl Secrets {
    /// Reads `DIR/secrets`, or creates it (mode 0600) with fresh random passwords.
    pub fn load_or_create(dir: &Path) -> Result<Secrets, DevError> {
        let path = dir.join(SECRETS_FILE);
        if path.exists() {
            return Secrets::load(dir);
        }
        let secrets = Secrets {
            superuser_password: random_hex(16)?,
            admin_password: random_hex(12)?,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(secrets.render().as_bytes())
            .map_err(io_err(&path))?;
        Ok(secrets)
    }

    pub fn load(dir: &Path) -> Result<Secrets, DevError> {
        let path = dir.join(SECRETS_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Secrets::parse(&text).ok_or_else(|| {
            DevError::Usage(format!(
                "{} is damaged; delete it together with the data dirs to start afresh",
                path.display()
            ))
        })
    }

    fn render(&self) -> String {
        format!(
            "# shardctl dev: generated passwords; the data dirs beside this file depend on them.\n\
             superuser_password = \"{}\"\nadmin_password = \"{}\"\n",
            self.superuser_password, self.admin_password
        )
    }

    fn parse(text: &str) -> Option<Secrets> {
        let get = |key: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        Some(Secrets {
            superuser_password: get("superuser_password").filter(|s| !s.is_empty())?,
            admin_password: get("admin_password").filter(|s| !s.is_empty())?,
        })
    }
}

fn random_hex(bytes: usize) -> Result<String, DevError> {
    let path = Path::new("/dev/urandom");
    let mut buf = vec![0u8; bytes];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_err(path))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Makes DIR absolute and usable by the server's OS user. DIR and any parents this call
/// creates are ours, so they get the execute bits `postgres` needs to pass through to the
/// data dirs (whatever the umask); pre-existing parents are the user's, so for those we
/// only say what to do.
pub fn prepare_dir(dir: &Path) -> Result<PathBuf, DevError> {
    let abs = std::path::absolute(dir).map_err(io_err(dir))?;
    let created: Vec<PathBuf> = abs
        .ancestors()
        .take_while(|p| !p.exists())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(&abs).map_err(io_err(&abs))?;
    let dir = abs.canonicalize().map_err(io_err(&abs))?;
    let mut ours = vec![dir.clone()];
    for p in created {
        ours.push(p.canonicalize().map_err(io_err(&p))?);
    }
    while let Some(blocker) = pg::unreachable_ancestor(&dir.join(CATALOG))? {
        if !ours.contains(&blocker) {
            return Err(DevError::Unreachable { dir, blocker });
        }
        let mut perm = std::fs::metadata(&blocker)
            .map_err(io_err(&blocker))?
            .permissions();
        perm.set_mode(perm.mode() | 0o111);
        std::fs::set_permissions(&blocker, perm).map_err(io_err(&blocker))?;
    }
    Ok(dir)
}

/// The data dir names `dev up` uses: the catalog, then `shard0..shardN-1`.
pub fn cluster_names(shards: usize) -> Vec<String> {
    std::iter::once(CATALOG.to_string())
        .chain((0..shards).map(|i| format!("shard{i}")))
        .collect()
}

/// Clusters under DIR (directories holding a data dir), in name order.
pub fn clusters_in(dir: &Path) -> Result<Vec<(String, PathBuf)>, DevError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.join("PG_VERSION").is_file()
            && let Some(name) = path.file_name()
        {
            found.push((name.to_string_lossy().into_owned(), path));
        }
    }
    found.sort();
    Ok(found)
}

/// The generated proxy config: the map comes from the catalog, which lists the shards.
pub fn render_config(listen: SocketAddr, secrets: &Secrets, catalog_port: u16) -> String {
    let su = &secrets.superuser_password;
    format!(
        "# Generated by `shardctl dev up`; rewritten on every run.\n\
         [proxy]\nlisten = \"{listen}\"\npool_mode = \"transaction\"\n\n\
         [auth]\nmethod = \"scram-sha-256\"\nadmin_users = [\"admin\"]\n\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\n\n\
         [[users]]\nname = \"admin\"\npassword = \"{admin}\"\n\n\
         [sharding]\nkey_column = \"tenant_id\"\nkey_guc = \"app.tenant_id\"\n\n\
         # The shards and the tenants' placement live in the catalog (`shardctl shard add`,\n\
         # `shardctl tenant set`); a running proxy follows its changes.\n\
         [catalog]\nurl = \"postgres://postgres:{su}@127.0.0.1:{catalog_port}/{CATALOG_DB}\"\n",
        admin = secrets.admin_password
    )
}

/// How the proxy logs in to a dev shard: as the app role, so row-level security applies.
pub fn shard_url(secrets: &Secrets, port: u16) -> String {
    format!(
        "postgres://{}:{}@127.0.0.1:{port}/{APP_DB}",
        demo::APP_ROLE,
        secrets.superuser_password
    )
}

fn cluster_options(dir: &Path, name: &str, secrets: &Secrets) -> PgOptions {
    PgOptions {
        name: name.to_string(),
        base_dir: dir.to_owned(),
        port: None,
        auth: HostAuth::ScramSha256,
        superuser_password: secrets.superuser_password.clone(),
        unsafe_fast: false,
        wal_logical: true,
        extra_conf: Vec::new(),
        keep: true,
        reuse_existing: true,
    }
}

/// Starts every cluster at once (initdb dominates, and they don't depend on each other).
/// If one fails, the others are stopped again so no half-fleet is left running.
async fn start_clusters(
    dir: &Path,
    names: &[String],
    secrets: &Secrets,
) -> Result<Vec<PgCluster>, DevError> {
    let mut set = tokio::task::JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let opts = cluster_options(dir, name, secrets);
        set.spawn(async move { (i, PgCluster::start(opts).await) });
    }
    let mut started = Vec::new();
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, Ok(c))) => started.push((i, c)),
            Ok((_, Err(e))) => first_err = first_err.or(Some(DevError::Pg(e))),
            Err(e) => first_err = first_err.or(Some(DevError::Usage(e.to_string()))),
        }
    }
    started.sort_by_key(|(i, _)| *i);
    let mut clusters: Vec<PgCluster> = started.into_iter().map(|(_, c)| c).collect();
    if let Some(e) = first_err {
        stop_all(&mut clusters);
        return Err(e);
    }
    Ok(clusters)
}

fn stop_all(clusters: &mut [PgCluster]) {
    for c in clusters {
        if let Err(e) = c.stop() {
            eprintln!("stopping {}: {e}", c.name());
        }
    }
}

/// `dev up`: starts the fleet, writes the config, serves the proxy until `shutdown`
/// resolves, then stops the clusters (fast) and keeps their data.
pub async fn up(opts: UpOptions, shutdown: impl Future<Output = ()>) -> Result<(), DevError> {
    if opts.shards == 0 {
        return Err(DevError::Usage("--shards must be at least 1".into()));
    }
    let dir = prepare_dir(&opts.dir)?;
    // Bound first: a taken port should fail before seconds of cluster start-up.
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| DevError::Listen {
            addr: opts.listen,
            source,
        })?;
    // With port 0 the kernel chose; the config and the printed command need the real one.
    let listen = listener.local_addr().map_err(|source| DevError::Listen {
        addr: opts.listen,
        source,
    })?;
    let secrets = Secrets::load_or_create(&dir)?;
    let mut clusters = start_clusters(&dir, &cluster_names(opts.shards), &secrets).await?;
    let served = serve(&dir, listen, &secrets, &clusters, listener, shutdown).await;
    println!("stopping clusters under {}", dir.display());
    stop_all(&mut clusters);
    served
}

async fn serve(
    dir: &Path,
    listen: SocketAddr,
    secrets: &Secrets,
    clusters: &[PgCluster],
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevError> {
    let (catalog, shards) = clusters.split_first().expect("catalog is always started");
    catalog.create_database(CATALOG_DB).await?;
    for s in shards {
        s.create_database(APP_DB).await?;
        if demo::prepare_shard(s, APP_DB, &secrets.superuser_password).await? {
            println!("{:>8}  demo schema created", s.name());
        }
    }
    let fleet: Vec<(String, String)> = shards
        .iter()
        .map(|s| (s.name().to_string(), shard_url(secrets, s.port())))
        .collect();
    let version = demo::register(&catalog.superuser_url(CATALOG_DB), &fleet).await?;
    let path = dir.join(CONFIG_FILE);
    let text = render_config(listen, secrets, catalog.port());
    std::fs::write(&path, text).map_err(io_err(&path))?;
    let config = Config::load(&path)?;
    for c in clusters {
        println!(
            "{:>8}  127.0.0.1:{}  {}",
            c.name(),
            c.port(),
            c.data_dir().display()
        );
    }
    println!("catalog: {} shards, map version {version}", shards.len());
    println!("config: {}", path.display());

    let proxy = shardgate::run(listener, Arc::new(config), shutdown);
    tokio::pin!(proxy);
    let app = format!("postgres://app:app@{listen}/{APP_DB}");
    let loaded = tokio::select! {
        // Stopped (or failed) before the demo data was in.
        ended = &mut proxy => return Ok(ended?),
        loaded = demo::load(&app) => loaded?,
    };
    println!(
        "demo: {} tenants, {} orders{}",
        loaded.tenants,
        loaded.orders,
        if loaded.fresh {
            " loaded through the proxy"
        } else {
            " (loaded before)"
        }
    );
    print!("{}", sample_commands(listen, secrets));
    println!("proxy listening on {listen}; Ctrl-C stops it and the clusters");
    proxy.await?;
    Ok(())
}

/// What to type first.
pub fn sample_commands(listen: SocketAddr, secrets: &Secrets) -> String {
    let app = format!("psql \"postgres://app:app@{listen}/{APP_DB}\"");
    let admin = format!(
        "psql \"postgres://admin:{}@{listen}/shardgate\"",
        secrets.admin_password
    );
    format!(
        "connect: {app}\n\
         try:\n  \
         {app} -c \"SELECT count(*), sum(amount_cents) FROM orders WHERE tenant_id = 1\"\n  \
         {app} -c \"SET app.tenant_id = 7\" -c \"SELECT order_id, status FROM orders ORDER BY order_id LIMIT 3\"\n  \
         {app} -c \"/* tenant_id=42 */ SELECT count(*) FROM line_items\"\n  \
         {app} -c \"INSERT INTO orders (tenant_id, order_id, customer, amount_cents) VALUES (5, 100000, 'me', 1234)\"\n  \
         {app} -c \"SELECT * FROM plans\"\n  \
         {admin} -c \"SHOW TENANT 42\" -c \"SHOW SHARDS\"\n"
    )
}

/// `dev down`: stops every cluster under DIR that is running; data stays. Returns the
/// names of the clusters it stopped.
pub fn down(dir: &Path) -> Result<Vec<String>, DevError> {
    let mut stopped = Vec::new();
    for (name, data_dir) in clusters_in(dir)? {
        let was_running = pg::stop_data_dir(&data_dir, StopMode::Fast)
            .or_else(|_| pg::stop_data_dir(&data_dir, StopMode::Immediate))?;
        if was_running {
            stopped.push(name);
        }
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets {
            superuser_password: "su".into(),
            admin_password: "ad".into(),
        }
    }

    #[test]
    fn generated_config_parses_and_reads_the_map_from_the_catalog() {
        let listen: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let text = render_config(listen, &secrets(), 5000);
        let config = Config::from_toml(&text).unwrap();
        assert_eq!(config.proxy.listen, "127.0.0.1:7000");
        assert!(config.shards.is_empty());
        assert_eq!(
            config.catalog.as_ref().unwrap().url,
            "postgres://postgres:su@127.0.0.1:5000/shardgate"
        );
        assert!(config.user("app").is_some() && config.user("admin").is_some());
        assert_eq!(
            shard_url(&secrets(), 5001),
            "postgres://app:su@127.0.0.1:5001/app"
        );
        assert!(sample_commands(listen, &secrets()).contains("admin:ad@127.0.0.1:7000/shardgate"));
    }

    #[test]
    fn secrets_round_trip_and_reject_damage() {
        let s = secrets();
        assert_eq!(Secrets::parse(&s.render()), Some(s));
        assert_eq!(Secrets::parse("superuser_password = \"x\"\n"), None);
    }

    #[test]
    fn cluster_names_put_the_catalog_first() {
        assert_eq!(cluster_names(2), ["catalog", "shard0", "shard1"]);
    }

    #[test]
    fn random_passwords_differ() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex(16).unwrap());
    }
}
