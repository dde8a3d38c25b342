//! What can go wrong talking to the catalog, worded for the operator who has to act on it.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::map::MapError;
use crate::text::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot connect to the catalog at {url}: {}", chain(.source))]
    Connect {
        /// With the password masked.
        url: String,
        source: tokio_postgres::Error,
    },
    #[error("invalid catalog url {url}: {}", chain(.source))]
    Url {
        url: String,
        source: tokio_postgres::Error,
    },
    #[error("catalog query failed while {what}: {}", chain(.source))]
    Query {
        what: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("the catalog did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the catalog closed the connection")]
    Closed,
    #[error(
        "the catalog is not initialised (no schema shardgate); run `shardctl init --catalog URL`"
    )]
    NotInitialised,
    #[error(
        "the catalog's schema is at version {found}, newer than this build knows ({known}); \
         upgrade shardgate/shardctl"
    )]
    SchemaTooNew { found: i32, known: i32 },
    #[error(
        "the catalog was initialised with {key} = {stored}; refusing to change it to \
         {requested} (existing placements depend on it)"
    )]
    SettingConflict {
        key: &'static str,
        stored: String,
        requested: String,
    },
    /// The catalog holds something this build cannot read; the message names the row.
    #[error("invalid catalog data: {0}")]
    InvalidData(String),
    #[error("the catalog's shard map is inconsistent: {0}")]
    Map(#[from] MapError),
    #[error("no shard {0:?} in the catalog")]
    UnknownShard(String),
    #[error("a shard named {0:?} already exists")]
    ShardExists(String),
    #[error("tenant {0} has no row in the catalog")]
    UnknownTenant(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl CatalogError {
    /// Wraps a query error, turning "the schema is missing" into [`NotInitialised`].
    ///
    /// [`NotInitialised`]: CatalogError::NotInitialised
    pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| match source.code() {
            Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME => {
                CatalogError::NotInitialised
            }
            _ => CatalogError::Query { what, source },
        }
    }

    /// Whether the connection itself failed (reconnecting might help), as opposed to
    /// the catalog answering with something wrong.
    pub fn is_connection(&self) -> bool {
        match self {
            CatalogError::Connect { .. } | CatalogError::Timeout(_) | CatalogError::Closed => true,
            CatalogError::Query { source, .. } => source.is_closed(),
            _ => false,
        }
    }
}

impl From<ParseError> for CatalogError {
    fn from(e: ParseError) -> Self {
        CatalogError::Invalid(e.to_string())
    }
}

/// An error with its causes: tokio-postgres's own message is only the kind ("db error",
/// "error connecting to server"), the useful part is in the source chain.
fn chain(e: &tokio_postgres::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The url with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_owned();
    }
    // key=value form: mask the value of password=
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://sg:s3cr@t@127.0.0.1:5440/shardgate?sslmode=disable"),
            "postgres://sg:***@127.0.0.1:5440/shardgate?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://sg@h/db"),
            "postgresql://sg@h/db",
            "nothing to hide"
        );
        assert_eq!(
            redact_url("host=h user=sg password=hunter2 dbname=x"),
            "host=h user=sg password=*** dbname=x"
        );
    }
}
