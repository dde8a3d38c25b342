//! Phase 6, verification, split in two so that the part the tenant waits for does not grow
//! with the tenant's size.
//!
//! Before the gate, [`Tracker::start`] creates a `test_decoding` slot on the source, then
//! compares the two copies row by row: each side lists (hash of the primary key, the key,
//! hash of the whole row) in the same order and the lists are merged here, keeping the
//! keys that differ. Writes go on meanwhile, so some keys differ only because the target
//! had not applied them yet. Under the gate, after the final catch-up, [`Tracker::finish`]
//! reads the slot up to now (every change the source committed since the slot began) and
//! compares, on both sides as they are now, just the rows of those keys and of the keys
//! that differed. The counts are compared too. Before the gate, a few rounds of the same
//! (read the slot, compare the pending keys now, drop those found equal) leave the gate
//! only the changes of its last moments.
//!
//! Why that proves the copies equal: a key outside both sets was equal when listed, its
//! source row has not changed since (the slot saw no change to it, and it began before
//! the listing), and its target row can only have changed by replication of a source
//! change, which the slot would have seen, or by the target applying a source change from
//! before the slot, which would have made the key differ when listed. Every other key is
//! compared as it is now.
//!
//! Where the source has no `test_decoding` (or a TRUNCATE, a change without its key, or
//! too many changed keys leave the sets unknown), the table falls back to the full count
//! and checksum under the gate.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::pin::pin;

use futures_util::StreamExt;
use shardgate_catalog::TenantKey;
use tokio_postgres::types::ToSql;

use super::MoveError;
use super::decoding::{self, Line, Value};
use super::engine::Ctx;
use super::shard::{Shard, Table, key_filter};
use crate::pg::quote_ident;

/// Past this many keys to compare again under the gate, a table is checked in full there.
const RECHECK_MAX: usize = 20_000;
/// Rounds of comparing changed keys again before the gate, and the number of pending keys
/// under which it stops early.
const NARROW_ROUNDS: usize = 4;
const NARROW_ENOUGH: usize = 200;

/// The alias the tenant's rows go by in the verification's queries (`ROW(sg_r.*)` is the
/// whole row even if a column is called `sg_r`).
const ALIAS: &str = "sg_r";

/// What is left to compare under the gate, per table (in `Ctx::tables` order).
pub(super) struct Tracker {
    slot: Option<String>,
    tables: Vec<Pending>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Pending {
    /// Primary keys (each column's text form) to compare again.
    keys: HashSet<Vec<String>>,
    /// Compare the whole table instead.
    full: bool,
}

impl Pending {
    fn add(&mut self, key: Vec<String>) {
        if !self.full {
            self.keys.insert(key);
            if self.keys.len() > RECHECK_MAX {
                self.everything();
            }
        }
    }

    fn everything(&mut self) {
        self.full = true;
        self.keys.clear();
    }
}

impl Tracker {
    /// Before the gate: the slot, then the row-by-row comparison of the two copies.
    pub(super) async fn start(ctx: &Ctx<'_>) -> Result<Tracker, MoveError> {
        let slot = slot_name(&ctx.name());
        let mut tracker = Tracker {
            slot: None,
            tables: vec![Pending::default(); ctx.tables.len()],
        };
        match create_slot(&ctx.source, &slot).await {
            Ok(()) => tracker.slot = Some(slot),
            Err(e) => {
                tracing::warn!(error = %e, "no change tracking on the source: the gate will verify in full");
                tracker.tables.iter_mut().for_each(Pending::everything);
                return Ok(tracker);
            }
        }
        for (t, pending) in ctx.tables.iter().zip(&mut tracker.tables) {
            differing_keys(ctx, t, pending).await?;
        }
        tracker.narrow(ctx).await?;
        Ok(tracker)
    }

    /// Still before the gate: reads the slot and compares the pending keys again, a few
    /// rounds, dropping the keys found equal, so that the gate has little left to compare.
    /// A key equal now leaves the set soundly: a later change on the source comes out of
    /// the slot again, and a source change the target had not applied yet would have made
    /// it differ now.
    async fn narrow(&mut self, ctx: &Ctx<'_>) -> Result<(), MoveError> {
        for _ in 0..NARROW_ROUNDS {
            self.drain(ctx).await?;
            let pending: usize = self.tables.iter().map(|p| p.keys.len()).sum();
            if pending <= NARROW_ENOUGH {
                break;
            }
            for (t, p) in ctx.tables.iter().zip(&mut self.tables) {
                if p.full || p.keys.is_empty() {
                    continue;
                }
                let (differing, _) = compare_now(ctx, t, p, false).await?;
                p.keys = differing.into_iter().collect();
            }
        }
        Ok(())
    }

    /// Reads the changes the source committed since the last call into the sets.
    pub(super) async fn drain(&mut self, ctx: &Ctx<'_>) -> Result<(), MoveError> {
        let Some(slot) = &self.slot else {
            return Ok(());
        };
        let rows = ctx
            .source
            .client
            .query(
                "SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL, \
                 'include-xids', '0', 'skip-empty-xacts', '1') WHERE data LIKE 'table %'",
                &[slot],
            )
            .await
            .map_err(|e| MoveError::shard(&ctx.source.name, "reading the verify slot", e))?;
        for r in rows {
            self.note(
                &ctx.tables,
                &ctx.spec.key_column,
                &ctx.spec.tenants,
                r.get(0),
            );
        }
        Ok(())
    }

    /// Adds what one line of the slot says changed.
    fn note(&mut self, tables: &[Table], key_column: &str, tenants: &[String], line: &str) {
        let (schema, table, tuples) = match decoding::parse(line) {
            Ok(Line::Other) => return,
            Ok(Line::Change {
                schema,
                table,
                tuples,
            }) => (schema, table, tuples),
            Ok(Line::Truncate) => {
                self.tables.iter_mut().for_each(Pending::everything);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable change: the gate will verify in full");
                self.tables.iter_mut().for_each(Pending::everything);
                return;
            }
        };
        let Some(i) = tables
            .iter()
            .position(|t| t.schema == schema && t.name == table)
        else {
            return;
        };
        if tuples.is_empty() {
            self.tables[i].everything();
        }
        for tuple in tuples {
            let column = |name: &str| tuple.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            let ours = |v: &Value| matches!(v, Value::Text(t) if tenants.contains(t));
            if column(key_column).is_some_and(|v| !ours(v)) {
                continue; // another tenant's row
            }
            let key: Option<Vec<String>> = tables[i]
                .primary_key
                .iter()
                .map(|c| match column(c) {
                    Some(Value::Text(v)) => Some(v.clone()),
                    _ => None,
                })
                .collect();
            match key {
                Some(key) => self.tables[i].add(key),
                None => self.tables[i].everything(),
            }
        }
    }

    /// Under the gate, after the final catch-up: the rest of the slot, then the rows that
    /// may differ, on both sides as they are now.
    pub(super) async fn finish(mut self, ctx: &Ctx<'_>) -> Result<(), MoveError> {
        let started = std::time::Instant::now();
        self.drain(ctx).await?;
        let drained = started.elapsed();
        for (t, pending) in ctx.tables.iter().zip(&self.tables) {
            match pending.full {
                true => full_check(ctx, t).await?,
                false => recheck(ctx, t, pending).await?,
            }
            tracing::debug!(
                table = %t.display_name(),
                keys = pending.keys.len(),
                full = pending.full,
                drain_ms = drained.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "verified under the gate"
            );
        }
        Ok(())
    }
}

/// The verification's slot, named after the move's objects.
pub(super) fn slot_name(move_name: &str) -> String {
    format!("{move_name}_verify")
}

/// Creates the slot (anew, if a resumed job left one): the change tracking starts here.
async fn create_slot(source: &Shard, slot: &str) -> Result<(), MoveError> {
    drop_slot(source, slot).await?;
    source
        .client
        .query(
            "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
            &[&slot],
        )
        .await
        .map_err(|e| MoveError::shard(&source.name, "creating the verify slot", e))?;
    Ok(())
}

/// Drops the slot if it exists (idempotent; cleanup and rollback call it too).
pub(super) async fn drop_slot(source: &Shard, slot: &str) -> Result<(), MoveError> {
    source
        .client
        .query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1 AND NOT active",
            &[&slot],
        )
        .await
        .map_err(|e| MoveError::shard(&source.name, "dropping the verify slot", e))?;
    Ok(())
}

/// One listed row: hash of the key, the key, hash of the row.
struct Listed {
    h: i64,
    key: Vec<String>,
    row: i64,
}

/// Merges the two sides' ordered listings; keys present on one side only or with
/// different rows go into `pending`.
async fn differing_keys(ctx: &Ctx<'_>, t: &Table, pending: &mut Pending) -> Result<(), MoveError> {
    let sql = listing_sql(t, &ctx.spec.key_column, &ctx.keys);
    let (src, dst) = tokio::try_join!(list(&ctx.source, &sql), list(&ctx.target, &sql))?;
    let (mut src, mut dst) = (pin!(src), pin!(dst));
    let width = t.primary_key.len();
    let next = |r: Option<Result<tokio_postgres::Row, tokio_postgres::Error>>, shard: &Shard| {
        r.transpose()
            .map_err(|e| MoveError::shard(&shard.name, "listing the tenant's rows", e))
            .map(|r| {
                r.map(|r| Listed {
                    h: r.get(0),
                    key: (1..=width).map(|i| r.get(i)).collect(),
                    row: r.get(width + 1),
                })
            })
    };
    let mut a = next(src.next().await, &ctx.source)?;
    let mut b = next(dst.next().await, &ctx.target)?;
    loop {
        let order = match (&a, &b) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => (x.h, &x.key).cmp(&(y.h, &y.key)),
        };
        if order != Ordering::Greater {
            let x = a.take().expect("a row on the source's side");
            if order == Ordering::Less || b.as_ref().is_some_and(|y| y.row != x.row) {
                pending.add(x.key);
            }
            a = next(src.next().await, &ctx.source)?;
        }
        if order != Ordering::Less {
            let y = b.take().expect("a row on the target's side");
            if order == Ordering::Greater {
                pending.add(y.key);
            }
            b = next(dst.next().await, &ctx.target)?;
        }
    }
}

/// The pending keys whose rows differ on the two sides now (present on one side only,
/// or with different rows), and with `count`, both sides' row counts of the tenants.
async fn compare_now(
    ctx: &Ctx<'_>,
    t: &Table,
    pending: &Pending,
    count: bool,
) -> Result<(Vec<Vec<String>>, Option<(i64, i64)>), MoveError> {
    let keys: Vec<&Vec<String>> = pending.keys.iter().collect();
    let columns: Vec<Vec<&str>> = (0..t.primary_key.len())
        .map(|i| keys.iter().map(|k| k[i].as_str()).collect())
        .collect();
    let params: Vec<&(dyn ToSql + Sync)> =
        columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
    let rows_sql = recheck_sql(t, &ctx.spec.key_column, &ctx.keys);
    let count_sql = format!(
        "SELECT count(*) FROM {} WHERE {}",
        t.sql_name(),
        key_filter(&quote_ident(&ctx.spec.key_column), &ctx.keys)
    );
    let q = Queries {
        rows: (!keys.is_empty()).then_some(rows_sql.as_str()),
        count: count.then_some(count_sql.as_str()),
        params: &params,
        width: t.primary_key.len(),
    };
    let ((src_count, src), (dst_count, dst)) =
        tokio::try_join!(q.run(&ctx.source), q.run(&ctx.target))?;
    let differing = keys
        .into_iter()
        .filter(|k| src.get(*k) != dst.get(*k))
        .cloned()
        .collect();
    Ok((differing, src_count.zip(dst_count)))
}

/// Under the gate: the pending keys' rows and the row counts, compared.
async fn recheck(ctx: &Ctx<'_>, t: &Table, pending: &Pending) -> Result<(), MoveError> {
    let (differing, counts) = compare_now(ctx, t, pending, true).await?;
    let (src_count, dst_count) = counts.unwrap_or_default();
    if src_count != dst_count || !differing.is_empty() {
        let sample = differing
            .iter()
            .take(5)
            .map(|k| format!("({})", k.join(", ")))
            .collect::<Vec<_>>();
        return Err(MoveError::VerifyMismatch(format!(
            "{}: the source has {src_count} rows, the target {dst_count}; rows that differ: \
             [{}]; rolled back, the source is untouched",
            t.display_name(),
            sample.join(", ")
        )));
    }
    Ok(())
}

/// The listing's rows, as they come.
async fn list(shard: &Shard, sql: &str) -> Result<tokio_postgres::RowStream, MoveError> {
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    shard
        .client
        .query_raw(sql, no_params)
        .await
        .map_err(|e| MoveError::shard(&shard.name, "listing the tenant's rows", e))
}

/// The recheck's statements, run alike on both sides.
struct Queries<'q> {
    /// None when no key is pending.
    rows: Option<&'q str>,
    /// None when the counts are not wanted.
    count: Option<&'q str>,
    params: &'q [&'q (dyn ToSql + Sync)],
    width: usize,
}

impl Queries<'_> {
    /// The tenant's row count and the pending keys' row hashes on `shard`.
    async fn run(
        &self,
        shard: &Shard,
    ) -> Result<(Option<i64>, HashMap<Vec<String>, i64>), MoveError> {
        let rows = match self.rows {
            None => Vec::new(),
            Some(sql) => shard
                .client
                .query(sql, self.params)
                .await
                .map_err(|e| MoveError::shard(&shard.name, "comparing changed rows", e))?,
        };
        let count = match self.count {
            None => None,
            Some(sql) => Some(
                shard
                    .client
                    .query_one(sql, &[])
                    .await
                    .map_err(|e| MoveError::shard(&shard.name, "counting rows", e))?
                    .get(0),
            ),
        };
        let w = self.width;
        let rows = rows
            .iter()
            .map(|r| ((0..w).map(|i| r.get(i)).collect(), r.get(w)))
            .collect();
        Ok((count, rows))
    }
}

/// Count and checksum of the tenant's rows in `t` on both sides, computed at once.
async fn full_check(ctx: &Ctx<'_>, t: &Table) -> Result<(), MoveError> {
    let (src, dst) = tokio::try_join!(
        ctx.source.checksum(t, &ctx.spec.key_column, &ctx.keys),
        ctx.target.checksum(t, &ctx.spec.key_column, &ctx.keys),
    )?;
    if src != dst {
        return Err(MoveError::VerifyMismatch(format!(
            "{}: the source has {} rows (checksum {}), the target {} rows (checksum {}); \
             rolled back, the source is untouched",
            t.display_name(),
            src.0,
            src.1,
            dst.0,
            dst.1
        )));
    }
    Ok(())
}

/// Each key column as text, `ALIAS.col::text, …`.
fn key_texts(t: &Table) -> String {
    t.primary_key
        .iter()
        .map(|c| format!("{ALIAS}.{}::text", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tenant's rows of `t` as (hash of key, key columns…, hash of row), ordered so that
/// the same rows come in the same order from any server: by the bigint, then by each key
/// column's text in byte order (the order [`differing_keys`] merges by).
fn listing_sql(t: &Table, key_column: &str, keys: &[TenantKey]) -> String {
    let order = t
        .primary_key
        .iter()
        .map(|c| format!("{ALIAS}.{}::text COLLATE \"C\"", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let key_cols = key_texts(t);
    format!(
        "SELECT hashtextextended(ROW({key_cols})::text, 0), {key_cols}, \
         hashtextextended(ROW({ALIAS}.*)::text, 0) FROM {} {ALIAS} WHERE {} \
         ORDER BY 1, {order}",
        t.sql_name(),
        key_filter(&format!("{ALIAS}.{}", quote_ident(key_column)), keys)
    )
}

/// The tenant's rows of `t` whose keys are in the parameters (one text array per key
/// column), as (key columns…, hash of row). One primary-key lookup per key, whatever the
/// statistics say: the LATERAL subquery with `OFFSET 0` cannot be flattened into a join
/// the planner might run the other way round (the freshly copied target's statistics can
/// claim the tenant has no rows, and a nested loop over its rows rescanning the keys took
/// seconds under the gate).
fn recheck_sql(t: &Table, key_column: &str, keys: &[TenantKey]) -> String {
    let n = t.primary_key.len();
    let matches = t
        .primary_key
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = t
                .columns
                .iter()
                .find(|(name, _)| name == c)
                .map_or("text", |(_, ty)| ty.as_str());
            format!(" AND {ALIAS}.{} = u.c{i}::{ty}", quote_ident(c))
        })
        .collect::<String>();
    let arrays = (1..=n)
        .map(|i| format!("${i}::text[]"))
        .collect::<Vec<_>>()
        .join(", ");
    let names = (0..n)
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT r.* FROM unnest({arrays}) AS u({names}), LATERAL (SELECT {}, \
         hashtextextended(ROW({ALIAS}.*)::text, 0) FROM {} {ALIAS} \
         WHERE {}{matches} OFFSET 0) r",
        key_texts(t),
        t.sql_name(),
        key_filter(&format!("{ALIAS}.{}", quote_ident(key_column)), keys)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> Table {
        Table {
            schema: "public".into(),
            name: "orders".into(),
            columns: vec![
                ("tenant_id".into(), "bigint".into()),
                ("id".into(), "bigint".into()),
                ("note".into(), "text".into()),
            ],
            primary_key: vec!["tenant_id".into(), "id".into()],
        }
    }

    fn tracker() -> Tracker {
        Tracker {
            slot: Some("s".into()),
            tables: vec![Pending::default()],
        }
    }

    fn keys(t: &Tracker) -> Vec<Vec<String>> {
        let mut k: Vec<_> = t.tables[0].keys.iter().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn the_tenants_changes_are_pending_and_others_are_not() {
        let (mut tr, tables) = (tracker(), [orders()]);
        for line in [
            "BEGIN",
            "table public.orders: INSERT: tenant_id[bigint]:42 id[bigint]:1 note[text]:'a'",
            "table public.orders: INSERT: tenant_id[bigint]:7 id[bigint]:2 note[text]:'b'",
            "table public.orders: UPDATE: old-key: tenant_id[bigint]:42 id[bigint]:3 \
             new-tuple: tenant_id[bigint]:42 id[bigint]:4 note[text]:'c'",
            "table public.orders: DELETE: tenant_id[bigint]:42 id[bigint]:5",
            "table public.other: INSERT: tenant_id[bigint]:42 id[bigint]:6",
            "table shardgate.move_marker: UPDATE: job_id[bigint]:1 mark[bigint]:2",
            "COMMIT",
        ] {
            tr.note(&tables, "tenant_id", &["42".to_owned()], line);
        }
        let want: Vec<Vec<String>> = [1, 3, 4, 5]
            .iter()
            .map(|i| vec!["42".to_owned(), i.to_string()])
            .collect();
        assert_eq!(keys(&tr), want);
        assert!(!tr.tables[0].full);
    }

    #[test]
    fn what_cannot_be_pinned_to_keys_means_a_full_check() {
        let tables = [orders()];
        for line in [
            "table public.orders: DELETE: (no-tuple-data)",
            "table public.orders: INSERT: tenant_id[bigint]:42 note[text]:'no id'",
            "table public.orders: INSERT: tenant_id[bigint]:42 id[bigint]:null",
            "table public.x, public.orders: TRUNCATE: (no-flags)",
            "table public.orders: INSERT: id[bigint",
        ] {
            let mut tr = tracker();
            tr.note(&tables, "tenant_id", &["42".to_owned()], line);
            assert!(tr.tables[0].full, "{line}");
            assert!(tr.tables[0].keys.is_empty());
        }
    }

    #[test]
    fn too_many_pending_keys_mean_a_full_check() {
        let mut p = Pending::default();
        for i in 0..=RECHECK_MAX {
            p.add(vec![i.to_string()]);
        }
        assert!(p.full);
        assert!(p.keys.is_empty());
        p.add(vec!["x".into()]);
        assert!(p.keys.is_empty());
    }

    #[test]
    fn the_queries_name_the_key_columns_with_their_types() {
        let t = orders();
        let key = [TenantKey::Int(42)];
        let listing = listing_sql(&t, "tenant_id", &key);
        assert!(listing.contains(
            r#"ORDER BY 1, sg_r."tenant_id"::text COLLATE "C", sg_r."id"::text COLLATE "C""#
        ));
        assert!(listing.contains(r#"WHERE sg_r."tenant_id" = 42"#));
        let recheck = recheck_sql(&t, "tenant_id", &key);
        assert!(recheck.starts_with(
            "SELECT r.* FROM unnest($1::text[], $2::text[]) AS u(c0, c1), LATERAL (SELECT"
        ));
        assert!(recheck.ends_with(
            r#"WHERE sg_r."tenant_id" = 42 AND sg_r."tenant_id" = u.c0::bigint AND sg_r."id" = u.c1::bigint OFFSET 0) r"#
        ));
    }
}
