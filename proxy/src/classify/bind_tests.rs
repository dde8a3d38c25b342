//! Bind parameter decoding: formats, types, arrays, and hostile bodies.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardgate_catalog::TenantKey;

use super::super::{Classifier, ClassifyConfig, KeyValues};
use super::*;

/// The Bind body after the names: formats, values, result formats.
fn tail(formats: &[i16], values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for f in formats {
        b.extend_from_slice(&f.to_be_bytes());
    }
    b.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        match v {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b
}

/// A one-dimensional binary array.
fn bin_array(elem_oid: u32, elems: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&i32::from(elems.iter().any(Option::is_none)).to_be_bytes());
    b.extend_from_slice(&elem_oid.to_be_bytes());
    b.extend_from_slice(&(elems.len() as i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    for e in elems {
        match e {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(e) => {
                b.extend_from_slice(&(e.len() as i32).to_be_bytes());
                b.extend_from_slice(e);
            }
        }
    }
    b
}

const UUID_TEXT: &str = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
const UUID: [u8; 16] = [
    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
];

fn scalar(t: &[u8], types: &[u32], kt: KeyType) -> Result<TenantKey, KeyError> {
    BindParams::parse(t, types)?.scalar_key(1, kt)
}

#[test]
fn text_format_parameters() {
    let t = tail(&[], &[Some(b" 42 ")]);
    assert_eq!(scalar(&t, &[], KeyType::Bigint), Ok(TenantKey::Int(42)));
    assert_eq!(
        scalar(&t, &[], KeyType::Text),
        Ok(TenantKey::Text(" 42 ".into()))
    );
    let t = tail(&[0], &[Some(UUID_TEXT.as_bytes())]);
    assert_eq!(scalar(&t, &[], KeyType::Uuid), Ok(TenantKey::Uuid(UUID)));
    let t = tail(&[], &[Some(b"4x")]);
    let e = scalar(&t, &[], KeyType::Bigint).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the shard key from parameter $1 (\"4x\") is not a valid bigint"
    );
    let t = tail(&[], &[Some(b"\xff")]);
    assert!(matches!(
        scalar(&t, &[], KeyType::Text),
        Err(KeyError::Malformed(_))
    ));
}

#[test]
fn binary_integers_by_width_or_type() {
    let t8 = tail(&[1], &[Some(&(-5i64).to_be_bytes())]);
    let t4 = tail(&[1], &[Some(&7i32.to_be_bytes())]);
    let t2 = tail(&[1], &[Some(&9i16.to_be_bytes())]);
    assert_eq!(scalar(&t8, &[], KeyType::Bigint), Ok(TenantKey::Int(-5)));
    assert_eq!(scalar(&t4, &[], KeyType::Bigint), Ok(TenantKey::Int(7)));
    assert_eq!(scalar(&t2, &[], KeyType::Bigint), Ok(TenantKey::Int(9)));
    assert_eq!(scalar(&t8, &[20], KeyType::Bigint), Ok(TenantKey::Int(-5)));
    assert_eq!(scalar(&t4, &[23], KeyType::Bigint), Ok(TenantKey::Int(7)));
    assert_eq!(scalar(&t2, &[21], KeyType::Bigint), Ok(TenantKey::Int(9)));
    // The Parse said int8 but 4 bytes came: refused, not guessed.
    assert!(scalar(&t4, &[20], KeyType::Bigint).is_err());
    let t3 = tail(&[1], &[Some(&[0, 0, 1])]);
    assert!(scalar(&t3, &[], KeyType::Bigint).is_err());
    assert_eq!(
        scalar(&t4, &[23], KeyType::Text),
        Ok(TenantKey::Text("7".into()))
    );
    let text = tail(&[1], &[Some(b"12")]);
    assert_eq!(
        scalar(&text, &[25], KeyType::Bigint),
        Ok(TenantKey::Int(12))
    );
}

#[test]
fn binary_text_and_uuid() {
    let t = tail(&[1], &[Some(b"acme")]);
    assert_eq!(
        scalar(&t, &[25], KeyType::Text),
        Ok(TenantKey::Text("acme".into()))
    );
    assert_eq!(
        scalar(&t, &[], KeyType::Text),
        Ok(TenantKey::Text("acme".into()))
    );
    let u = tail(&[1], &[Some(&UUID)]);
    assert_eq!(
        scalar(&u, &[2950], KeyType::Uuid),
        Ok(TenantKey::Uuid(UUID))
    );
    assert_eq!(scalar(&u, &[], KeyType::Uuid), Ok(TenantKey::Uuid(UUID)));
    let short = tail(&[1], &[Some(&UUID[..15])]);
    assert!(scalar(&short, &[], KeyType::Uuid).is_err());
    let as_text = tail(&[1], &[Some(UUID_TEXT.as_bytes())]);
    assert_eq!(
        scalar(&as_text, &[25], KeyType::Uuid),
        Ok(TenantKey::Uuid(UUID))
    );
}

#[test]
fn formats_apply_per_parameter() {
    let eight = 8i64.to_be_bytes();
    let t = tail(&[0, 1], &[Some(b"3"), Some(&eight)]);
    let p = BindParams::parse(&t, &[]).unwrap();
    assert_eq!(p.scalar_key(1, KeyType::Bigint), Ok(TenantKey::Int(3)));
    assert_eq!(p.scalar_key(2, KeyType::Bigint), Ok(TenantKey::Int(8)));
    let t = tail(&[1], &[Some(&eight), Some(&eight)]);
    let p = BindParams::parse(&t, &[]).unwrap();
    assert_eq!(p.scalar_key(2, KeyType::Bigint), Ok(TenantKey::Int(8)));
    let t = tail(&[0, 1, 0], &[Some(b"1"), Some(b"2")]);
    assert!(matches!(
        BindParams::parse(&t, &[]),
        Err(KeyError::Malformed(_))
    ));
    let t = tail(&[2], &[Some(b"1")]);
    assert!(matches!(
        scalar(&t, &[], KeyType::Bigint),
        Err(KeyError::Malformed(_))
    ));
}

#[test]
fn null_and_missing_parameters() {
    let t = tail(&[], &[None]);
    let e = scalar(&t, &[], KeyType::Bigint).unwrap_err();
    assert_eq!(
        e,
        KeyError::Null {
            from: "parameter $1".into()
        }
    );
    assert!(e.to_string().contains("is NULL"));
    let p = BindParams::parse(&t, &[]).unwrap();
    assert_eq!(
        p.scalar_key(2, KeyType::Bigint),
        Err(KeyError::MissingParam(2))
    );
    assert_eq!(
        p.scalar_key(0, KeyType::Bigint),
        Err(KeyError::MissingParam(0))
    );
}

#[test]
fn malformed_bodies() {
    let good = tail(&[0], &[Some(b"1")]);
    assert!(BindParams::parse(&good, &[]).is_ok());
    for cut in 0..good.len() {
        assert!(
            BindParams::parse(&good[..cut], &[]).is_err(),
            "cut at {cut}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(BindParams::parse(&trailing, &[]).is_err());
    let neg_count = [0xff, 0xff];
    assert!(BindParams::parse(&neg_count, &[]).is_err());
    let mut bad_len = tail(&[], &[Some(b"1")]);
    bad_len[4..8].copy_from_slice(&(-2i32).to_be_bytes());
    assert!(BindParams::parse(&bad_len, &[]).is_err());
    let mut long_len = tail(&[], &[Some(b"1")]);
    long_len[4..8].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(BindParams::parse(&long_len, &[]).is_err());
}

fn array_keys(t: &[u8], kt: KeyType) -> Result<Vec<TenantKey>, KeyError> {
    BindParams::parse(t, &[])?.array_keys(1, kt)
}

#[test]
fn binary_arrays() {
    let ints = |v: &[i64]| v.iter().map(|&i| TenantKey::Int(i)).collect::<Vec<_>>();
    let a8 = bin_array(
        20,
        &[
            Some(1i64.to_be_bytes().to_vec()),
            None,
            Some(2i64.to_be_bytes().to_vec()),
        ],
    );
    assert_eq!(
        array_keys(&tail(&[1], &[Some(&a8)]), KeyType::Bigint),
        Ok(ints(&[1, 2]))
    );
    let a4 = bin_array(23, &[Some(3i32.to_be_bytes().to_vec())]);
    assert_eq!(
        array_keys(&tail(&[1], &[Some(&a4)]), KeyType::Bigint),
        Ok(ints(&[3]))
    );
    let at = bin_array(25, &[Some(b"a".to_vec()), Some(b"b".to_vec())]);
    assert_eq!(
        array_keys(&tail(&[1], &[Some(&at)]), KeyType::Text),
        Ok(vec![
            TenantKey::Text("a".into()),
            TenantKey::Text("b".into())
        ])
    );
    let au = bin_array(2950, &[Some(UUID.to_vec())]);
    assert_eq!(
        array_keys(&tail(&[1], &[Some(&au)]), KeyType::Uuid),
        Ok(vec![TenantKey::Uuid(UUID)])
    );
    let mut empty = 0i32.to_be_bytes().to_vec();
    empty.extend_from_slice(&[0; 4]);
    empty.extend_from_slice(&20u32.to_be_bytes());
    assert_eq!(
        array_keys(&tail(&[1], &[Some(&empty)]), KeyType::Bigint),
        Ok(vec![])
    );
}

#[test]
fn malformed_binary_arrays() {
    let a8 = bin_array(20, &[Some(1i64.to_be_bytes().to_vec())]);
    for cut in 0..a8.len() {
        let t = tail(&[1], &[Some(&a8[..cut])]);
        assert!(array_keys(&t, KeyType::Bigint).is_err(), "cut at {cut}");
    }
    let mut two_dims = a8.clone();
    two_dims[..4].copy_from_slice(&2i32.to_be_bytes());
    assert!(array_keys(&tail(&[1], &[Some(&two_dims)]), KeyType::Bigint).is_err());
    let mut huge = a8.clone();
    huge[12..16].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(array_keys(&tail(&[1], &[Some(&huge)]), KeyType::Bigint).is_err());
    let mut trailing = a8.clone();
    trailing.push(0);
    assert!(array_keys(&tail(&[1], &[Some(&trailing)]), KeyType::Bigint).is_err());
}

#[test]
fn text_arrays() {
    let parse = |s: &str| parse_text_array(s, "test");
    let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
    assert_eq!(parse("{1,2,3}"), Ok(some(&["1", "2", "3"])));
    assert_eq!(parse(" { 1 , 2 } "), Ok(some(&["1", "2"])));
    assert_eq!(
        parse(r#"{"a","b\"c", NULL,"NULL"}"#),
        Ok(vec![
            Some("a".into()),
            Some("b\"c".into()),
            None,
            Some("NULL".into())
        ])
    );
    assert_eq!(parse("[0:1]={7,8}"), Ok(some(&["7", "8"])));
    assert_eq!(parse("{}"), Ok(vec![]));
    for bad in [
        "{{1}}", "{1,", "{1,,2}", "1,2", "{1} x", "{\"a}", "", "{", "[0:1]{1}",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    let t = tail(&[], &[Some(b"{5,6,5}")]);
    assert_eq!(
        array_keys(&t, KeyType::Bigint),
        Ok(vec![
            TenantKey::Int(5),
            TenantKey::Int(6),
            TenantKey::Int(5)
        ])
    );
}

#[test]
fn resolve_through_a_bind() {
    let c = Classifier::new(ClassifyConfig::default(), 10);
    let s = c.classify(b"select * from t where tenant_id = any($1) and id = $2");
    let a = bin_array(
        20,
        &[
            Some(4i64.to_be_bytes().to_vec()),
            Some(4i64.to_be_bytes().to_vec()),
        ],
    );
    let t = tail(&[1, 0], &[Some(&a), Some(b"9")]);
    let p = BindParams::parse(&t, &[]).unwrap();
    assert_eq!(
        s.statements[0].keys(Some(&p), KeyType::Bigint),
        Ok(KeyValues::Keys(vec![TenantKey::Int(4)]))
    );
    let s = c.classify(b"insert into t (tenant_id, x) values ($1, 'a'), ($2, 'b'), ($1, 'c')");
    let t = tail(&[], &[Some(b"1"), Some(b"2")]);
    let p = BindParams::parse(&t, &[]).unwrap();
    assert_eq!(
        s.statements[0].keys(Some(&p), KeyType::Bigint),
        Ok(KeyValues::PerRow(vec![
            TenantKey::Int(1),
            TenantKey::Int(2),
            TenantKey::Int(1)
        ]))
    );
    assert_eq!(
        s.statements[0].keys(None, KeyType::Bigint),
        Err(KeyError::MissingParam(1))
    );
}

#[test]
fn random_and_mutated_bodies_never_panic() {
    let mut rng = StdRng::seed_from_u64(3);
    let a8 = bin_array(20, &[Some(1i64.to_be_bytes().to_vec()), None]);
    let seeds = [
        tail(&[1], &[Some(&a8), Some(&UUID)]),
        tail(&[0, 1], &[Some(b"{1,\"2\"}"), Some(&7i32.to_be_bytes())]),
        tail(&[], &[None, Some(b"42")]),
    ];
    let types: [&[u32]; 3] = [&[], &[20, 2950], &[1007, 25, 23]];
    for i in 0..20_000 {
        let body: Vec<u8> = if i % 3 == 0 {
            (0..rng.gen_range(0..48))
                .map(|_| rng.r#gen::<u8>())
                .collect()
        } else {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..b.len());
                b[at] = rng.r#gen();
            }
            b.truncate(rng.gen_range(0..=b.len()));
            b
        };
        let Ok(p) = BindParams::parse(&body, types[i % 3]) else {
            continue;
        };
        for n in 0..4 {
            for kt in [KeyType::Bigint, KeyType::Text, KeyType::Uuid] {
                let _ = p.scalar_key(n, kt);
                let _ = p.array_keys(n, kt);
            }
        }
    }
}
