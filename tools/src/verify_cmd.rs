//! `shardctl verify`: one tenant's rows on two shards, compared table by table with the row
//! count and order-independent checksum a move's own verify phase uses (DESIGN.md §6.6).
//! For checking a copy kept with `--keep-source`, a restore, or a move's result by hand.
//!
//! Its failures reuse the move's `E_*` codes and exit statuses ([`MoveError`]): a
//! difference is `E_VERIFY_MISMATCH` (13), an unknown shard or tenant spelling `E_INVALID`
//! (2), the catalog `E_CATALOG` (3), a shard `E_SHARD` (4).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shardgate_catalog::TenantKey;
use shardgate_catalog::db;

use crate::catalog_cmd::Report;
use crate::move_cmd::MoveError;
use crate::move_cmd::shard::{Shard, Table};

/// What `shardctl verify` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    pub tenant: String,
    /// Exactly two shard names (or ids).
    pub shards: Vec<String>,
    pub key_column: String,
}

/// One table's tenant rows on each side: (rows, checksum), or `None` where the table does
/// not exist on that shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    pub table: String,
    pub sides: [Option<(i64, String)>; 2],
}

impl TableCheck {
    pub fn equal(&self) -> bool {
        self.sides[0].is_some() && self.sides[0] == self.sides[1]
    }
}

/// The comparison, equal or not; the caller turns a difference into `E_VERIFY_MISMATCH`
/// after printing it, so the operator sees which tables differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The tenant's canonical text.
    pub tenant: String,
    /// The two shards' names, in the order asked.
    pub shards: [String; 2],
    pub tables: Vec<TableCheck>,
}

impl Verified {
    pub fn equal(&self) -> bool {
        self.tables.iter().all(TableCheck::equal)
    }

    /// `Err(VerifyMismatch)` naming the differing tables, if any differ.
    pub fn mismatch(&self) -> Result<(), MoveError> {
        let differing: Vec<&str> = self
            .tables
            .iter()
            .filter(|t| !t.equal())
            .map(|t| t.table.as_str())
            .collect();
        match differing.as_slice() {
            [] => Ok(()),
            tables => Err(MoveError::VerifyMismatch(format!(
                "tenant {} differs between {} and {} in {}",
                self.tenant,
                self.shards[0],
                self.shards[1],
                tables.join(", ")
            ))),
        }
    }
}

/// `shardctl verify --tenant ID --shard A --shard B`.
pub async fn verify(catalog_url: &str, req: &VerifyRequest) -> Result<Verified, MoveError> {
    let [a, b] = req.shards.as_slice() else {
        return Err(MoveError::Invalid(format!(
            "verify compares two shards: give --shard exactly twice (got {})",
            req.shards.len()
        )));
    };
    let mut catalog = db::connect(catalog_url).await?;
    let key = db::load_settings(&catalog)
        .await?
        .key_type
        .parse(&req.tenant)?;
    let map = db::load_map(&mut catalog).await?;
    let mut shards = Vec::with_capacity(2);
    for name in [a, b] {
        let id = crate::move_cmd::resolve_shard(&catalog, name).await?;
        let info = map
            .shard(id)
            .ok_or_else(|| MoveError::Invalid(format!("no shard id {id} in the catalog")))?;
        shards.push((id, info.name.clone(), info.url.clone()));
    }
    if shards[0].0 == shards[1].0 {
        return Err(MoveError::Invalid(format!(
            "--shard {a} and --shard {b} are the same shard; verify compares two"
        )));
    }
    let mut connected = Vec::with_capacity(2);
    for (_, name, url) in &shards {
        connected.push(Shard::connect(name, url).await?);
    }
    let tables = compare(&connected, &req.key_column, &key).await?;
    Ok(Verified {
        tenant: key.to_string(),
        shards: [shards[0].1.clone(), shards[1].1.clone()],
        tables,
    })
}

/// Every table that has `key_column` on either shard, by name, with its side's checksum.
async fn compare(
    shards: &[Shard],
    key_column: &str,
    key: &TenantKey,
) -> Result<Vec<TableCheck>, MoveError> {
    let mut by_name: BTreeMap<String, [Option<Table>; 2]> = BTreeMap::new();
    for (side, shard) in shards.iter().enumerate() {
        for t in shard.sharded_tables(key_column).await? {
            let name = t.display_name();
            by_name.entry(name).or_default()[side] = Some(t);
        }
    }
    if by_name.is_empty() {
        return Err(MoveError::SchemaMismatch(format!(
            "neither {} nor {} has a table with column {key_column}; nothing to compare",
            shards[0].name, shards[1].name
        )));
    }
    let mut out = Vec::with_capacity(by_name.len());
    for (table, sides) in by_name {
        let mut sums = [None, None];
        for (side, t) in sides.iter().enumerate() {
            if let Some(t) = t {
                sums[side] = Some(
                    shards[side]
                        .checksum(t, key_column, std::slice::from_ref(key))
                        .await?,
                );
            }
        }
        out.push(TableCheck { table, sides: sums });
    }
    Ok(out)
}

impl Report for Verified {
    fn text(&self) -> String {
        let differing = self.tables.iter().filter(|t| !t.equal()).count();
        let [a, b] = &self.shards;
        let mut out = match differing {
            0 => format!(
                "tenant {} is equal on {a} and {b} ({} tables)",
                self.tenant,
                self.tables.len()
            ),
            n => format!(
                "tenant {} DIFFERS on {a} and {b}: {n} of {} tables",
                self.tenant,
                self.tables.len()
            ),
        };
        for t in &self.tables {
            let side = |s: &Option<(i64, String)>| match s {
                Some((rows, sum)) => format!("{rows} rows (checksum {sum})"),
                None => "no such table".to_owned(),
            };
            out.push_str(&match t.equal() {
                true => format!("\n  {}: {} on both", t.table, side(&t.sides[0])),
                false => format!(
                    "\n  {}: differs: {a} {}, {b} {}",
                    t.table,
                    side(&t.sides[0]),
                    side(&t.sides[1])
                ),
            });
        }
        out
    }

    fn json(&self) -> Value {
        let side = |shard: &str, s: &Option<(i64, String)>| match s {
            Some((rows, sum)) => json!({"shard": shard, "rows": rows, "checksum": sum}),
            None => json!({"shard": shard, "missing": true}),
        };
        json!({
            "tenant": self.tenant,
            "shards": self.shards,
            "equal": self.equal(),
            "tables": self.tables.iter().map(|t| json!({
                "table": t.table,
                "equal": t.equal(),
                "sides": [side(&self.shards[0], &t.sides[0]), side(&self.shards[1], &t.sides[1])],
            })).collect::<Vec<_>>(),
        })
    }
}

/// A failed verify as `--format json` prints it on stdout (stderr gets the text).
pub fn failure_json(e: &MoveError) -> Value {
    json!({"error": e.code(), "message": e.to_string(), "exit_code": e.exit_code()})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog_cmd::Format;

    fn verified(b_rows: i64, b_missing: bool) -> Verified {
        let b = (!b_missing).then(|| (b_rows, "77".to_owned()));
        Verified {
            tenant: "42".into(),
            shards: ["s0".into(), "s1".into()],
            tables: vec![
                TableCheck {
                    table: "public.items".into(),
                    sides: [Some((3, "9".into())), Some((3, "9".into()))],
                },
                TableCheck {
                    table: "public.orders".into(),
                    sides: [Some((10, "77".into())), b],
                },
            ],
        }
    }

    #[test]
    fn equal_tables_verify_and_say_so() {
        let v = verified(10, false);
        assert!(v.equal());
        assert!(v.mismatch().is_ok());
        let text = v.render(Format::Text);
        assert!(
            text.starts_with("tenant 42 is equal on s0 and s1 (2 tables)"),
            "{text}"
        );
        assert!(text.contains("public.orders: 10 rows (checksum 77) on both"));
    }

    #[test]
    fn a_difference_or_a_missing_table_is_a_verify_mismatch() {
        for v in [verified(11, false), verified(0, true)] {
            assert!(!v.equal());
            let e = v.mismatch().unwrap_err();
            assert_eq!((e.code(), e.exit_code()), ("E_VERIFY_MISMATCH", 13));
            assert_eq!(
                e.to_string(),
                "tenant 42 differs between s0 and s1 in public.orders"
            );
            let j: Value = serde_json::from_str(&v.render(Format::Json)).unwrap();
            assert_eq!(j["equal"], false);
            assert_eq!(j["tables"][0]["equal"], true);
            assert_eq!(j["tables"][1]["equal"], false);
        }
        let text = verified(0, true).render(Format::Text);
        assert!(
            text.contains("public.orders: differs: s0 10 rows (checksum 77), s1 no such table"),
            "{text}"
        );
    }
}
