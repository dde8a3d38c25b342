//! CancelRequest routing. Each client gets its own (pid, secret) from the proxy; while it is
//! served by a server connection, its slot holds that connection's key, so a cancel reaches
//! exactly the server running the client's query, on whichever shard that is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::backend::BackendKey;
use crate::lock;

#[derive(Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<i32, (i32, Arc<CancelSlot>)>>,
}

/// The server connection a client is using right now, if any.
#[derive(Default)]
pub struct CancelSlot {
    target: Mutex<Option<BackendKey>>,
}

impl CancelSlot {
    pub fn set(&self, key: Option<BackendKey>) {
        *lock(&self.target) = key;
    }
}

/// A client's registration; dropping it removes the client from the registry.
pub struct CancelHandle {
    pub pid: i32,
    pub secret: i32,
    pub slot: Arc<CancelSlot>,
    registry: Arc<CancelRegistry>,
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        lock(&self.registry.clients).remove(&self.pid);
    }
}

impl CancelRegistry {
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let slot = Arc::new(CancelSlot::default());
        let mut clients = lock(&self.clients);
        let pid = loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid != 0 && !clients.contains_key(&pid) {
                break pid;
            }
        };
        let secret = rand::random::<i32>();
        clients.insert(pid, (secret, slot.clone()));
        CancelHandle {
            pid,
            secret,
            slot,
            registry: self.clone(),
        }
    }

    /// The server key to cancel for a client's (pid, secret), if it matches and the client
    /// is being served right now.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<BackendKey> {
        let clients = lock(&self.clients);
        let (s, slot) = clients.get(&pid)?;
        if *s != secret {
            return None;
        }
        *lock(&slot.target)
    }
}

/// Sends a CancelRequest to the server that `key` names. Best effort, as in Postgres: the
/// client learns the outcome from its query's result.
pub async fn forward_cancel(key: BackendKey) {
    let Ok(mut s) = TcpStream::connect(key.addr).await else {
        return;
    };
    let mut out = BytesMut::new();
    crate::wire::encode_cancel_request(&mut out, key.pid, key.secret);
    let _ = s.write_all(&out).await;
    let _ = s.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_needs_the_right_secret_and_a_live_server() {
        let reg = Arc::new(CancelRegistry::default());
        let h = reg.register();
        assert_eq!(reg.lookup(h.pid, h.secret), None, "not served yet");
        let key = BackendKey {
            addr: "127.0.0.1:5432".parse().unwrap(),
            pid: 77,
            secret: 5,
        };
        h.slot.set(Some(key));
        assert_eq!(reg.lookup(h.pid, h.secret), Some(key));
        assert_eq!(reg.lookup(h.pid, h.secret.wrapping_add(1)), None);
        let pid = h.pid;
        drop(h);
        assert!(lock(&reg.clients).get(&pid).is_none());
    }
}
