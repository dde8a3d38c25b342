//! What can stop a move, each with the `E_*` code and exit status the operator guide lists.

use shardgate_catalog::{CatalogError, ParseError};

use super::Phase;

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("shard {shard}: {what}: {detail}")]
    Shard {
        shard: String,
        what: &'static str,
        detail: String,
        /// The server's SQLSTATE, when the server answered.
        sqlstate: Option<String>,
    },
    /// The request cannot be carried out as asked (unknown tenant, same shard, a job
    /// already running, a target that already holds the tenant's rows).
    #[error("{0}")]
    Invalid(String),
    #[error(
        "shard {shard} has wal_level = {level}; a move needs wal_level = logical on the source \
         (set it and restart that shard)"
    )]
    WalLevel { shard: String, level: String },
    #[error("{0}")]
    SchemaMismatch(String),
    #[error("{0}")]
    GateTimeout(String),
    #[error("{0}")]
    VerifyMismatch(String),
    #[error("{0}")]
    PostFlipInconsistent(String),
    /// Test-only: the move was stopped on purpose right after `phase` (see
    /// [`run_stopping_after`](super::run_stopping_after)), leaving the job `running` and
    /// every object on the shards and in the catalog exactly as a SIGKILL there would.
    #[error("job {job} interrupted after its {phase} phase (test hook); the job is still running")]
    Interrupted { job: i64, phase: Phase },
}

impl From<ParseError> for MoveError {
    fn from(e: ParseError) -> Self {
        MoveError::Invalid(e.to_string())
    }
}

impl MoveError {
    pub(crate) fn shard(shard: &str, what: &'static str, e: tokio_postgres::Error) -> MoveError {
        let (detail, sqlstate) = match e.as_db_error() {
            Some(db) => (db.message().to_owned(), Some(db.code().code().to_owned())),
            None => {
                let mut text = e.to_string();
                if let Some(cause) = std::error::Error::source(&e) {
                    text = format!("{text}: {cause}");
                }
                (text, None)
            }
        };
        MoveError::Shard {
            shard: shard.to_owned(),
            what,
            detail,
            sqlstate,
        }
    }

    /// The `E_*` code printed before the message.
    pub fn code(&self) -> &'static str {
        match self {
            MoveError::Catalog(_) => "E_CATALOG",
            MoveError::Shard { .. } => "E_SHARD",
            MoveError::Invalid(_) => "E_INVALID",
            MoveError::WalLevel { .. } => "E_WAL_LEVEL",
            MoveError::SchemaMismatch(_) => "E_SCHEMA_MISMATCH",
            MoveError::GateTimeout(_) => "E_GATE_TIMEOUT",
            MoveError::VerifyMismatch(_) => "E_VERIFY_MISMATCH",
            MoveError::PostFlipInconsistent(_) => "E_POST_FLIP_INCONSISTENT",
            MoveError::Interrupted { .. } => "E_INTERRUPTED",
        }
    }

    /// `shardctl`'s exit status for this error (documented in the README).
    pub fn exit_code(&self) -> i32 {
        match self {
            MoveError::Invalid(_) => 2,
            MoveError::Catalog(_) => 3,
            MoveError::Shard { .. } => 4,
            MoveError::WalLevel { .. } => 10,
            MoveError::SchemaMismatch(_) => 11,
            MoveError::GateTimeout(_) => 12,
            MoveError::VerifyMismatch(_) => 13,
            MoveError::PostFlipInconsistent(_) => 14,
            MoveError::Interrupted { .. } => 15,
        }
    }

    /// The server's SQLSTATE of a shard error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            MoveError::Shard { sqlstate, .. } => sqlstate.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_exit_statuses_are_distinct() {
        let all = [
            MoveError::Invalid(String::new()),
            MoveError::Catalog(CatalogError::Closed),
            MoveError::Shard {
                shard: "s".into(),
                what: "x",
                detail: String::new(),
                sqlstate: None,
            },
            MoveError::WalLevel {
                shard: "s".into(),
                level: "replica".into(),
            },
            MoveError::SchemaMismatch(String::new()),
            MoveError::GateTimeout(String::new()),
            MoveError::VerifyMismatch(String::new()),
            MoveError::PostFlipInconsistent(String::new()),
            MoveError::Interrupted {
                job: 1,
                phase: Phase::Gate,
            },
        ];
        let mut codes: Vec<_> = all.iter().map(MoveError::code).collect();
        let mut exits: Vec<_> = all.iter().map(MoveError::exit_code).collect();
        codes.sort();
        codes.dedup();
        exits.sort();
        exits.dedup();
        assert_eq!(codes.len(), all.len());
        assert_eq!(exits.len(), all.len());
        assert!(
            exits.iter().all(|&e| e > 1),
            "1 is anyhow's generic failure"
        );
    }
}
