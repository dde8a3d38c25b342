//! The machine side of running Postgres: finding its binaries, and becoming the
//! `postgres` user when we are root (the server refuses to run as root).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::PgError;
use super::conf::version_key;

/// Where Debian's packages put each major version's binaries.
const DEBIAN_LIB: &str = "/usr/lib/postgresql";

/// The directory holding `initdb`, `pg_ctl`, `psql`, ... chosen once per process.
pub fn bin_dir() -> Result<PathBuf, PgError> {
    static CHOSEN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            let from_pg_config = Command::new("pg_config")
                .arg("--bindir")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
            let versions = std::fs::read_dir(DEBIAN_LIB)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            choose_bin_dir(from_pg_config, versions, |d| d.join("initdb").is_file())
        })
        .clone()
        .map_err(|searched| PgError::BinariesNotFound { searched })
}

/// Picks `pg_config --bindir` when it really has the server tools (on Debian it can point
/// at a client-only `/usr/bin`), else the newest `/usr/lib/postgresql/*/bin` that does.
/// The error lists every place looked at.
pub fn choose_bin_dir(
    pg_config_bindir: Option<PathBuf>,
    mut debian_versions: Vec<String>,
    has_initdb: impl Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    let mut searched = Vec::new();
    match pg_config_bindir {
        Some(dir) if has_initdb(&dir) => return Ok(dir),
        Some(dir) => searched.push(format!("{} (pg_config --bindir)", dir.display())),
        None => searched.push("pg_config (not on PATH)".to_string()),
    }
    debian_versions.sort_by_key(|v| std::cmp::Reverse(version_key(v)));
    for v in &debian_versions {
        let dir = Path::new(DEBIAN_LIB).join(v).join("bin");
        if has_initdb(&dir) {
            return Ok(dir);
        }
        searched.push(dir.display().to_string());
    }
    if debian_versions.is_empty() {
        searched.push(format!("{DEBIAN_LIB}/*/bin (none)"));
    }
    Err(format!(
        "no initdb in: {}; install the server package (Debian: apt-get install postgresql-15)",
        searched.join(", ")
    ))
}

/// Numeric ids of the OS user the server runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsUser {
    pub uid: u32,
    pub gid: u32,
}

fn id_of(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// `Some(postgres)` when we are root and must switch users, `None` when we run the
/// tools as ourselves. Asked once: `id` is cheap but not free, and the answer can't change.
pub fn run_as() -> Result<Option<OsUser>, PgError> {
    static WHO: OnceLock<Result<Option<OsUser>, String>> = OnceLock::new();
    WHO.get_or_init(|| {
        let euid = id_of(&["-u"]).ok_or("`id -u` failed")?;
        if euid != 0 {
            return Ok(None);
        }
        match (id_of(&["-u", "postgres"]), id_of(&["-g", "postgres"])) {
            (Some(uid), Some(gid)) => Ok(Some(OsUser { uid, gid })),
            _ => Err(
                "running as root but there is no `postgres` OS user to run the server as \
                 (Debian's postgresql package creates it; or `useradd -r postgres`)"
                    .to_string(),
            ),
        }
    })
    .clone()
    .map_err(PgError::User)
}

/// A command for a Postgres server tool, wrapped in `runuser` when we are root. The
/// working directory is `/` because tools that resolve their own path fail when the
/// caller's cwd is unreadable by `postgres` (e.g. under /root).
pub fn server_command(program: &Path) -> Result<Command, PgError> {
    let mut cmd = match run_as()? {
        Some(_) => {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.current_dir("/")
        .stdin(std::process::Stdio::null())
        .env_remove("PGDATA")
        .env_remove("PGPORT")
        .env_remove("PGHOST");
    Ok(cmd)
}

/// Gives a path we created to the server's user; a no-op when we are not root.
pub fn hand_over(path: &Path) -> Result<(), PgError> {
    if let Some(user) = run_as()? {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .map_err(|e| PgError::io(path, e))?;
    }
    Ok(())
}

/// Creates a directory only the server's user may enter (Postgres insists on 0700 or
/// 0750 for data dirs).
pub fn private_dir(path: &Path) -> Result<(), PgError> {
    std::fs::create_dir_all(path).map_err(|e| PgError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| PgError::io(path, e))?;
    hand_over(path)
}

/// When root, the `postgres` user must be able to walk down to `path`; returns the first
/// ancestor it cannot pass so the caller can say exactly what to fix. The test is the
/// "other" execute bit or ownership by that user, which is what matters for dirs we make.
pub fn unreachable_ancestor(path: &Path) -> Result<Option<PathBuf>, PgError> {
    let Some(user) = run_as()? else {
        return Ok(None);
    };
    for dir in path.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        let passable = mode & 0o001 != 0
            || (meta.uid() == user.uid && mode & 0o100 != 0)
            || (meta.gid() == user.gid && mode & 0o010 != 0);
        if !passable {
            return Ok(Some(dir.to_path_buf()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_config_wins_when_it_has_initdb() {
        let got = choose_bin_dir(Some("/opt/pg/bin".into()), vec!["15".into()], |_| true);
        assert_eq!(got.unwrap(), PathBuf::from("/opt/pg/bin"));
    }

    #[test]
    fn falls_back_to_newest_debian_version_with_initdb() {
        let got = choose_bin_dir(
            Some("/usr/bin".into()),
            vec!["13".into(), "16".into(), "9.6".into(), "15".into()],
            |d| d != Path::new("/usr/bin") && !d.starts_with("/usr/lib/postgresql/16"),
        );
        assert_eq!(got.unwrap(), PathBuf::from("/usr/lib/postgresql/15/bin"));
    }

    #[test]
    fn error_names_every_place_searched() {
        let err =
            choose_bin_dir(Some("/usr/bin".into()), vec!["15".into()], |_| false).unwrap_err();
        assert!(err.contains("/usr/bin (pg_config --bindir)"), "{err}");
        assert!(err.contains("/usr/lib/postgresql/15/bin"), "{err}");
        let err = choose_bin_dir(None, vec![], |_| false).unwrap_err();
        assert!(err.contains("pg_config (not on PATH)"), "{err}");
        assert!(err.contains("/usr/lib/postgresql/*/bin (none)"), "{err}");
    }
}
