//! `shardctl split --shard NAME --into NAME [--by rows|writes] [--dry-run]`: moves about
//! half of a hot shard's load to another shard, as one group move with a single gate
//! (DESIGN.md §6).
//!
//! The load of each tenant living on the shard is read from the shard itself: its rows in
//! every sharded table (`--by rows`), or its rows written (inserted or updated) within the
//! last [`WRITE_WINDOW`] transactions (`--by writes`, from each row's `xmin`). Tenants are
//! taken heaviest first while they fit under half the total, so one tenant heavier than
//! half stays where it is and lighter ones go. Tenants that are not active there (gated,
//! or only a kept copy) are left alone. Moved tenants get a row of their own in the
//! catalog; under the hash strategy the ring is unchanged, so new tenants keep landing by
//! hash (rebalancing vnodes is not part of a split).
//!
//! Failures reuse the move's `E_*` codes and exit statuses ([`MoveError`]).

use std::collections::HashMap;

use serde_json::{Value, json};
use shardgate_catalog::db;
use shardgate_catalog::{KeyType, ShardMap, TenantState};

use crate::catalog_cmd::Report;
use crate::move_cmd::shard::Shard;
use crate::move_cmd::{self, Hooks, MoveError, MoveOutcome, MoveRequest, Moved};
use crate::pg::quote_ident;

/// `--by writes` counts a row as written recently when its `xmin` is younger than this
/// many transactions.
pub const WRITE_WINDOW: i64 = 1_000_000;

/// What a tenant's load is measured by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitBy {
    Rows,
    Writes,
}

impl SplitBy {
    fn as_str(self) -> &'static str {
        match self {
            SplitBy::Rows => "rows",
            SplitBy::Writes => "writes",
        }
    }
}

/// What `shardctl split` was asked; `moves` carries the move's own options (its tenant
/// list is filled in by the split).
#[derive(Debug, Clone)]
pub struct SplitRequest {
    pub shard: String,
    pub by: SplitBy,
    pub moves: MoveRequest,
}

/// The tenants chosen, and the load that moves and stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    pub from: String,
    pub into: String,
    pub by: SplitBy,
    /// (tenant, load), heaviest first.
    pub moving: Vec<(String, i64)>,
    pub moving_load: i64,
    pub total_load: i64,
    pub tenants_on_shard: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitOutcome {
    Planned(SplitPlan),
    Split { plan: SplitPlan, moved: Moved },
}

/// Plans the split and, unless a dry run, moves the chosen tenants in one job.
pub async fn split(
    catalog_url: &str,
    req: &SplitRequest,
    hooks: &Hooks,
) -> Result<SplitOutcome, MoveError> {
    let mut catalog = db::connect(catalog_url).await?;
    let map = db::load_map(&mut catalog).await?;
    let key_type = db::load_settings(&catalog).await?.key_type;
    let from = move_cmd::resolve_shard(&catalog, &req.shard).await?;
    let into = move_cmd::resolve_shard(&catalog, &req.moves.to).await?;
    let info = |id| {
        map.shard(id)
            .cloned()
            .ok_or_else(|| MoveError::Invalid(format!("shard id {id} is not in the map")))
    };
    let (from_info, into_info) = (info(from)?, info(into)?);
    if from == into {
        return Err(MoveError::Invalid(format!(
            "--shard and --into are both {}",
            from_info.name
        )));
    }
    let source = Shard::connect(&from_info.name, &from_info.url).await?;
    let loads = tenant_loads(&source, &req.moves.key_column, req.by, key_type, &map, from).await?;
    let tenants_on_shard = loads.len();
    if tenants_on_shard < 2 {
        return Err(MoveError::Invalid(format!(
            "shard {} holds {tenants_on_shard} active tenant(s); a split needs two or more",
            from_info.name
        )));
    }
    let total_load: i64 = loads.iter().map(|(_, l)| l).sum();
    if total_load == 0 {
        return Err(MoveError::Invalid(format!(
            "no tenant on {} has {} to split by",
            from_info.name,
            match req.by {
                SplitBy::Rows => "rows",
                SplitBy::Writes => "recent writes; try --by rows",
            }
        )));
    }
    let moving = pick_half(loads);
    let plan = SplitPlan {
        from: from_info.name.clone(),
        into: into_info.name.clone(),
        by: req.by,
        moving_load: moving.iter().map(|(_, l)| l).sum(),
        moving,
        total_load,
        tenants_on_shard,
    };
    if req.moves.dry_run {
        return Ok(SplitOutcome::Planned(plan));
    }
    let move_req = MoveRequest {
        tenants: plan.moving.iter().map(|(t, _)| t.clone()).collect(),
        dry_run: false,
        ..req.moves.clone()
    };
    match move_cmd::run(catalog_url, &move_req, hooks).await? {
        MoveOutcome::Moved(moved) => Ok(SplitOutcome::Split { plan, moved }),
        other => Err(MoveError::Invalid(format!(
            "the group move did not run: {other:?}"
        ))),
    }
}

/// Each tenant living on `shard` (active there, by `map`) with its load, summed over the
/// shard's sharded tables.
pub(crate) async fn tenant_loads(
    source: &Shard,
    key_column: &str,
    by: SplitBy,
    key_type: KeyType,
    map: &ShardMap,
    shard: u32,
) -> Result<Vec<(String, i64)>, MoveError> {
    let mut loads: HashMap<String, i64> = HashMap::new();
    for t in source.sharded_tables(key_column).await? {
        let measure = match by {
            SplitBy::Rows => "count(*)".to_owned(),
            SplitBy::Writes => format!("count(*) FILTER (WHERE age(xmin) < {WRITE_WINDOW})"),
        };
        let sql = format!(
            "SELECT {k}::text, {measure} FROM {} GROUP BY 1",
            t.sql_name(),
            k = quote_ident(key_column)
        );
        let rows = source
            .client
            .query(&sql, &[])
            .await
            .map_err(|e| MoveError::shard(&source.name, "measuring the tenants", e))?;
        for r in rows {
            let (tenant, load): (Option<String>, i64) = (r.get(0), r.get(1));
            if let Some(tenant) = tenant {
                *loads.entry(tenant).or_default() += load;
            }
        }
    }
    let mut out = Vec::new();
    for (tenant, load) in loads {
        let Ok(key) = key_type.parse(&tenant) else {
            continue;
        };
        let home = map
            .locate(&key)
            .is_ok_and(|p| p.shard == shard && p.state == TenantState::Active);
        if home {
            out.push((key.to_string(), load));
        }
    }
    Ok(out)
}

/// Tenants heaviest first while they fit under half the total load.
fn pick_half(mut loads: Vec<(String, i64)>) -> Vec<(String, i64)> {
    loads.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let half = loads.iter().map(|(_, l)| l).sum::<i64>() / 2;
    let mut taken = 0;
    let mut out = Vec::new();
    for (tenant, load) in loads {
        if load > 0 && taken + load <= half {
            taken += load;
            out.push((tenant, load));
        }
    }
    out
}

impl Report for SplitOutcome {
    fn text(&self) -> String {
        let plan = match self {
            SplitOutcome::Planned(p) | SplitOutcome::Split { plan: p, .. } => p,
        };
        let mut out = format!(
            "split {} by {}: {} of its {} tenants move to {} ({} of {} {}, {:.0}%)",
            plan.from,
            plan.by.as_str(),
            plan.moving.len(),
            plan.tenants_on_shard,
            plan.into,
            plan.moving_load,
            plan.total_load,
            plan.by.as_str(),
            100.0 * plan.moving_load as f64 / plan.total_load.max(1) as f64
        );
        match self {
            SplitOutcome::Planned(_) => out.push_str("\ndry run: nothing changed"),
            SplitOutcome::Split { moved, .. } => out.push_str(&format!(
                "\njob {}: moved under one gate held {} ms; {} source rows deleted",
                moved.job,
                moved.gate_hold.as_millis(),
                moved.deleted
            )),
        }
        out
    }

    fn json(&self) -> Value {
        let (plan, moved) = match self {
            SplitOutcome::Planned(p) => (p, None),
            SplitOutcome::Split { plan, moved } => (plan, Some(moved)),
        };
        let mut v = json!({
            "from": plan.from,
            "into": plan.into,
            "by": plan.by.as_str(),
            "tenants_on_shard": plan.tenants_on_shard,
            "moving": plan.moving.iter().map(|(t, l)| json!({"tenant": t, "load": l}))
                .collect::<Vec<_>>(),
            "moving_load": plan.moving_load,
            "total_load": plan.total_load,
            "dry_run": moved.is_none(),
        });
        if let Some(m) = moved {
            v["job"] = m.job.into();
            v["gate_hold_ms"] = (m.gate_hold.as_millis() as u64).into();
            v["deleted"] = m.deleted.into();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|(t, l)| (t.to_string(), *l)).collect()
    }

    #[test]
    fn heaviest_first_while_under_half() {
        let picked = pick_half(loads(&[("a", 10), ("b", 40), ("c", 30), ("d", 20)]));
        assert_eq!(picked, loads(&[("b", 40), ("a", 10)]));
        let picked = pick_half(loads(&[("a", 5), ("b", 5), ("c", 5), ("d", 5)]));
        assert_eq!(picked, loads(&[("a", 5), ("b", 5)]));
    }

    #[test]
    fn a_tenant_heavier_than_half_stays() {
        let picked = pick_half(loads(&[("big", 90), ("x", 6), ("y", 4)]));
        assert_eq!(picked, loads(&[("x", 6), ("y", 4)]));
    }

    #[test]
    fn tenants_without_load_stay() {
        let picked = pick_half(loads(&[("a", 0), ("b", 0), ("c", 2), ("d", 2)]));
        assert_eq!(picked, loads(&[("c", 2)]));
    }
}
