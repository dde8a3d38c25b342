//! The proxy in-process, on a port the kernel picks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shardgate::ProxyError;
use shardgate::config::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A proxy running on a task of the test's runtime. Dropping it signals shutdown
/// (without waiting); [`ProxyHandle::shutdown`] also waits for `run` to return.
#[derive(Debug)]
pub struct ProxyHandle {
    pub addr: SocketAddr,
    pub config: Arc<Config>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ProxyError>>>,
}

/// Binds 127.0.0.1:0, writes the real address into `proxy.listen` (so code that reads
/// the config sees where it listens), and spawns `shardgate::run`.
pub async fn start_proxy(mut config: Config) -> ProxyHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    config.proxy.listen = addr.to_string();
    let config = Arc::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        // A dropped sender means the handle is gone: shut down too.
        let _ = stopped.await;
    };
    let task = tokio::spawn(shardgate::run(listener, config.clone(), shutdown));
    ProxyHandle {
        addr,
        config,
        stop: Some(stop),
        task: Some(task),
    }
}

impl ProxyHandle {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@{}/{db}", self.addr)
    }

    /// Whether `run` has returned (an error or a finished shutdown).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Signals shutdown and waits (up to 30 s) for `run` to return its result. A proxy
    /// that panicked or won't stop fails the test here, where it is easy to see.
    pub async fn shutdown(mut self) -> Result<(), ProxyError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("shutdown runs once");
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => panic!("proxy task failed: {join}"),
            Err(_) => panic!("proxy did not stop within 30s of shutdown"),
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
