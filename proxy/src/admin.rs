//! The admin console: `psql "…/shardgate"` as an admin user (DESIGN.md §8), in the manner
//! of PgBouncer's. Simple queries only; each command answers with text columns.
//!
//! `SHOW MAP`, `SHOW SHARDS`, `SHOW TENANT <id>`, `SHOW POOLS`, `SHOW VERSION`, `SHOW HELP`.

use std::sync::Arc;

use bytes::BytesMut;
use shardgate_catalog::{KeyType, ShardMap, Strategy, redact_url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::Pool;
use crate::frontend::{ClientError, ClientStream};
use crate::wire::{self, PgError, tag};

/// What the console shows, taken at the moment of each command.
pub struct AdminView {
    pub map: Arc<ShardMap>,
    pub pools: Vec<(u32, Arc<Pool>)>,
    pub key_type: KeyType,
}

/// A command's answer.
#[derive(Debug, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
    pub tag: String,
}

const HELP: &str =
    "SHOW MAP | SHOW SHARDS | SHOW TENANT <id> | SHOW POOLS | SHOW VERSION | SHOW HELP";

/// Runs one console command.
pub fn execute(sql: &str, view: &AdminView) -> Result<ResultSet, PgError> {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    match upper.as_slice() {
        ["SHOW", "MAP"] | ["SHOW", "SHARDS"] => Ok(show_map(&view.map)),
        ["SHOW", "TENANT", _] => show_tenant(&view.map, view.key_type, &words[2]),
        ["SHOW", "POOLS"] => Ok(show_pools(&view.pools)),
        ["SHOW", "VERSION"] => Ok(one_value(
            "version",
            format!("shardgate {}", env!("CARGO_PKG_VERSION")),
        )),
        ["SHOW", "HELP"] => Ok(one_value("command", HELP.to_owned())),
        _ => Err(
            PgError::error("42601", format!("unknown admin command: {}", sql.trim()))
                .with_hint(HELP),
        ),
    }
}

fn one_value(column: &'static str, value: String) -> ResultSet {
    ResultSet {
        columns: vec![column],
        rows: vec![vec![Some(value)]],
        tag: "SHOW".into(),
    }
}

fn show_map(map: &ShardMap) -> ResultSet {
    let pinned = |id| map.tenants().filter(|(_, s, _)| *s == id).count();
    let vnodes = |id| map.ring().iter().filter(|(_, s)| *s == id).count();
    let rows = map
        .shards()
        .iter()
        .map(|s| {
            vec![
                Some(map.version().to_string()),
                Some(s.id.to_string()),
                Some(s.name.clone()),
                Some(s.state.to_string()),
                Some(redact_url(&s.url)),
                Some(s.pool_size.to_string()),
                s.capacity_hint.map(|c| c.to_string()),
                Some(vnodes(s.id).to_string()),
                Some(pinned(s.id).to_string()),
            ]
        })
        .collect::<Vec<_>>();
    ResultSet {
        columns: vec![
            "map_version",
            "shard_id",
            "name",
            "state",
            "url",
            "pool_size",
            "capacity_hint",
            "vnodes",
            "pinned_tenants",
        ],
        tag: format!("SHOW {}", rows.len()),
        rows,
    }
}

fn show_tenant(map: &ShardMap, key_type: KeyType, id: &str) -> Result<ResultSet, PgError> {
    let id = id.trim_matches('\'');
    let key = key_type
        .parse(id)
        .map_err(|e| PgError::error("22P02", format!("tenant id: {e}")))?;
    let (shard, state, placed_by) = match map.locate(&key) {
        Ok(p) => (
            Some(p.shard),
            Some(p.state.to_string()),
            if p.pinned { "catalog" } else { "ring" },
        ),
        Err(_) => (None, None, "unknown"),
    };
    let name = shard.and_then(|s| map.shard(s)).map(|s| s.name.clone());
    let strategy = match map.strategy() {
        Strategy::Hash => "hash",
        Strategy::Directory => "directory",
    };
    Ok(ResultSet {
        columns: vec![
            "tenant",
            "shard_id",
            "shard",
            "state",
            "placed_by",
            "strategy",
            "hash",
            "map_version",
        ],
        rows: vec![vec![
            Some(key.to_string()),
            shard.map(|s| s.to_string()),
            name,
            state,
            Some(placed_by.into()),
            Some(strategy.into()),
            Some(format!("{:016x}", key.hash())),
            Some(map.version().to_string()),
        ]],
        tag: "SHOW 1".into(),
    })
}

fn show_pools(pools: &[(u32, Arc<Pool>)]) -> ResultSet {
    let rows = pools
        .iter()
        .map(|(id, p)| {
            let st = p.stats();
            vec![
                Some(id.to_string()),
                Some(p.shard().to_owned()),
                Some(p.active_count().to_string()),
                Some(p.idle_count().to_string()),
                Some(p.waiting_count().to_string()),
                Some(p.size().to_string()),
                Some(st.connects.to_string()),
                Some(st.connect_errors.to_string()),
                Some(st.timeouts.to_string()),
            ]
        })
        .collect::<Vec<_>>();
    ResultSet {
        columns: vec![
            "shard_id",
            "shard",
            "sv_active",
            "sv_idle",
            "cl_waiting",
            "pool_size",
            "connects",
            "connect_errors",
            "wait_timeouts",
        ],
        tag: format!("SHOW {}", rows.len()),
        rows,
    }
}

fn encode(rs: &ResultSet, out: &mut BytesMut) {
    wire::encode_text_row_description(out, &rs.columns);
    for row in &rs.rows {
        let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
        wire::encode_data_row(out, &values);
    }
    wire::encode_command_complete(out, &rs.tag);
}

/// Serves an authenticated admin client until it leaves.
pub async fn serve(
    mut stream: ClientStream,
    mut buf: BytesMut,
    view: impl Fn() -> AdminView,
) -> Result<(), ClientError> {
    let mut out = BytesMut::new();
    wire::encode_auth_ok(&mut out);
    for (k, v) in [
        ("server_version", "15.0 (shardgate admin)"),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        wire::encode_parameter_status(&mut out, k, v);
    }
    wire::encode_backend_key(&mut out, 0, 0);
    wire::encode_ready_for_query(&mut out, b'I');
    stream.write_all(&out).await?;
    let mut skipping = false;
    loop {
        let frame = loop {
            if let Some(f) = wire::next_frame(&mut buf, 1 << 20)? {
                break f;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        out.clear();
        match frame.tag {
            tag::TERMINATE => return Ok(()),
            tag::QUERY => {
                let sql = String::from_utf8_lossy(wire::decode_query(frame.body())?).into_owned();
                match execute(&sql, &view()) {
                    Ok(rs) => encode(&rs, &mut out),
                    Err(e) => e.encode(&mut out),
                }
                wire::encode_ready_for_query(&mut out, b'I');
            }
            tag::SYNC => {
                skipping = false;
                wire::encode_ready_for_query(&mut out, b'I');
            }
            _ if skipping => continue,
            _ => {
                skipping = true;
                PgError::error("0A000", "the admin console takes simple queries only")
                    .with_hint(HELP)
                    .encode(&mut out);
            }
        }
        stream.write_all(&out).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use shardgate_catalog::{ShardInfo, ShardState, TenantKey, TenantState, build_ring};

    use super::*;

    fn view() -> AdminView {
        let shards = (0..2)
            .map(|id| ShardInfo {
                id,
                name: format!("s{id}"),
                url: format!("postgres://u:secret@h:1/d{id}"),
                state: ShardState::Active,
                pool_size: 5,
                capacity_hint: None,
            })
            .collect();
        let mut tenants = HashMap::new();
        tenants.insert(TenantKey::Int(7), (1, TenantState::Gated));
        let map =
            ShardMap::new(3, Strategy::Hash, shards, build_ring(&[0, 1], 4), tenants).unwrap();
        AdminView {
            map: Arc::new(map),
            pools: vec![],
            key_type: KeyType::Bigint,
        }
    }

    #[test]
    fn show_map_lists_shards_without_passwords() {
        let rs = execute("show map;", &view()).unwrap();
        assert_eq!(rs.rows.len(), 2);
        assert_eq!(rs.rows[1][2].as_deref(), Some("s1"));
        assert_eq!(
            rs.rows[1][8].as_deref(),
            Some("1"),
            "one pinned tenant on s1"
        );
        assert_eq!(rs.rows[0][0].as_deref(), Some("3"), "map version");
        assert!(
            rs.rows
                .iter()
                .flatten()
                .flatten()
                .all(|v| !v.contains("secret"))
        );
    }

    #[test]
    fn show_tenant_says_where_and_why() {
        let rs = execute("SHOW TENANT 7", &view()).unwrap();
        let row = &rs.rows[0];
        assert_eq!(row[2].as_deref(), Some("s1"));
        assert_eq!(row[3].as_deref(), Some("gated"));
        assert_eq!(row[4].as_deref(), Some("catalog"));
        let rs = execute("SHOW TENANT 8", &view()).unwrap();
        assert_eq!(rs.rows[0][4].as_deref(), Some("ring"));
        let e = execute("SHOW TENANT abc", &view()).unwrap_err();
        assert_eq!(e.code, "22P02");
        let e = execute("DROP DATABASE x", &view()).unwrap_err();
        assert_eq!(e.code, "42601");
    }
}
