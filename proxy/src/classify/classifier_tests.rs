//! The cache, and inputs that must never crash the classifier.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::{KeySpec, KeyValues, ValueRef};
use super::*;

fn classifier(capacity: usize) -> Classifier {
    Classifier::new(ClassifyConfig::default(), capacity)
}

#[test]
fn same_shape_hits_the_cache() {
    let c = classifier(100);
    let a = c.classify(b"select * from orders where tenant_id = 42 and id = 7");
    let b = c.classify(b"SELECT * FROM orders WHERE tenant_id = 42 AND id = 7");
    assert_eq!(c.cache_stats(), (0, 2), "keyword case is part of the shape");
    let d = c.classify(b"select  *\nfrom orders /* hi */ where tenant_id = 43 and id = 8;");
    assert_eq!(c.cache_stats(), (1, 2));
    let (a, d) = (&a.statements[0], &d.statements[0]);
    assert!(Arc::ptr_eq(&a.template, &d.template));
    assert_eq!(d.literals[0].text, "43");
    assert_eq!(
        d.keys(None, KeyType::Bigint).unwrap(),
        KeyValues::Keys(vec![shardgate_catalog::TenantKey::Int(43)])
    );
    assert_eq!(
        &*b.statements[0].template.text,
        "SELECT * FROM orders WHERE tenant_id = $1 AND id = $2"
    );
}

#[test]
fn cache_stays_within_capacity_and_keeps_hot_shapes() {
    let c = classifier(10);
    for i in 0..1000 {
        c.classify(format!("select c{i} from t where tenant_id = {i}").as_bytes());
        c.classify(format!("select hot from t where tenant_id = {i}").as_bytes());
        assert!(c.cache_len() <= 10, "{} at {i}", c.cache_len());
    }
    let (hits, misses) = c.cache_stats();
    assert_eq!(hits, 999, "the shape used every time stays cached");
    assert_eq!(misses, 1001);
}

#[test]
fn zero_capacity_disables_the_cache() {
    let c = classifier(0);
    for _ in 0..3 {
        let s = c.classify(b"select * from t where tenant_id = 1");
        assert_eq!(
            s.statements[0].template.key,
            KeySpec::One(ValueRef::Literal(0))
        );
    }
    assert_eq!(c.cache_stats(), (0, 3));
    assert_eq!(c.cache_len(), 0);
}

#[test]
fn same_text_with_other_parameters_is_not_confused() {
    // Both normalize to `… tenant_id = $2`: a literal above $1 in one, the client's $2 in
    // the other. The placeholder base tells them apart.
    let c = classifier(100);
    let lit = b"select * from t where a = $1 and tenant_id = 5";
    let par = b"select * from t where a = $1 and tenant_id = $2";
    for _ in 0..2 {
        for (sql, want) in [
            (&lit[..], ValueRef::Literal(0)),
            (&par[..], ValueRef::Param(2)),
        ] {
            let s = c.classify(sql);
            assert_eq!(s.statements[0].template.key, KeySpec::One(want));
        }
    }
}

/// Every literal a template refers to exists in every statement that uses it.
fn check_refs(info: &StatementInfo) {
    let refs: Vec<ValueRef> = match &info.template.key {
        KeySpec::None => vec![],
        KeySpec::One(v) | KeySpec::AnyOfArray(v) => vec![*v],
        KeySpec::AnyOf(v) | KeySpec::Rows(v) => v.clone(),
    };
    for r in refs {
        if let ValueRef::Literal(i) = r {
            assert!(i < info.literals.len(), "{:?}", info.template.text);
        }
    }
}

const FRAGMENTS: &[&str] = &[
    "select ",
    "insert into t (tenant_id, x) values ",
    "update t set ",
    "delete from t ",
    "with c as (",
    ") ",
    "where ",
    "tenant_id",
    " = ",
    " in (",
    ")",
    "(",
    ",",
    "any(",
    "array[",
    "]",
    "::uuid",
    "::bigint",
    "'",
    "''",
    "E'",
    "\\",
    "\"",
    "$",
    "$$",
    "$1",
    "$a$",
    "/*",
    "*/",
    "/* tenant_id=4 */",
    "--",
    "\n",
    ";",
    " and ",
    " or ",
    "not ",
    "42",
    "-1",
    "1.5e3",
    "0x1F",
    "'abc'",
    "from t ",
    "join u on ",
    "union ",
    "date '2020-01-01'",
    "varchar(10)",
    "returning *",
    "on conflict do nothing",
    "é",
    "\u{0}",
    " ",
];

#[test]
fn random_sql_never_panics() {
    let c = classifier(64);
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..4000 {
        let mut sql = Vec::new();
        for _ in 0..rng.gen_range(0..24) {
            if rng.gen_bool(0.1) {
                sql.push(rng.r#gen::<u8>());
            } else {
                sql.extend_from_slice(FRAGMENTS[rng.gen_range(0..FRAGMENTS.len())].as_bytes());
            }
        }
        for info in c.classify(&sql).statements {
            check_refs(&info);
            for kt in [KeyType::Bigint, KeyType::Text, KeyType::Uuid] {
                let _ = info.keys(None, kt);
                let _ = super::super::resolve(&info.template.key_write, &info, None, kt);
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let c = classifier(64);
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..3000 {
        let len = rng.gen_range(0..80);
        let sql: Vec<u8> = (0..len).map(|_| rng.r#gen::<u8>()).collect();
        for info in c.classify(&sql).statements {
            check_refs(&info);
            let _ = info.keys(None, KeyType::Bigint);
        }
    }
}

/// Runs `f` on a thread with a tokio worker's default stack (2 MiB).
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn deep_nesting_is_refused_not_a_crash() {
    on_small_stack(|| {
        let c = classifier(8);
        let deep = format!("select {}1{}", "(".repeat(5000), ")".repeat(5000));
        let s = c.classify(deep.as_bytes());
        assert_eq!(s.statements[0].template.key, KeySpec::None);
        let deep = format!(
            "select * from t where tenant_id = 1 and {}",
            "a = (select b from u where c = (".repeat(300) + "1" + &"))".repeat(300)
        );
        let s = c.classify(deep.as_bytes());
        assert_eq!(s.statements[0].template.key, KeySpec::None);
    });
}

#[test]
fn long_operator_chains_do_not_overflow_the_stack() {
    on_small_stack(|| {
        let c = classifier(8);
        for op in [" and x", " or x", "+x", " || x", "::int", " is null"] {
            let chain = format!("x{}", op.repeat(100_000));
            let sql = format!("select * from t where tenant_id = 2 and ({chain})");
            let s = c.classify(sql.as_bytes());
            assert!(!s.statements[0].template.parsed, "{op}: too deep to parse");
            assert_eq!(s.statements[0].template.key, KeySpec::None);
        }
        let ors: Vec<String> = (0..2000).map(|i| format!("tenant_id = {i}")).collect();
        let sql = format!("select * from t where {}", ors.join(" or "));
        let s = c.classify(sql.as_bytes());
        match s.statements[0].keys(None, KeyType::Bigint).unwrap() {
            KeyValues::Keys(k) => assert_eq!(k.len(), 2000),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn chains_just_under_the_limit_parse_and_drop_on_a_small_stack() {
    on_small_stack(|| {
        let c = classifier(8);
        for (op, n) in [
            ("+x", 7_900),
            (" is null", 7_900),
            (" and x", 7_900),
            ("::int", 5_200),
        ] {
            let chain = format!("x{}", op.repeat(n));
            let sql = format!("select * from t where tenant_id = 3 and ({chain})");
            let s = c.classify(sql.as_bytes());
            assert!(s.statements[0].template.parsed, "{op}");
            assert_eq!(
                s.statements[0].template.key,
                KeySpec::One(ValueRef::Literal(0))
            );
        }
    });
}

#[test]
fn the_classifier_is_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Classifier>();
    shared::<StatementInfo>();
    let c = Arc::new(classifier(100));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let sql = format!("select * from t{} where tenant_id = {i}", i % 7);
                    let s = c.classify(sql.as_bytes());
                    let want = KeyValues::Keys(vec![shardgate_catalog::TenantKey::Int(i)]);
                    assert_eq!(
                        s.statements[0].keys(None, KeyType::Bigint).unwrap(),
                        want,
                        "{t}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (hits, misses) = c.cache_stats();
    assert_eq!(hits + misses, 2000);
    assert!(misses <= 28, "{misses}");
}

#[test]
fn templates_match_the_lexed_text_across_lengths_and_calls() {
    // Texts of every length, in one string and across calls, come out whole as templates.
    let c = classifier(100);
    let long = format!(
        "select {} from t where tenant_id = 1",
        "c, ".repeat(2000) + "c"
    );
    for sql in [
        long.as_str(),
        "select 1; select a from t where tenant_id = 2",
        "select b from t",
        long.as_str(),
        "select 3",
    ] {
        let got: Vec<String> = c
            .classify(sql.as_bytes())
            .statements
            .iter()
            .map(|s| s.template.text.to_string())
            .collect();
        let want: Vec<String> = super::lexer::lex(sql.as_bytes(), "tenant_id")
            .map(|l| l.normalized)
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn invalid_utf8_still_hits_the_cache() {
    // The cache is keyed by the normalized bytes; the template's text has the replacement.
    let c = classifier(100);
    let a = c.classify(b"select a\xff from t where tenant_id = 1");
    let b = c.classify(b"select a\xff from t where tenant_id = 2");
    assert_eq!(c.cache_stats(), (1, 1));
    let (a, b) = (&a.statements[0], &b.statements[0]);
    assert!(Arc::ptr_eq(&a.template, &b.template));
    assert_eq!(
        &*a.template.text,
        "select a\u{fffd} from t where tenant_id = $1"
    );
    // A valid text that reads the same is another statement.
    c.classify("select a\u{fffd} from t where tenant_id = 3".as_bytes());
    assert_eq!(c.cache_stats(), (1, 2));
}
