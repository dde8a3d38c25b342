//! A proxy killed while a tenant is gated cannot let a write land on the tenant's old copy
//! (DESIGN.md §6, the last invariant), and neither can a proxy that never heard of the move.
//!
//! Two proxies follow one catalog: the fleet's in-process proxy A, and B, a `shardgate`
//! process of its own. Writers write the moving tenant and others through both. The move
//! stops right after its gate (tenant gated, source fenced, as a killed `shardctl` leaves
//! it), both proxies hold the tenant's next statements, and B is SIGKILLed with its
//! clients' writes held. `--resume` then goes through the gate again: it must wait until
//! B's heartbeat is older than the 5 s lease (B never acknowledges the new gate) and then
//! finish, because a dead proxy can send nothing. Afterwards A's writers have had no
//! failed statement; every write either proxy acknowledged is on the new shard exactly once
//! with its last value, and the writes B held when it died are nowhere; the source (kept
//! with `--keep-source`) still holds exactly what it held at the fence and rejects the
//! tenant's writes with 40SG6; a proxy restarted from B's config routes the tenant to the
//! new shard; a stale proxy (static `[[shards]]`, no catalog) that still routes the tenant
//! to the source gets 40SG6 and changes nothing.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::moves::{Fleet, WriterLog, load, update};
use shardctl::move_cmd::shard::FENCE_SQLSTATE;
use shardctl::move_cmd::{self, Hooks, MoveError, MoveOutcome, MoveRequest, Phase, Progress};
use shardgate_catalog::TenantState;
use shardgate_catalog::db::jobs::JobState;
use shardgate_e2e::{ProxyHandle, ProxyProcess, ScratchDir, start_proxy, wait_until};
use tokio_postgres::Client;

/// The tenant that moves, and its loaded rows (divisible by the writer count, so each
/// writer updates loaded rows of its own).
const T: i64 = 5151;
const T_ROWS: i64 = 3_000;
/// Other tenants written alongside it, each with `OTHER_ROWS` loaded rows.
const OTHERS: std::ops::RangeInclusive<i64> = 1..=6;
const OTHER_ROWS: i64 = 20;
/// Writers per proxy; writer ids 0..PER_PROXY write through A, the rest through B.
const PER_PROXY: i64 = 3;
const WRITERS: i64 = 2 * PER_PROXY;
/// The proxies' own hold limit: far above the move's, so no held client ever gets SG005
/// while the resumed gate waits out the dead proxy's lease.
const PROXY_GATE_TIMEOUT_MS: i64 = 60_000;
/// Row ids written through the stale proxy.
const STALE_BEFORE: i64 = 900_001;
const STALE_AFTER: i64 = 900_002;
const FRESH: i64 = 950_001;

/// What the test reads of a writer while it runs.
#[derive(Default)]
struct Live {
    acked: AtomicU64,
    /// Whether it waits for the answer to a statement of T now: while T is gated, one its
    /// proxy holds (or, just after the gate, one that ran before it and whose answer is on
    /// its way; the source's rows at the fence tell the two apart).
    t_pending: AtomicBool,
}

/// What a writer did: its acknowledged writes, and how it ended.
struct Written {
    log: WriterLog,
    /// The statement that got no answer because its proxy died: (tenant, id, note).
    cut_off: Option<(i64, i64, String)>,
}

/// Writer `w`: inserts rows of T and of the other tenants and updates rows of T (loaded
/// ones of its own, and its own inserts) until `stop`. On a `killable` proxy the first error
/// ends it (its proxy died); elsewhere every error is a failure.
async fn writer(
    proxy: tokio_postgres::Config,
    w: i64,
    killable: bool,
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
) -> Written {
    let c = common::connect_with(&proxy).await.unwrap();
    let mut log = WriterLog::default();
    let mut mine: Vec<i64> = Vec::new();
    let base = 1_000_000 + w * 100_000;
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let note = format!("w{w}-{n}");
        let (tenant, id, insert) = match (n % 4, mine.last()) {
            (0, _) => (T, base + n, true),
            (1, _) => (T, ((n / 4) * WRITERS + w) % T_ROWS + 1, false),
            (2, _) => (*OTHERS.start() + n % OTHERS.count() as i64, base + n, true),
            (_, Some(&id)) => (T, id, false),
            (_, None) => continue,
        };
        live.t_pending.store(tenant == T, Ordering::SeqCst);
        let result = match insert {
            true => {
                c.execute(
                    "insert into orders (tenant_id, id, note) values ($1, $2, $3)",
                    &[&tenant, &id, &note],
                )
                .await
            }
            false => update(&c, tenant, id, &note).await,
        };
        live.t_pending.store(false, Ordering::SeqCst);
        match result {
            Ok(1) => {
                if insert && tenant == T {
                    mine.push(id);
                }
                log.acked.insert((tenant, id), note);
                log.writes += 1;
                live.acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(k) => log.failures.push(format!("({tenant}, {id}): {k} rows")),
            Err(_) if killable => {
                return Written {
                    log,
                    cut_off: Some((tenant, id, note)),
                };
            }
            Err(e) => log.failures.push(format!("({tenant}, {id}): {e:?}")),
        }
    }
    Written { log, cut_off: None }
}

/// The writers of both proxies, started together.
struct Writers {
    stop: Arc<AtomicBool>,
    live: Vec<Arc<Live>>,
    tasks: Vec<tokio::task::JoinHandle<Written>>,
}

impl Writers {
    fn start(a: &ProxyHandle, b: &ProxyProcess) -> Writers {
        let mut w = Writers {
            stop: Arc::default(),
            live: Vec::new(),
            tasks: Vec::new(),
        };
        for i in 0..WRITERS {
            let killable = i >= PER_PROXY;
            let proxy = match killable {
                false => common::proxy_config(a),
                true => b
                    .url(common::USER, common::PASSWORD, common::DB)
                    .parse()
                    .unwrap(),
            };
            let live = Arc::new(Live::default());
            w.live.push(live.clone());
            w.tasks.push(tokio::spawn(writer(
                proxy,
                i,
                killable,
                w.stop.clone(),
                live,
            )));
        }
        w
    }

    fn acked(&self, range: std::ops::Range<i64>) -> Vec<u64> {
        range
            .map(|i| self.live[i as usize].acked.load(Ordering::SeqCst))
            .collect()
    }

    fn all_pending_on_t(&self) -> bool {
        self.live.iter().all(|l| l.t_pending.load(Ordering::SeqCst))
    }

    /// Waits until each writer in `range` has `more` acknowledged writes than now.
    async fn progress(&self, range: std::ops::Range<i64>, more: u64, what: &str) {
        let from = self.acked(range.clone());
        let moved = wait_until(Duration::from_secs(60), || {
            let now = self.acked(range.clone());
            let ok = now.iter().zip(&from).all(|(n, f)| *n >= f + more);
            async move { ok }
        })
        .await;
        assert!(moved, "{what}: writers stuck at {:?}", self.acked(range));
    }
}

/// The fleet with proxy A in process, B as a process and the stale proxy; T and the other
/// tenants loaded (one row of T written through the stale proxy, landing on the source).
async fn start() -> (Fleet, ProxyProcess, ProxyHandle, ScratchDir) {
    let fleet = Fleet::start_with(200, |c| {
        c.sharding.gate_timeout_ms = PROXY_GATE_TIMEOUT_MS as u64;
    })
    .await;
    let dir = ScratchDir::new("proxy-kill");
    let toml = fleet.proxy_toml(|t| {
        t["sharding"]
            .as_table_mut()
            .unwrap()
            .insert("gate_timeout_ms".into(), PROXY_GATE_TIMEOUT_MS.into());
    });
    let b = ProxyProcess::start(dir.path(), "b", &toml).await;
    // The stale proxy: the fixture's static [[shards]], the same ring, no catalog.
    let mut stale = fleet.fx.config.clone();
    stale.sharding.sharded_tables = vec!["orders".into()];
    assert!(stale.catalog.is_none() && stale.shards.len() == 4);
    let stale = start_proxy(stale).await;

    // Both catalog proxies heartbeat: the gate has to wait for B too.
    let cat = fleet.catalog_client().await;
    let both = wait_until(Duration::from_secs(30), || async {
        live_proxies(&cat).await == 2
    })
    .await;
    assert!(both, "proxies A and B never both heartbeat");

    let c = common::client(&fleet.proxy).await;
    load(&c, T, 1..=T_ROWS).await;
    for t in OTHERS {
        load(&c, t, 1..=OTHER_ROWS).await;
    }
    let s = common::client(&stale).await;
    s.execute(
        "insert into orders (tenant_id, id, note) values ($1, $2, 'stale before')",
        &[&T, &STALE_BEFORE],
    )
    .await
    .unwrap();
    let (source, _) = fleet.placement(T).await;
    assert_eq!(
        fleet
            .rows_on(source, T)
            .await
            .get(&STALE_BEFORE)
            .map(String::as_str),
        Some("stale before"),
        "the stale proxy routes T to its shard in the catalog, the move's source"
    );
    (fleet, b, stale, dir)
}

async fn live_proxies(cat: &Client) -> i64 {
    cat.query_one(
        "select count(*) from shardgate.proxies where last_seen > now() - interval '5 seconds'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

fn hooks() -> Hooks {
    Hooks {
        progress: Some(Arc::new(|p: &Progress| eprintln!("{p}"))),
        // Only the proxies' heartbeats acknowledge the gate.
        gate_ack: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_killed_while_its_tenant_is_gated_lands_no_write_on_the_old_copy() {
    let clock = std::time::Instant::now();
    let (fleet, b, stale, _dir) = start().await;
    eprintln!("fleet up after {:?}", clock.elapsed());
    let (source, _) = fleet.placement(T).await;
    let target = (source + 1) % 4;
    let b_addr = b.addr.to_string();
    let b_config = b.config_path.clone();
    let mut writers = Writers::start(&fleet.proxy, &b);
    writers.progress(0..WRITERS, 20, "before the move").await;

    // The move, stopped right after its gate: T gated in the catalog, acknowledged by A
    // and B, the source fenced. Its writes on the source are what they are at the fence.
    let req = MoveRequest {
        keep_source: true,
        gate_timeout: Duration::from_secs(30),
        ..MoveRequest::new(T.to_string(), format!("s{target}"))
    };
    let url = fleet.catalog_url();
    let e = common::within(
        120,
        "the move up to its gate",
        move_cmd::run_stopping_after(&url, &req, &hooks(), Phase::Gate),
    )
    .await
    .expect_err("the move stops after its gate");
    let MoveError::Interrupted { job, .. } = e else {
        panic!("{}: {e}", e.code());
    };
    let at_fence = fleet.rows_on(source, T).await;
    eprintln!("gated after {:?}", clock.elapsed());
    assert_eq!(fleet.placement(T).await, (source, TenantState::Gated));
    assert!(fleet.fenced(source, T).await);

    // Every writer, on both proxies, now waits at its proxy's gate with a write of T.
    let held = wait_until(Duration::from_secs(60), || {
        let ok = writers.all_pending_on_t();
        async move { ok }
    })
    .await;
    assert!(held, "writers never reached the gate");
    b.kill().await;
    let mut b_writes = Vec::new();
    for task in writers.tasks.drain(PER_PROXY as usize..) {
        b_writes.push(task.await.unwrap());
    }
    let cat = fleet.catalog_client().await;
    let b_last_seen: std::time::SystemTime = cat
        .query_one(
            "select last_seen from shardgate.proxies where addr = $1",
            &[&b_addr],
        )
        .await
        .unwrap()
        .get(0);

    let outcome = common::within(120, "the resume", move_cmd::resume(&url, job, &hooks()))
        .await
        .unwrap_or_else(|e| panic!("resuming: {}: {e}", e.code()));
    assert!(
        matches!(outcome, MoveOutcome::Moved(ref m) if m.job == job),
        "{outcome:?}"
    );
    assert_flip_waited_for_the_lease(&cat, job, b_last_seen).await;
    eprintln!("resumed after {:?}", clock.elapsed());
    // A's held writes now run on the target, and its writers go on.
    writers.progress(0..PER_PROXY, 20, "after the flip").await;
    writers.stop.store(true, Ordering::SeqCst);
    let mut a_writes = Vec::new();
    for task in writers.tasks {
        a_writes.push(task.await.unwrap());
    }

    let want = check_writes(&fleet, &a_writes, &b_writes, &at_fence, (source, target)).await;
    assert_eq!(
        fleet.rows_on(source, T).await,
        at_fence,
        "the source's copy changed after the fence"
    );
    check_fence_and_stale_proxy(&fleet, &stale, source, target, &at_fence, &want).await;
    check_restarted_proxy(&fleet, &b_config, target, want.len()).await;
    assert_eq!(fleet.move_leftovers().await, Vec::<String>::new());
    assert_eq!(fleet.markers(job).await, Vec::<usize>::new());
    assert_eq!(fleet.job(job).await, (JobState::Done, "done".into()));
}

/// The resumed gate cannot pass a proxy that saw an older version until its heartbeat is
/// older than the 5 s lease: the flip (the tenant's row update) comes after that.
async fn assert_flip_waited_for_the_lease(
    cat: &Client,
    job: i64,
    b_last_seen: std::time::SystemTime,
) {
    let flipped: std::time::SystemTime = cat
        .query_one(
            "select at from shardgate.events where kind = 'move_flipped' and job_id = $1",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    let waited = flipped.duration_since(b_last_seen).unwrap_or_default();
    eprintln!("flip {} ms after B's last heartbeat", waited.as_millis());
    assert!(
        waited >= Duration::from_secs(5),
        "flipped {waited:?} after the dead proxy's last heartbeat, inside its lease"
    );
}

/// A's writers failed nothing; B's were cut off only by the kill. A write of T cut off
/// by the kill ran if and only if the source shows it at the fence (a held one never
/// runs anywhere once its proxy is dead). T on the target is exactly the loaded rows with
/// every acknowledged (or cut-off but run) write's last value: nothing lost, nothing
/// twice, no held write applied. No other shard but the source has T; the other tenants
/// lost nothing. Returns T's rows on the target.
async fn check_writes(
    fleet: &Fleet,
    a: &[Written],
    b: &[Written],
    at_fence: &HashMap<i64, String>,
    (source, target): (usize, usize),
) -> HashMap<i64, String> {
    let failures: Vec<&String> = a.iter().flat_map(|w| &w.log.failures).collect();
    let writes: u64 = a.iter().map(|w| w.log.writes).sum();
    assert!(
        failures.is_empty(),
        "{} of {writes} statements through the surviving proxy failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let mut want: HashMap<(i64, i64), String> = (1..=T_ROWS)
        .map(|id| ((T, id), "init".to_owned()))
        .chain(OTHERS.flat_map(|t| (1..=OTHER_ROWS).map(move |id| ((t, id), "init".into()))))
        .collect();
    want.insert((T, STALE_BEFORE), "stale before".into());
    for w in a.iter().chain(b) {
        want.extend(w.log.acked.iter().map(|(k, v)| (*k, v.clone())));
    }
    let (mut held, mut others_cut) = (Vec::new(), Vec::new());
    for w in b {
        assert!(w.log.failures.is_empty(), "{:?}", w.log.failures);
        let (t, id, note) = w.cut_off.clone().expect("B's writers end with the kill");
        match (t == T, at_fence.get(&id) == Some(&note)) {
            (true, true) => drop(want.insert((T, id), note)),
            (true, false) => held.push((id, note)),
            (false, _) => others_cut.push((t, id)),
        }
    }
    assert!(!held.is_empty(), "no write of T was held at the dead proxy");
    let of = |t: i64| -> HashMap<i64, String> {
        want.iter()
            .filter(|((tt, _), _)| *tt == t)
            .map(|((_, id), v)| (*id, v.clone()))
            .collect()
    };
    let want_t = of(T);
    let on_target = fleet.rows_on(target, T).await;
    for (id, note) in &held {
        assert_ne!(
            on_target.get(id),
            Some(note),
            "a held write of the dead proxy ran"
        );
    }
    assert_eq!(on_target.len(), want_t.len(), "rows of T on the target");
    let wrong: Vec<_> = want_t
        .iter()
        .filter(|(id, v)| on_target.get(id) != Some(v))
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "rows of T wrong on the target: {wrong:?}");
    for i in (0..4).filter(|&i| i != source && i != target) {
        assert!(fleet.rows_on(i, T).await.is_empty(), "rows of T on s{i}");
    }
    let c = common::client(&fleet.proxy).await;
    for t in OTHERS {
        let mut rows: HashMap<i64, String> = c
            .query("select id, note from orders where tenant_id = $1", &[&t])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut want = of(t);
        // Another tenant's write cut off by the kill may or may not have run.
        for (_, id) in others_cut.iter().filter(|(tt, _)| *tt == t) {
            rows.remove(id);
            want.remove(id);
        }
        assert_eq!(rows, want, "tenant {t}");
    }
    eprintln!(
        "{writes} writes through A, {} through B before its kill, {} held there when it died",
        b.iter().map(|w| w.log.writes).sum::<u64>(),
        held.len()
    );
    on_target
}

/// A write of T straight to the source, and through the stale proxy (which still routes T
/// there), fails with the fence's 40SG6; neither changes the source or the target.
async fn check_fence_and_stale_proxy(
    fleet: &Fleet,
    stale: &ProxyHandle,
    source: usize,
    target: usize,
    at_fence: &HashMap<i64, String>,
    want: &HashMap<i64, String>,
) {
    let direct = fleet.fx.connect_shard(source).await;
    let e = direct
        .execute(
            "insert into orders (tenant_id, id, note) values ($1, $2, 'direct')",
            &[&T, &STALE_AFTER],
        )
        .await
        .expect_err("the fence rejects T's writes on the source");
    assert_eq!(common::db_error(&e).code().code(), FENCE_SQLSTATE);

    let s = common::client(stale).await;
    let insert = s
        .execute(
            "insert into orders (tenant_id, id, note) values ($1, $2, 'stale after')",
            &[&T, &STALE_AFTER],
        )
        .await;
    let update = update(&s, T, 1, "stale after").await;
    let delete = s
        .execute("delete from orders where tenant_id = $1 and id = 2", &[&T])
        .await;
    for (what, r) in [("insert", insert), ("update", update), ("delete", delete)] {
        let e = r.expect_err(&format!("a stale proxy's {what} of T after the flip"));
        assert_eq!(common::db_error(&e).code().code(), FENCE_SQLSTATE, "{what}");
    }
    assert_eq!(
        &fleet.rows_on(source, T).await,
        at_fence,
        "the stale proxy wrote the source"
    );
    assert_eq!(
        &fleet.rows_on(target, T).await,
        want,
        "the stale proxy changed the target"
    );
}

/// A proxy started again from B's config file routes T to the target.
async fn check_restarted_proxy(
    fleet: &Fleet,
    config: &std::path::Path,
    target: usize,
    rows: usize,
) {
    let fresh = ProxyProcess::spawn(config).await;
    let (c, conn) = tokio_postgres::connect(
        &fresh.url(common::USER, common::PASSWORD, common::DB),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    c.execute(
        "insert into orders (tenant_id, id, note) values ($1, $2, 'fresh')",
        &[&T, &FRESH],
    )
    .await
    .unwrap();
    assert_eq!(
        fleet
            .rows_on(target, T)
            .await
            .get(&FRESH)
            .map(String::as_str),
        Some("fresh"),
        "the restarted proxy wrote T elsewhere"
    );
    let n: i64 = c
        .query_one("select count(*) from orders where tenant_id = $1", &[&T])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n as usize,
        rows + 1,
        "T's rows read through the restarted proxy"
    );
    fresh.kill().await;
}
