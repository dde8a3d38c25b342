//! Pure routing: given the shard map, what a statement is and which tenants it names, and
//! the session's state, decide where the statement goes (DESIGN.md §3 step 4).
//!
//! No I/O and no knowledge of sockets: the exec layer asks, then does.

use shardgate_catalog::{LocateError, Placement, ShardId, ShardMap, TenantKey, TenantState};

/// What the router needs to know about a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only.
    Read,
    /// Writes rows (INSERT/UPDATE/DELETE/COPY FROM, or a read with side effects).
    Write,
    /// Changes the schema.
    Ddl,
}

/// The tenants a statement names, by the precedence of DESIGN.md §3 (comment, then the
/// statement's own values, then the session setting): the caller applies the precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants<'a> {
    /// No tenant anywhere.
    None,
    /// Every row the statement touches belongs to one of these.
    Keys(&'a [TenantKey]),
    /// A multi-row INSERT: the tenant of each row, in row order.
    PerRow(&'a [TenantKey]),
}

#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    pub access: Access,
    /// Whether it touches at least one sharded table (rows live on the tenant's shard).
    pub sharded: bool,
    /// Whether it references any table at all (`SELECT 1` does not).
    pub has_tables: bool,
    pub tenants: &'a Tenants<'a>,
}

/// Session facts that constrain routing.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionState {
    /// The shard the open transaction runs on, once it has one.
    pub txn_shard: Option<ShardId>,
    /// Whether a transaction block is open (its shard may not be chosen yet).
    pub in_transaction: bool,
    pub cross_shard_writes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One shard; `tenant` is the tenant that chose it, when one did.
    Single {
        shard: ShardId,
        tenant: Option<TenantKey>,
    },
    /// Any shard will do (no tables, or global tables only, read): the exec layer picks.
    Any,
    /// A multi-row INSERT whose rows live on several shards: row indexes per shard.
    Split(Vec<(ShardId, Vec<usize>)>),
    /// A read over several shards, merged (DESIGN.md §4).
    FanOut(Vec<ShardId>),
    /// Every shard: DDL, writes to global tables, or allowed cross-shard writes.
    Broadcast,
    /// The tenant is gated for a move: hold the statement (DESIGN.md §6).
    Held {
        tenant: TenantKey,
        shard: ShardId,
    },
    Refuse(RouteError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "cross-shard write refused: the statement writes a sharded table without naming one tenant"
    )]
    CrossShardWrite,
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantKey),
    #[error(
        "cross-shard transaction: this transaction runs on shard {pinned}, the statement needs shard {wanted}"
    )]
    CrossShardTransaction { pinned: ShardId, wanted: ShardId },
    #[error("cross-shard transaction: a read over several shards cannot run inside a transaction")]
    FanOutInTransaction,
}

impl RouteError {
    /// DESIGN.md §9's codes.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            RouteError::CrossShardWrite => "SG001",
            RouteError::UnknownTenant(_) => "SG002",
            RouteError::CrossShardTransaction { .. } | RouteError::FanOutInTransaction => "SG003",
        }
    }

    pub fn hint(&self) -> &'static str {
        match self {
            RouteError::CrossShardWrite => {
                "name the tenant: a WHERE or VALUES on the shard key, a /* tenant_id=… */ comment, or SET app.tenant_id"
            }
            RouteError::UnknownTenant(_) => {
                "add the tenant to the catalog first (shardctl tenant add)"
            }
            RouteError::CrossShardTransaction { .. } | RouteError::FanOutInTransaction => {
                "keep each transaction to one tenant's shard; nothing of this statement was applied"
            }
        }
    }
}

pub fn route(map: &ShardMap, stmt: &Statement<'_>, session: &SessionState) -> Route {
    let routed = match stmt.tenants {
        Tenants::Keys(keys) if !keys.is_empty() => by_keys(map, stmt, keys),
        Tenants::PerRow(rows) if !rows.is_empty() => by_rows(map, rows),
        _ => without_tenant(map, stmt, session),
    };
    pin_to_transaction(routed, session)
}

fn locate(map: &ShardMap, key: &TenantKey) -> Result<Placement, Route> {
    map.locate(key).map_err(|e| match e {
        LocateError::UnknownTenant(k) => Route::Refuse(RouteError::UnknownTenant(k)),
    })
}

fn by_keys(map: &ShardMap, stmt: &Statement<'_>, keys: &[TenantKey]) -> Route {
    let mut shards: Vec<ShardId> = Vec::with_capacity(1);
    for key in keys {
        let p = match locate(map, key) {
            Ok(p) => p,
            Err(refusal) => return refusal,
        };
        if p.state == TenantState::Gated {
            return Route::Held {
                tenant: key.clone(),
                shard: p.shard,
            };
        }
        if !shards.contains(&p.shard) {
            shards.push(p.shard);
        }
    }
    match shards.as_slice() {
        [shard] => Route::Single {
            shard: *shard,
            tenant: (keys.len() == 1).then(|| keys[0].clone()),
        },
        _ if stmt.access == Access::Read => {
            shards.sort_unstable();
            Route::FanOut(shards)
        }
        _ => Route::Refuse(RouteError::CrossShardWrite),
    }
}

fn by_rows(map: &ShardMap, rows: &[TenantKey]) -> Route {
    let mut per_shard: Vec<(ShardId, Vec<usize>)> = Vec::new();
    for (i, key) in rows.iter().enumerate() {
        let p = match locate(map, key) {
            Ok(p) => p,
            Err(refusal) => return refusal,
        };
        if p.state == TenantState::Gated {
            return Route::Held {
                tenant: key.clone(),
                shard: p.shard,
            };
        }
        match per_shard.iter_mut().find(|(s, _)| *s == p.shard) {
            Some((_, idx)) => idx.push(i),
            None => per_shard.push((p.shard, vec![i])),
        }
    }
    if per_shard.len() == 1 {
        let (shard, _) = per_shard[0];
        let first = &rows[0];
        let one_tenant = rows.iter().all(|k| k == first);
        return Route::Single {
            shard,
            tenant: one_tenant.then(|| first.clone()),
        };
    }
    per_shard.sort_unstable_by_key(|(s, _)| *s);
    Route::Split(per_shard)
}

fn without_tenant(map: &ShardMap, stmt: &Statement<'_>, session: &SessionState) -> Route {
    match stmt.access {
        Access::Ddl => Route::Broadcast,
        Access::Write if stmt.sharded => {
            if session.cross_shard_writes {
                Route::Broadcast
            } else {
                Route::Refuse(RouteError::CrossShardWrite)
            }
        }
        // A write to global tables only: every shard keeps an identical copy.
        Access::Write if stmt.has_tables => Route::Broadcast,
        Access::Write => Route::Any,
        Access::Read if stmt.sharded => Route::FanOut(map.shards().iter().map(|s| s.id).collect()),
        Access::Read => Route::Any,
    }
}

/// Inside a transaction every statement must run where the transaction runs.
fn pin_to_transaction(route: Route, session: &SessionState) -> Route {
    if !session.in_transaction {
        return route;
    }
    match (route, session.txn_shard) {
        (Route::Single { shard, .. }, Some(pinned)) if shard != pinned => {
            Route::Refuse(RouteError::CrossShardTransaction {
                pinned,
                wanted: shard,
            })
        }
        (Route::Any, Some(pinned)) => Route::Single {
            shard: pinned,
            tenant: None,
        },
        (Route::FanOut(_), _) => Route::Refuse(RouteError::FanOutInTransaction),
        (Route::Split(parts), pinned) => Route::Refuse(RouteError::CrossShardTransaction {
            pinned: pinned.unwrap_or(parts[0].0),
            wanted: parts
                .iter()
                .map(|(s, _)| *s)
                .find(|s| Some(*s) != pinned)
                .unwrap_or(parts[0].0),
        }),
        (other, _) => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use shardgate_catalog::{ShardInfo, ShardState, Strategy, build_ring};

    use super::*;

    fn map(strategy: Strategy, pins: &[(i64, ShardId, TenantState)]) -> ShardMap {
        let ids = [0, 1, 2, 3];
        let shards = ids
            .iter()
            .map(|&id| ShardInfo {
                id,
                name: format!("s{id}"),
                url: format!("postgres://u@h:1/d{id}"),
                state: ShardState::Active,
                pool_size: 4,
                capacity_hint: None,
            })
            .collect();
        let tenants: HashMap<_, _> = pins
            .iter()
            .map(|&(t, s, st)| (TenantKey::Int(t), (s, st)))
            .collect();
        let ring = if strategy == Strategy::Hash {
            build_ring(&ids, 64)
        } else {
            vec![]
        };
        ShardMap::new(1, strategy, shards, ring, tenants).unwrap()
    }

    fn keys(ts: &[i64]) -> Vec<TenantKey> {
        ts.iter().map(|&t| TenantKey::Int(t)).collect()
    }

    fn stmt<'a>(access: Access, sharded: bool, tenants: &'a Tenants<'a>) -> Statement<'a> {
        Statement {
            access,
            sharded,
            has_tables: true,
            tenants,
        }
    }

    const IDLE: SessionState = SessionState {
        txn_shard: None,
        in_transaction: false,
        cross_shard_writes: false,
    };

    #[test]
    fn one_tenant_goes_to_its_shard() {
        let m = map(Strategy::Hash, &[(7, 2, TenantState::Active)]);
        let k = keys(&[7]);
        let t = Tenants::Keys(&k);
        assert_eq!(
            route(&m, &stmt(Access::Write, true, &t), &IDLE),
            Route::Single {
                shard: 2,
                tenant: Some(TenantKey::Int(7))
            }
        );
    }

    #[test]
    fn tenants_on_several_shards_fan_out_for_reads_and_are_refused_for_writes() {
        let m = map(
            Strategy::Hash,
            &[(1, 3, TenantState::Active), (2, 1, TenantState::Active)],
        );
        let k = keys(&[1, 2]);
        let t = Tenants::Keys(&k);
        assert_eq!(
            route(&m, &stmt(Access::Read, true, &t), &IDLE),
            Route::FanOut(vec![1, 3])
        );
        let r = route(&m, &stmt(Access::Write, true, &t), &IDLE);
        assert_eq!(r, Route::Refuse(RouteError::CrossShardWrite));
        // Two tenants on one shard are one shard.
        let m = map(
            Strategy::Hash,
            &[(1, 3, TenantState::Active), (2, 3, TenantState::Active)],
        );
        assert_eq!(
            route(&m, &stmt(Access::Write, true, &t), &IDLE),
            Route::Single {
                shard: 3,
                tenant: None
            }
        );
    }

    #[test]
    fn multi_row_inserts_split_by_shard_or_stay_whole() {
        let m = map(
            Strategy::Hash,
            &[
                (1, 0, TenantState::Active),
                (2, 2, TenantState::Active),
                (3, 0, TenantState::Active),
            ],
        );
        let rows = keys(&[1, 2, 3, 1]);
        let t = Tenants::PerRow(&rows);
        assert_eq!(
            route(&m, &stmt(Access::Write, true, &t), &IDLE),
            Route::Split(vec![(0, vec![0, 2, 3]), (2, vec![1])])
        );
        let rows = keys(&[1, 1]);
        let t = Tenants::PerRow(&rows);
        assert_eq!(
            route(&m, &stmt(Access::Write, true, &t), &IDLE),
            Route::Single {
                shard: 0,
                tenant: Some(TenantKey::Int(1))
            }
        );
    }

    #[test]
    fn without_a_tenant() {
        let m = map(Strategy::Hash, &[]);
        let none = Tenants::None;
        assert_eq!(
            route(&m, &stmt(Access::Write, true, &none), &IDLE),
            Route::Refuse(RouteError::CrossShardWrite)
        );
        let allow = SessionState {
            cross_shard_writes: true,
            ..IDLE
        };
        assert_eq!(
            route(&m, &stmt(Access::Write, true, &none), &allow),
            Route::Broadcast
        );
        assert_eq!(
            route(&m, &stmt(Access::Write, false, &none), &IDLE),
            Route::Broadcast
        );
        assert_eq!(
            route(&m, &stmt(Access::Ddl, false, &none), &IDLE),
            Route::Broadcast
        );
        assert_eq!(
            route(&m, &stmt(Access::Read, true, &none), &IDLE),
            Route::FanOut(vec![0, 1, 2, 3])
        );
        assert_eq!(
            route(&m, &stmt(Access::Read, false, &none), &IDLE),
            Route::Any
        );
        let select_1 = Statement {
            access: Access::Write,
            sharded: false,
            has_tables: false,
            tenants: &none,
        };
        assert_eq!(route(&m, &select_1, &IDLE), Route::Any);
    }

    #[test]
    fn transactions_stay_on_their_shard() {
        let m = map(
            Strategy::Hash,
            &[(1, 1, TenantState::Active), (2, 2, TenantState::Active)],
        );
        let pinned = SessionState {
            txn_shard: Some(1),
            in_transaction: true,
            cross_shard_writes: false,
        };
        let k = keys(&[2]);
        let t = Tenants::Keys(&k);
        assert_eq!(
            route(&m, &stmt(Access::Write, true, &t), &pinned),
            Route::Refuse(RouteError::CrossShardTransaction {
                pinned: 1,
                wanted: 2
            })
        );
        let none = Tenants::None;
        assert_eq!(
            route(&m, &stmt(Access::Read, false, &none), &pinned),
            Route::Single {
                shard: 1,
                tenant: None
            }
        );
        assert_eq!(
            route(&m, &stmt(Access::Read, true, &none), &pinned),
            Route::Refuse(RouteError::FanOutInTransaction)
        );
        let rows = keys(&[1, 2]);
        let t = Tenants::PerRow(&rows);
        assert!(matches!(
            route(&m, &stmt(Access::Write, true, &t), &pinned),
            Route::Refuse(RouteError::CrossShardTransaction {
                pinned: 1,
                wanted: 2
            })
        ));
        assert_eq!(RouteError::FanOutInTransaction.sqlstate(), "SG003");
    }

    #[test]
    fn directory_refuses_unknown_tenants_and_gates_hold() {
        let m = map(Strategy::Directory, &[(5, 1, TenantState::Gated)]);
        let k = keys(&[6]);
        let t = Tenants::Keys(&k);
        let r = route(&m, &stmt(Access::Read, true, &t), &IDLE);
        assert_eq!(
            r,
            Route::Refuse(RouteError::UnknownTenant(TenantKey::Int(6)))
        );
        if let Route::Refuse(e) = r {
            assert_eq!(e.sqlstate(), "SG002");
        }
        let k = keys(&[5]);
        let t = Tenants::Keys(&k);
        assert_eq!(
            route(&m, &stmt(Access::Read, true, &t), &IDLE),
            Route::Held {
                tenant: TenantKey::Int(5),
                shard: 1
            }
        );
    }
}
