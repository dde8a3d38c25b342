//! `shardctl jobs [--all]`: the catalog's jobs, running ones by default.

use serde_json::{Value, json};
use shardgate_catalog::CatalogError;
use shardgate_catalog::db::{self, jobs::Job};

use crate::catalog_cmd::Report;

pub async fn list(catalog_url: &str, all: bool) -> Result<JobList, CatalogError> {
    let client = db::connect(catalog_url).await?;
    let jobs = db::jobs::list_jobs(&client, all).await?;
    Ok(JobList { all, jobs })
}

#[derive(Debug, Clone)]
pub struct JobList {
    pub all: bool,
    pub jobs: Vec<Job>,
}

impl Report for JobList {
    fn text(&self) -> String {
        if self.jobs.is_empty() {
            return match self.all {
                true => "no jobs".into(),
                false => "no running jobs (--all lists finished ones too)".into(),
            };
        }
        let mut out = format!(
            "{:>6}  {:<5}  {:<8}  {:<14}  {:<20}  {}\n",
            "JOB", "KIND", "STATE", "PHASE", "UPDATED", "SPEC / ERROR"
        );
        for j in &self.jobs {
            let what = match &j.error {
                Some(e) => format!("{}  error: {e}", j.spec),
                None => j.spec.clone(),
            };
            out.push_str(&format!(
                "{:>6}  {:<5}  {:<8}  {:<14}  {:<20}  {what}\n",
                j.id, j.kind, j.state, j.phase, j.updated_at
            ));
        }
        out.pop();
        out
    }

    fn json(&self) -> Value {
        let jobs: Vec<Value> = self
            .jobs
            .iter()
            .map(|j| {
                json!({
                    "job": j.id,
                    "kind": j.kind,
                    "state": j.state.as_str(),
                    "phase": j.phase,
                    "spec": serde_json::from_str::<Value>(&j.spec).unwrap_or(Value::Null),
                    "error": j.error,
                    "started_at": j.started_at,
                    "updated_at": j.updated_at,
                })
            })
            .collect();
        json!({ "jobs": jobs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog_cmd::Format;
    use shardgate_catalog::db::jobs::JobState;

    #[test]
    fn job_lists_render_both_ways() {
        let list = JobList {
            all: true,
            jobs: vec![Job {
                id: 7,
                kind: "move".into(),
                spec: "{\"tenant\": \"42\"}".into(),
                phase: "copy".into(),
                state: JobState::Failed,
                error: Some("E_GATE_TIMEOUT: late".into()),
                started_at: "2025-01-01T00:00:00Z".into(),
                updated_at: "2025-01-01T00:00:01Z".into(),
            }],
        };
        let text = list.render(Format::Text);
        assert!(
            text.contains("failed") && text.contains("E_GATE_TIMEOUT"),
            "{text}"
        );
        let v: Value = serde_json::from_str(&list.render(Format::Json)).unwrap();
        assert_eq!(v["jobs"][0]["spec"]["tenant"], "42");
        assert_eq!(v["jobs"][0]["state"], "failed");
    }
}
