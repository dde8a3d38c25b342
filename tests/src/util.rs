//! Small shared tools: binaries, psql, polling, scratch directories.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A Postgres client tool (psql, pgbench, ...) from the same install as the servers, so
/// client and server versions match.
pub fn bin(name: &str) -> PathBuf {
    shardctl::pg::bin_dir()
        .unwrap_or_else(|e| panic!("{e}"))
        .join(name)
}

/// Runs `psql URL -X ARGS...` (no ~/.psqlrc, which would change its output).
pub async fn psql(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(bin("psql"))
        .arg(url)
        .arg("-X")
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("psql could not be started")
}

/// Polls `cond` until it is true or `timeout` has passed; returns whether it became true.
/// The only place tests wait on time: everything else waits on a condition.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh directory under /tmp, removed on drop. /tmp rather than `$TMPDIR` because the
/// `postgres` OS user must be able to reach it when the tests run as root.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> ScratchDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = PathBuf::from("/tmp/sg-e2e").join(format!(
            "{label}-{}-{}-{nanos:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        ScratchDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_until_sees_a_condition_turn_true() {
        let mut calls = 0;
        let ok = wait_until(Duration::from_secs(5), || {
            calls += 1;
            let done = calls >= 3;
            async move { done }
        })
        .await;
        assert!(ok);
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn wait_until_gives_up_after_the_timeout() {
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(100), || async { false }).await);
        assert!(start.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn scratch_dirs_are_distinct_and_removed() {
        let a = ScratchDir::new("t");
        let b = ScratchDir::new("t");
        assert_ne!(a.path(), b.path());
        let kept = a.path().to_owned();
        assert!(kept.is_dir());
        drop(a);
        assert!(!kept.exists());
    }
}
