//! The normalizing lexer: statements, placeholders, whitespace and comments.

use super::*;

fn one(sql: &str) -> Lexed<'_> {
    let mut v: Vec<_> = lex(sql.as_bytes(), "tenant_id").collect();
    assert_eq!(v.len(), 1, "{sql}");
    v.pop().unwrap()
}

fn texts<'l>(l: &'l Lexed<'_>) -> Vec<(&'l str, bool)> {
    l.literals
        .iter()
        .map(|l| (l.text.as_str(), l.quoted))
        .collect()
}

#[test]
fn literals_become_placeholders_above_the_highest_param() {
    let l = one("select * from orders where tenant_id = 42 and id = $2 and note = 'it''s'");
    assert_eq!(
        l.normalized,
        "select * from orders where tenant_id = $3 and id = $2 and note = $4"
    );
    assert_eq!(texts(&l), vec![("42", false), ("it's", true)]);
    assert_eq!((l.base, l.max_param), (2, 2));
    assert_eq!(l.offsets, vec![39, 65]);
}

#[test]
fn whitespace_and_comments_collapse() {
    let a = one("  SELECT  a,\n\tb -- trailing\nFROM t /* c /* nested */ */ WHERE x=1  ");
    assert_eq!(a.normalized, "SELECT a, b FROM t WHERE x=$1");
    let b = one("select/**/1");
    assert_eq!(b.normalized, "select $1");
}

#[test]
fn string_forms() {
    let l = one(r"select E'a\'b\n\x41\101\u00e9', $$x;y$$, $q$ $$ $q$, B'0101', U&'d', x'ff'");
    assert_eq!(
        texts(&l),
        vec![("a'b\nAAé", true), ("x;y", true), (" $$ ", true)]
    );
    assert_eq!(l.normalized, "select $1, $2, $3, B'0101', U&'d', x'ff'");
}

#[test]
fn numbers_and_casts() {
    let l = one("select 1.5e-3, .5, 0x1F, 1_000, t1.c2, 'x'::uuid, a[2], 3abc from t");
    assert_eq!(
        texts(&l),
        vec![
            ("1.5e-3", false),
            (".5", false),
            ("0x1F", false),
            ("1_000", false),
            ("x", true),
            ("2", false)
        ]
    );
    assert_eq!(
        l.normalized,
        "select $1, $2, $3, $4, t1.c2, $5::uuid, a[$6], 3abc from t"
    );
}

#[test]
fn splitting_respects_quotes_comments_and_dollar_quotes() {
    let sql = "select ';' ; set a = 'x;y' -- ;\n; select $q$ ; $q$; select $1; /* ; /* ; */ */ select 2;;";
    let v: Vec<_> = lex(sql.as_bytes(), "tenant_id").collect();
    let n: Vec<_> = v.iter().map(|l| l.normalized.as_str()).collect();
    assert_eq!(
        n,
        vec![
            "select $1",
            "set a = $1",
            "select $1",
            "select $1",
            "select $1"
        ]
    );
    assert_eq!(v[3].max_param, 1);
    assert_eq!(v[3].base, 1);
}

#[test]
fn prescan_miss_is_corrected() {
    // The `;` inside the string stops the prescan before `$5`.
    let l = one("select 'a;b', $5");
    assert_eq!(l.normalized, "select $6, $5");
    assert_eq!(l.base, 5);
}

#[test]
fn key_comments() {
    let k = |s: &str| one(s).comment_key;
    assert_eq!(k("/* tenant_id=42 */ select 1"), Some("42".into()));
    assert_eq!(k("select 1 /* TENANT_ID = 'a''b' */"), Some("a'b".into()));
    assert_eq!(
        k("select 1 /*controller='x',tenant_id='7'*/"),
        Some("7".into())
    );
    assert_eq!(k("/* other=1 */ select 1"), None);
    assert_eq!(k("/* tenant_id= */ select 1"), None);
    assert_eq!(k("-- tenant_id=1\nselect 1"), None);
    assert_eq!(
        k("/* a */ /* tenant_id=3 */ /* tenant_id=4 */ select 1"),
        Some("3".into())
    );
}

#[test]
fn out_of_range_params_cannot_collide() {
    let l = one("select $70000, $0, 1");
    assert_eq!(l.normalized, "select $0, $0, $1");
    assert_eq!(l.max_param, 0);
}

#[test]
fn unterminated_tokens_are_kept() {
    assert_eq!(one("select 'abc").normalized, "select 'abc");
    assert_eq!(one("select $a$ abc").normalized, "select $a$ abc");
    assert_eq!(one("select /* abc").normalized, "select");
    assert_eq!(one("select E'ab\\").normalized, "select E'ab\\");
}

#[test]
fn long_runs_are_too_deep_but_long_lists_are_not() {
    let chain = vec!["a"; 9000].join(" + ");
    assert!(one(&format!("select {chain}")).too_deep);
    let list = vec!["(1, 'a', $1::int)"; 20_000].join(", ");
    assert!(!one(&format!("insert into t values {list}")).too_deep);
    let parens = vec!["(a)"; 9000].join(" + ");
    assert!(one(&format!("select {parens}")).too_deep);
}

#[test]
fn empty_statements_are_skipped() {
    assert!(lex(b"  ; -- x\n ; /* y */", "tenant_id").next().is_none());
    assert!(lex(b"", "tenant_id").next().is_none());
}
