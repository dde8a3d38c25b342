//! `shardctl move`: moving one tenant's rows to another shard while clients keep writing
//! through the proxies (DESIGN.md §6), and `shardctl jobs`.
//!
//! - [`run`], [`resume`], [`abort`]: the entry points, each returning a [`Report`];
//! - `engine`: the phases, persisted in `shardgate.jobs` so a killed run can be resumed;
//! - [`shard`]: the SQL the move runs on the source and target shards;
//! - [`jobs`]: `shardctl jobs`.

mod decoding;
mod engine;
mod error;
pub mod jobs;
pub mod shard;
mod teardown;
mod verify;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub use engine::{abort, resume, resume_stopping_after, run, run_stopping_after};
pub use error::MoveError;

use crate::catalog_cmd::Report;

/// The key column the move looks for on the shards, when the caller does not say.
pub const DEFAULT_KEY_COLUMN: &str = "tenant_id";
/// Default `--max-lag`: the gate is shut only once the copy is this close behind.
pub const DEFAULT_MAX_LAG: u64 = 1024 * 1024;
/// Default `--gate-timeout`: below the proxies' `gate_timeout_ms` (10 s) so that a move
/// that cannot finish un-gates before any held client gets SG005.
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `shardctl move` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveRequest {
    /// One tenant, or a group (a split's) that moves under one gate.
    pub tenants: Vec<String>,
    /// Target shard name (or id).
    pub to: String,
    pub keep_source: bool,
    /// Bytes of replication lag under which the gate may shut.
    pub max_lag: u64,
    /// Longest the tenant may stay gated; past it the move rolls back (E_GATE_TIMEOUT).
    pub gate_timeout: Duration,
    pub dry_run: bool,
    pub key_column: String,
}

impl MoveRequest {
    pub fn new(tenant: impl Into<String>, to: impl Into<String>) -> Self {
        MoveRequest {
            tenants: vec![tenant.into()],
            to: to.into(),
            keep_source: false,
            max_lag: DEFAULT_MAX_LAG,
            gate_timeout: DEFAULT_GATE_TIMEOUT,
            dry_run: false,
            key_column: DEFAULT_KEY_COLUMN.into(),
        }
    }
}

/// The id of shard `name` (or id). One the catalog does not know is a wrong argument
/// (E_INVALID), not a catalog fault; `verify`, `split` and `rebalance` resolve alike.
pub async fn resolve_shard(catalog: &tokio_postgres::Client, name: &str) -> Result<u32, MoveError> {
    shardgate_catalog::db::resolve_shard(catalog, &shardgate_catalog::db::ShardRef::from(name))
        .await
        .map_err(|e| match e {
            shardgate_catalog::CatalogError::UnknownShard(_) => MoveError::Invalid(e.to_string()),
            e => e.into(),
        })
}

/// Extra acknowledgement of the gate, asked with the map version that gated the tenant;
/// the gate waits until it answers true (as well as the proxies' heartbeats).
pub type GateAck = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;
/// Where progress goes (the binary prints it; tests may ignore it).
pub type ProgressSink = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How the caller follows and takes part in a move.
#[derive(Clone, Default)]
pub struct Hooks {
    pub progress: Option<ProgressSink>,
    /// For proxies that do not heartbeat into the catalog (tests: the admin console).
    pub gate_ack: Option<GateAck>,
}

impl Hooks {
    fn emit(&self, p: Progress) {
        if let Some(sink) = &self.progress {
            sink(&p);
        }
    }
}

/// The phases of DESIGN.md §6, as stored in `jobs.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Plan,
    Copy,
    CatchUp,
    Gate,
    FinalCatchUp,
    Verify,
    Flip,
    Cleanup,
    Done,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Plan,
        Phase::Copy,
        Phase::CatchUp,
        Phase::Gate,
        Phase::FinalCatchUp,
        Phase::Verify,
        Phase::Flip,
        Phase::Cleanup,
        Phase::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Plan => "plan",
            Phase::Copy => "copy",
            Phase::CatchUp => "catch-up",
            Phase::Gate => "gate",
            Phase::FinalCatchUp => "final-catch-up",
            Phase::Verify => "verify",
            Phase::Flip => "flip",
            Phase::Cleanup => "cleanup",
            Phase::Done => "done",
        }
    }

    /// Whether the tenant already lives on the target in this phase: past it, nothing
    /// can be rolled back, only moved back.
    pub fn flipped(self) -> bool {
        self >= Phase::Cleanup
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown move phase {s:?}"))
    }
}

/// One line of progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Phase {
        job: i64,
        phase: Phase,
    },
    Copied {
        rows: i64,
        tables_ready: i64,
        tables: i64,
    },
    Lag {
        bytes: i64,
    },
    GateHeld(Duration),
    Deleted {
        table: String,
        rows: u64,
    },
    RolledBack {
        job: i64,
        reason: String,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Phase { job, phase } => write!(f, "job {job}: {phase}"),
            Progress::Copied {
                rows,
                tables_ready,
                tables,
            } => write!(
                f,
                "  copy: {rows} rows on the target, {tables_ready}/{tables} tables synced"
            ),
            Progress::Lag { bytes } => write!(f, "  lag: {bytes} bytes"),
            Progress::GateHeld(d) => write!(f, "  gate held {} ms", d.as_millis()),
            Progress::Deleted { table, rows } => {
                write!(f, "  deleted {rows} rows of {table} from the source")
            }
            Progress::RolledBack { job, reason } => {
                write!(
                    f,
                    "job {job}: rolled back ({reason}); the source is untouched"
                )
            }
        }
    }
}

/// What a job persists as its spec: everything a resume needs, none of it re-derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The tenants' canonical texts: one, or a group that moves under one gate.
    pub tenants: Vec<String>,
    pub from: u32,
    pub from_name: String,
    pub to: u32,
    pub to_name: String,
    pub keep_source: bool,
    pub max_lag: u64,
    pub gate_timeout: Duration,
    pub key_column: String,
}

impl Spec {
    /// The tenants for people: `42`, or `3 tenants (1, 2, 3)`.
    pub fn label(&self) -> String {
        match self.tenants.as_slice() {
            [one] => one.clone(),
            many if many.len() <= 5 => format!("{} tenants ({})", many.len(), many.join(", ")),
            many => format!("{} tenants ({}, …)", many.len(), many[..5].join(", ")),
        }
    }

    /// The tenant of a one-tenant move (events name it).
    pub fn single(&self) -> Option<&str> {
        match self.tenants.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Also names a one-tenant move's tenant as `tenant` (what `shardctl jobs` readers and
    /// jobs written before group moves have).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "tenants": self.tenants,
            "from": self.from_name,
            "from_id": self.from,
            "to": self.to_name,
            "to_id": self.to,
            "keep_source": self.keep_source,
            "max_lag": self.max_lag,
            "gate_timeout": self.gate_timeout.as_millis() as u64,
            "key_column": self.key_column,
        });
        if let Some(one) = self.single() {
            v["tenant"] = one.into();
        }
        v
    }

    pub fn from_json(text: &str) -> Result<Spec, MoveError> {
        let bad = |what: &str| MoveError::Invalid(format!("job spec has no valid {what}: {text}"));
        let v: Value = serde_json::from_str(text).map_err(|_| bad("JSON"))?;
        let s = |k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| bad(k));
        let n = |k: &str| v[k].as_u64().ok_or_else(|| bad(k));
        let tenants = match v["tenants"].as_array() {
            Some(list) => list
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| bad("tenants"))?,
            // Jobs written before group moves.
            None => vec![s("tenant")?],
        };
        Ok(Spec {
            tenants,
            from: n("from_id")? as u32,
            from_name: s("from")?,
            to: n("to_id")? as u32,
            to_name: s("to")?,
            keep_source: v["keep_source"]
                .as_bool()
                .ok_or_else(|| bad("keep_source"))?,
            max_lag: n("max_lag")?,
            gate_timeout: Duration::from_millis(n("gate_timeout")?),
            key_column: s("key_column")?,
        })
    }
}

/// What `--dry-run` prints, and the first half of a move's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub spec: Spec,
    /// (table, rows of the tenant on the source).
    pub tables: Vec<(String, i64)>,
    pub map_version: u64,
}

/// What a move did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveOutcome {
    Planned(Plan),
    Moved(Moved),
    Aborted { job: i64, tenant: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub job: i64,
    pub plan: Plan,
    /// From the gate's catalog commit to the flip's.
    pub gate_hold: Duration,
    /// Rows deleted from the source (0 with --keep-source).
    pub deleted: u64,
}

impl Report for MoveOutcome {
    fn text(&self) -> String {
        match self {
            MoveOutcome::Planned(p) => {
                let s = &p.spec;
                let mut out = format!(
                    "plan: tenant {} from {} to {} (map version {}), max lag {} bytes, \
                     gate timeout {} ms{}\n",
                    s.label(),
                    s.from_name,
                    s.to_name,
                    p.map_version,
                    s.max_lag,
                    s.gate_timeout.as_millis(),
                    if s.keep_source {
                        ", keeping the source rows"
                    } else {
                        ""
                    }
                );
                for (t, rows) in &p.tables {
                    out.push_str(&format!("  {t}: {rows} rows\n"));
                }
                out.push_str("dry run: nothing changed");
                out
            }
            MoveOutcome::Moved(m) => format!(
                "job {}: tenant {} moved from {} to {}; gate held {} ms; {} source rows {}",
                m.job,
                m.plan.spec.label(),
                m.plan.spec.from_name,
                m.plan.spec.to_name,
                m.gate_hold.as_millis(),
                m.deleted,
                if m.plan.spec.keep_source {
                    "deleted (kept, fenced)"
                } else {
                    "deleted"
                }
            ),
            MoveOutcome::Aborted { job, tenant } => format!(
                "job {job} aborted: tenant {tenant} is active on its source, the copy is gone"
            ),
        }
    }

    fn json(&self) -> Value {
        match self {
            MoveOutcome::Planned(p) => json!({
                "dry_run": true,
                "spec": p.spec.to_json(),
                "tables": p.tables.iter().map(|(t, n)| json!({"table": t, "rows": n}))
                    .collect::<Vec<_>>(),
                "map_version": p.map_version,
            }),
            MoveOutcome::Moved(m) => json!({
                "job": m.job,
                "spec": m.plan.spec.to_json(),
                "tables": m.plan.tables.iter().map(|(t, n)| json!({"table": t, "rows": n}))
                    .collect::<Vec<_>>(),
                "gate_hold_ms": m.gate_hold.as_millis() as u64,
                "deleted": m.deleted,
                "state": "done",
            }),
            MoveOutcome::Aborted { job, tenant } => json!({
                "job": job, "tenant": tenant, "state": "aborted",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_and_order() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
        }
        assert!(!Phase::Flip.flipped(), "a failed flip has not happened");
        assert!(Phase::Cleanup.flipped());
        assert!(Phase::Gate < Phase::Verify);
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = Spec {
            tenants: vec!["42".into(), "7".into()],
            from: 1,
            from_name: "s1".into(),
            to: 2,
            to_name: "s2".into(),
            keep_source: true,
            max_lag: 1000,
            gate_timeout: Duration::from_millis(2500),
            key_column: "tenant_id".into(),
        };
        let text = spec.to_json().to_string();
        assert_eq!(Spec::from_json(&text).unwrap(), spec);
        let mut single = spec.clone();
        single.tenants = vec!["42".into()];
        let mut old = single.to_json();
        assert_eq!(old["tenant"], "42");
        old.as_object_mut().unwrap().remove("tenants");
        assert_eq!(Spec::from_json(&old.to_string()).unwrap(), single);
        assert_eq!(single.label(), "42");
        assert_eq!(spec.label(), "2 tenants (42, 7)");
        assert!(matches!(
            Spec::from_json("{\"tenant\": 1}"),
            Err(MoveError::Invalid(_))
        ));
    }
}
