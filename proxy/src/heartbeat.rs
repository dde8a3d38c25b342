//! The proxy's heartbeat into the catalog (DESIGN.md §6): which map version it routes by,
//! and which gated tenants still have transactions open on it. A move gates a tenant and
//! flips it only once every live proxy has seen the gate and reports none of the tenant's
//! transactions open; a proxy is live while its `last_seen` is recent.
//!
//! One row per proxy process in `shardgate.proxies`, written every `poll_ms`, at once
//! after each map swap (so a gate is acknowledged as soon as it is seen) and at once when a
//! gated tenant's last open work ends (which the move is waiting for).

use std::sync::Weak;
use std::time::Duration;

use shardgate_catalog::MapHandle;

use crate::exec::gate::OpenTransactions;

/// Who this proxy is in the catalog: unique per process.
pub fn proxy_id(addr: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{addr}:{}", std::process::id())
}

/// The `inflight_json` object: tenant id → open transactions.
pub fn inflight_json(open: &[(shardgate_catalog::TenantKey, usize)]) -> String {
    let fields: Vec<String> = open
        .iter()
        .map(|(t, n)| format!("{}:{n}", json_string(&t.to_string())))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const UPSERT: &str = "INSERT INTO shardgate.proxies \
     (proxy_id, addr, map_version_seen, last_seen, inflight_json) \
     VALUES ($1, $2, $3, now(), ($4::text)::jsonb) \
     ON CONFLICT (proxy_id) DO UPDATE SET addr = excluded.addr, \
     map_version_seen = excluded.map_version_seen, last_seen = now(), \
     inflight_json = excluded.inflight_json";

/// Beats until `open` (owned by the running proxy) is gone; catalog outages are retried
/// on the next beat.
pub async fn run(
    url: String,
    every: Duration,
    id: String,
    addr: String,
    map: MapHandle,
    open: Weak<OpenTransactions>,
) {
    let changes = map.changes();
    let Some(drained) = open.upgrade().map(|o| o.drained()) else {
        return;
    };
    let mut client = None;
    loop {
        let Some(owner) = open.upgrade() else {
            return;
        };
        let version = map.version();
        let inflight = inflight_json(&owner.of_gated(&map.load()));
        drop(owner);
        if client.is_none() {
            client = shardgate_catalog::db::connect(&url).await.ok();
        }
        if let Some(c) = &client {
            let v = i64::try_from(version).unwrap_or(i64::MAX);
            if let Err(e) = c.execute(UPSERT, &[&id, &addr, &v, &inflight]).await {
                tracing::warn!(error = %e, "heartbeat to the catalog failed");
                client = None;
            }
        }
        let notified = changes.notified();
        tokio::select! {
            _ = notified => {}
            _ = drained.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_catalog::TenantKey;

    #[test]
    fn inflight_is_a_json_object_of_tenants() {
        assert_eq!(inflight_json(&[]), "{}");
        let open = [(TenantKey::Int(42), 2), (TenantKey::Text("a\"b".into()), 1)];
        assert_eq!(inflight_json(&open), r#"{"42":2,"a\"b":1}"#);
        assert!(proxy_id("127.0.0.1:6432").contains(":127.0.0.1:6432:"));
    }
}
