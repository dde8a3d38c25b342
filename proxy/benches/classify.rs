//! Statement classification micro-benchmark.
//!
//! Run: `cargo bench -p shardgate --bench classify` (200k timed iterations per case; prints
//! p50/p99/mean per call). Under `cargo test --benches` it runs a few iterations only, as a
//! smoke test. Targets: cached p50 ≤ 2 µs, uncached p50 ≤ 25 µs.
//!
//! Measured on the 2-core development machine (release profile, one thread pinned with
//! `taskset -c 1`, median of five runs), p50 / p99: classification alone, cached: the
//! pgbench -S SELECT 0.17 / 0.25 µs, a 5-column ORM INSERT 0.34 / 0.72 µs, a SELECT with a
//! JOIN and an IN list 0.39 / 0.61 µs; cached SELECT + resolve 0.27 / 0.42 µs; plus the
//! routing decision over a 4-shard map 0.33 / 0.61 µs; with a Bind to parse 0.32 / 0.49 µs;
//! uncached SELECT p50 10 µs / p99 23 µs; uncached 2-row INSERT p50 11 µs / p99 23 µs.
//! Instructions per call (callgrind, see `one_call`): pgbench -S SELECT 1734, ORM INSERT
//! 4673, JOIN SELECT 5399 (before the lexer's rework: 3289, 7998, 11977).

use std::hint::black_box;
use std::time::Instant;

use shardgate::classify::{BindParams, Classifier, ClassifyConfig, KeyType, KeyValues};
use shardgate::router;
use shardgate_catalog::{ShardMap, ShardSpec, Strategy};

fn four_shard_map() -> ShardMap {
    let specs: Vec<ShardSpec> = (0..4)
        .map(|i| ShardSpec {
            id: i,
            name: format!("s{i}"),
            url: format!("postgres://u@h:1/d{i}"),
            pool_size: 20,
        })
        .collect();
    ShardMap::from_specs(&specs, Strategy::Hash, 256).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let iters = if full { 200_000 } else { 200 };
    // The first other argument, if any, picks the cases whose names contain it (handy under
    // callgrind: `classify --bench pgbench`).
    let filter = args.iter().find(|a| !a.starts_with("--")).cloned();
    let run = |name: &str, iters: usize, f: &mut dyn FnMut(usize)| {
        if filter.as_ref().is_none_or(|f| name.contains(f.as_str())) {
            time(name, iters, f);
        }
    };
    println!("classify micro-benchmark, {iters} iterations per case (ns per call)");

    let c = Classifier::new(ClassifyConfig::default(), 10_000);

    // pgbench -S: one statement, one numeric literal, cached template; classification only.
    let sql = b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;";
    run(
        "cached pgbench -S SELECT (classify only)",
        iters,
        &mut |_| {
            black_box(c.classify(black_box(sql)));
        },
    );

    // ORM-style statements: string literals, a join and an IN list (classify only).
    let sql = b"INSERT INTO \"users\" (\"tenant_id\", \"email\", \"name\", \"created_at\", \"active\") \
        VALUES (42, 'ada@example.com', 'Ada O''Neil', '2024-05-01 12:00:00', true) RETURNING \"id\"";
    run(
        "cached ORM INSERT, 5 columns (classify only)",
        iters,
        &mut |_| {
            black_box(c.classify(black_box(sql)));
        },
    );
    let sql = b"SELECT o.id, o.total, c.name FROM orders o JOIN customers c \
        ON c.tenant_id = o.tenant_id AND c.id = o.customer_id \
        WHERE o.tenant_id = 42 AND o.status IN ('new', 'paid', 'shipped') ORDER BY o.id LIMIT 50";
    run(
        "cached SELECT, JOIN + IN list (classify only)",
        iters,
        &mut |_| {
            black_box(c.classify(black_box(sql)));
        },
    );

    let sql = b"select * from orders where tenant_id = 42 and id = 7";
    run("cached SELECT, literal key + resolve", iters, &mut |_| {
        let s = c.classify(black_box(sql));
        let k = s.statements[0].keys(None, KeyType::Bigint).unwrap();
        assert!(matches!(k, KeyValues::Keys(ref v) if v.len() == 1));
        black_box(k);
    });

    // The same plus the routing decision over a 4-shard map (what the proxy does per
    // statement before lending a connection).
    let map = four_shard_map();
    let session = router::SessionState::default();
    run(
        "cached SELECT + resolve + route (4 shards)",
        iters,
        &mut |_| {
            let s = c.classify(black_box(sql));
            let info = &s.statements[0];
            let KeyValues::Keys(keys) = info.keys(None, KeyType::Bigint).unwrap() else {
                panic!("no key")
            };
            let tenants = router::Tenants::Keys(&keys);
            let stmt = router::Statement {
                access: router::Access::Read,
                sharded: true,
                has_tables: true,
                tenants: &tenants,
            };
            black_box(router::route(&map, &stmt, &session));
        },
    );

    let sql = b"select * from orders where tenant_id = $1 and id = $2";
    let bind = bind_tail(&[b"42", b"7"]);
    run(
        "cached SELECT, $1 key + Bind parse + resolve",
        iters,
        &mut |_| {
            let s = c.classify(black_box(sql));
            let p = BindParams::parse(black_box(&bind), &[]).unwrap();
            black_box(s.statements[0].keys(Some(&p), KeyType::Bigint).unwrap());
        },
    );

    // Unique shapes (the alias changes; literals alone would share one template).
    let selects: Vec<String> = (0..iters + WARM_UP)
        .map(|i| format!("select * from orders o{i} where o{i}.tenant_id = 42 and o{i}.id = 7"))
        .collect();
    let c = Classifier::new(ClassifyConfig::default(), 10_000);
    run(
        "uncached SELECT (parse + template) + resolve",
        iters,
        &mut |i| {
            let s = c.classify(black_box(selects[i].as_bytes()));
            black_box(s.statements[0].keys(None, KeyType::Bigint).unwrap());
        },
    );
    assert_eq!(c.cache_stats().0, 0, "every SELECT must miss");

    let inserts: Vec<String> = (0..iters + WARM_UP)
        .map(|i| {
            format!(
                "insert into orders (tenant_id, id, note_{i}) values (42, 7, 'x'), (43, 8, 'y') returning id"
            )
        })
        .collect();
    run(
        "uncached INSERT, 2 rows (parse + template) + resolve",
        iters,
        &mut |i| {
            let s = c.classify(black_box(inserts[i].as_bytes()));
            black_box(s.statements[0].keys(None, KeyType::Bigint).unwrap());
        },
    );
    assert_eq!(c.cache_stats().0, 0, "every INSERT must miss");
}

/// Warm-up calls before timing; they use inputs `iters..iters + WARM_UP`.
const WARM_UP: usize = 1000;

/// Times `f(i)` for `i in 0..iters` after a warm-up; prints p50, p99 and mean.
fn time(name: &str, iters: usize, f: &mut dyn FnMut(usize)) {
    // The first call fills the cache for the cached cases; it is left out of `one_call`, so
    // that callgrind counts cache hits only.
    f(iters);
    for i in iters + 1..iters + WARM_UP {
        one_call(f, i);
    }
    let mut ns = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        one_call(f, i);
        ns.push(t.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    let pct = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)];
    let mean = ns.iter().sum::<u64>() / ns.len() as u64;
    println!(
        "{name:<52} p50 {:>7}  p99 {:>7}  mean {:>7}",
        pct(0.50),
        pct(0.99),
        mean
    );
}

/// One call of a case, out of line so that callgrind can count it alone:
/// `valgrind --tool=callgrind --toggle-collect=classify::one_call <bench binary> pgbench`
/// (instructions per call: the total over the 1199 calls of a smoke run).
#[inline(never)]
fn one_call(f: &mut dyn FnMut(usize), i: usize) {
    f(i)
}

/// A Bind body after the names: all-text parameters, no result formats.
fn bind_tail(values: &[&[u8]]) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
        b.extend_from_slice(v);
    }
    b.extend_from_slice(&[0, 0]);
    b
}
