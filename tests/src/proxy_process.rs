//! The proxy as its own `shardgate` process, for tests that must kill it the way an
//! operator's machine can (SIGKILL: no shutdown, no last heartbeat), which an in-process
//! proxy on the test's runtime cannot stand in for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `shardgate --config FILE`; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ProxyProcess {
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    child: Child,
}

impl ProxyProcess {
    /// Writes `toml` to `dir/name.toml` and starts the proxy on it. The config's
    /// `proxy.listen` should be `127.0.0.1:0`: the address the kernel picks is read back
    /// from the proxy's "shardgate listening" log line.
    pub async fn start(dir: &Path, name: &str, toml: &str) -> ProxyProcess {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        ProxyProcess::spawn(&path).await
    }

    /// Starts another proxy process on an existing config file (a restart).
    pub async fn spawn(config_path: &Path) -> ProxyProcess {
        let mut child = Command::new(shardgate_bin())
            .arg("--config")
            .arg(config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the shardgate binary");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let find = async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                if let Some(addr) = listening_addr(&line) {
                    return Some(addr);
                }
            }
            None
        };
        let addr = tokio::time::timeout(Duration::from_secs(60), find)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!(
                    "shardgate on {} never logged where it listens",
                    config_path.display()
                )
            });
        // Keep reading: a proxy whose log pipe fills up would block on its next log line.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[shardgate {addr}] {line}");
            }
        });
        ProxyProcess {
            addr,
            config_path: config_path.to_owned(),
            child,
        }
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@{}/{db}", self.addr)
    }

    /// SIGKILL, then waits until the process is gone.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("killing shardgate");
    }
}

/// The address in a "shardgate listening addr=..." log line, colour codes or not.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let plain = strip_ansi(line);
    if !plain.contains("shardgate listening") {
        return None;
    }
    let rest = &plain[plain.find("addr=")? + "addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `shardgate` binary of this build. Cargo builds only this package's binaries for its
/// tests, so the proxy's is built here (once per test process; a no-op when up to date)
/// into the same target directory and profile as the running test.
pub fn shardgate_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test>-<hash>
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target dir");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "shardgate",
            "--bin",
            "shardgate",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for shardgate");
        assert!(status.success(), "building the shardgate binary failed");
        let bin = profile_dir.join("shardgate");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_address_is_read_with_or_without_colours() {
        let plain = "2025-01-01T00:00:00Z  INFO shardgate: shardgate listening addr=127.0.0.1:5432";
        let coloured = "\u{1b}[2m2025\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m shardgate listening \
                        \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:6543";
        assert_eq!(
            listening_addr(plain),
            Some("127.0.0.1:5432".parse().unwrap())
        );
        assert_eq!(
            listening_addr(coloured),
            Some("127.0.0.1:6543".parse().unwrap())
        );
        assert_eq!(listening_addr("INFO other addr=127.0.0.1:1"), None);
    }
}
