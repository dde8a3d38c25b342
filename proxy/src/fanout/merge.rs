//! The merge of a fan-out: rows from several shards in, the rows one Postgres holding all
//! the data would have returned out. Pure; the exec layer feeds it and writes what it pops.
//!
//! Three ways to merge, chosen from the [`MergePlan`]:
//! - **concat**: rows go out as they arrive, from whichever shard;
//! - **ordered**: a k-way merge; a row goes out once every shard still running has shown
//!   its next row, so the merger holds one batch per shard, never the result;
//! - **grouped** (aggregates, GROUP BY, DISTINCT): one entry per group, recombined from
//!   the shards' partial aggregates, then HAVING, ORDER BY, OFFSET and LIMIT.
//!
//! OFFSET and LIMIT apply to what goes out; the helper columns the planner appended are
//! cut off every row.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::agg::{Accumulator, AggKind, AvgAccumulator};
use super::plan::{CmpOp, ColumnRef, Combine, MergePlan, Operand, Predicate, SortKey};
use super::value::{self, Format, SortValue, ValueError};

/// One row's column values; `None` is NULL.
pub type Row = Vec<Option<Bytes>>;

/// A column of the shards' rows as their RowDescription gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub oid: u32,
    pub format: Format,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{0}")]
    Value(#[from] ValueError),
    #[error("a shard returned a row of {got} columns where {want} were described")]
    Width { got: usize, want: usize },
    #[error("the result has {columns} columns, fewer than the merge needs ({needed})")]
    Shape { columns: usize, needed: usize },
}

/// Which input the merger needs before it can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Rows from any shard still running.
    Any,
    /// The next row of this shard (an ordered merge cannot go on without it).
    Shard(usize),
    /// Every shard is done.
    Nothing,
}

#[derive(Debug, Clone, Copy)]
struct Key {
    idx: usize,
    desc: bool,
    nulls_first: bool,
}

type Keyed = (Vec<Option<SortValue>>, Row);

enum Mode {
    Concat,
    Ordered { heads: Vec<VecDeque<Keyed>> },
    Grouped(Box<Groups>),
}

pub struct Merger {
    columns: Vec<Column>,
    visible: usize,
    order: Vec<Key>,
    skip: u64,
    remaining: Option<u64>,
    mode: Mode,
    out: VecDeque<Row>,
    done: Vec<bool>,
}

impl Merger {
    /// `columns`: the shards' RowDescription (helper columns included); `limit` and
    /// `offset`: the plan's bounds with any parameters resolved.
    pub fn new(
        plan: &MergePlan,
        columns: Vec<Column>,
        shards: usize,
        limit: Option<u64>,
        offset: u64,
    ) -> Result<Merger, MergeError> {
        let n = columns.len();
        if plan.hidden > n {
            return Err(MergeError::Shape {
                columns: n,
                needed: plan.hidden,
            });
        }
        let visible = n - plan.hidden;
        let resolve = |c: ColumnRef| -> Result<usize, MergeError> {
            let idx = match c {
                ColumnRef::Visible(i) => i,
                ColumnRef::Hidden(j) => visible + j,
            };
            if idx < n {
                Ok(idx)
            } else {
                Err(MergeError::Shape {
                    columns: n,
                    needed: idx + 1,
                })
            }
        };
        let order = plan
            .order
            .iter()
            .map(|k: &SortKey| {
                Ok(Key {
                    idx: resolve(k.col)?,
                    desc: k.desc,
                    nulls_first: k.nulls_first,
                })
            })
            .collect::<Result<Vec<_>, MergeError>>()?;
        let mode = if let Some(g) = &plan.grouping {
            let mut combines = g.columns.clone();
            // Columns the plan did not describe (there are none unless the shards return
            // more than planned) group as keys, which is what a wrong plan would least hurt.
            combines.resize(n, Combine::Key);
            Mode::Grouped(Box::new(Groups::new(
                &columns,
                combines,
                g.having.clone(),
                plan.distinct,
                visible,
                &resolve,
            )?))
        } else if plan.distinct {
            Mode::Grouped(Box::new(Groups::new(
                &columns,
                vec![Combine::Key; n],
                None,
                false,
                visible,
                &resolve,
            )?))
        } else if order.is_empty() {
            Mode::Concat
        } else {
            Mode::Ordered {
                heads: (0..shards).map(|_| VecDeque::new()).collect(),
            }
        };
        Ok(Merger {
            columns,
            visible,
            order,
            skip: offset,
            remaining: limit,
            mode,
            out: VecDeque::new(),
            done: vec![false; shards],
        })
    }

    /// The client-visible column count.
    pub fn visible(&self) -> usize {
        self.visible
    }

    pub fn wants(&self) -> Want {
        if self.done.iter().all(|d| *d) {
            return Want::Nothing;
        }
        if let Mode::Ordered { heads } = &self.mode
            && !self.limit_reached()
            && let Some(i) = (0..heads.len()).find(|&i| !self.done[i] && heads[i].is_empty())
        {
            return Want::Shard(i);
        }
        Want::Any
    }

    /// One row of shard `shard`.
    pub fn push(&mut self, shard: usize, row: Row) -> Result<(), MergeError> {
        if row.len() != self.columns.len() {
            return Err(MergeError::Width {
                got: row.len(),
                want: self.columns.len(),
            });
        }
        if self.limit_reached() && !matches!(self.mode, Mode::Grouped(_)) {
            return Ok(()); // drained only so the connection can be reused
        }
        match &mut self.mode {
            Mode::Concat => self.emit(row),
            Mode::Ordered { heads } => {
                let keys = sort_values(&self.order, &self.columns, &row)?;
                heads[shard].push_back((keys, row));
            }
            Mode::Grouped(groups) => groups.add(&self.columns, &row)?,
        }
        Ok(())
    }

    /// Shard `shard` sent its last row.
    pub fn finish_shard(&mut self, shard: usize) -> Result<(), MergeError> {
        self.done[shard] = true;
        if !self.done.iter().all(|d| *d) {
            return Ok(());
        }
        if let Mode::Grouped(groups) = &mut self.mode {
            let mut rows = groups.finish(&self.columns)?;
            if !self.order.is_empty() {
                let mut keyed = rows
                    .into_iter()
                    .map(|r| Ok((sort_values(&self.order, &self.columns, &r)?, r)))
                    .collect::<Result<Vec<Keyed>, MergeError>>()?;
                keyed.sort_by(|a, b| compare(&self.order, &a.0, &b.0));
                rows = keyed.into_iter().map(|(_, r)| r).collect();
            }
            for row in rows {
                self.emit(row);
            }
        }
        Ok(())
    }

    /// The next row for the client, visible columns only.
    pub fn pop(&mut self) -> Option<Row> {
        if let Some(row) = self.out.pop_front() {
            return Some(row);
        }
        let Mode::Ordered { heads } = &mut self.mode else {
            return None;
        };
        loop {
            if self.remaining == Some(0) {
                return None;
            }
            let mut best: Option<usize> = None;
            for (i, q) in heads.iter().enumerate() {
                match q.front() {
                    None if !self.done[i] => return None, // must see this shard's next row
                    None => {}
                    Some((k, _)) => {
                        let better = match best {
                            None => true,
                            Some(b) => {
                                let (bk, _) = heads[b].front().expect("best has a head");
                                compare(&self.order, k, bk) == Ordering::Less
                            }
                        };
                        if better {
                            best = Some(i);
                        }
                    }
                }
            }
            let (_, row) = heads[best?].pop_front().expect("best has a head");
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            if let Some(r) = self.remaining.as_mut() {
                *r -= 1;
            }
            return Some(truncate(row, self.visible));
        }
    }

    fn limit_reached(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Queues a row for the client past OFFSET and within LIMIT.
    fn emit(&mut self, row: Row) {
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        match self.remaining.as_mut() {
            Some(0) => return,
            Some(r) => *r -= 1,
            None => {}
        }
        self.out.push_back(truncate(row, self.visible));
    }
}

fn truncate(mut row: Row, visible: usize) -> Row {
    row.truncate(visible);
    row
}

fn sort_values(
    keys: &[Key],
    columns: &[Column],
    row: &Row,
) -> Result<Vec<Option<SortValue>>, MergeError> {
    keys.iter()
        .map(|k| decode(columns[k.idx], row[k.idx].as_deref()))
        .collect()
}

fn decode(col: Column, v: Option<&[u8]>) -> Result<Option<SortValue>, MergeError> {
    Ok(match v {
        Some(b) => Some(value::decode(col.oid, col.format, b)?),
        None => None,
    })
}

fn compare(keys: &[Key], a: &[Option<SortValue>], b: &[Option<SortValue>]) -> Ordering {
    for (k, (x, y)) in keys.iter().zip(a.iter().zip(b)) {
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if k.nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if k.nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) if k.desc => y.cmp(x),
            (Some(x), Some(y)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// A group-key value: decoded where the type is known (so `1.0` and `1.00` are one
/// numeric group, as in Postgres), else the exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum KeyPart {
    Null,
    Value(SortValue),
    Raw(Bytes),
}

fn key_part(col: Column, v: Option<&Bytes>) -> Result<KeyPart, MergeError> {
    let Some(b) = v else {
        return Ok(KeyPart::Null);
    };
    match value::decode(col.oid, col.format, b) {
        Ok(v) => Ok(KeyPart::Value(v)),
        Err(ValueError::UnsupportedType { .. }) => Ok(KeyPart::Raw(b.clone())),
        Err(e) => Err(e.into()),
    }
}

enum Acc {
    Key,
    Plain(Accumulator),
    Avg {
        acc: AvgAccumulator,
        sum: usize,
        count: usize,
    },
}

/// What each column does, with its accumulator's settings.
#[derive(Clone, Copy)]
enum Role {
    Key,
    Plain(AggKind),
    Avg { sum: usize, count: usize },
}

struct Groups {
    roles: Vec<Role>,
    keys: Vec<usize>,
    index: BTreeMap<Vec<KeyPart>, usize>,
    entries: Vec<(Row, Vec<Acc>)>,
    having: Option<Predicate>,
    /// SELECT DISTINCT over grouped rows: dedupe the visible columns at the end.
    distinct_after: bool,
    visible: usize,
    visible_index: Vec<(usize, Column)>,
}

impl Groups {
    fn new(
        columns: &[Column],
        combines: Vec<Combine>,
        having: Option<Predicate>,
        distinct_after: bool,
        visible: usize,
        resolve: &dyn Fn(ColumnRef) -> Result<usize, MergeError>,
    ) -> Result<Groups, MergeError> {
        let mut roles = Vec::with_capacity(combines.len());
        for c in &combines {
            roles.push(match *c {
                Combine::Key => Role::Key,
                Combine::Count => Role::Plain(AggKind::Count),
                Combine::Sum => Role::Plain(AggKind::Sum),
                Combine::Min => Role::Plain(AggKind::Min),
                Combine::Max => Role::Plain(AggKind::Max),
                Combine::Avg { sum, count } => Role::Avg {
                    sum: resolve(sum)?,
                    count: resolve(count)?,
                },
            });
        }
        let keys = roles
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Role::Key))
            .map(|(i, _)| i)
            .collect();
        // Checked now, so an aggregate over a type the merge cannot add fails before rows.
        new_accs(&roles, columns)?;
        if let Some(p) = &having {
            check_refs(p, resolve)?;
        }
        Ok(Groups {
            roles,
            keys,
            index: BTreeMap::new(),
            entries: Vec::new(),
            having,
            distinct_after,
            visible,
            visible_index: columns.iter().copied().enumerate().take(visible).collect(),
        })
    }

    fn add(&mut self, columns: &[Column], row: &Row) -> Result<(), MergeError> {
        let key = self
            .keys
            .iter()
            .map(|&i| key_part(columns[i], row[i].as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let at = match self.index.get(&key) {
            Some(&at) => at,
            None => {
                let at = self.entries.len();
                let mut first: Row = vec![None; row.len()];
                for &i in &self.keys {
                    first[i] = row[i].clone();
                }
                self.entries.push((first, new_accs(&self.roles, columns)?));
                self.index.insert(key, at);
                at
            }
        };
        for (i, acc) in self.entries[at].1.iter_mut().enumerate() {
            match acc {
                Acc::Key => {}
                Acc::Plain(a) => a.add(row[i].as_deref())?,
                Acc::Avg { acc, sum, count } => {
                    acc.add(row[*sum].as_deref(), row[*count].as_deref())?
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, columns: &[Column]) -> Result<Vec<Row>, MergeError> {
        let mut rows = Vec::with_capacity(self.entries.len());
        let mut seen = BTreeSet::new();
        for (mut row, accs) in std::mem::take(&mut self.entries) {
            for (i, acc) in accs.iter().enumerate() {
                match acc {
                    Acc::Key => {}
                    Acc::Plain(a) => row[i] = a.finish().map(Bytes::from),
                    Acc::Avg { acc, .. } => row[i] = acc.finish().map(Bytes::from),
                }
            }
            if let Some(p) = &self.having
                && eval(p, columns, self.visible, &row)? != Some(true)
            {
                continue;
            }
            if self.distinct_after {
                let key = self
                    .visible_index
                    .iter()
                    .map(|(i, c)| key_part(*c, row[*i].as_ref()))
                    .collect::<Result<Vec<_>, _>>()?;
                if !seen.insert(key) {
                    continue;
                }
            }
            rows.push(row);
        }
        self.index.clear();
        debug_assert!(self.visible <= columns.len());
        Ok(rows)
    }
}

fn new_accs(roles: &[Role], columns: &[Column]) -> Result<Vec<Acc>, MergeError> {
    roles
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = columns[i];
            Ok(match *r {
                Role::Key => Acc::Key,
                Role::Plain(kind) => Acc::Plain(Accumulator::new(kind, c.oid, c.format)?),
                Role::Avg { sum, count } => Acc::Avg {
                    acc: AvgAccumulator::new(
                        c.oid,
                        c.format,
                        columns[sum].oid,
                        columns[sum].format,
                        columns[count].format,
                    )?,
                    sum,
                    count,
                },
            })
        })
        .collect()
}

fn check_refs(
    p: &Predicate,
    resolve: &dyn Fn(ColumnRef) -> Result<usize, MergeError>,
) -> Result<(), MergeError> {
    let operand = |o: &Operand| match o {
        Operand::Column(c) => resolve(*c).map(|_| ()),
        _ => Ok(()),
    };
    match p {
        Predicate::And(a, b) | Predicate::Or(a, b) => {
            check_refs(a, resolve)?;
            check_refs(b, resolve)
        }
        Predicate::Not(a) => check_refs(a, resolve),
        Predicate::IsNull { operand: o, .. } => operand(o),
        Predicate::Cmp { left, right, .. } => {
            operand(left)?;
            operand(right)
        }
    }
}

/// HAVING in SQL's three-valued logic: `None` is unknown (a NULL was compared).
fn eval(
    p: &Predicate,
    columns: &[Column],
    visible: usize,
    row: &Row,
) -> Result<Option<bool>, MergeError> {
    Ok(match p {
        Predicate::And(a, b) => match (
            eval(a, columns, visible, row)?,
            eval(b, columns, visible, row)?,
        ) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Predicate::Or(a, b) => match (
            eval(a, columns, visible, row)?,
            eval(b, columns, visible, row)?,
        ) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Predicate::Not(a) => eval(a, columns, visible, row)?.map(|v| !v),
        Predicate::IsNull { operand, negated } => {
            let is_null = match operand {
                Operand::Column(c) => row[column_index(visible, *c)].is_none(),
                Operand::Null => true,
                Operand::Literal(_) => false,
            };
            Some(is_null != *negated)
        }
        Predicate::Cmp { left, op, right } => {
            // A literal takes the type of the column it is compared with.
            let typed = |o: &Operand, other: &Operand| -> Option<u32> {
                match (o, other) {
                    (Operand::Column(c), _) | (_, Operand::Column(c)) => {
                        Some(columns[column_index(visible, *c)].oid)
                    }
                    _ => None,
                }
            };
            let value = |o: &Operand, oid: Option<u32>| -> Result<Option<SortValue>, MergeError> {
                Ok(match o {
                    Operand::Null => None,
                    Operand::Column(c) => {
                        let i = column_index(visible, *c);
                        decode(columns[i], row[i].as_deref())?
                    }
                    Operand::Literal(text) => match oid {
                        Some(oid) => Some(value::parse_literal(oid, text)?),
                        None => Some(value::parse_literal(1700, text)?),
                    },
                })
            };
            let (Some(a), Some(b)) = (
                value(left, typed(left, right))?,
                value(right, typed(right, left))?,
            ) else {
                return Ok(None);
            };
            let o = a.cmp(&b);
            Some(match op {
                CmpOp::Eq => o == Ordering::Equal,
                CmpOp::NotEq => o != Ordering::Equal,
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::LtEq => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                CmpOp::GtEq => o != Ordering::Less,
            })
        }
    })
}

/// A HAVING column's index; out-of-range references were refused when the merger was
/// built (see `Groups::new`).
fn column_index(visible: usize, c: ColumnRef) -> usize {
    match c {
        ColumnRef::Visible(i) => i,
        ColumnRef::Hidden(j) => visible + j,
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
