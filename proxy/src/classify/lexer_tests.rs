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
    assert_eq!(l.offsets(), vec![39, 65]);
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

#[test]
fn stretches_stop_where_a_token_of_their_own_starts() {
    // Digits and `$` continue a name but start a literal or parameter after an operator.
    let l = one("select t1.c2,a$b,x=1,y=$1,z=-2,w=.5,v=t.5,u=\"q\".5,s=f(x).5,r=a[1].5");
    assert_eq!(
        l.normalized,
        "select t1.c2,a$b,x=$2,y=$1,z=-$3,w=$4,v=t.$5,u=\"q\".$6,s=f(x).$7,r=a[$8].$9"
    );
    // Comments and whitespace inside and at the edges of stretches.
    let l = one("select a--x\n+b/*y*/-c/d - -e");
    assert_eq!(l.normalized, "select a +b -c/d - -e");
    let l = one("select(a)+b ,c");
    assert_eq!(l.normalized, "select(a)+b ,c");
    // `1abc` stays as written, also right after an operator.
    assert_eq!(one("select x+1abc, 2").normalized, "select x+1abc, $1");
}

#[test]
fn prefixed_strings_inside_stretches() {
    let l = one("select x=E'a\\nb',y=e'c',z=B'01',w=U&'d\\0061',v=t1'x',u=abc'y''z'");
    assert_eq!(
        l.normalized,
        "select x=$1,y=$2,z=B'01',w=U&'d\\0061',v=t1'x',u=abc'y''z'"
    );
    assert_eq!(texts(&l), vec![("a\nb", true), ("c", true)]);
    assert_eq!(l.offsets(), vec![9, 19]);
    // `E` alone at the start of the statement, and after whitespace.
    assert_eq!(one("E'x'").normalized, "$1");
    assert_eq!(one("select  E'x'").normalized, "select $1");
    // Unterminated prefixed strings run to the end.
    assert_eq!(one("select x=B'01").normalized, "select x=B'01");
    assert_eq!(one("select x=E'01").normalized, "select x=E'01");
}

#[test]
fn literals_with_and_without_decoding() {
    let l = one("select 'plain', 'it''s', E'no escapes', E'tab\\t', '', E'', $$dollar$$, 'é'");
    assert_eq!(
        texts(&l),
        vec![
            ("plain", true),
            ("it's", true),
            ("no escapes", true),
            ("tab\t", true),
            ("", true),
            ("", true),
            ("dollar", true),
            ("é", true),
        ]
    );
    // Long literals (past any inline storage) and invalid UTF-8 (replaced).
    let long = "x".repeat(100);
    let sql = format!("select '{long}', 'a''{long}'");
    let l = one(&sql);
    let quoted = format!("a'{long}");
    assert_eq!(
        texts(&l),
        vec![(long.as_str(), true), (quoted.as_str(), true)]
    );
    let l: Vec<_> = lex(b"select 'a\xffb', 7", "tenant_id").collect();
    assert_eq!(l[0].literals[0].text, "a\u{fffd}b");
    assert_eq!(l[0].normalized, "select $1, $2");
}

#[test]
fn quoted_and_non_ascii_names_are_kept() {
    let l = one("select \"Tenant \"\"Id\"\", x\" from tëst_ñ where ñ=1 and \"é\"=2");
    assert_eq!(
        l.normalized,
        "select \"Tenant \"\"Id\"\", x\" from tëst_ñ where ñ=$1 and \"é\"=$2"
    );
    // Bytes that are not UTF-8 outside literals are replaced in the text.
    let l: Vec<_> = lex(b"select a\xff from t", "tenant_id").collect();
    assert_eq!(l[0].normalized, "select a\u{fffd} from t");
}

#[test]
fn runs_without_spaces_are_counted_too() {
    let chain = vec!["a"; 9000].join("+");
    assert!(one(&format!("select {chain}")).too_deep);
    let chain = vec!["a"; 7000].join("+");
    assert!(!one(&format!("select {chain}")).too_deep);
    let parens = vec!["(a)"; 9000].join("+");
    assert!(one(&format!("select {parens}")).too_deep);
    let list = vec!["(1,'a',$1::int,x.y)"; 20_000].join(",");
    assert!(!one(&format!("insert into t values {list}")).too_deep);
    // Runs are per bracket level: a long run inside brackets is too deep as well.
    let inner = vec!["a"; 9000].join("||");
    assert!(one(&format!("select f(1, {inner})")).too_deep);
}

#[test]
fn several_statements_with_stretches_at_their_edges() {
    let v: Vec<_> = lex(b"select a+1;select(b);E'x';\"c\"", "tenant_id").collect();
    let n: Vec<_> = v.iter().map(|l| l.normalized.as_str()).collect();
    assert_eq!(n, vec!["select a+$1", "select(b)", "$1", "\"c\""]);
    assert_eq!(v[2].raw, b"E'x'");
}

#[test]
fn names_joined_by_spaces_and_dots() {
    let l = one("select s.t.u, a .b, a. b, t.E'x', x E'y', \"q\".r, a  b from s.t");
    assert_eq!(
        l.normalized,
        "select s.t.u, a .b, a. b, t.$1, x $2, \"q\".r, a b from s.t"
    );
    assert_eq!(texts(&l), vec![("x", true), ("y", true)]);
    assert_eq!(l.offsets(), vec![28, 36]);
    // A dot before a digit after a name is still not a number; before a name it is a token.
    assert_eq!(
        one("select t.5, t.e5, t.1e5").normalized,
        "select t.$1, t.e5, t.$2"
    );
}

#[test]
fn names_of_every_length_end_where_they_should() {
    // Names are scanned four bytes at a time: try every length around that, and every kind
    // of byte after them.
    for len in 1..=10 {
        let name: String = "abcdéfghij".chars().take(len).collect();
        for after in ["", "=1", "'x'", " b", ".c", "(", "$1", "\"q\""] {
            let sql = format!("select {name}{after}");
            let l: Vec<_> = lex(sql.as_bytes(), "tenant_id").collect();
            let want = match after {
                "=1" => format!("select {name}=$1"),
                "$1" => format!("select {name}$1"),
                _ => sql.clone(),
            };
            assert_eq!(l[0].normalized, want, "{sql}");
        }
    }
}

#[test]
fn one_space_before_literals_and_params() {
    let l = one(
        "select a = 1, b = 'x', c = $1, d = .5, e = $$y$$, f = -- c\n 2, g = /* c */ 3, \
         h = E'z', i = 1abc, j = t .5, k =  4, l = 'u",
    );
    assert_eq!(
        l.normalized,
        "select a = $2, b = $3, c = $1, d = $4, e = $5, f = $6, g = $7, h = $8, i = 1abc, \
         j = t $9, k = $10, l = 'u"
    );
}
