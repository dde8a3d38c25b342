//! Where a client statement goes: its classification, the router's decision (pure, in
//! `router.rs`) and the session facts the router needs — the open transaction's shard and
//! the tenant named by the session setting.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use shardgate_catalog::{KeyType, MapHandle, ShardId, ShardMap, TenantKey};

use super::session::Session;
use crate::FastSet;
use crate::classify::{
    BindParams, Classified, Classifier, KeyValues, SessionCommand, StatementInfo, StatementKind,
    TableRef, scan_session_commands, split_statements,
};
use crate::frontend::Statement;
use crate::gucs::GucValue;
use crate::router::{self, Access, Route, RouteError, SessionState, Tenants};

/// What routing needs that every session shares.
pub struct Routing {
    pub map: MapHandle,
    pub classifier: Classifier,
    /// The session setting that names the tenant (`app.tenant_id`).
    pub key_guc: String,
    pub key_type: KeyType,
    pub cross_shard_writes: bool,
    pub tables: ShardedTables,
    /// The shard-key column (`tenant_id`).
    pub key_column: String,
    /// How long a fan-out waits for each shard's next reply.
    pub fanout_timeout: std::time::Duration,
    /// Statements waiting for gated tenants.
    pub gates: super::gate::Gates,
    /// Open transactions per tenant (for the heartbeat).
    pub open_txns: std::sync::Arc<super::gate::OpenTransactions>,
}

/// Which tables are sharded: the configured list, or (when it is empty) the tables that
/// have the key column, as discovered from a shard.
pub struct ShardedTables {
    configured: FastSet<String>,
    discovered: ArcSwap<FastSet<String>>,
    /// Sharded tables with row-level security enabled: statements on them get the tenant
    /// setting on the server, so policies that read it see the routed tenant.
    rls: ArcSwap<FastSet<String>>,
}

impl ShardedTables {
    pub fn new(configured: &[String]) -> Self {
        Self {
            configured: configured.iter().map(|t| t.to_ascii_lowercase()).collect(),
            discovered: ArcSwap::from_pointee(FastSet::default()),
            rls: ArcSwap::from_pointee(FastSet::default()),
        }
    }

    pub fn set_discovered(&self, tables: HashSet<String>, rls: HashSet<String>) {
        self.discovered
            .store(Arc::new(tables.into_iter().collect()));
        self.rls.store(Arc::new(rls.into_iter().collect()));
    }

    pub fn has_rls(&self, t: &TableRef) -> bool {
        contains(&self.rls.load(), t)
    }

    pub fn is_configured(&self) -> bool {
        !self.configured.is_empty()
    }

    pub fn contains(&self, t: &TableRef) -> bool {
        if self.is_configured() {
            contains(&self.configured, t)
        } else {
            contains(&self.discovered.load(), t)
        }
    }
}

fn contains(set: &FastSet<String>, t: &TableRef) -> bool {
    set.contains(&t.name)
        || t.schema
            .as_ref()
            .is_some_and(|s| set.contains(&format!("{s}.{}", t.name)))
}

/// The server a message needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// Any shard: the lent one if there is one.
    Any,
    Shard(ShardId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    Go(Target),
    /// Every shard (DDL, global tables); outside transactions only.
    Broadcast,
    /// A multi-row INSERT whose rows live on several shards (simple protocol only).
    Split(Vec<(ShardId, Vec<usize>)>),
    /// A read on these shards, merged (outside transactions, one statement only).
    FanOut(Vec<ShardId>),
    /// The tenant is gated (its move is cutting over): wait, then route again.
    Hold(TenantKey),
    Refuse(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub hint: Option<&'static str>,
}

impl From<RouteError> for Refusal {
    fn from(e: RouteError) -> Self {
        Refusal {
            code: e.sqlstate(),
            message: e.to_string(),
            hint: Some(e.hint()),
        }
    }
}

impl Session<'_> {
    /// Routes a simple query string: every statement in it must go to one place. Also
    /// returns the kind of the statement when the string holds exactly one.
    pub(super) fn route_query(&mut self, sql: &[u8]) -> (Decision, Option<StatementKind>) {
        let routing = &self.ctx.routing;
        let classified = routing.classifier.classify(sql);
        let kind = match classified.statements.as_slice() {
            [one] => Some(one.template.kind),
            _ => None,
        };
        (self.route_classified(sql, &classified), kind)
    }

    fn route_classified(&mut self, sql: &[u8], classified: &Classified) -> Decision {
        // Read before routing: if routing then sees a newer map, settling looks again.
        let routed_on = self.ctx.routing.map.version();
        let decision = self.route_statements(sql, classified);
        self.settle_in_flight(decision, routed_on)
    }

    fn route_statements(&mut self, sql: &[u8], classified: &Classified) -> Decision {
        self.rls_tenant = None;
        let map = self.ctx.routing.map.load();
        let single = classified.statements.len() == 1;
        let mut guc = match self.guc_tenant() {
            Ok(k) => k,
            Err(r) => return Decision::Refuse(r),
        };
        // A SET of the tenant setting earlier in the same string counts for the statements
        // after it (statements and their texts line up: both leave out empty ones).
        // (Split only when there is a SET to read: most strings have none.)
        let has_set = classified
            .statements
            .iter()
            .any(|s| s.template.kind == StatementKind::Set);
        let parts: Vec<&[u8]> = if has_set {
            split_statements(sql)
                .filter(|p| p.iter().any(|b| !b.is_ascii_whitespace()))
                .collect()
        } else {
            Vec::new()
        };
        let aligned = has_set && parts.len() == classified.statements.len();
        let mut acc = Decision::Go(Target::Any);
        for (i, info) in classified.statements.iter().enumerate() {
            let route = match self.route_statement(&map, info, None, guc.clone()) {
                Ok((r, rls)) => {
                    if rls.is_some() {
                        self.rls_tenant = rls;
                    }
                    r
                }
                Err(refusal) => return Decision::Refuse(refusal),
            };
            // In a transaction until it ends, outside one until the statement's
            // ReadyForQuery (see `settle_in_flight`).
            self.note_txn_route(&route);
            let next = self.finish_decision(self.decide(route, single), map.shards().len());
            acc = match (acc, next) {
                (Decision::Go(Target::Any), next) => next,
                (acc, Decision::Go(Target::Any)) => acc,
                (Decision::Go(a), Decision::Go(b)) if a == b => Decision::Go(a),
                (Decision::Broadcast, Decision::Broadcast) => Decision::Broadcast,
                (_, refused @ Decision::Refuse(_)) => return refused,
                (Decision::Go(Target::Shard(a)), Decision::Go(Target::Shard(b))) => {
                    return Decision::Refuse(
                        RouteError::CrossShardTransaction {
                            pinned: a,
                            wanted: b,
                        }
                        .into(),
                    );
                }
                _ => return Decision::Refuse(mixed_statements()),
            };
            if aligned && matches!(info.template.kind, StatementKind::Set) {
                match self.tenant_set_by(parts[i]) {
                    Ok(Some(next)) => guc = next,
                    Ok(None) => {}
                    Err(r) => return Decision::Refuse(r),
                }
            }
        }
        acc
    }

    /// A broadcast on a one-shard map is just that shard; on more it cannot be part of a
    /// transaction (each shard commits on its own).
    fn finish_decision(&self, d: Decision, shards: usize) -> Decision {
        match d {
            Decision::Broadcast if shards == 1 => {
                let map = self.ctx.routing.map.load();
                Decision::Go(Target::Shard(map.shards()[0].id))
            }
            Decision::Broadcast if self.in_transaction() => Decision::Refuse(Refusal {
                code: "SG003",
                message: "this statement must run on every shard, which cannot be part of a \
                          transaction"
                    .into(),
                hint: Some("run it outside the transaction block"),
            }),
            d => d,
        }
    }

    /// Routes a Bind: the statement's key may be one of its parameters.
    pub(super) fn route_bind(&mut self, stmt: &Statement, after_names: &[u8]) -> Decision {
        let Some(info) = stmt.classified.as_ref() else {
            return Decision::Go(Target::Any);
        };
        let params = match BindParams::parse(after_names, &stmt.param_types) {
            Ok(p) => p,
            Err(e) => return Decision::Refuse(key_refusal(e.to_string())),
        };
        let map = self.ctx.routing.map.load();
        let guc = match self.guc_tenant() {
            Ok(k) => k,
            Err(r) => return Decision::Refuse(r),
        };
        match self.route_statement(&map, info, Some(&params), guc) {
            Ok((route, rls)) => {
                self.rls_tenant = rls;
                let decision = match route {
                    Route::FanOut(shards) if shards.len() > 1 => Decision::FanOut(shards),
                    route => {
                        self.note_txn_route(&route);
                        self.decide(route, false)
                    }
                };
                let decision = self.finish_decision(decision, map.shards().len());
                self.settle_in_flight(decision, map.version())
            }
            Err(refusal) => Decision::Refuse(refusal),
        }
    }

    fn route_statement(
        &self,
        map: &ShardMap,
        info: &StatementInfo,
        params: Option<&BindParams<'_>>,
        guc_tenant: Option<TenantKey>,
    ) -> Result<(Route, Option<TenantKey>), Refusal> {
        let routing = &self.ctx.routing;
        let t = &info.template;
        let keys = info
            .keys(params, routing.classifier.config().key_type)
            .map_err(|e| key_refusal(e.to_string()))?;
        let guc;
        let tenants = match &keys {
            KeyValues::Keys(k) if !k.is_empty() => Tenants::Keys(k),
            KeyValues::PerRow(rows) if !rows.is_empty() => Tenants::PerRow(rows),
            // Session and transaction control run anywhere: the tenant setting does not
            // pull them to its shard (in a string, `SET app.tenant_id = 1; INSERT …` must
            // not pin the SET to the previous tenant).
            _ if is_control(t.kind) => Tenants::None,
            _ => match guc_tenant {
                Some(k) => {
                    guc = [k];
                    Tenants::Keys(&guc)
                }
                None => Tenants::None,
            },
        };
        if !t.parsed
            && matches!(tenants, Tenants::None)
            && !self.in_pinned_transaction()
            && matches!(t.kind, StatementKind::Unparsed)
        {
            return Err(Refusal {
                code: "SG004",
                message: "shardgate cannot tell which shard this statement is for".into(),
                hint: Some("add a /* tenant_id=… */ comment or SET the tenant setting before it"),
            });
        }
        let stmt = router::Statement {
            access: access(t.kind),
            sharded: t.tables.iter().any(|tab| routing.tables.contains(tab)),
            has_tables: !t.tables.is_empty(),
            tenants: &tenants,
        };
        let state = SessionState {
            txn_shard: self.txn_shard(),
            in_transaction: self.in_transaction(),
            cross_shard_writes: routing.cross_shard_writes,
        };
        // The tenant row-level security must see, when the statement named it itself (one
        // named through the setting is on the server already).
        let rls = match &keys {
            KeyValues::Keys(k) if k.len() == 1 => Some(&k[0]),
            KeyValues::PerRow(rows) if rows.iter().all(|r| *r == rows[0]) => rows.first(),
            _ => None,
        }
        .filter(|_| t.tables.iter().any(|tab| routing.tables.has_rls(tab)))
        .cloned();
        Ok((router::route(map, &stmt, &state), rls))
    }

    /// Whether a transaction block is open (also one the proxy has not begun on a server
    /// yet).
    pub(super) fn in_transaction(&self) -> bool {
        self.session.txn_status != b'I'
    }

    /// The shard the open transaction runs on, once it runs somewhere.
    pub(super) fn txn_shard(&self) -> Option<ShardId> {
        if self.in_transaction() {
            self.server_shard
        } else {
            None
        }
    }

    pub(super) fn in_pinned_transaction(&self) -> bool {
        self.txn_shard().is_some()
    }

    pub(super) fn guc_tenant_key(&self) -> Result<Option<TenantKey>, Refusal> {
        self.guc_tenant()
    }

    /// The tenant a `SET` statement gives the tenant setting: `Some(None)` when it resets
    /// it, `None` when the statement sets something else.
    fn tenant_set_by(&self, stmt: &[u8]) -> Result<Option<Option<TenantKey>>, Refusal> {
        let routing = &self.ctx.routing;
        let mut result = None;
        for cmd in scan_session_commands(stmt).commands {
            let value = match cmd {
                SessionCommand::Set { name, value } if name == routing.key_guc => {
                    unquote_setting(&value)
                }
                SessionCommand::SetConfig { name, value } if name == routing.key_guc => Some(value),
                SessionCommand::Reset { name } if name == routing.key_guc => None,
                SessionCommand::ResetAll => None,
                _ => continue,
            };
            result = Some(match value.filter(|v| !v.is_empty()) {
                Some(v) => Some(routing.key_type.parse(&v).map_err(|e| {
                    key_refusal(format!("{} is set to {v:?}: {e}", routing.key_guc))
                })?),
                None => None,
            });
        }
        Ok(result)
    }

    /// The tenant named by the session setting, if it is set.
    fn guc_tenant(&self) -> Result<Option<TenantKey>, Refusal> {
        let routing = &self.ctx.routing;
        let Some(value) = self.session.gucs.get(&routing.key_guc) else {
            return Ok(None);
        };
        let text = match value {
            GucValue::Str(s) => s.clone(),
            GucValue::Raw(raw) => match unquote_setting(raw) {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        if text.is_empty() {
            return Ok(None);
        }
        routing
            .key_type
            .parse(&text)
            .map(Some)
            .map_err(|e| key_refusal(format!("{} is set to {text:?}: {e}", routing.key_guc)))
    }
}

/// The value of `SET name TO <raw>` as a string, or `None` for `DEFAULT`.
fn unquote_setting(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("default") {
        return None;
    }
    match raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Some(inner) => Some(inner.replace("''", "'")),
        None => Some(raw.to_owned()),
    }
}

fn mixed_statements() -> Refusal {
    Refusal {
        code: "SG003",
        message: "the statements of this query string need different shards".into(),
        hint: Some("send them one at a time"),
    }
}

fn key_refusal(message: String) -> Refusal {
    Refusal {
        code: "22023",
        message: format!("cannot route the statement: {message}"),
        hint: None,
    }
}

fn is_control(kind: StatementKind) -> bool {
    matches!(
        kind,
        StatementKind::Set
            | StatementKind::Show
            | StatementKind::Begin
            | StatementKind::Commit
            | StatementKind::Rollback
            | StatementKind::TxnOther
    )
}

fn access(kind: StatementKind) -> Access {
    match kind {
        StatementKind::Ddl | StatementKind::Utility => Access::Ddl,
        k if k.is_write() => Access::Write,
        _ => Access::Read,
    }
}

impl Session<'_> {
    /// Its tenant counts as having open work here: until the transaction ends, or
    /// outside one until the statement's ReadyForQuery.
    fn note_txn_route(&mut self, route: &Route) {
        match route {
            Route::Single {
                tenant: Some(t), ..
            } => self.note_txn_tenant(t),
            Route::Held { tenant, .. } if self.in_pinned_transaction() => {
                self.note_txn_tenant(tenant)
            }
            _ => {}
        }
    }

    /// A gated tenant's statement waits, except inside a transaction already running on a
    /// shard (the move waits for that transaction instead; see `gate`).
    fn decide(&self, route: Route, splittable: bool) -> Decision {
        match route {
            Route::Held { tenant, .. } if !self.in_pinned_transaction() => Decision::Hold(tenant),
            route => route_to_decision(route, splittable),
        }
    }
}

fn route_to_decision(route: Route, splittable: bool) -> Decision {
    match route {
        Route::Single { shard, .. } | Route::Held { shard, .. } => {
            Decision::Go(Target::Shard(shard))
        }
        Route::Any => Decision::Go(Target::Any),
        Route::FanOut(shards) if shards.len() == 1 => Decision::Go(Target::Shard(shards[0])),
        Route::FanOut(shards) if splittable => Decision::FanOut(shards),
        Route::FanOut(_) => Decision::Refuse(Refusal {
            code: "SG004",
            message: "a read that spans several shards must be the only statement of its \
                      query string"
                .into(),
            hint: Some("send it as a query of its own, or name one tenant"),
        }),
        Route::Broadcast => Decision::Broadcast,
        Route::Split(parts) if splittable => Decision::Split(parts),
        Route::Split(_) => Decision::Refuse(RouteError::CrossShardWrite.into()),
        Route::Refuse(e) => Decision::Refuse(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_unquote_like_postgres() {
        assert_eq!(unquote_setting("42").as_deref(), Some("42"));
        assert_eq!(unquote_setting(" '4''2' ").as_deref(), Some("4'2"));
        assert_eq!(unquote_setting("DEFAULT"), None);
    }

    #[test]
    fn kinds_map_to_access() {
        assert_eq!(access(StatementKind::Select), Access::Read);
        assert_eq!(access(StatementKind::Insert), Access::Write);
        assert_eq!(
            access(StatementKind::Copy { from_stdin: true }),
            Access::Write
        );
        assert_eq!(
            access(StatementKind::Copy { from_stdin: false }),
            Access::Read
        );
        assert_eq!(access(StatementKind::Ddl), Access::Ddl);
    }
}
