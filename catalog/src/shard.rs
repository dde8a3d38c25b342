//! One shard: a Postgres database addressed by a `postgres://` URL.

use serde::Deserialize;

/// A shard as configured (`[[shards]]`) or read from the catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSpec {
    pub id: u32,
    pub name: String,
    pub url: String,
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
}

fn default_pool_size() -> u32 {
    20
}

/// Where and as whom the proxy logs in to a shard, decoded from its URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

impl std::fmt::Debug for Endpoint {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("url must start with postgres:// or postgresql://")]
    Scheme,
    #[error("url has no user (postgres://USER@host/db)")]
    NoUser,
    #[error("url has an invalid port {0:?}")]
    Port(String),
    #[error("url has invalid percent-encoding")]
    Encoding,
}

impl ShardSpec {
    pub fn endpoint(&self) -> Result<Endpoint, EndpointError> {
        Endpoint::parse(&self.url)
    }
}

impl Endpoint {
    /// Parses `postgres://user[:password]@host[:port][/database][?query]`.
    /// A missing port is 5432, a missing database is the user name (libpq's rule);
    /// the query string is ignored.
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or(EndpointError::Scheme)?;
        let rest = rest.split('?').next().unwrap_or_default();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = authority.rsplit_once('@').ok_or(EndpointError::NoUser)?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (decode(u)?, Some(decode(p)?)),
            None => (decode(userinfo)?, None),
        };
        if user.is_empty() {
            return Err(EndpointError::NoUser);
        }
        let (host, port) = split_host_port(hostport)?;
        let database = if path.is_empty() {
            user.clone()
        } else {
            decode(path)?
        };
        Ok(Self {
            host: if host.is_empty() {
                "localhost".into()
            } else {
                host
            },
            port,
            user,
            password,
            database,
        })
    }

    /// `host:port` as a socket address string (IPv6 hosts bracketed).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), EndpointError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or(EndpointError::Port(hostport.into()))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => 5432,
        Some(p) => p.parse().map_err(|_| EndpointError::Port(p.into()))?,
    };
    Ok((decode(host)?, port))
}

fn decode(s: &str) -> Result<String, EndpointError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(EndpointError::Encoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| EndpointError::Encoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| EndpointError::Encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let e = Endpoint::parse("postgres://app:s%40cret@127.0.0.1:5433/appdb?sslmode=disable")
            .unwrap();
        assert_eq!(e.host, "127.0.0.1");
        assert_eq!(e.port, 5433);
        assert_eq!(e.user, "app");
        assert_eq!(e.password.as_deref(), Some("s@cret"));
        assert_eq!(e.database, "appdb");
        assert_eq!(e.addr(), "127.0.0.1:5433");
        assert!(!format!("{e:?}").contains("cret"));
    }

    #[test]
    fn defaults_and_errors() {
        let e = Endpoint::parse("postgresql://bob@[::1]").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.database.as_str()),
            ("::1", 5432, "bob")
        );
        assert_eq!(e.addr(), "[::1]:5432");
        assert_eq!(Endpoint::parse("mysql://a@b"), Err(EndpointError::Scheme));
        assert_eq!(
            Endpoint::parse("postgres://host/db"),
            Err(EndpointError::NoUser)
        );
        assert!(matches!(
            Endpoint::parse("postgres://a@h:99999/d"),
            Err(EndpointError::Port(_))
        ));
    }
}
