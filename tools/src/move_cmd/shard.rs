//! What a move does on the shards themselves: reading their schema, the publication and
//! subscription that copy the tenant, replication progress, the fence, checksums and the
//! final delete. Every statement names the tenant by a quoted literal ([`key_literal`]),
//! because row filters cannot take parameters.

use std::time::Duration;

use shardgate_catalog::TenantKey;
use tokio_postgres::{Client, NoTls};

use super::MoveError;
use crate::pg::{quote_ident, quote_literal};

/// Rows deleted per statement when the source's copy is removed: small enough that no
/// statement holds locks for long, large enough to finish in reasonable time.
pub const DELETE_BATCH: i64 = 5_000;

/// SQLSTATE of a write that hits the fence (class 40: the client may retry, and its retry
/// goes through a proxy that knows the new shard).
pub const FENCE_SQLSTATE: &str = "40SG6";

/// A sharded table as the shard's catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// (name, type) in column order.
    pub columns: Vec<(String, String)>,
    /// The primary key's columns in index order (empty: none).
    pub primary_key: Vec<String>,
}

impl Table {
    /// The schema-qualified, quoted name for SQL.
    pub fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name` for people.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// The tenant's key as an SQL literal of the key's type.
pub fn key_literal(key: &TenantKey) -> String {
    match key {
        TenantKey::Int(i) => i.to_string(),
        TenantKey::Text(s) => quote_literal(s),
        TenantKey::Uuid(_) => format!("{}::uuid", quote_literal(&key.to_string())),
    }
}

/// `col = key` for one tenant, `col IN (k1, k2, …)` for a group; `col` is SQL already
/// (quoted, maybe qualified).
pub fn key_filter(col: &str, keys: &[TenantKey]) -> String {
    match keys {
        [one] => format!("{col} = {}", key_literal(one)),
        keys => format!(
            "{col} IN ({})",
            keys.iter().map(key_literal).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Lists a shard's publications, subscriptions and slots of moves (`sg_move_%`), one
/// `'<kind> <name>'` text per row: what a finished or undone move must not leave behind.
pub const MOVE_OBJECTS_SQL: &str = "SELECT 'publication ' || pubname FROM pg_publication \
     WHERE pubname LIKE 'sg\\_move\\_%' \
     UNION ALL SELECT 'subscription ' || subname FROM pg_subscription \
     WHERE subname LIKE 'sg\\_move\\_%' \
     UNION ALL SELECT 'slot ' || slot_name FROM pg_replication_slots \
     WHERE slot_name LIKE 'sg\\_move\\_%'";

/// The name of the publication, subscription and slot of job `job`.
pub fn object_name(job: i64) -> String {
    format!("sg_move_{job}")
}

/// A connection to one shard, named for messages.
pub struct Shard {
    pub name: String,
    pub url: String,
    pub client: Client,
}

impl Shard {
    pub async fn connect(name: &str, url: &str) -> Result<Shard, MoveError> {
        let config = shardgate_catalog::db::config(url, "shardctl-move")?;
        let (client, conn) = config
            .connect(NoTls)
            .await
            .map_err(|e| MoveError::shard(name, "connecting", e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "shard connection closed");
            }
        });
        Ok(Shard {
            name: name.to_owned(),
            url: url.to_owned(),
            client,
        })
    }

    fn err(&self, what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> MoveError + '_ {
        move |e| MoveError::shard(&self.name, what, e)
    }

    pub async fn batch(&self, what: &'static str, sql: &str) -> Result<(), MoveError> {
        self.client.batch_execute(sql).await.map_err(self.err(what))
    }

    async fn one_text(&self, what: &'static str, sql: &str) -> Result<Option<String>, MoveError> {
        let row = self
            .client
            .query_opt(sql, &[])
            .await
            .map_err(self.err(what))?;
        Ok(row.and_then(|r| r.get(0)))
    }

    pub async fn wal_level(&self) -> Result<String, MoveError> {
        Ok(self
            .one_text("reading wal_level", "SELECT current_setting('wal_level')")
            .await?
            .unwrap_or_default())
    }

    /// Every ordinary table outside the system schemas that has `key_column`.
    pub async fn sharded_tables(&self, key_column: &str) -> Result<Vec<Table>, MoveError> {
        let rows = self
            .client
            .query(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_attribute a ON a.attrelid = c.oid \
                 WHERE c.relkind = 'r' AND a.attname = $1 AND a.attnum > 0 \
                   AND NOT a.attisdropped \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'shardgate') \
                   AND n.nspname NOT LIKE 'pg\\_%' \
                 ORDER BY 1, 2",
                &[&key_column],
            )
            .await
            .map_err(self.err("listing sharded tables"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if let Some(t) = self.table(r.get(0), r.get(1)).await? {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// One table's columns and whether it has a primary key; `None` if it does not exist.
    pub async fn table(&self, schema: &str, name: &str) -> Result<Option<Table>, MoveError> {
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(name));
        let exists = self
            .one_text(
                "looking up a table",
                &format!("SELECT to_regclass({})::text", quote_literal(&qualified)),
            )
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let columns = self
            .client
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = to_regclass($1::text) AND attnum > 0 AND NOT attisdropped \
                 ORDER BY attnum",
                &[&qualified],
            )
            .await
            .map_err(self.err("reading columns"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let primary_key = self
            .client
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
                 WHERE i.indrelid = to_regclass($1::text) AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
                &[&qualified],
            )
            .await
            .map_err(self.err("reading the primary key"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(Some(Table {
            schema: schema.to_owned(),
            name: name.to_owned(),
            columns,
            primary_key,
        }))
    }

    /// Rows of the tenants in `table`.
    pub async fn count(
        &self,
        table: &Table,
        key_column: &str,
        keys: &[TenantKey],
    ) -> Result<i64, MoveError> {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {}",
            table.sql_name(),
            key_filter(&quote_ident(key_column), keys)
        );
        let row = self
            .client
            .query_one(&sql, &[])
            .await
            .map_err(self.err("counting rows"))?;
        Ok(row.get(0))
    }

    /// Row count and an order-independent checksum of the tenant's rows in `table`: the
    /// sum of each row's 64-bit hash, as text (a numeric: it overflows bigint). The hash
    /// is Postgres's own `hashtextextended` of the row's text form, three times cheaper
    /// than md5 and as wide as the md5 prefix it replaced; the verification runs while the
    /// tenant is gated, so its cost is hold time.
    pub async fn checksum(
        &self,
        table: &Table,
        key_column: &str,
        keys: &[TenantKey],
    ) -> Result<(i64, String), MoveError> {
        let sql = format!(
            "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text \
             FROM {} t WHERE {}",
            table.sql_name(),
            key_filter(&quote_ident(key_column), keys)
        );
        let row = self
            .client
            .query_one(&sql, &[])
            .await
            .map_err(self.err("checksumming rows"))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Creates the publication of the tenant's rows and of the job's marker row, unless it
    /// exists (a resumed job).
    pub async fn create_publication(
        &self,
        name: &str,
        job: i64,
        tables: &[Table],
        key_column: &str,
        keys: &[TenantKey],
    ) -> Result<(), MoveError> {
        let exists = self
            .one_text(
                "looking up the publication",
                &format!(
                    "SELECT pubname::text FROM pg_publication WHERE pubname = {}",
                    quote_literal(name)
                ),
            )
            .await?;
        if exists.is_some() {
            return Ok(());
        }
        let filter = format!("({})", key_filter(&quote_ident(key_column), keys));
        let list = tables
            .iter()
            .map(|t| format!("{} WHERE {filter}", t.sql_name()))
            .chain([format!("shardgate.move_marker WHERE (job_id = {job})")])
            .collect::<Vec<_>>()
            .join(", ");
        self.batch(
            "creating the publication",
            &format!("CREATE PUBLICATION {} FOR TABLE {list}", quote_ident(name)),
        )
        .await
    }

    async fn has_subscription(&self, name: &str) -> Result<bool, MoveError> {
        Ok(self
            .one_text(
                "looking up the subscription",
                &format!(
                    "SELECT subname::text FROM pg_subscription WHERE subname = {} \
                     AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    quote_literal(name)
                ),
            )
            .await?
            .is_some())
    }

    /// Creates the subscription to `source_url`'s publication, unless it exists.
    pub async fn create_subscription(&self, name: &str, source_url: &str) -> Result<(), MoveError> {
        if self.has_subscription(name).await? {
            return Ok(());
        }
        let n = quote_ident(name);
        self.batch(
            "creating the subscription",
            &format!(
                "CREATE SUBSCRIPTION {n} CONNECTION {} PUBLICATION {n} WITH (copy_data = true)",
                quote_literal(source_url)
            ),
        )
        .await
    }

    /// (tables in the ready state, tables in the subscription).
    pub async fn sync_state(&self, name: &str) -> Result<(i64, i64), MoveError> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FILTER (WHERE r.srsubstate = 'r'), count(*) \
                 FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid \
                 WHERE s.subname = $1",
                &[&name],
            )
            .await
            .map_err(self.err("reading the table sync state"))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Bytes of WAL the slot's subscriber has not confirmed; `None` while it has confirmed
    /// nothing yet.
    pub async fn slot_lag(&self, slot: &str) -> Result<Option<i64>, MoveError> {
        let row = self
            .client
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(self.err("reading the slot's lag"))?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Creates the marker table (idempotent; both sides need it before the copy) and, on
    /// the source, the job's row.
    pub async fn prepare_marker(&self, job: Option<i64>) -> Result<(), MoveError> {
        let mut sql = String::from(
            "CREATE SCHEMA IF NOT EXISTS shardgate;
             CREATE TABLE IF NOT EXISTS shardgate.move_marker (
                 job_id bigint PRIMARY KEY,
                 mark   bigint NOT NULL
             );",
        );
        if let Some(job) = job {
            sql.push_str(&format!(
                "INSERT INTO shardgate.move_marker VALUES ({job}, 0) ON CONFLICT DO NOTHING;"
            ));
        }
        self.batch("creating the move marker", &sql).await
    }

    /// Source: bumps the job's marker in a transaction of its own; returns the new mark.
    /// Logical replication applies in commit order, so once the target shows this mark it
    /// has applied everything that committed here before.
    pub async fn bump_marker(&self, job: i64) -> Result<i64, MoveError> {
        // A synchronous commit flushes the WAL up to the marker (everything before it
        // too), and the walsender sends only flushed WAL: on a shard running with
        // synchronous_commit = off this saves up to wal_writer_delay of gate hold.
        self.client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(self.err("bumping the move marker"))?;
        let row = self
            .client
            .query_one(
                "UPDATE shardgate.move_marker SET mark = mark + 1 WHERE job_id = $1 \
                 RETURNING mark",
                &[&job],
            )
            .await
            .map_err(self.err("bumping the move marker"))?;
        Ok(row.get(0))
    }

    /// Target: the job's marker as applied here (0 before the copy brought it).
    pub async fn marker(&self, job: i64) -> Result<i64, MoveError> {
        let row = self
            .client
            .query_opt(
                "SELECT mark FROM shardgate.move_marker WHERE job_id = $1",
                &[&job],
            )
            .await
            .map_err(self.err("reading the move marker"))?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    /// Deletes the job's marker row (after the subscription is gone).
    pub async fn drop_marker(&self, job: i64) -> Result<(), MoveError> {
        self.batch(
            "deleting the move marker",
            &format!(
                "DO $m$ BEGIN IF to_regclass('shardgate.move_marker') IS NOT NULL THEN \
                 DELETE FROM shardgate.move_marker WHERE job_id = {job}; END IF; END $m$"
            ),
        )
        .await
    }

    /// Drops the subscription (and with it the slot on the source, when reachable).
    pub async fn drop_subscription(&self, name: &str) -> Result<(), MoveError> {
        if !self.has_subscription(name).await? {
            return Ok(());
        }
        self.batch(
            "dropping the subscription",
            &format!("DROP SUBSCRIPTION IF EXISTS {}", quote_ident(name)),
        )
        .await
    }

    /// Drops the publication and, if the subscription could not, the slot.
    pub async fn drop_publication_and_slot(&self, name: &str) -> Result<(), MoveError> {
        self.batch(
            "dropping the publication",
            &format!("DROP PUBLICATION IF EXISTS {}", quote_ident(name)),
        )
        .await?;
        self.client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND NOT active",
                &[&name],
            )
            .await
            .map_err(self.err("dropping the replication slot"))?;
        Ok(())
    }

    /// Names of publications, subscriptions and slots of moves (`sg_move_%`) on this shard.
    pub async fn move_objects(&self) -> Result<Vec<String>, MoveError> {
        let rows = self
            .client
            .query(MOVE_OBJECTS_SQL, &[])
            .await
            .map_err(self.err("listing move objects"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Creates the fence's table and trigger function if missing (idempotent, no locks on
    /// the application's tables).
    pub async fn prepare_fence(&self) -> Result<(), MoveError> {
        self.batch("creating the fence", &fence_ddl()).await
    }

    /// Fences the tenant: waits (up to `wait`) until no transaction is writing to any
    /// sharded table, then installs the trigger on each and records the tenant, in one
    /// transaction. From its commit on, a write of the tenant's rows here fails.
    pub async fn install_fence(
        &mut self,
        tables: &[Table],
        key_column: &str,
        tenants: &[String],
        job: i64,
        wait: Duration,
    ) -> Result<(), MoveError> {
        let name = self.name.clone();
        let err = |what| {
            let name = name.clone();
            move |e| MoveError::shard(&name, what, e)
        };
        let tx = self
            .client
            .transaction()
            .await
            .map_err(err("starting the fence"))?;
        let names = tables
            .iter()
            .map(Table::sql_name)
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!(
            "SET LOCAL lock_timeout = '{}ms'; LOCK TABLE {names} IN SHARE ROW EXCLUSIVE MODE;",
            wait.as_millis().max(1)
        );
        for t in tables {
            sql.push_str(&format!(
                "CREATE OR REPLACE TRIGGER shardgate_fence BEFORE INSERT OR UPDATE OR DELETE \
                 ON {} FOR EACH ROW EXECUTE FUNCTION shardgate.fence_check({});",
                t.sql_name(),
                quote_literal(key_column)
            ));
        }
        let rows = tenants
            .iter()
            .map(|t| format!("({}, {job})", quote_literal(t)))
            .collect::<Vec<_>>()
            .join(", ");
        sql.push_str(&format!(
            "INSERT INTO shardgate.fence (tenant_id, job_id) VALUES {rows} \
             ON CONFLICT (tenant_id) DO UPDATE SET job_id = excluded.job_id, fenced_at = now();"
        ));
        tx.batch_execute(&sql)
            .await
            .map_err(err("installing the fence"))?;
        tx.commit().await.map_err(err("committing the fence"))
    }

    /// Removes the tenants' fence rows, if there is a fence here at all.
    pub async fn remove_fence(&self, tenants: &[String]) -> Result<(), MoveError> {
        let has = self
            .one_text(
                "looking up the fence",
                "SELECT to_regclass('shardgate.fence')::text",
            )
            .await?;
        if has.is_none() {
            return Ok(());
        }
        self.client
            .execute(
                "DELETE FROM shardgate.fence WHERE tenant_id = ANY ($1)",
                &[&tenants],
            )
            .await
            .map_err(self.err("removing the fence row"))?;
        Ok(())
    }

    /// Deletes the tenant's rows from `table` in batches, past the fence; returns how many.
    pub async fn delete_rows(
        &self,
        table: &Table,
        key_column: &str,
        keys: &[TenantKey],
    ) -> Result<u64, MoveError> {
        self.batch("bypassing the fence", "SET shardgate.fence_bypass = 'on'")
            .await?;
        let sql = format!(
            "DELETE FROM {t} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {t} WHERE {f} \
             LIMIT {DELETE_BATCH}))",
            t = table.sql_name(),
            f = key_filter(&quote_ident(key_column), keys)
        );
        let mut total = 0;
        loop {
            let n = self
                .client
                .execute(&sql, &[])
                .await
                .map_err(self.err("deleting the tenant's rows"))?;
            total += n;
            if n == 0 {
                break;
            }
        }
        self.batch("ending the fence bypass", "RESET shardgate.fence_bypass")
            .await?;
        Ok(total)
    }
}

/// The fence's table and trigger function. The trigger rejects any write that touches a
/// fenced tenant's row (before or after an update), unless the session set
/// `shardgate.fence_bypass` (the move's own delete). Logical replication's apply workers
/// do not fire ordinary triggers, so a fence never blocks a subscription.
fn fence_ddl() -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS shardgate;
CREATE TABLE IF NOT EXISTS shardgate.fence (
    tenant_id text PRIMARY KEY,
    job_id    bigint,
    fenced_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION shardgate.fence_check() RETURNS trigger
LANGUAGE plpgsql AS $fence$
DECLARE
    keys text[] := '{{}}';
    k text;
BEGIN
    IF current_setting('shardgate.fence_bypass', true) IS DISTINCT FROM 'on' THEN
        -- The row's tenant before and after: an update may move a row between tenants.
        IF TG_OP <> 'INSERT' THEN keys := keys || (to_jsonb(OLD) ->> TG_ARGV[0]); END IF;
        IF TG_OP <> 'DELETE' THEN keys := keys || (to_jsonb(NEW) ->> TG_ARGV[0]); END IF;
        SELECT f.tenant_id INTO k FROM shardgate.fence f WHERE f.tenant_id = ANY (keys) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'shardgate: tenant % has moved off this shard (fenced); retry through the proxy', k
                USING ERRCODE = '{FENCE_SQLSTATE}';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END
$fence$;"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_literals_of_their_type() {
        assert_eq!(key_literal(&TenantKey::Int(-42)), "-42");
        assert_eq!(key_filter("k", &[TenantKey::Int(1)]), "k = 1");
        assert_eq!(
            key_filter("k", &[TenantKey::Int(1), TenantKey::Text("a".into())]),
            "k IN (1, 'a')"
        );
        assert_eq!(key_literal(&TenantKey::Text("o'k".into())), "'o''k'");
        let u = TenantKey::Uuid([0x11; 16]);
        assert_eq!(
            key_literal(&u),
            "'11111111-1111-1111-1111-111111111111'::uuid"
        );
    }

    #[test]
    fn fence_ddl_is_idempotent_sql() {
        let ddl = fence_ddl();
        assert!(ddl.contains("CREATE TABLE IF NOT EXISTS shardgate.fence"));
        assert!(ddl.contains("CREATE OR REPLACE FUNCTION shardgate.fence_check()"));
        assert!(ddl.contains(FENCE_SQLSTATE));
    }
}
