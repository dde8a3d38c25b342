//! `shardctl init`, `shardctl shard add` and `shardctl tenant set`: the catalog commands.
//! Each returns a report that renders as text for people or as one JSON object for scripts;
//! the binary only parses arguments and prints.

use serde_json::{Value, json};
use shardgate_catalog::db::{self, AddedShard, InitOptions, InitReport, NewShard, ShardRef};
use shardgate_catalog::{CatalogError, ShardId, TenantState, redact_url};

/// Text for people, or one JSON object per command for scripts (`--format json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown format {s:?} (expected text or json)")),
        }
    }
}

/// Something a command did, printable both ways.
pub trait Report {
    fn text(&self) -> String;
    fn json(&self) -> Value;

    fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.text(),
            Format::Json => self.json().to_string(),
        }
    }
}

/// `shardctl init`: creates or upgrades the catalog schema and records its settings.
pub async fn init(url: &str, opts: InitOptions) -> Result<Init, CatalogError> {
    let mut client = db::connect(url).await?;
    let report = db::migrate(&mut client, opts).await?;
    Ok(Init {
        url: redact_url(url),
        report,
    })
}

#[derive(Debug, Clone)]
pub struct Init {
    pub url: String,
    pub report: InitReport,
}

impl Report for Init {
    fn text(&self) -> String {
        let r = &self.report;
        let mut out = match r.applied.as_slice() {
            [] => format!(
                "catalog {} already at schema version {}\n",
                self.url, r.schema_version
            ),
            applied => format!(
                "catalog {}: schema version {} -> {} (applied {})\n",
                self.url,
                r.from_version,
                r.schema_version,
                applied.join(", ")
            ),
        };
        let s = &r.settings;
        out.push_str(&format!(
            "settings: strategy = {}, key_type = {}, vnodes_per_shard = {}{}\n",
            s.strategy,
            s.key_type,
            s.vnodes_per_shard,
            if r.settings_written.is_empty() {
                " (unchanged)"
            } else {
                " (stored)"
            }
        ));
        out.push_str(&format!("map version {}", r.map_version));
        out
    }

    fn json(&self) -> Value {
        let r = &self.report;
        json!({
            "catalog": self.url,
            "from_version": r.from_version,
            "schema_version": r.schema_version,
            "applied": r.applied,
            "settings_written": r.settings_written,
            "settings": {
                "strategy": r.settings.strategy.as_str(),
                "key_type": r.settings.key_type.as_str(),
                "vnodes_per_shard": r.settings.vnodes_per_shard,
            },
            "map_version": r.map_version,
        })
    }
}

/// `shardctl shard add`.
pub async fn shard_add(url: &str, shard: NewShard) -> Result<ShardAdd, CatalogError> {
    let mut client = db::connect(url).await?;
    let added = db::add_shard(&mut client, &shard).await?;
    let suggested_capacity_hint = match (shard.capacity_hint, shard.max_connections) {
        (None, Some(max)) => db::suggest_capacity_hint(max, shard.pool_size),
        _ => None,
    };
    Ok(ShardAdd {
        name: shard.name,
        added,
        suggested_capacity_hint,
    })
}

#[derive(Debug, Clone)]
pub struct ShardAdd {
    pub name: String,
    pub added: AddedShard,
    /// Given max_connections but no capacity_hint: what DESIGN.md §5 would have set.
    pub suggested_capacity_hint: Option<u32>,
}

impl Report for ShardAdd {
    fn text(&self) -> String {
        let a = &self.added;
        let mut out = format!(
            "added shard {} (id {}) with {} virtual nodes; map version {}",
            self.name, a.id, a.vnodes, a.version
        );
        if let Some(hint) = self.suggested_capacity_hint {
            out.push_str(&format!(
                "\nno capacity_hint: placement treats the shard as unbounded; \
                 floor(max_connections / pool_size / {}) suggests {hint}",
                db::SAFETY_FACTOR
            ));
        }
        out
    }

    fn json(&self) -> Value {
        let a = &self.added;
        json!({
            "shard": self.name,
            "shard_id": a.id,
            "vnodes": a.vnodes,
            "map_version": a.version,
            "suggested_capacity_hint": self.suggested_capacity_hint,
        })
    }
}

/// `shardctl tenant set ID --shard S`: the raw pin of one tenant to one shard. `id` is read
/// with the catalog's key type, and stored in its canonical spelling.
pub async fn tenant_set(
    url: &str,
    id: &str,
    shard: &str,
    state: TenantState,
) -> Result<TenantSet, CatalogError> {
    let mut client = db::connect(url).await?;
    let key_type = db::load_settings(&client).await?.key_type;
    let key = key_type.parse(id)?;
    let shard_id = db::resolve_shard(&client, &ShardRef::from(shard)).await?;
    let version = db::set_tenant(&mut client, &key, &ShardRef::Id(shard_id), state).await?;
    Ok(TenantSet {
        tenant: key.to_string(),
        shard_id,
        state,
        version,
    })
}

#[derive(Debug, Clone)]
pub struct TenantSet {
    pub tenant: String,
    pub shard_id: ShardId,
    pub state: TenantState,
    pub version: u64,
}

impl Report for TenantSet {
    fn text(&self) -> String {
        format!(
            "tenant {} -> shard id {} ({}); map version {}",
            self.tenant, self.shard_id, self.state, self.version
        )
    }

    fn json(&self) -> Value {
        json!({
            "tenant": self.tenant,
            "shard_id": self.shard_id,
            "state": self.state.as_str(),
            "map_version": self.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_catalog::schema::Settings;

    #[test]
    fn init_reports_render_both_ways() {
        let init = Init {
            url: "postgres://sg:***@h/c".into(),
            report: InitReport {
                from_version: 0,
                schema_version: 1,
                applied: vec!["0001_init"],
                settings_written: vec!["strategy"],
                settings: Settings::default(),
                map_version: 0,
            },
        };
        let text = init.render(Format::Text);
        assert!(
            text.contains("schema version 0 -> 1 (applied 0001_init)"),
            "{text}"
        );
        assert!(text.contains("strategy = hash, key_type = bigint, vnodes_per_shard = 256"));
        let v: Value = serde_json::from_str(&init.render(Format::Json)).unwrap();
        assert_eq!(v["applied"], json!(["0001_init"]));
        assert_eq!(v["settings"]["key_type"], "bigint");
        assert_eq!(v["schema_version"], 1);
    }

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert!("yaml".parse::<Format>().is_err());
    }
}
