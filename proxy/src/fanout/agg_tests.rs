//! Recombining partial aggregates; expected results verified on Postgres 15 over all the rows.

use super::*;

const T: Format = Format::Text;
const B: Format = Format::Binary;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Runs an accumulator over text partials and returns the text result.
fn combine_text(kind: AggKind, type_oid: u32, parts: &[Option<&str>]) -> Option<String> {
    let mut acc = Accumulator::new(kind, type_oid, T).unwrap();
    for p in parts {
        acc.add(p.map(str::as_bytes)).unwrap();
    }
    acc.finish().map(|b| String::from_utf8(b).unwrap())
}

fn combine_err(kind: AggKind, type_oid: u32, format: Format, parts: &[&[u8]]) -> ValueError {
    let mut acc = Accumulator::new(kind, type_oid, format).unwrap();
    for p in parts {
        if let Err(e) = acc.add(Some(p)) {
            return e;
        }
    }
    panic!("no error")
}

/// An avg over text `(sum, count)` partials.
fn avg_text(avg_oid: u32, sum_oid: u32, parts: &[(Option<&str>, &str)]) -> Option<String> {
    let mut acc = AvgAccumulator::new(avg_oid, T, sum_oid, T, T).unwrap();
    for (sum, count) in parts {
        acc.add(sum.map(str::as_bytes), Some(count.as_bytes()))
            .unwrap();
    }
    acc.finish().map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn count_sums_int8_partials() {
    assert_eq!(
        combine_text(
            AggKind::Count,
            oid::INT8,
            &[Some("3"), Some("0"), Some("39")]
        ),
        Some("42".into())
    );
    // No shard contributed: count is 0, never NULL.
    assert_eq!(
        combine_text(AggKind::Count, oid::INT8, &[]),
        Some("0".into())
    );
    let mut acc = Accumulator::new(AggKind::Count, oid::INT8, B).unwrap();
    acc.add(Some(&5i64.to_be_bytes())).unwrap();
    acc.add(Some(&7i64.to_be_bytes())).unwrap();
    assert_eq!(acc.finish(), Some(12i64.to_be_bytes().to_vec()));
    let e = combine_err(
        AggKind::Count,
        oid::INT8,
        B,
        &[&i64::MAX.to_be_bytes(), &1i64.to_be_bytes()],
    );
    assert_eq!(e.to_string(), "bigint out of range");
    assert!(matches!(
        Accumulator::new(AggKind::Count, oid::INT4, T),
        Err(ValueError::UnsupportedType { .. })
    ));
}

#[test]
fn sum_of_int8() {
    // sum(int4) over (2147483647), (2147483647), (1) = 4294967295 (an int8).
    assert_eq!(
        combine_text(
            AggKind::Sum,
            oid::INT8,
            &[Some("2147483647"), None, Some("2147483648")]
        ),
        Some("4294967295".into())
    );
    assert_eq!(combine_text(AggKind::Sum, oid::INT8, &[None, None]), None);
    assert_eq!(combine_text(AggKind::Sum, oid::INT8, &[]), None);
    let mut acc = Accumulator::new(AggKind::Sum, oid::INT8, B).unwrap();
    acc.add(Some(&(-5i64).to_be_bytes())).unwrap();
    acc.add(None).unwrap();
    acc.add(Some(&3i64.to_be_bytes())).unwrap();
    assert_eq!(acc.finish(), Some((-2i64).to_be_bytes().to_vec()));
    // Postgres: ERROR: bigint out of range (SQLSTATE 22003).
    let e = combine_err(AggKind::Sum, oid::INT8, T, &[b"9223372036854775807", b"1"]);
    assert_eq!(e.to_string(), "bigint out of range");
    assert_eq!(e.sqlstate(), "22003");
    let e = combine_err(
        AggKind::Sum,
        oid::INT8,
        T,
        &[b"-9223372036854775808", b"-1"],
    );
    assert_eq!(e.to_string(), "bigint out of range");
    assert!(matches!(
        combine_err(AggKind::Sum, oid::INT8, T, &[b"1.5"]),
        ValueError::Malformed { .. }
    ));
}

#[test]
fn sum_of_numeric() {
    // sum(x::int8) over (9223372036854775807), (1) = 9223372036854775808 (a numeric).
    assert_eq!(
        combine_text(
            AggKind::Sum,
            oid::NUMERIC,
            &[Some("9223372036854775807"), Some("1")]
        ),
        Some("9223372036854775808".into())
    );
    // The display scale is the largest of the partials'.
    assert_eq!(
        combine_text(
            AggKind::Sum,
            oid::NUMERIC,
            &[Some("10.50"), None, Some("2.125")]
        ),
        Some("12.625".into())
    );
    assert_eq!(
        combine_text(AggKind::Sum, oid::NUMERIC, &[Some("1.000"), Some("-1")]),
        Some("0.000".into())
    );
    assert_eq!(
        combine_text(
            AggKind::Sum,
            oid::NUMERIC,
            &[Some("Infinity"), Some("-Infinity")]
        ),
        Some("NaN".into())
    );
    assert_eq!(
        combine_text(AggKind::Sum, oid::NUMERIC, &[Some("-Infinity"), Some("5")]),
        Some("-Infinity".into())
    );
    assert_eq!(combine_text(AggKind::Sum, oid::NUMERIC, &[None]), None);
    // Binary in, binary out (numeric_send of 12.625 is 0002 0000 0000 0003 000c 186a).
    let mut acc = Accumulator::new(AggKind::Sum, oid::NUMERIC, B).unwrap();
    acc.add(Some(&Decimal::parse("10.50").unwrap().to_binary()))
        .unwrap();
    acc.add(Some(&Decimal::parse("2.125").unwrap().to_binary()))
        .unwrap();
    assert_eq!(hex(&acc.finish().unwrap()), "0002000000000003000c186a");
    // Beyond the storage format: value overflows numeric format.
    // The largest numeric has 131072 digits before the point.
    let big = "9".repeat(131_072);
    let e = combine_err(
        AggKind::Sum,
        oid::NUMERIC,
        T,
        &[big.as_bytes(), big.as_bytes()],
    );
    assert_eq!(e.to_string(), "value overflows numeric format");
}

#[test]
fn sum_of_floats() {
    // float8pl: 0.1 + 0.2.
    assert_eq!(
        combine_text(AggKind::Sum, oid::FLOAT8, &[Some("0.1"), None, Some("0.2")]),
        Some("0.30000000000000004".into())
    );
    // float4pl adds in single precision: 1.1 + 2.2 = 3.3000002, 0.1 + 0.2 = 0.3.
    assert_eq!(
        combine_text(AggKind::Sum, oid::FLOAT4, &[Some("1.1"), Some("2.2")]),
        Some("3.3000002".into())
    );
    assert_eq!(
        combine_text(AggKind::Sum, oid::FLOAT4, &[Some("0.1"), Some("0.2")]),
        Some("0.3".into())
    );
    assert_eq!(
        combine_text(
            AggKind::Sum,
            oid::FLOAT8,
            &[Some("1e+20"), Some("-Infinity")]
        ),
        Some("-Infinity".into())
    );
    assert_eq!(
        combine_text(
            AggKind::Sum,
            oid::FLOAT8,
            &[Some("Infinity"), Some("-Infinity")]
        ),
        Some("NaN".into())
    );
    assert_eq!(combine_text(AggKind::Sum, oid::FLOAT4, &[None]), None);
    let mut acc = Accumulator::new(AggKind::Sum, oid::FLOAT4, B).unwrap();
    acc.add(Some(&1.5f32.to_be_bytes())).unwrap();
    acc.add(Some(&2.25f32.to_be_bytes())).unwrap();
    assert_eq!(acc.finish(), Some(3.75f32.to_be_bytes().to_vec()));
    let mut acc = Accumulator::new(AggKind::Sum, oid::FLOAT8, B).unwrap();
    acc.add(Some(&0.1f64.to_be_bytes())).unwrap();
    acc.add(Some(&0.2f64.to_be_bytes())).unwrap();
    assert_eq!(acc.finish(), Some((0.1f64 + 0.2).to_be_bytes().to_vec()));
    // Postgres: ERROR: value out of range: overflow.
    let e = combine_err(AggKind::Sum, oid::FLOAT4, T, &[b"3e+38", b"3e+38"]);
    assert_eq!(e.to_string(), "value out of range: overflow");
    assert_eq!(e.sqlstate(), "22003");
    let e = combine_err(AggKind::Sum, oid::FLOAT8, T, &[b"1.7e+308", b"1.7e+308"]);
    assert_eq!(e.to_string(), "value out of range: overflow");
}

#[test]
fn sum_of_other_types_is_unsupported() {
    for type_oid in [oid::INT4, oid::INT2, oid::TEXT, 1186, 790, oid::DATE] {
        assert!(
            matches!(
                Accumulator::new(AggKind::Sum, type_oid, T),
                Err(ValueError::UnsupportedType { .. })
            ),
            "{type_oid}"
        );
    }
}

#[test]
fn min_max_keep_the_winning_bytes() {
    let parts = [Some("10"), None, Some("-3"), Some("7")];
    assert_eq!(
        combine_text(AggKind::Min, oid::INT4, &parts),
        Some("-3".into())
    );
    assert_eq!(
        combine_text(AggKind::Max, oid::INT4, &parts),
        Some("10".into())
    );
    assert_eq!(combine_text(AggKind::Max, oid::INT4, &[None, None]), None);
    // Numeric order, not text order; the winner's own display scale.
    let parts = [Some("9.5"), Some("10.000"), Some("-Infinity"), Some("NaN")];
    assert_eq!(
        combine_text(AggKind::Max, oid::NUMERIC, &parts),
        Some("NaN".into())
    );
    assert_eq!(
        combine_text(AggKind::Max, oid::NUMERIC, &parts[..2]),
        Some("10.000".into())
    );
    assert_eq!(
        combine_text(AggKind::Min, oid::NUMERIC, &parts),
        Some("-Infinity".into())
    );
    // Equal values: the first one seen stays.
    assert_eq!(
        combine_text(AggKind::Min, oid::NUMERIC, &[Some("1.50"), Some("1.5")]),
        Some("1.50".into())
    );
    // Floats: NaN is the largest.
    assert_eq!(
        combine_text(
            AggKind::Max,
            oid::FLOAT8,
            &[Some("Infinity"), Some("NaN"), Some("1")]
        ),
        Some("NaN".into())
    );
    // timestamptz by instant: 10:00-05 (15:00 UTC) is later than 14:00+00.
    assert_eq!(
        combine_text(
            AggKind::Max,
            oid::TIMESTAMPTZ,
            &[
                Some("2026-01-05 14:00:00+00"),
                Some("2026-01-05 10:00:00-05")
            ]
        ),
        Some("2026-01-05 10:00:00-05".into())
    );
    // bpchar ignores trailing spaces; text compares bytes.
    assert_eq!(
        combine_text(
            AggKind::Max,
            oid::TEXT,
            &[Some("apple"), Some("Zebra"), Some("b")]
        ),
        Some("b".into())
    );
    // Binary: the winning shard's bytes verbatim.
    let mut acc = Accumulator::new(AggKind::Max, oid::DATE, B).unwrap();
    for hex_date in ["0000251d", "7fffffff", "fff4da8b"] {
        acc.add(Some(&unhex(hex_date))).unwrap();
    }
    assert_eq!(hex(&acc.finish().unwrap()), "7fffffff");
    let mut acc = Accumulator::new(AggKind::Min, oid::NUMERIC, B).unwrap();
    for text in ["2.5", "-1.25", "3"] {
        acc.add(Some(&Decimal::parse(text).unwrap().to_binary()))
            .unwrap();
    }
    assert_eq!(
        acc.finish(),
        Some(Decimal::parse("-1.25").unwrap().to_binary())
    );
    assert!(matches!(
        Accumulator::new(AggKind::Min, 114, T),
        Err(ValueError::UnsupportedType { .. })
    ));
    assert!(matches!(
        combine_err(AggKind::Max, oid::INT4, B, &[&[0, 1]]),
        ValueError::Malformed { .. }
    ));
}

#[test]
fn avg_of_integers_divides_like_numeric_div() {
    // avg(x) over (1), (2), (2), split over shards: 1.6666666666666667.
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::INT8,
            &[(Some("1"), "1"), (Some("4"), "2")]
        ),
        Some("1.6666666666666667".into())
    );
    // over (-1), (-2), (-2).
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::INT8,
            &[(Some("-3"), "2"), (Some("-2"), "1")]
        ),
        Some("-1.6666666666666667".into())
    );
    // over generate_series(1, 10).
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::INT8,
            &[(Some("15"), "5"), (None, "0"), (Some("40"), "5")]
        ),
        Some("5.5000000000000000".into())
    );
    // over (2147483647), (2147483647), (1).
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::INT8,
            &[(Some("4294967294"), "2"), (Some("1"), "1")]
        ),
        Some("1431655765.00000000".into())
    );
    // over (1::int2), (2::int2).
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::INT8,
            &[(Some("1"), "1"), (Some("2"), "1")]
        ),
        Some("1.5000000000000000".into())
    );
    // avg(x::int8) over (9223372036854775807) twice and (5): the sums are numeric.
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::NUMERIC,
            &[(Some("18446744073709551614"), "2"), (Some("5"), "1")]
        ),
        Some("6148914691236517206".into())
    );
    // avg(x::int8) over i64::MIN three times.
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::NUMERIC,
            &[
                (Some("-18446744073709551616"), "2"),
                (Some("-9223372036854775808"), "1")
            ]
        ),
        Some("-9223372036854775808".into())
    );
}

#[test]
fn avg_of_numeric() {
    // over (1.10), (2.205), (-7).
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::NUMERIC,
            &[(Some("3.305"), "2"), (Some("-7"), "1")]
        ),
        Some("-1.23166666666666666667".into())
    );
    // over (0.001), (0.002).
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::NUMERIC,
            &[(Some("0.001"), "1"), (Some("0.002"), "1")]
        ),
        Some("0.00150000000000000000".into())
    );
    // over generate_series(1, 1000)::numeric / 7: sum 71500.00000000000000000000, 1000 rows.
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::NUMERIC,
            &[
                (Some("30000.00000000000000000000"), "400"),
                (Some("41500.00000000000000000000"), "600")
            ]
        ),
        Some("71.50000000000000000000".into())
    );
    // NaN and infinities, as numeric_avg.
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::NUMERIC,
            &[(Some("NaN"), "1"), (Some("1"), "1")]
        ),
        Some("NaN".into())
    );
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::NUMERIC,
            &[(Some("Infinity"), "1"), (Some("1"), "1")]
        ),
        Some("Infinity".into())
    );
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::NUMERIC,
            &[(Some("Infinity"), "1"), (Some("-Infinity"), "1")]
        ),
        Some("NaN".into())
    );
    assert_eq!(
        avg_text(
            oid::NUMERIC,
            oid::NUMERIC,
            &[(Some("-Infinity"), "1"), (Some("5"), "1")]
        ),
        Some("-Infinity".into())
    );
    // No rows anywhere: NULL.
    assert_eq!(
        avg_text(oid::NUMERIC, oid::NUMERIC, &[(None, "0"), (None, "0")]),
        None
    );
    assert_eq!(avg_text(oid::NUMERIC, oid::INT8, &[]), None);
}

#[test]
fn avg_in_binary() {
    // avg over (1), (2), (2) in binary: numeric_send gives this.
    let mut acc = AvgAccumulator::new(oid::NUMERIC, B, oid::INT8, B, B).unwrap();
    acc.add(Some(&1i64.to_be_bytes()), Some(&1i64.to_be_bytes()))
        .unwrap();
    acc.add(Some(&4i64.to_be_bytes()), Some(&2i64.to_be_bytes()))
        .unwrap();
    assert_eq!(
        hex(&acc.finish().unwrap()),
        "000500000000001000011a0a1a0a1a0a1a0b"
    );
    // over (1.10), (2.205), (-7): numeric sums in binary, counts in text, result in binary.
    let mut acc = AvgAccumulator::new(oid::NUMERIC, B, oid::NUMERIC, B, T).unwrap();
    acc.add(
        Some(&Decimal::parse("1.10").unwrap().to_binary()),
        Some(b"1"),
    )
    .unwrap();
    acc.add(
        Some(&Decimal::parse("-4.795").unwrap().to_binary()),
        Some(b"2"),
    )
    .unwrap();
    assert_eq!(
        hex(&acc.finish().unwrap()),
        "00060000400000140001090c1a0a1a0a1a0a1a0b"
    );
    // generate_series(1, 10), result in text from binary partials.
    let mut acc = AvgAccumulator::new(oid::NUMERIC, T, oid::INT8, B, B).unwrap();
    acc.add(Some(&55i64.to_be_bytes()), Some(&10i64.to_be_bytes()))
        .unwrap();
    assert_eq!(acc.finish(), Some(b"5.5000000000000000".to_vec()));
    // float8: avg over (0.1), (0.2), (0.3) = 0.20000000000000004 (3fc999999999999b).
    let mut acc = AvgAccumulator::new(oid::FLOAT8, B, oid::FLOAT8, B, B).unwrap();
    acc.add(
        Some(&(0.1f64 + 0.2).to_be_bytes()),
        Some(&2i64.to_be_bytes()),
    )
    .unwrap();
    acc.add(Some(&0.3f64.to_be_bytes()), Some(&1i64.to_be_bytes()))
        .unwrap();
    assert_eq!(hex(&acc.finish().unwrap()), "3fc999999999999b");
}

#[test]
fn avg_of_floats() {
    assert_eq!(
        avg_text(
            oid::FLOAT8,
            oid::FLOAT8,
            &[(Some("0.30000000000000004"), "2"), (Some("0.3"), "1")]
        ),
        Some("0.20000000000000004".into())
    );
    // A float4 hidden sum is widened; the average is float8.
    assert_eq!(
        avg_text(
            oid::FLOAT8,
            oid::FLOAT4,
            &[(Some("1.5"), "1"), (Some("2.25"), "2")]
        ),
        Some("1.25".into())
    );
    assert_eq!(
        avg_text(
            oid::FLOAT8,
            oid::FLOAT8,
            &[(Some("NaN"), "1"), (Some("1"), "1")]
        ),
        Some("NaN".into())
    );
    assert_eq!(avg_text(oid::FLOAT8, oid::FLOAT8, &[(None, "0")]), None);
    let mut acc = AvgAccumulator::new(oid::FLOAT8, T, oid::FLOAT8, T, T).unwrap();
    acc.add(Some(b"1.7e+308"), Some(b"1")).unwrap();
    assert_eq!(
        acc.add(Some(b"1.7e+308"), Some(b"1"))
            .unwrap_err()
            .to_string(),
        "value out of range: overflow"
    );
}

#[test]
fn avg_counts_overflow_and_bad_types() {
    let mut acc = AvgAccumulator::new(oid::NUMERIC, T, oid::INT8, T, T).unwrap();
    acc.add(Some(b"1"), Some(b"9223372036854775807")).unwrap();
    assert_eq!(
        acc.add(Some(b"1"), Some(b"1")).unwrap_err().to_string(),
        "bigint out of range"
    );
    for (avg_oid, sum_oid) in [
        (oid::NUMERIC, oid::FLOAT8),
        (oid::FLOAT8, oid::NUMERIC),
        (oid::NUMERIC, oid::INT4),
        (1186, 1186),
        (oid::INT8, oid::INT8),
    ] {
        assert!(
            matches!(
                AvgAccumulator::new(avg_oid, T, sum_oid, T, T),
                Err(ValueError::UnsupportedType { .. })
            ),
            "{avg_oid} {sum_oid}"
        );
    }
}
