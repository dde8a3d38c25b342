//! The per-tenant gate (DESIGN.md §6). While a move cuts a tenant over, the map marks it
//! `gated`: its statements wait here until the map no longer does (the flip, or the move
//! rolling back), then are routed afresh, so they run where the tenant now lives. Other
//! tenants never wait. A statement waits at most `gate_timeout_ms`, and at most
//! `gate_queue_max` statements wait per tenant; past either the client gets SG005, with
//! SQLSTATE 40SG5 (class 40, transaction rollback: drivers and ORMs retry it).
//!
//! Statements of a transaction already running on the tenant's shard are not held: the
//! move waits for such transactions to end before it flips, and holding them would
//! deadlock the two.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shardgate_catalog::{ShardMap, TenantKey, TenantState};

use super::route::{Decision, Refusal, Target};
use super::session::Session;

/// The SQLSTATE of SG005.
pub const SG005_SQLSTATE: &str = "40SG5";

/// How many statements wait at each tenant's gate, across every session.
pub struct Gates {
    timeout: Duration,
    max: usize,
    waiting: Mutex<HashMap<TenantKey, usize>>,
}

impl Gates {
    pub fn new(timeout: Duration, max: usize) -> Gates {
        Gates {
            timeout,
            max: max.max(1),
            waiting: Mutex::default(),
        }
    }

    /// Statements waiting at `tenant`'s gate now.
    pub fn waiting(&self, tenant: &TenantKey) -> usize {
        self.lock().get(tenant).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantKey, usize>> {
        // Plain counters: a panic elsewhere mid-update leaves them usable.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit<'a>(&'a self, tenant: &TenantKey) -> Option<Waiting<'a>> {
        let mut w = self.lock();
        let n = w.entry(tenant.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Waiting {
            gates: self,
            tenant: tenant.clone(),
        })
    }
}

/// One statement's place at a gate; leaving (however the wait ends) frees it.
struct Waiting<'a> {
    gates: &'a Gates,
    tenant: TenantKey,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut w = self.gates.lock();
        if let Some(n) = w.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.tenant);
            }
        }
    }
}

/// Work open per tenant on this proxy, every session's: transactions (counted once per
/// tenant they routed a statement for) and single statements on their way to a shard (from
/// routing to their ReadyForQuery). The heartbeat reports them for gated tenants, so a
/// move fences the old shard only once nothing of the tenant can still reach it.
#[derive(Default)]
pub struct OpenTransactions {
    open: Mutex<Open>,
    /// Woken when a gated tenant's last open work ends: the heartbeat reports it at once,
    /// since the move is waiting for exactly that.
    drained: std::sync::Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Open {
    counts: HashMap<TenantKey, usize>,
    /// The tenants gated in the map the heartbeat last saw, and that map's version.
    gated: Vec<TenantKey>,
    gated_in: Option<u64>,
}

impl OpenTransactions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin(&self, tenant: &TenantKey) {
        *self.lock().counts.entry(tenant.clone()).or_insert(0) += 1;
    }

    fn end(&self, tenant: &TenantKey) {
        let mut open = self.lock();
        if let Some(n) = open.counts.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                open.counts.remove(tenant);
                if open.gated.contains(tenant) {
                    self.drained.notify_one();
                }
            }
        }
    }

    /// Open work of the tenants `map` says are gated; remembers which those are (read
    /// from the map once per version: every tenant row is looked at).
    pub fn of_gated(&self, map: &ShardMap) -> Vec<(TenantKey, usize)> {
        let seen = self.lock().gated_in;
        let gated = (seen != Some(map.version())).then(|| {
            map.tenants()
                .filter(|(_, _, state)| *state == TenantState::Gated)
                .map(|(t, _, _)| t.clone())
                .collect::<Vec<_>>()
        });
        let mut open = self.lock();
        if let Some(gated) = gated {
            open.gated = gated;
            open.gated_in = Some(map.version());
        }
        let mut out: Vec<_> = open
            .counts
            .iter()
            .filter(|(t, _)| open.gated.contains(t))
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        out.sort();
        out
    }

    /// Notified when a gated tenant's open work drops to none.
    pub fn drained(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.drained.clone()
    }
}

pub(super) fn is_gated(map: &ShardMap, tenant: &TenantKey) -> bool {
    map.locate(tenant)
        .is_ok_and(|p| p.state == TenantState::Gated)
}

fn sg005(tenant: &TenantKey, why: String) -> Refusal {
    Refusal {
        code: SG005_SQLSTATE,
        message: format!("SG005: tenant {tenant} is being moved to another shard and {why}"),
        hint: Some("retry: the cut-over of a move holds a tenant for milliseconds"),
    }
}

impl Session<'_> {
    /// Waits until `tenant` is no longer gated. The deadline counts from the first time
    /// this message was held (a message is routed afresh after each map change).
    pub(super) async fn hold(&mut self, tenant: &TenantKey) -> Result<(), Refusal> {
        let ctx = self.ctx;
        let gates = &ctx.routing.gates;
        let deadline = match &self.held {
            Some((t, d)) if t == tenant => *d,
            _ => Instant::now() + gates.timeout,
        };
        let Some(_waiting) = gates.admit(tenant) else {
            self.held = None;
            return Err(sg005(
                tenant,
                format!("{} statements already wait for it", gates.max),
            ));
        };
        self.held = Some((tenant.clone(), deadline));
        let changes = ctx.routing.map.changes();
        loop {
            let notified = changes.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !is_gated(&ctx.routing.map.load(), tenant) {
                return Ok(());
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.held = None;
                    return Err(sg005(
                        tenant,
                        format!(
                            "its statement waited the whole gate_timeout_ms ({} ms)",
                            gates.timeout.as_millis()
                        ),
                    ));
                }
            }
        }
    }
}

impl Session<'_> {
    /// Counts the session's open transaction for `tenant` (once per transaction).
    pub(super) fn note_txn_tenant(&mut self, tenant: &TenantKey) {
        if !self.txn_tenants.contains(tenant) {
            self.ctx.routing.open_txns.begin(tenant);
            self.txn_tenants.push(tenant.clone());
        }
    }

    /// After routing a statement. Outside a transaction already running on a shard, the
    /// tenants it was routed for stay counted as open work until its ReadyForQuery (see
    /// [`OpenTransactions`]), so the heartbeat does not acknowledge a gate while the
    /// statement is on its way to the old shard. Counting first and reading the map again
    /// after closes the race with a gate that lands between the two: either the heartbeat
    /// that acknowledged the gate saw the count, or this sees the gate and holds the
    /// statement, uncounted (the move would otherwise wait for it). `routed_on` is the map
    /// version routing used (or an older one): while it is still current, no gate can
    /// have landed since, and the hot path skips the second look.
    pub(super) fn settle_in_flight(&mut self, decision: Decision, routed_on: u64) -> Decision {
        if self.txn_tenants.is_empty() || self.in_pinned_transaction() {
            return decision;
        }
        if !matches!(decision, Decision::Go(Target::Shard(_))) {
            // Nothing goes out for them (a transaction keeps its count until it ends).
            if !self.in_transaction() {
                self.end_txn_tenants_unless_in_flight();
            }
            return decision;
        }
        let map = self.ctx.routing.map.load();
        if map.version() == routed_on {
            return decision;
        }
        match self.txn_tenants.iter().find(|t| is_gated(&map, t)).cloned() {
            Some(t) => {
                // Nothing of a transaction that is not pinned has run yet: every tenant
                // it counted came from this statement, or from statements before it that
                // are still on the server (their ReadyForQuery ends the count then).
                self.end_txn_tenants_unless_in_flight();
                Decision::Hold(t)
            }
            None => decision,
        }
    }

    /// Outside a transaction, a statement's tenants count until its ReadyForQuery. With
    /// statements pipelined that is the last one's: the ReadyForQuery of an earlier one, or
    /// a refusal the proxy answers alone, must not end the count while a later statement is
    /// still on the server (a move could fence its tenant under it). Whatever is still on
    /// the server ends with a ReadyForQuery of its own, which ends the count then.
    pub(super) fn end_txn_tenants_unless_in_flight(&mut self) {
        if !self.replies.awaits_server() && self.to_server.is_empty() {
            self.end_txn_tenants();
        }
    }

    /// The transaction ended (or the session did): its tenants are no longer counted.
    pub(super) fn end_txn_tenants(&mut self) {
        let open = &self.ctx.routing.open_txns;
        for t in self.txn_tenants.drain(..) {
            open.end(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_capped_per_tenant_and_places_are_freed() {
        let gates = Gates::new(Duration::from_secs(1), 2);
        let (a, b) = (TenantKey::Int(1), TenantKey::Int(2));
        let first = gates.admit(&a).unwrap();
        let second = gates.admit(&a).unwrap();
        assert!(gates.admit(&a).is_none(), "a third waiter is refused");
        assert!(
            gates.admit(&b).is_some(),
            "other tenants have their own queue"
        );
        assert_eq!(gates.waiting(&a), 2);
        drop(first);
        assert_eq!(gates.waiting(&a), 1);
        drop(second);
        assert_eq!(gates.waiting(&a), 0);
        assert!(gates.lock().is_empty());
    }

    #[test]
    fn open_transactions_are_counted_per_tenant() {
        let open = OpenTransactions::default();
        let t = TenantKey::Int(5);
        open.begin(&t);
        open.begin(&t);
        open.end(&t);
        assert_eq!(open.lock().counts.get(&t), Some(&1));
        open.end(&t);
        assert!(open.lock().counts.is_empty());
    }
}
