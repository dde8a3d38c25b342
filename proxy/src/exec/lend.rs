//! Lending a client a server connection on the shard its statement needs, and taking it
//! back at the end of each transaction (transaction pooling) or session.

use std::sync::atomic::Ordering;

use shardgate_catalog::{ShardId, ShardState};

use super::replies::{Expect, Mode, Unit};
use super::route::Target;
use super::session::Session;
use crate::backend::BackendError;
use crate::config::PoolMode;
use crate::gucs::{GucValue, Gucs, quote_literal};
use crate::router::RouteError;
use crate::wire;

/// Whether the message can go on.
pub(super) enum Lent {
    Ready,
    /// Replies from another shard's connection are still due: wait for them, then retry
    /// the message (the client pipelined statements for different shards).
    Wait,
    /// The message needs another shard while this one's transaction is open.
    CrossShard(RouteError),
    Failed(BackendError),
}

impl Session<'_> {
    /// Makes sure a server of `target` is lent, switching shards between transactions.
    pub(super) async fn lend(&mut self, target: Target) -> Lent {
        let wanted = match (target, self.server_shard) {
            (Target::Any, Some(_)) => return self.ready(),
            (Target::Shard(t), Some(s)) if t == s => return self.ready(),
            (Target::Shard(t), _) => t,
            (Target::Any, None) => return self.lend_any().await,
        };
        if let Some(current) = self.server_shard {
            if self.in_transaction() || self.needs_sync || self.copy_in {
                return Lent::CrossShard(RouteError::CrossShardTransaction {
                    pinned: current,
                    wanted,
                });
            }
            if self.awaiting_server() {
                return Lent::Wait;
            }
            self.give_back();
        }
        match self.attach(wanted).await {
            Ok(()) => Lent::Ready,
            Err(e) => Lent::Failed(e),
        }
    }

    fn ready(&mut self) -> Lent {
        // Not in the middle of an extended batch: a simple query would end it.
        if self.gucs_dirty && !self.needs_sync {
            self.sync_settings();
        }
        Lent::Ready
    }

    /// Lends a connection for a statement any shard can run, trying the next shard when
    /// one cannot be reached (a dead shard must not fail statements that need no tenant).
    async fn lend_any(&mut self) -> Lent {
        let mut last = None;
        // The first choice answers almost always: the full list is built only when it
        // does not.
        let mut first = None;
        self.any_shards(|s| {
            first = Some(s);
            false
        });
        let (mut next, mut rest) = (first, None);
        while let Some(shard) = next {
            match self.attach(shard).await {
                Ok(()) => return Lent::Ready,
                Err(e) if e.sqlstate().starts_with("08") => last = Some(e),
                Err(e) => return Lent::Failed(e),
            }
            next = rest
                .get_or_insert_with(|| {
                    let mut others = Vec::new();
                    self.any_shards(|s| {
                        if Some(s) != first {
                            others.push(s);
                        }
                        true
                    });
                    others.into_iter()
                })
                .next();
        }
        Lent::Failed(last.unwrap_or(BackendError::Config {
            shard: "-".into(),
            message: "the shard map has no shards".into(),
        }))
    }

    /// Shards for a statement any shard can run, best first: the tenant setting's shard if
    /// one is set (so a transaction that starts this way stays where the tenant is), then
    /// the active shards in turn. Each goes to `take`, until it returns false.
    fn any_shards(&self, mut take: impl FnMut(ShardId) -> bool) {
        let map = self.ctx.routing.map.load();
        let mut preferred = None;
        if let Ok(Some(key)) = self.guc_tenant_key()
            && let Ok(p) = map.locate(&key)
        {
            if !take(p.shard) {
                return;
            }
            preferred = Some(p.shard);
        }
        // The active shards (all of them when none is) in turn, without a list of their own:
        // this runs for every statement that names no tenant.
        let active = map
            .shards()
            .iter()
            .filter(|s| s.state == ShardState::Active)
            .count();
        let (eligible, n) = match active {
            0 => (None, map.shards().len()),
            n => (Some(ShardState::Active), n),
        };
        let start = self.ctx.any_counter.fetch_add(1, Ordering::Relaxed);
        let ids = map
            .shards()
            .iter()
            .filter(|s| eligible.is_none_or(|state| s.state == state))
            .map(|s| s.id);
        for s in ids.clone().skip(start % n.max(1)).chain(ids).take(n) {
            if Some(s) != preferred && !take(s) {
                return;
            }
        }
    }

    /// Lends the client a connection to `shard` and brings its settings in line with the
    /// client's session, pipelined ahead of the client's first message.
    pub(super) async fn attach(&mut self, shard: ShardId) -> Result<(), BackendError> {
        let pool = {
            let map = self.ctx.routing.map.load();
            let info = map.shard(shard).ok_or_else(|| BackendError::Config {
                shard: shard.to_string(),
                message: "the shard is not in the current map".into(),
            })?;
            self.ctx.pools.get(info)?
        };
        let mut pooled = pool.get().await?;
        let conn = pooled.conn_mut();
        if conn.needs_reset {
            wire::encode_query(&mut self.to_server, "DISCARD ALL");
            self.push(Expect {
                unit: Unit::Query,
                mode: Mode::Replay,
                undo: Default::default(),
            });
            conn.needs_reset = false;
            conn.gucs = Gucs::default();
            conn.prepared.clear();
            conn.unnamed = None;
        }
        self.cancel.slot.set(Some(conn.key));
        self.server = Some(pooled);
        self.server_shard = Some(shard);
        // A connection new to this session is not registered for wake-ups yet.
        if let Some(w) = &self.wakers {
            w.server.poll_again();
        }
        // Session settings first: inside the transaction a SET would be undone by its
        // rollback.
        self.sync_settings();
        self.begin_on_server();
        Ok(())
    }

    /// Replays the difference between the server's settings and the client's, if any.
    pub(super) fn sync_settings(&mut self) {
        self.gucs_dirty = false;
        let Some(server) = self.server.as_mut() else {
            return;
        };
        let conn = server.conn_mut();
        if let Some(sql) = conn.gucs.sync_sql(&self.session.gucs) {
            wire::encode_query(&mut self.to_server, &sql);
            conn.gucs = self.session.gucs.clone();
            // A simple query replaces the server's unnamed statement.
            conn.unnamed = None;
            self.push(Expect {
                unit: Unit::Query,
                mode: Mode::Replay,
                undo: Default::default(),
            });
        }
    }

    /// Gives the lent server the tenant setting for `tenant` (row-level security), unless
    /// it has it. Inside a transaction the setting is local to it (it ends with it);
    /// outside, it is a session setting the proxy records, and the client's own settings
    /// are restored before its next statement. In the middle of an extended-protocol batch
    /// it is sent as extended messages, since a simple query would end the batch's
    /// implicit transaction and its unnamed portal.
    pub(super) fn set_tenant_setting(&mut self, tenant: &shardgate_catalog::TenantKey) {
        let name = self.ctx.routing.key_guc.clone();
        let value = GucValue::Str(tenant.to_string());
        let local = self.in_transaction();
        if !local && self.server_conn().gucs.get(&name) == Some(&value) {
            return;
        }
        let sql = format!(
            "SELECT pg_catalog.set_config({}, {}, {local})",
            quote_literal(&name),
            quote_literal(&tenant.to_string())
        );
        if !local {
            self.server_conn().gucs.set(&name, value);
            self.gucs_dirty = true;
        }
        if self.needs_sync {
            let mut tail = sql.into_bytes();
            tail.extend_from_slice(&[0, 0, 0]);
            wire::encode_parse(&mut self.to_server, b"", &tail);
            wire::encode_bind(&mut self.to_server, b"", b"", &[0, 0, 0, 0, 0, 0]);
            wire::encode_execute(&mut self.to_server, b"", 0);
            self.server_conn().unnamed = None;
            for unit in [Unit::Parse, Unit::Bind, Unit::Execute] {
                self.push(Expect {
                    unit,
                    mode: Mode::Injected,
                    undo: Default::default(),
                });
            }
        } else {
            wire::encode_query(&mut self.to_server, &sql);
            self.server_conn().unnamed = None;
            self.push(Expect {
                unit: Unit::Query,
                mode: Mode::Replay,
                undo: Default::default(),
            });
        }
    }

    /// Whether the lent connection still owes replies (or has bytes not yet sent to it):
    /// a stalled client message is taken up again when this turns false.
    pub(super) fn awaiting_server(&self) -> bool {
        !self.replies.is_empty() || !self.to_server.is_empty()
    }

    /// Whether the lent connection has nothing in flight and no transaction open.
    pub(super) fn is_idle(&self) -> bool {
        self.replies.is_empty()
            && !self.needs_sync
            && !self.copy_in
            && self.session.txn_status == b'I'
            && self.to_server.is_empty()
    }

    /// Gives the connection back once the client is between transactions and every reply
    /// has arrived (transaction pooling only).
    pub(super) fn maybe_release(&mut self) {
        if self.ctx.pool_mode == PoolMode::Transaction && self.server.is_some() && self.is_idle() {
            self.give_back();
        }
    }

    /// Returns the lent connection to its pool. In session pooling the session's state on
    /// it is discarded before its next client.
    pub(super) fn give_back(&mut self) {
        if let Some(mut server) = self.server.take()
            && self.ctx.pool_mode == PoolMode::Session
        {
            server.conn_mut().needs_reset = true;
        }
        self.server_shard = None;
        self.cancel.slot.set(None);
    }
}
