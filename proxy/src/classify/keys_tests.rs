//! Statement shapes → kind, tables and key, through the public API.

use shardgate_catalog::TenantKey;

use super::super::{
    Classifier, ClassifyConfig, KeySpec, KeyType, KeyValues, StatementInfo, StatementKind,
    TableRef, ValueRef, resolve,
};

fn classifier(key_type: KeyType) -> Classifier {
    Classifier::new(
        ClassifyConfig {
            key_column: "tenant_id".into(),
            key_type,
        },
        1000,
    )
}

fn info(sql: &str) -> StatementInfo {
    let mut c = classifier(KeyType::Bigint).classify(sql.as_bytes());
    assert_eq!(c.statements.len(), 1, "{sql}");
    c.statements.pop().unwrap()
}

fn spec(sql: &str) -> KeySpec {
    info(sql).template.key.clone()
}

/// The statement's keys (literals only) as bigints.
fn ints(sql: &str) -> Vec<i64> {
    let i = info(sql);
    match i.keys(None, KeyType::Bigint) {
        Ok(KeyValues::Keys(k) | KeyValues::PerRow(k)) => k
            .into_iter()
            .map(|k| match k {
                TenantKey::Int(v) => v,
                other => panic!("{other:?}"),
            })
            .collect(),
        Ok(KeyValues::None) => vec![],
        Err(e) => panic!("{sql}: {e}"),
    }
}

fn no_key(sql: &str) {
    assert_eq!(spec(sql), KeySpec::None, "{sql}");
}

fn kind(sql: &str) -> StatementKind {
    info(sql).template.kind
}

fn tables(sql: &str) -> Vec<String> {
    info(sql)
        .template
        .tables
        .iter()
        .map(|t: &TableRef| match &t.schema {
            Some(s) => format!("{s}.{}", t.name),
            None => t.name.clone(),
        })
        .collect()
}

#[test]
fn where_equality() {
    assert_eq!(
        ints("select * from orders where tenant_id = 42 and id = 7"),
        [42]
    );
    assert_eq!(
        ints("select * from orders where id = 7 and tenant_id = '42'"),
        [42]
    );
    assert_eq!(ints("select * from orders where 42 = tenant_id"), [42]);
    assert_eq!(ints("SELECT * FROM orders WHERE TENANT_ID = 5"), [5]);
    assert_eq!(
        ints("select * from orders where (tenant_id = 5) and x > 1"),
        [5]
    );
    assert_eq!(
        ints("select * from orders where tenant_id is not distinct from 6"),
        [6]
    );
    assert_eq!(
        ints("select * from orders where tenant_id = 6::bigint"),
        [6]
    );
}

#[test]
fn aliases_quotes_and_schemas() {
    assert_eq!(ints("select o.id from orders o where o.tenant_id = 5"), [5]);
    assert_eq!(ints("select * from orders where \"tenant_id\" = 5"), [5]);
    no_key("select * from orders where \"Tenant_Id\" = 5");
    let sql = "select * from Public.\"Orders\" where public.\"Orders\".tenant_id = 8";
    assert_eq!(ints(sql), [8]);
    assert_eq!(tables(sql), ["public.Orders"]);
}

#[test]
fn parameters() {
    let sql = "select * from orders where tenant_id = $1 and id = $2";
    assert_eq!(spec(sql), KeySpec::One(ValueRef::Param(1)));
    assert_eq!(info(sql).template.param_count, 2);
    let sql = "select * from orders where id = $2 and tenant_id = $1::int8";
    assert_eq!(spec(sql), KeySpec::One(ValueRef::Param(1)));
}

#[test]
fn in_lists_and_any() {
    assert_eq!(ints("select * from t where tenant_id in (1, 2, 2)"), [1, 2]);
    assert_eq!(
        ints("select * from t where tenant_id = any(array[3, 4])"),
        [3, 4]
    );
    assert_eq!(
        ints("select * from t where tenant_id = any('{5,6}')"),
        [5, 6]
    );
    assert_eq!(
        ints("select * from t where tenant_id = any('{5,6}'::bigint[])"),
        [5, 6]
    );
    assert_eq!(
        spec("select * from t where tenant_id = any($1)"),
        KeySpec::AnyOfArray(ValueRef::Param(1))
    );
    assert_eq!(
        spec("select * from t where tenant_id in ($1, $2)"),
        KeySpec::AnyOf(vec![ValueRef::Param(1), ValueRef::Param(2)])
    );
}

#[test]
fn ors_where_every_branch_pins() {
    assert_eq!(
        ints("select * from t where tenant_id = 1 or tenant_id = 2"),
        [1, 2]
    );
    assert_eq!(
        ints("select * from t where (tenant_id = 1 and a = 2) or (b = 3 and tenant_id = 4)"),
        [1, 4]
    );
    // Two pins ANDed: the union, which can only widen what the router sees.
    assert_eq!(
        ints("select * from t where tenant_id = 1 and tenant_id = 2"),
        [1, 2]
    );
}

#[test]
fn joins() {
    assert_eq!(
        ints(
            "select * from orders o join items i on i.tenant_id = o.tenant_id and i.order_id = o.id where o.tenant_id = 3"
        ),
        [3]
    );
    assert_eq!(
        ints("select * from orders join items using (tenant_id, order_id) where tenant_id = 3"),
        [3]
    );
    assert_eq!(
        ints("select * from orders o inner join items i on i.order_id = o.id and o.tenant_id = 9"),
        [9]
    );
    assert_eq!(
        tables("select * from orders o join items i on i.order_id = o.id where o.tenant_id = 9"),
        ["orders", "items"]
    );
    // A pin in an outer join's ON does not restrict the preserved side.
    no_key("select * from orders o left join items i on i.order_id = o.id and i.tenant_id = 9");
}

#[test]
fn insert_values() {
    let sql =
        "insert into orders (tenant_id, id, note) values (1, 10, 'a'), (2, 11, 'b') returning id";
    assert_eq!(ints(sql), [1, 2]);
    assert!(matches!(spec(sql), KeySpec::Rows(r) if r.len() == 2));
    assert_eq!(kind(sql), StatementKind::Insert);
    assert_eq!(
        spec("insert into orders (id, tenant_id) values ($1, $2)"),
        KeySpec::Rows(vec![ValueRef::Param(2)])
    );
    assert_eq!(
        ints("insert into orders (\"tenant_id\", id) values ('7', 1)"),
        [7]
    );
}

#[test]
fn insert_on_conflict() {
    let sql = "insert into orders (tenant_id, id, n) values (1, 2, 3) on conflict (tenant_id, id) do update set n = excluded.n, tenant_id = excluded.tenant_id";
    let i = info(sql);
    assert_eq!(ints(sql), [1]);
    assert!(!i.template.has_key_column_write);
    let sql = "insert into orders (tenant_id, id) values (1, 2) on conflict (id) do update set tenant_id = 5";
    let i = info(sql);
    assert!(i.template.has_key_column_write);
    assert_eq!(i.template.key_write, KeySpec::One(ValueRef::Literal(2)));
    assert_eq!(
        ints("insert into t (tenant_id, id) values (1, 2) on conflict do nothing"),
        [1]
    );
}

#[test]
fn insert_select() {
    assert_eq!(
        ints(
            "insert into archive (tenant_id, id) select tenant_id, id from orders where tenant_id = 4 and id < 10"
        ),
        [4]
    );
    assert_eq!(ints("insert into t (tenant_id, x) select 5, now()"), [5]);
    assert_eq!(
        ints("insert into t (tenant_id, x) select 5, x from s where tenant_id = 5"),
        [5]
    );
    // The inserted key and the rows read disagree: both tenants, so the router sees both.
    assert_eq!(
        ints("insert into t (tenant_id, x) select 6, x from s where tenant_id = 5"),
        [6, 5]
    );
    no_key("insert into t (tenant_id, x) select other, x from s where tenant_id = 5");
    no_key("insert into t (tenant_id, x) select tenant_id, x from s");
    no_key("insert into t select * from s where tenant_id = 5");
}

#[test]
fn insert_without_a_usable_key() {
    no_key("insert into orders values (1, 2)");
    no_key("insert into orders (id) values (1)");
    no_key("insert into orders (tenant_id, id) values (1, 2), (default, 3)");
    no_key("insert into orders (tenant_id, id) values (nextval('s'), 2)");
    no_key("insert into orders default values");
}

#[test]
fn update_and_delete() {
    let sql = "update orders set note = 'x' where tenant_id = 3 and id = 1 returning *";
    assert_eq!(ints(sql), [3]);
    assert_eq!(kind(sql), StatementKind::Update);
    assert!(!info(sql).template.has_key_column_write);
    assert_eq!(
        ints(
            "update orders o set note = s.note from staging s where s.id = o.id and o.tenant_id = 4"
        ),
        [4]
    );
    assert_eq!(
        tables(
            "update orders o set note = s.note from staging s where s.id = o.id and o.tenant_id = 4"
        ),
        ["orders", "staging"]
    );
    let sql = "delete from orders o using items i where i.order_id = o.id and o.tenant_id = 5";
    assert_eq!(ints(sql), [5]);
    assert_eq!(kind(sql), StatementKind::Delete);
    assert_eq!(tables(sql), ["orders", "items"]);
    no_key("delete from orders where id = 1");
}

#[test]
fn key_column_writes() {
    let t = info("update orders set tenant_id = $2 where tenant_id = $1").template;
    assert!(t.has_key_column_write);
    assert_eq!(t.key, KeySpec::One(ValueRef::Param(1)));
    assert_eq!(t.key_write, KeySpec::One(ValueRef::Param(2)));
    let t = info("update orders set tenant_id = tenant_id + 1 where tenant_id = 1").template;
    assert!(t.has_key_column_write);
    assert_eq!(t.key_write, KeySpec::None);
    let t = info("update orders set (tenant_id, n) = (1, 2) where tenant_id = 1").template;
    assert!(t.has_key_column_write);
    assert!(
        !info("update orders set tenant_id = tenant_id where tenant_id = 1")
            .template
            .has_key_column_write
    );
}

#[test]
fn ctes() {
    assert_eq!(
        ints(
            "with recent as (select * from orders where tenant_id = 1 and d > now()) select * from recent where id = 2"
        ),
        [1]
    );
    let sql =
        "with n as (insert into orders (tenant_id, id) values (7, 1) returning *) select * from n";
    assert_eq!(ints(sql), [7]);
    assert_eq!(kind(sql), StatementKind::Insert);
    let sql = "with s as (select id from staging where tenant_id = 2) insert into orders (tenant_id, id) select 2, id from s";
    assert_eq!(ints(sql), [2]);
    assert_eq!(kind(sql), StatementKind::Insert);
    assert_eq!(tables(sql), ["staging", "orders"]);
    // Every part must be pinned.
    no_key(
        "with a as (select * from orders) select * from a join items i on true where i.tenant_id = 1",
    );
}

#[test]
fn unions_and_derived_tables() {
    assert_eq!(
        ints(
            "select id from orders where tenant_id = 1 union all select id from orders where tenant_id = 2"
        ),
        [1, 2]
    );
    no_key("select id from orders where tenant_id = 1 union select id from orders");
    assert_eq!(
        ints("select * from (select * from orders where tenant_id = 3) s where s.id = 1"),
        [3]
    );
    no_key("select * from (select * from orders) s where s.tenant_id = 3");
    assert_eq!(kind("select 1"), StatementKind::Select);
    no_key("select 1");
}

#[test]
fn negative_shapes() {
    no_key("select * from t where tenant_id in (select tenant_id from u where tenant_id = 1)");
    no_key("select * from t where id in (select id from u where tenant_id = 1)");
    no_key("select * from t where exists (select 1 from u where tenant_id = 1)");
    no_key("select * from t where tenant_id <> 1");
    no_key("select * from t where tenant_id < 5");
    no_key("select * from t where tenant_id::text like '1%'");
    no_key("select * from t where tenant_id between 1 and 2");
    no_key("select * from t where tenant_id = 1 or x = 2");
    no_key("select * from t where not (tenant_id = 1)");
    no_key("select * from t where not (tenant_id <> 1)");
    no_key("select * from t where (tenant_id, id) in ((1, 2))");
    no_key("select * from t where tenant_id = 1 + 1");
    no_key("select * from t where tenant_id = other_column");
    no_key("select * from t where tenant_id = -5");
    no_key("select * from t where tenant_id in (1, other)");
    no_key("select * from t where tenant_id not in (1, 2)");
    no_key("select * from t where tenant_id = any($1) and tenant_id = $2");
    no_key("select * from t where tenant_id = all(array[1])");
    no_key("select * from t where coalesce(tenant_id, 1) = 1");
    no_key("select * from t");
}

#[test]
fn literals_the_placeholder_form_cannot_parse() {
    // Type modifiers (`varchar(10)`) refuse placeholders: the original text is parsed.
    let sql =
        "select a::varchar(10) from orders where created > date '2020-01-01' and tenant_id = 5";
    let i = info(sql);
    assert!(i.template.parsed);
    assert_eq!(i.template.key, KeySpec::One(ValueRef::Literal(2)));
    assert_eq!(ints(sql), [5]);
    let sql = "select x::varchar(10), 'é' from t\n where\n  tenant_id = 8 and d > date 'x'";
    assert_eq!(info(sql).template.key, KeySpec::One(ValueRef::Literal(2)));
    assert_eq!(ints(sql), [8]);
    assert_eq!(
        ints("select x::numeric(10, 2) from t where tenant_id = 12"),
        [12]
    );
}

#[test]
fn string_literal_forms_as_text_keys() {
    let c = classifier(KeyType::Text);
    let text = |sql: &str| {
        let i = c.classify(sql.as_bytes()).statements.pop().unwrap();
        match i.keys(None, KeyType::Text).unwrap() {
            KeyValues::Keys(k) => k,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        text("select * from t where tenant_id = 'acme'"),
        [TenantKey::Text("acme".into())]
    );
    assert_eq!(
        text("select * from t where tenant_id = E'a\\'b'"),
        [TenantKey::Text("a'b".into())]
    );
    assert_eq!(
        text("select * from t where tenant_id = $$x y$$"),
        [TenantKey::Text("x y".into())]
    );
    assert_eq!(
        text("select * from t where tenant_id = 42"),
        [TenantKey::Text("42".into())]
    );
}

#[test]
fn uuid_keys() {
    let c = classifier(KeyType::Uuid);
    let i = c
        .classify(b"select * from t where tenant_id = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid")
        .statements
        .pop()
        .unwrap();
    let KeyValues::Keys(k) = i.keys(None, KeyType::Uuid).unwrap() else {
        panic!()
    };
    assert_eq!(k[0].to_string(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    let i = c
        .classify(b"select * from t where tenant_id = 'nope'")
        .statements
        .pop()
        .unwrap();
    assert!(i.keys(None, KeyType::Uuid).is_err());
}

#[test]
fn comment_key_wins() {
    let i = info("/* tenant_id=9 */ select * from t where tenant_id = 1");
    assert_eq!(i.comment_key.as_deref(), Some("9"));
    assert_eq!(
        i.keys(None, KeyType::Bigint).unwrap(),
        KeyValues::Keys(vec![TenantKey::Int(9)])
    );
    // The SQL key is still there for whoever wants it.
    assert_eq!(
        resolve(&i.template.key, &i, None, KeyType::Bigint).unwrap(),
        KeyValues::Keys(vec![TenantKey::Int(1)])
    );
    let i = info("select * from t /* tenant_id='x' */");
    assert!(i.keys(None, KeyType::Bigint).is_err());
}

#[test]
fn kinds() {
    use StatementKind as K;
    for (sql, want) in [
        ("BEGIN", K::Begin),
        ("start transaction isolation level serializable", K::Begin),
        ("commit", K::Commit),
        ("END", K::Commit),
        ("rollback", K::Rollback),
        ("ROLLBACK TO SAVEPOINT a", K::TxnOther),
        ("savepoint a", K::TxnOther),
        ("release savepoint a", K::TxnOther),
        (
            "set transaction isolation level read committed",
            K::TxnOther,
        ),
        ("set search_path = a, b", K::Set),
        ("set app.tenant_id = 42", K::Set),
        ("reset all", K::Set),
        ("discard all", K::Set),
        ("show search_path", K::Show),
        ("copy orders from stdin", K::Copy { from_stdin: true }),
        (
            "copy orders (a, b) from stdin with (format csv, force_null (a))",
            K::Copy { from_stdin: true },
        ),
        ("copy orders to stdout", K::Copy { from_stdin: false }),
        (
            "copy (select * from orders where tenant_id = 1) to stdout",
            K::Copy { from_stdin: false },
        ),
        ("truncate orders", K::Truncate),
        (
            "create table t (id bigint primary key, tenant_id bigint, n varchar(10) default 'x')",
            K::Ddl,
        ),
        ("create index concurrently i on orders (tenant_id)", K::Ddl),
        ("alter table orders add column x int", K::Ddl),
        ("drop table a, b", K::Ddl),
        ("vacuum (verbose, analyze) orders", K::Utility),
        ("analyze orders", K::Utility),
        ("listen chan", K::Utility),
        ("do $$ begin perform 1; end $$", K::Unparsed),
        ("call refresh_stats(1)", K::Unparsed),
        ("select * from t where tenant_id = 1 for update", K::Select),
        (
            "with d as (delete from t where tenant_id = 1 returning *) select * from d",
            K::Delete,
        ),
        ("values (1), (2)", K::Select),
    ] {
        assert_eq!(kind(sql), want, "{sql}");
    }
    assert!(!StatementKind::Select.is_write());
    assert!(StatementKind::Copy { from_stdin: true }.is_write());
}

#[test]
fn copy_query_key_and_tables() {
    assert_eq!(
        ints("copy (select * from orders where tenant_id = 1) to stdout"),
        [1]
    );
    assert_eq!(tables("copy orders from stdin"), ["orders"]);
    assert_eq!(tables("drop table a, s.b"), ["a", "s.b"]);
    assert_eq!(tables("truncate a, b"), ["a", "b"]);
    assert_eq!(tables("create index i on orders (tenant_id)"), ["orders"]);
}

#[test]
fn explain_describes_the_inner_statement() {
    let t = info("explain analyze update orders set n = 1 where tenant_id = 2").template;
    assert!(t.explain);
    assert_eq!(t.kind, StatementKind::Update);
    assert_eq!(ints("explain select * from t where tenant_id = 3"), [3]);
}

#[test]
fn tables_everywhere_but_ctes_and_functions() {
    assert_eq!(
        tables(
            "with c as (select * from a) select * from c, generate_series(1, 3) g, (select * from b) d where x in (select y from e) and exists (select 1 from a)"
        ),
        ["a", "b", "e"]
    );
    assert_eq!(
        tables("select * from \"Mixed\", UPPER_CASE"),
        ["Mixed", "upper_case"]
    );
}

#[test]
fn statements_the_parser_refuses_get_no_key() {
    for sql in [
        "select * from orders where tenant_id = 1 for no key update",
        "select * from orders where tenant_id = 1 frobnicate",
        "merge into t using s on t.id = s.id and t.tenant_id = 1 when matched then delete",
    ] {
        let t = info(sql).template;
        assert_eq!(t.key, KeySpec::None, "{sql}");
    }
    assert_eq!(
        info("select * from orders where tenant_id = 1 frobnicate")
            .template
            .kind,
        StatementKind::Unparsed
    );
}

#[test]
fn several_statements_in_one_string() {
    let c = classifier(KeyType::Bigint).classify(
        b"BEGIN; update orders set n = 'a;b' where tenant_id = 7; /* tenant_id=8 */ select 1; COMMIT;",
    );
    let kinds: Vec<_> = c.statements.iter().map(|s| s.template.kind).collect();
    assert_eq!(
        kinds,
        [
            StatementKind::Begin,
            StatementKind::Update,
            StatementKind::Select,
            StatementKind::Commit
        ]
    );
    assert_eq!(c.statements[1].literals[1].text, "7");
    assert_eq!(c.statements[2].comment_key.as_deref(), Some("8"));
}

#[test]
fn orm_shapes_parse_without_the_fallback() {
    for (sql, want) in [
        (
            "SELECT \"app_order\".\"id\", \"app_order\".\"note\" FROM \"app_order\" WHERE (\"app_order\".\"tenant_id\" = 42 AND \"app_order\".\"id\" = 7) LIMIT 21",
            KeySpec::One(ValueRef::Literal(0)),
        ),
        (
            "SELECT \"orders\".* FROM \"orders\" WHERE \"orders\".\"tenant_id\" = $1 LIMIT $2",
            KeySpec::One(ValueRef::Param(1)),
        ),
        (
            "select o1_0.id,o1_0.note from orders o1_0 where o1_0.tenant_id=$1 and o1_0.id=$2",
            KeySpec::One(ValueRef::Param(1)),
        ),
        (
            "INSERT INTO \"orders\" (\"tenant_id\",\"note\",\"created_at\") VALUES ($1,$2,$3) RETURNING \"id\"",
            KeySpec::Rows(vec![ValueRef::Param(1)]),
        ),
        (
            "UPDATE \"orders\" SET \"note\" = $1, \"updated_at\" = $2 WHERE \"orders\".\"id\" = $3 AND \"orders\".\"tenant_id\" = $4",
            KeySpec::One(ValueRef::Param(4)),
        ),
        (
            "SELECT COUNT(*) AS \"__count\" FROM \"orders\" WHERE \"orders\".\"tenant_id\" IN (1, 2, 3)",
            KeySpec::AnyOf(vec![
                ValueRef::Literal(0),
                ValueRef::Literal(1),
                ValueRef::Literal(2),
            ]),
        ),
        (
            "select * from orders where tenant_id = 5 order by created_at desc limit 10 offset 20",
            KeySpec::One(ValueRef::Literal(0)),
        ),
    ] {
        let t = info(sql).template;
        assert!(t.parsed, "{sql}");
        assert_eq!(t.key, want, "{sql}");
        assert_eq!(t.tables.len(), 1, "{sql}");
    }
}
