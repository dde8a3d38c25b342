//! Long-running operations (moves, later splits) persisted in `shardgate.jobs`, so that a
//! killed `shardctl` can be resumed from the phase it was in, and their history in
//! `shardgate.events`.
//!
//! The spec is stored as JSON but handled here as text: the catalog crate does not need to
//! know what a move's spec holds, only to keep it.

use std::fmt;
use std::str::FromStr;

use tokio_postgres::{Client, GenericClient, Row};

use crate::error::CatalogError;

/// Serialises job creation, so two `shardctl move` of one tenant cannot both start
/// ("SGJOBS").
const JOBS_LOCK: i64 = 0x5347_4A4F_4253;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Done,
    Failed,
    Aborted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Aborted => "aborted",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "running" => Ok(JobState::Running),
            "done" => Ok(JobState::Done),
            "failed" => Ok(JobState::Failed),
            "aborted" => Ok(JobState::Aborted),
            _ => Err(format!("unknown job state {s:?}")),
        }
    }
}

/// One row of `shardgate.jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    /// The spec as JSON text.
    pub spec: String,
    /// The phase running (or, once finished, the one it finished in).
    pub phase: String,
    pub state: JobState,
    pub error: Option<String>,
    /// Timestamps as the catalog prints them (ISO 8601 with offset).
    pub started_at: String,
    pub updated_at: String,
}

const COLUMNS: &str = "job_id, kind, spec::text, phase, state, error, \
     to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

fn job_row(r: &Row) -> Result<Job, CatalogError> {
    let state: String = r.get(4);
    let id: i64 = r.get(0);
    Ok(Job {
        id,
        kind: r.get(1),
        spec: r.get(2),
        phase: r.get(3),
        state: state
            .parse()
            .map_err(|e| CatalogError::InvalidData(format!("jobs row {id}: {e}")))?,
        error: r.get(5),
        started_at: r.get(6),
        updated_at: r.get(7),
    })
}

/// Creates a running job of `kind` for `tenants`, in `phase`; refused while another job of
/// any of them is running (its id is in the message, to resume or abort it).
pub async fn create_job(
    client: &mut Client,
    kind: &str,
    tenants: &[String],
    spec_json: &str,
    phase: &str,
) -> Result<i64, CatalogError> {
    let q = CatalogError::query;
    let tx = client
        .transaction()
        .await
        .map_err(q("starting create_job"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&JOBS_LOCK])
        .await
        .map_err(q("taking the jobs lock"))?;
    let busy = tx
        .query_opt(
            "SELECT job_id, t FROM shardgate.jobs, \
               jsonb_array_elements_text(coalesce(spec->'tenants', \
                                                  jsonb_build_array(spec->>'tenant'))) AS t \
             WHERE state = 'running' AND t = ANY ($1) LIMIT 1",
            &[&tenants],
        )
        .await
        .map_err(q("looking for running jobs"))?;
    if let Some(r) = busy {
        let other: i64 = r.get(0);
        let tenant: String = r.get(1);
        return Err(CatalogError::Invalid(format!(
            "tenant {tenant} already has running job {other}; resume it (--resume {other}) \
             or abort it (--abort {other})"
        )));
    }
    let id: i64 = tx
        .query_one(
            "INSERT INTO shardgate.jobs (kind, spec, phase, state) \
             VALUES ($1, $2::text::jsonb, $3, 'running') RETURNING job_id",
            &[&kind, &spec_json, &phase],
        )
        .await
        .map_err(q("inserting the job"))?
        .get(0);
    let single = match tenants {
        [one] => Some(one.as_str()),
        _ => None,
    };
    record_event(&tx, id, "job_started", single, spec_json).await?;
    tx.commit().await.map_err(q("committing create_job"))?;
    Ok(id)
}

/// Records that job `id` entered `phase`.
pub async fn set_phase(
    client: &impl GenericClient,
    id: i64,
    phase: &str,
) -> Result<(), CatalogError> {
    client
        .execute(
            "UPDATE shardgate.jobs SET phase = $2, updated_at = now() WHERE job_id = $1",
            &[&id, &phase],
        )
        .await
        .map_err(CatalogError::query("updating the job phase"))?;
    Ok(())
}

/// Ends job `id` in `state` (done, failed, aborted), with the error that ended it.
pub async fn finish_job(
    client: &impl GenericClient,
    id: i64,
    state: JobState,
    error: Option<&str>,
) -> Result<(), CatalogError> {
    client
        .execute(
            "UPDATE shardgate.jobs SET state = $2, error = $3, updated_at = now() \
             WHERE job_id = $1",
            &[&id, &state.as_str(), &error],
        )
        .await
        .map_err(CatalogError::query("finishing the job"))?;
    Ok(())
}

pub async fn get_job(client: &impl GenericClient, id: i64) -> Result<Job, CatalogError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM shardgate.jobs WHERE job_id = $1"),
            &[&id],
        )
        .await
        .map_err(CatalogError::query("reading the job"))?
        .ok_or_else(|| CatalogError::Invalid(format!("no job {id} in the catalog")))?;
    job_row(&row)
}

/// Running jobs, or every job when `all`, newest first.
pub async fn list_jobs(client: &impl GenericClient, all: bool) -> Result<Vec<Job>, CatalogError> {
    client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM shardgate.jobs \
                 WHERE $1 OR state = 'running' ORDER BY job_id DESC"
            ),
            &[&all],
        )
        .await
        .map_err(CatalogError::query("listing jobs"))?
        .iter()
        .map(job_row)
        .collect()
}

/// Appends an event of job `id`; `detail_json` is a JSON object as text.
pub async fn record_event(
    client: &impl GenericClient,
    id: i64,
    kind: &str,
    tenant: Option<&str>,
    detail_json: &str,
) -> Result<(), CatalogError> {
    client
        .execute(
            "INSERT INTO shardgate.events (kind, tenant_id, job_id, detail) \
             VALUES ($1, $2, $3, $4::text::jsonb)",
            &[&kind, &tenant, &id, &detail_json],
        )
        .await
        .map_err(CatalogError::query("recording the job event"))?;
    Ok(())
}

/// What a proxy's heartbeat says, for the gate's acknowledgement wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySeen {
    pub proxy_id: String,
    pub map_version_seen: u64,
    /// Open transactions of the tenant asked about.
    pub open_transactions: i64,
}

/// The live proxies (heartbeat younger than 5 s) that have not yet acknowledged map
/// `version` for `tenants`: they route on an older map, or still have work of one of the
/// tenants open. Empty means every live proxy holds the tenants' statements at its gate.
pub async fn proxies_not_acknowledging(
    client: &impl GenericClient,
    tenants: &[String],
    version: u64,
) -> Result<Vec<ProxySeen>, CatalogError> {
    let rows = client
        .query(
            "SELECT proxy_id, map_version_seen, open FROM ( \
               SELECT proxy_id, map_version_seen, \
                      coalesce((SELECT sum(value::bigint) FROM jsonb_each_text(inflight_json) \
                                WHERE key = ANY ($1)), 0)::bigint AS open \
               FROM shardgate.proxies \
               WHERE last_seen > now() - interval '5 seconds') p \
             WHERE map_version_seen < $2 OR open > 0 \
             ORDER BY proxy_id",
            &[&tenants, &(version as i64)],
        )
        .await
        .map_err(CatalogError::query("reading proxy heartbeats"))?;
    Ok(rows
        .iter()
        .map(|r| ProxySeen {
            proxy_id: r.get(0),
            map_version_seen: r.get::<_, i64>(1).max(0) as u64,
            open_transactions: r.get(2),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_round_trip() {
        for s in [
            JobState::Running,
            JobState::Done,
            JobState::Failed,
            JobState::Aborted,
        ] {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        assert!("paused".parse::<JobState>().is_err());
    }
}
