//! `shardctl shard list`, `shardctl place` and `shardctl tenant add`: shard capacity and the
//! placement of new tenants (DESIGN.md §5). `place` and `tenant add` fail with an `E_*`
//! code and an exit code a script can branch on; [`finish`] prints either outcome.

use std::process::ExitCode;

use serde_json::{Value, json};
use shardgate_catalog::db::{self, AddedTenant, PlaceError, ShardChoice, ShardLoad};
use shardgate_catalog::{CatalogError, redact_url};

use crate::catalog_cmd::{Format, Report};

/// Exit codes of `place` and `tenant add`.
pub mod exit {
    pub const PLACED: u8 = 0;
    /// Every active shard is at its capacity_hint.
    pub const NO_CAPACITY: u8 = 1;
    /// The shard named with `--shard` / `--preferred-shard` is missing, full or not active.
    pub const NAMED_SHARD: u8 = 2;
    /// No shard is active.
    pub const NO_ACTIVE_SHARD: u8 = 3;
    /// Bad arguments, the tenant already exists, or the catalog failed.
    pub const USAGE: u8 = 4;
}

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  placed
  1  E_NO_CAPACITY: every active shard is at its capacity_hint
  2  E_SHARD_NOT_FOUND, or E_NO_CAPACITY for the named shard (full or not active);
     never placed elsewhere
  3  E_NO_ACTIVE_SHARD: no shard is active
  4  argument or connection error (E_INVALID_ARGUMENT, E_TENANT_EXISTS, E_CATALOG)
Errors print their E_* code first on stderr; with --format json stdout also gets
{\"error\": CODE, \"message\": ..., \"exit_code\": N}.";

pub fn exit_code(e: &PlaceError) -> u8 {
    match e {
        PlaceError::AllFull { .. } => exit::NO_CAPACITY,
        _ if e.is_about_named_shard() => exit::NAMED_SHARD,
        PlaceError::NoActiveShard { .. } => exit::NO_ACTIVE_SHARD,
        _ => exit::USAGE,
    }
}

/// Prints what `place` or `tenant add` did, or why it failed, and gives the exit code.
pub fn finish(result: Result<impl Report, PlaceError>, format: Format) -> ExitCode {
    match result {
        Ok(report) => {
            println!("{}", report.render(format));
            ExitCode::from(exit::PLACED)
        }
        Err(e) => {
            let failure = Failure(&e);
            eprintln!("{}", failure.text());
            if format == Format::Json {
                println!("{}", failure.json());
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// A failed `place` or `tenant add`: the code first, then what to do about it.
pub struct Failure<'a>(pub &'a PlaceError);

impl Report for Failure<'_> {
    fn text(&self) -> String {
        format!("{}: {}", self.0.code(), self.0)
    }

    fn json(&self) -> Value {
        json!({
            "error": self.0.code(),
            "message": self.0.to_string(),
            "exit_code": exit_code(self.0),
        })
    }
}

/// `shardctl shard list`: every shard with its live tenants and free capacity.
pub async fn shard_list(url: &str) -> Result<ShardList, CatalogError> {
    let mut client = db::connect(url).await?;
    let load = db::fleet_load(&mut client).await?;
    Ok(ShardList {
        version: load.version,
        shards: load.shards,
    })
}

#[derive(Debug, Clone)]
pub struct ShardList {
    pub version: u64,
    pub shards: Vec<ShardLoad>,
}

impl Report for ShardList {
    fn text(&self) -> String {
        let dash = || "-".to_owned();
        let opt = |v: Option<String>| v.unwrap_or_else(dash);
        let mut rows = vec![
            [
                "ID", "NAME", "STATE", "POOL", "CAPACITY", "MAX_CONN", "REGION", "TENANTS", "FREE",
                "URL",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for s in &self.shards {
            let i = &s.shard.info;
            rows.push(vec![
                i.id.to_string(),
                i.name.clone(),
                i.state.to_string(),
                i.pool_size.to_string(),
                opt(i.capacity_hint.map(|v| v.to_string())),
                opt(s.shard.max_connections.map(|v| v.to_string())),
                opt(s.shard.region.clone()),
                s.tenants.to_string(),
                s.free()
                    .map_or_else(|| "unbounded".to_owned(), |v| v.to_string()),
                redact_url(&i.url),
            ]);
        }
        let mut out = table(&rows);
        out.push_str(&format!(
            "{} shards; map version {}",
            self.shards.len(),
            self.version
        ));
        out
    }

    fn json(&self) -> Value {
        let shards: Vec<Value> = self
            .shards
            .iter()
            .map(|s| {
                let i = &s.shard.info;
                json!({
                    "shard_id": i.id,
                    "name": i.name,
                    "state": i.state.as_str(),
                    "url": redact_url(&i.url),
                    "pool_size": i.pool_size,
                    "capacity_hint": i.capacity_hint,
                    "max_connections": s.shard.max_connections,
                    "region": s.shard.region,
                    "tenants": s.tenants,
                    "free": s.free(),
                })
            })
            .collect();
        json!({ "map_version": self.version, "shards": shards })
    }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `shardctl place`: the shard a new tenant would get now. Changes nothing.
pub async fn place(url: &str, preferred: Option<&str>) -> Result<Preview, PlaceError> {
    let mut client = db::connect(url).await?;
    let load = db::fleet_load(&mut client).await?;
    Ok(Preview {
        shard: db::choose(&load.shards, preferred)?,
        preferred: preferred.is_some(),
    })
}

#[derive(Debug, Clone)]
pub struct Preview {
    pub shard: ShardChoice,
    /// Whether the operator named the shard (it was checked, not chosen).
    pub preferred: bool,
}

impl Report for Preview {
    fn text(&self) -> String {
        let verb = if self.preferred {
            "the named shard has room"
        } else {
            "a new tenant would go to"
        };
        format!("{verb}: {}", describe(&self.shard, self.shard.tenants))
    }

    fn json(&self) -> Value {
        choice_json(&self.shard, self.shard.tenants)
    }
}

/// `shardctl tenant add ID [--shard NAME]`: places the tenant and records it. `id` is read
/// with the catalog's key type, and stored in its canonical spelling.
pub async fn tenant_add(
    url: &str,
    id: &str,
    shard: Option<&str>,
) -> Result<TenantAdded, PlaceError> {
    let mut client = db::connect(url).await?;
    let key_type = db::load_settings(&client).await?.key_type;
    let key = key_type.parse(id).map_err(CatalogError::from)?;
    let added = db::add_tenant(&mut client, &key, shard).await?;
    Ok(TenantAdded(added))
}

#[derive(Debug, Clone)]
pub struct TenantAdded(pub AddedTenant);

impl Report for TenantAdded {
    fn text(&self) -> String {
        let a = &self.0;
        format!(
            "tenant {} -> {}; map version {}",
            a.tenant,
            describe(&a.shard, a.shard.tenants + 1),
            a.version
        )
    }

    fn json(&self) -> Value {
        let a = &self.0;
        let mut v = choice_json(&a.shard, a.shard.tenants + 1);
        v["tenant"] = json!(a.tenant);
        v["map_version"] = json!(a.version);
        v
    }
}

/// `tenants`: the shard's live tenants as of the report (after the add, for `tenant add`).
fn describe(c: &ShardChoice, tenants: u64) -> String {
    let capacity = match c.capacity_hint {
        Some(hint) => format!(
            "capacity_hint {hint}, {} free",
            u64::from(hint).saturating_sub(tenants)
        ),
        None => "no capacity_hint (unbounded)".to_owned(),
    };
    format!(
        "shard {} (id {}), {tenants} live tenants, {capacity}",
        c.name, c.id
    )
}

fn choice_json(c: &ShardChoice, tenants: u64) -> Value {
    json!({
        "shard": c.name,
        "shard_id": c.id,
        "tenants": tenants,
        "capacity_hint": c.capacity_hint,
        "free": c.capacity_hint.map(|h| u64::from(h).saturating_sub(tenants)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_catalog::db::{ShardRow, choose};
    use shardgate_catalog::{ShardInfo, ShardState};

    fn load(id: u32, name: &str, hint: Option<u32>, tenants: u64) -> ShardLoad {
        ShardLoad {
            shard: ShardRow {
                info: ShardInfo {
                    id,
                    name: name.into(),
                    url: format!("postgres://sg:hunter2@10.0.0.{id}:5432/app"),
                    state: ShardState::Active,
                    pool_size: 20,
                    capacity_hint: hint,
                },
                max_connections: Some(500),
                region: None,
            },
            tenants,
        }
    }

    #[test]
    fn every_error_maps_to_its_documented_exit_code() {
        let full = [load(0, "s0", Some(1), 1)];
        let code = |preferred| exit_code(&choose(&full, preferred).unwrap_err());
        assert_eq!(code(None), exit::NO_CAPACITY);
        assert_eq!(code(Some("s0")), exit::NAMED_SHARD);
        assert_eq!(code(Some("nope")), exit::NAMED_SHARD);
        assert_eq!(
            exit_code(&choose(&[], None).unwrap_err()),
            exit::NO_ACTIVE_SHARD
        );
        let exists = PlaceError::TenantExists {
            tenant: "7".into(),
            shard: "s0".into(),
            state: "active".into(),
        };
        assert_eq!(exit_code(&exists), exit::USAGE);
        assert_eq!(
            exit_code(&CatalogError::Invalid("x".into()).into()),
            exit::USAGE
        );
        for n in 0..=4 {
            assert!(EXIT_CODES_HELP.contains(&format!("  {n}  ")), "{n}");
        }
    }

    #[test]
    fn failures_lead_with_their_code() {
        let err = choose(&[load(0, "s0", Some(2), 2)], Some("s0")).unwrap_err();
        let f = Failure(&err);
        assert!(
            f.text().starts_with("E_NO_CAPACITY: shard s0 is full"),
            "{}",
            f.text()
        );
        let v = f.json();
        assert_eq!(v["error"], "E_NO_CAPACITY");
        assert_eq!(v["exit_code"], 2);
    }

    #[test]
    fn shard_list_shows_counts_and_hides_passwords() {
        let list = ShardList {
            version: 9,
            shards: vec![load(0, "s0", Some(10), 3), load(1, "second", None, 12)],
        };
        let text = list.render(Format::Text);
        assert!(!text.contains("hunter2"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("ID  NAME    STATE   POOL  CAPACITY"),
            "{text}"
        );
        assert!(
            lines[1].contains(" 3 ") && lines[1].contains(" 7 "),
            "{text}"
        );
        assert!(lines[2].contains("unbounded"), "{text}");
        assert!(text.ends_with("2 shards; map version 9"), "{text}");
        let v: Value = serde_json::from_str(&list.render(Format::Json)).unwrap();
        assert_eq!(v["map_version"], 9);
        assert_eq!(v["shards"][0]["tenants"], 3);
        assert_eq!(v["shards"][0]["free"], 7);
        assert_eq!(v["shards"][1]["free"], Value::Null);
        assert_eq!(v["shards"][1]["capacity_hint"], Value::Null);
        assert_eq!(v["shards"][0]["url"], "postgres://sg:***@10.0.0.0:5432/app");
    }

    #[test]
    fn placement_reports_count_the_new_tenant_once_added() {
        let shard = choose(&[load(1, "s1", Some(10), 3)], None).unwrap();
        let preview = Preview {
            shard: shard.clone(),
            preferred: false,
        };
        assert_eq!(
            preview.json(),
            json!({"shard": "s1", "shard_id": 1, "tenants": 3, "capacity_hint": 10, "free": 7})
        );
        assert!(preview.text().contains("shard s1 (id 1), 3 live tenants"));
        let added = TenantAdded(AddedTenant {
            tenant: "42".into(),
            shard,
            version: 5,
        });
        let v = added.json();
        assert_eq!(
            (v["tenants"].clone(), v["free"].clone()),
            (json!(4), json!(6))
        );
        assert_eq!(
            (v["tenant"].clone(), v["map_version"].clone()),
            (json!("42"), json!(5))
        );
    }
}
