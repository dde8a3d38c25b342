//! `shardctl rebalance --plan | --execute [--by rows|writes]`: evens out the load of the
//! active shards by moving tenants from the heaviest to the lightest.
//!
//! The load of each tenant is read from the shards as `split` reads it. The plan is greedy:
//! while the heaviest and lightest shards differ by more than [`TOLERANCE`] of the mean,
//! the heaviest tenant of the heaviest shard that narrows that gap (at most half of it)
//! moves to the lightest. `--execute` runs the plan as one group move per (from, to) pair,
//! one after the other, each with its own single gate; a failure stops there (the moves
//! done stay done, the failed one is rolled back as any move is).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shardgate_catalog::ShardState;
use shardgate_catalog::db;

use crate::catalog_cmd::Report;
use crate::move_cmd::shard::Shard;
use crate::move_cmd::{self, Hooks, MoveError, MoveOutcome, MoveRequest};
use crate::split_cmd::{SplitBy, tenant_loads};

/// Shards within this fraction of the mean load count as balanced.
pub const TOLERANCE: f64 = 0.10;

/// One shard's tenants and their loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLoad {
    pub shard: String,
    pub tenants: Vec<(String, i64)>,
}

impl ShardLoad {
    fn total(&self) -> i64 {
        self.tenants.iter().map(|(_, l)| l).sum()
    }
}

/// Tenants to move from one shard to another, in one group move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub from: String,
    pub to: String,
    pub tenants: Vec<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalancePlan {
    pub by: SplitBy,
    /// (shard, load now, load after the plan).
    pub shards: Vec<(String, i64, i64)>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebalanced {
    pub plan: RebalancePlan,
    /// Job id and gate hold (ms) of each step run.
    pub jobs: Vec<(i64, u64)>,
}

/// Plans (and with `execute`, runs) the rebalance. `moves` carries the moves' options.
pub async fn rebalance(
    catalog_url: &str,
    by: SplitBy,
    execute: bool,
    moves: &MoveRequest,
    hooks: &Hooks,
) -> Result<Rebalanced, MoveError> {
    let mut catalog = db::connect(catalog_url).await?;
    let map = db::load_map(&mut catalog).await?;
    let key_type = db::load_settings(&catalog).await?.key_type;
    let mut loads = Vec::new();
    for info in map
        .shards()
        .iter()
        .filter(|s| s.state == ShardState::Active)
    {
        let shard = Shard::connect(&info.name, &info.url).await?;
        let tenants = tenant_loads(&shard, &moves.key_column, by, key_type, &map, info.id).await?;
        loads.push(ShardLoad {
            shard: info.name.clone(),
            tenants,
        });
    }
    if loads.len() < 2 {
        return Err(MoveError::Invalid(
            "rebalancing needs two or more active shards".into(),
        ));
    }
    let plan = plan(by, loads);
    let mut jobs = Vec::new();
    if execute {
        for step in &plan.steps {
            let req = MoveRequest {
                tenants: step.tenants.iter().map(|(t, _)| t.clone()).collect(),
                to: step.to.clone(),
                dry_run: false,
                ..moves.clone()
            };
            if let MoveOutcome::Moved(m) = move_cmd::run(catalog_url, &req, hooks).await? {
                jobs.push((m.job, m.gate_hold.as_millis() as u64));
            }
        }
    }
    Ok(Rebalanced { plan, jobs })
}

/// The greedy plan (see the module's doc).
pub fn plan(by: SplitBy, mut loads: Vec<ShardLoad>) -> RebalancePlan {
    let before: Vec<i64> = loads.iter().map(ShardLoad::total).collect();
    let mean = before.iter().sum::<i64>() as f64 / loads.len() as f64;
    let mut moves: BTreeMap<(usize, usize), Vec<(String, i64)>> = BTreeMap::new();
    // Each round moves one tenant; a tenant never moves twice, so this ends.
    for _ in 0..10_000 {
        let totals: Vec<i64> = loads.iter().map(ShardLoad::total).collect();
        let (hi, lo) = extremes(&totals);
        let gap = totals[hi] - totals[lo];
        if (gap as f64) <= TOLERANCE * mean || gap <= 1 {
            break;
        }
        let fits = loads[hi]
            .tenants
            .iter()
            .enumerate()
            .filter(|(_, (_, l))| *l > 0 && *l <= gap / 2)
            .max_by(|a, b| a.1.1.cmp(&b.1.1).then_with(|| b.1.0.cmp(&a.1.0)))
            .map(|(i, _)| i);
        let Some(i) = fits else { break };
        let tenant = loads[hi].tenants.remove(i);
        moves.entry((hi, lo)).or_default().push(tenant.clone());
        loads[lo].tenants.push(tenant);
    }
    let after: Vec<i64> = loads.iter().map(ShardLoad::total).collect();
    RebalancePlan {
        by,
        shards: loads
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(s, (b, a))| (s.shard.clone(), *b, *a))
            .collect(),
        steps: moves
            .into_iter()
            .map(|((from, to), tenants)| Step {
                from: loads[from].shard.clone(),
                to: loads[to].shard.clone(),
                tenants,
            })
            .collect(),
    }
}

/// Indexes of the heaviest and the lightest (first of equals).
fn extremes(totals: &[i64]) -> (usize, usize) {
    let mut hi = 0;
    let mut lo = 0;
    for (i, t) in totals.iter().enumerate() {
        if *t > totals[hi] {
            hi = i;
        }
        if *t < totals[lo] {
            lo = i;
        }
    }
    (hi, lo)
}

impl Report for Rebalanced {
    fn text(&self) -> String {
        let mut out = String::new();
        for (shard, before, after) in &self.plan.shards {
            out.push_str(&format!("{shard}: {before} -> {after}\n"));
        }
        if self.plan.steps.is_empty() {
            out.push_str("balanced: nothing to move");
        }
        for (i, s) in self.plan.steps.iter().enumerate() {
            let load: i64 = s.tenants.iter().map(|(_, l)| l).sum();
            out.push_str(&format!(
                "move {} tenant(s) ({load} {}) from {} to {}",
                s.tenants.len(),
                match self.plan.by {
                    SplitBy::Rows => "rows",
                    SplitBy::Writes => "writes",
                },
                s.from,
                s.to
            ));
            match self.jobs.get(i) {
                Some((job, hold)) => out.push_str(&format!(": job {job}, gate held {hold} ms\n")),
                None => out.push('\n'),
            }
        }
        if self.jobs.is_empty() && !self.plan.steps.is_empty() {
            out.push_str("plan only: nothing changed (run with --execute)");
        }
        out.trim_end().to_owned()
    }

    fn json(&self) -> Value {
        json!({
            "shards": self.plan.shards.iter()
                .map(|(s, b, a)| json!({"shard": s, "load": b, "load_after": a}))
                .collect::<Vec<_>>(),
            "steps": self.plan.steps.iter().enumerate().map(|(i, s)| json!({
                "from": s.from,
                "to": s.to,
                "tenants": s.tenants.iter().map(|(t, _)| t).collect::<Vec<_>>(),
                "load": s.tenants.iter().map(|(_, l)| l).sum::<i64>(),
                "job": self.jobs.get(i).map(|(j, _)| j),
                "gate_hold_ms": self.jobs.get(i).map(|(_, h)| h),
            })).collect::<Vec<_>>(),
            "executed": !self.jobs.is_empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(name: &str, tenants: &[(&str, i64)]) -> ShardLoad {
        ShardLoad {
            shard: name.into(),
            tenants: tenants.iter().map(|(t, l)| (t.to_string(), *l)).collect(),
        }
    }

    #[test]
    fn a_full_shard_spreads_over_empty_ones() {
        let tenants: Vec<(String, i64)> = (1..=40).map(|t| (t.to_string(), 10)).collect();
        let full = ShardLoad {
            shard: "s0".into(),
            tenants,
        };
        let p = plan(
            SplitBy::Rows,
            vec![full, shard("s1", &[]), shard("s2", &[]), shard("s3", &[])],
        );
        let after: Vec<i64> = p.shards.iter().map(|s| s.2).collect();
        assert_eq!(after, vec![100, 100, 100, 100]);
        assert_eq!(p.steps.len(), 3, "one group per (from, to)");
        assert!(p.steps.iter().all(|s| s.from == "s0"));
    }

    #[test]
    fn balanced_shards_and_unsplittable_tenants_stay() {
        let p = plan(
            SplitBy::Rows,
            vec![
                shard("a", &[("1", 50), ("2", 50)]),
                shard("b", &[("3", 95)]),
            ],
        );
        assert!(p.steps.is_empty());
        // One tenant heavier than half the gap cannot narrow it.
        let p = plan(
            SplitBy::Rows,
            vec![shard("a", &[("big", 100)]), shard("b", &[])],
        );
        assert!(p.steps.is_empty());
        assert_eq!(p.shards[0], ("a".into(), 100, 100));
    }
}
