//! Pure rendering of the files a cluster is configured with, so the choices are unit-tested
//! without starting Postgres.

use std::fmt::Write as _;
use std::path::Path;

/// How TCP clients on 127.0.0.1 authenticate (`pg_hba.conf` method and `initdb --auth-host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostAuth {
    Trust,
    Md5,
    #[default]
    ScramSha256,
}

impl HostAuth {
    /// The spelling Postgres uses in `pg_hba.conf`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostAuth::Trust => "trust",
            HostAuth::Md5 => "md5",
            HostAuth::ScramSha256 => "scram-sha-256",
        }
    }

    /// `password_encryption` must match the method, or md5 logins find a SCRAM verifier
    /// and fail.
    pub fn password_encryption(self) -> &'static str {
        match self {
            HostAuth::Md5 => "md5",
            HostAuth::Trust | HostAuth::ScramSha256 => "scram-sha-256",
        }
    }
}

impl std::str::FromStr for HostAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "trust" => Ok(HostAuth::Trust),
            "md5" => Ok(HostAuth::Md5),
            "scram-sha-256" | "scram" => Ok(HostAuth::ScramSha256),
            other => Err(format!(
                "unknown auth method {other:?} (trust | md5 | scram-sha-256)"
            )),
        }
    }
}

/// Everything that goes into the cluster's own config include file.
#[derive(Debug, Clone)]
pub struct ServerSettings<'a> {
    pub port: u16,
    pub socket_dir: &'a Path,
    pub auth: HostAuth,
    /// fsync/full_page_writes/synchronous_commit off: a crash may lose data, tests don't care.
    pub unsafe_fast: bool,
    pub wal_logical: bool,
    pub extra: &'a [(String, String)],
}

/// Name of the file, inside the data dir, that holds our settings; `postgresql.conf`
/// includes it so the initdb defaults stay untouched and readable.
pub const INCLUDE_FILE: &str = "shardgate.conf";

/// The line appended to `postgresql.conf`; later settings win, so ours override initdb's.
pub const INCLUDE_LINE: &str = "include 'shardgate.conf'";

/// Quotes a GUC value; Postgres accepts quotes around every kind of value, so quoting
/// always avoids guessing which values need it.
pub fn quote_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

impl ServerSettings<'_> {
    pub fn render(&self) -> String {
        let mut pairs: Vec<(&str, String)> = vec![
            ("listen_addresses", "127.0.0.1".into()),
            ("port", self.port.to_string()),
            (
                "unix_socket_directories",
                self.socket_dir.display().to_string(),
            ),
            ("max_connections", "200".into()),
            ("shared_buffers", "32MB".into()),
            ("max_replication_slots", "20".into()),
            ("max_wal_senders", "20".into()),
            ("max_logical_replication_workers", "8".into()),
            (
                "password_encryption",
                self.auth.password_encryption().into(),
            ),
            (
                "wal_level",
                if self.wal_logical {
                    "logical"
                } else {
                    "replica"
                }
                .into(),
            ),
        ];
        let durability = if self.unsafe_fast { "off" } else { "on" };
        for key in ["fsync", "full_page_writes", "synchronous_commit"] {
            pairs.push((key, durability.into()));
        }
        let mut out = String::from("# Written by shardctl; rewritten on every start.\n");
        for (k, v) in pairs
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            let _ = writeln!(out, "{k} = {}", quote_value(v));
        }
        out
    }
}

/// Local (socket) connections are trusted because only the OS user running the cluster
/// can reach the socket dir; TCP uses the chosen method, replication included, so logical
/// replication between test clusters logs in the same way as ordinary clients.
pub fn render_hba(auth: HostAuth) -> String {
    let m = auth.as_str();
    format!(
        "# Written by shardctl; rewritten on every start.\n\
         local all all trust\n\
         local replication all trust\n\
         host all all 127.0.0.1/32 {m}\n\
         host replication all 127.0.0.1/32 {m}\n"
    )
}

/// Reads `port = 'N'` back from a rendered include file, so a restarted cluster keeps
/// its port and a stopped one can be found again by `dev down`.
pub fn parse_port(conf: &str) -> Option<u16> {
    conf.lines().rev().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        if k.trim() != "port" {
            return None;
        }
        v.trim().trim_matches('\'').parse().ok()
    })
}

/// Orders `/usr/lib/postgresql/<version>` directory names numerically ("9.6" < "15" < "16").
pub fn version_key(name: &str) -> Vec<u32> {
    name.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings<'a>(extra: &'a [(String, String)], fast: bool) -> ServerSettings<'a> {
        ServerSettings {
            port: 54321,
            socket_dir: Path::new("/tmp/s"),
            auth: HostAuth::Md5,
            unsafe_fast: fast,
            wal_logical: true,
            extra,
        }
    }

    #[test]
    fn conf_has_port_socket_and_durability_switches() {
        let text = settings(&[], true).render();
        assert!(text.contains("port = '54321'\n"), "{text}");
        assert!(text.contains("unix_socket_directories = '/tmp/s'\n"));
        assert!(text.contains("listen_addresses = '127.0.0.1'\n"));
        assert!(text.contains("fsync = 'off'\n"));
        assert!(text.contains("synchronous_commit = 'off'\n"));
        assert!(text.contains("wal_level = 'logical'\n"));
        assert!(text.contains("password_encryption = 'md5'\n"));
        let safe = settings(&[], false).render();
        assert!(safe.contains("fsync = 'on'\n"));
        assert!(safe.contains("full_page_writes = 'on'\n"));
    }

    #[test]
    fn extra_settings_come_last_and_are_quoted() {
        let extra = vec![
            ("max_connections".to_string(), "50".to_string()),
            ("application_name".to_string(), "it's".to_string()),
        ];
        let text = settings(&extra, true).render();
        let default_at = text.find("max_connections = '200'").unwrap();
        let extra_at = text.find("max_connections = '50'").unwrap();
        assert!(extra_at > default_at, "extra must override: {text}");
        assert!(text.contains("application_name = 'it''s'\n"));
    }

    #[test]
    fn port_round_trips_through_the_rendered_file() {
        assert_eq!(parse_port(&settings(&[], true).render()), Some(54321));
        let extra = vec![("port".to_string(), "6000".to_string())];
        assert_eq!(parse_port(&settings(&extra, true).render()), Some(6000));
        assert_eq!(parse_port("listen_addresses = '*'\n"), None);
    }

    #[test]
    fn hba_uses_the_method_for_tcp_only() {
        let hba = render_hba(HostAuth::ScramSha256);
        assert!(hba.contains("host all all 127.0.0.1/32 scram-sha-256\n"));
        assert!(hba.contains("host replication all 127.0.0.1/32 scram-sha-256\n"));
        assert!(hba.contains("local all all trust\n"));
        assert!(!render_hba(HostAuth::Trust).contains("scram"));
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec!["16", "9.6", "15", "10"];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v, ["9.6", "10", "15", "16"]);
    }

    #[test]
    fn auth_parses_from_config_spelling() {
        assert_eq!("md5".parse::<HostAuth>(), Ok(HostAuth::Md5));
        assert_eq!(
            "scram-sha-256".parse::<HostAuth>(),
            Ok(HostAuth::ScramSha256)
        );
        assert!("password".parse::<HostAuth>().is_err());
    }
}
