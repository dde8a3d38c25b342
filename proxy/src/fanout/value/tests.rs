//! Decoding and ordering by type, both formats; literals; float output. Expected strings and
//! bytes were produced by Postgres 15.

use std::cmp::Ordering;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn text(type_oid: u32, s: &str) -> SortValue {
    decode(type_oid, Format::Text, s.as_bytes()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn binary(type_oid: u32, b: &[u8]) -> SortValue {
    decode(type_oid, Format::Binary, b).unwrap_or_else(|e| panic!("{b:?}: {e}"))
}

fn lit(type_oid: u32, s: &str) -> SortValue {
    parse_literal(type_oid, s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// Every pair in `values` (ascending) compares as its positions do.
fn assert_ascending(values: &[SortValue], what: &str) {
    for (i, a) in values.iter().enumerate() {
        for (j, b) in values.iter().enumerate() {
            assert_eq!(a.cmp(b), i.cmp(&j), "{what}: {a:?} vs {b:?}");
        }
    }
}

fn is_malformed(r: Result<SortValue, ValueError>) -> bool {
    matches!(r, Err(ValueError::Malformed { .. }))
}

#[test]
fn format_codes() {
    assert_eq!(Format::from_code(0), Format::Text);
    assert_eq!(Format::from_code(1), Format::Binary);
    assert_eq!(Format::Binary.code(), 1);
    assert_eq!(Format::Text.code(), 0);
}

#[test]
fn integers_in_both_formats() {
    let cases: &[(u32, &str, Vec<u8>)] = &[
        (oid::INT2, "-32768", (-32768i16).to_be_bytes().to_vec()),
        (oid::INT2, "7", 7i16.to_be_bytes().to_vec()),
        (oid::INT4, "-2147483648", i32::MIN.to_be_bytes().to_vec()),
        (oid::INT4, "123456", 123456i32.to_be_bytes().to_vec()),
        (
            oid::INT8,
            "-9223372036854775808",
            i64::MIN.to_be_bytes().to_vec(),
        ),
        (
            oid::INT8,
            "9223372036854775807",
            i64::MAX.to_be_bytes().to_vec(),
        ),
        (oid::OID, "4294967295", u32::MAX.to_be_bytes().to_vec()),
        (oid::OID, "0", 0u32.to_be_bytes().to_vec()),
    ];
    for (type_oid, t, b) in cases {
        assert_eq!(text(*type_oid, t), binary(*type_oid, b), "{t}");
    }
    // oid is unsigned: 4294967295 sorts after 1.
    assert!(binary(oid::OID, &u32::MAX.to_be_bytes()) > binary(oid::OID, &1u32.to_be_bytes()));
    let ascending: Vec<SortValue> = [
        "-9223372036854775808",
        "-5",
        "0",
        "3",
        "9223372036854775807",
    ]
    .iter()
    .map(|s| text(oid::INT8, s))
    .collect();
    assert_ascending(&ascending, "int8");
    // Widths compare with each other numerically.
    assert_eq!(text(oid::INT2, "5"), text(oid::INT8, "5"));
    assert!(text(oid::INT4, "-1") < text(oid::INT2, "0"));
    // Wrong binary widths and bad text.
    assert!(is_malformed(decode(oid::INT4, Format::Binary, &[0, 0, 1])));
    assert!(is_malformed(decode(oid::INT8, Format::Binary, &[0; 4])));
    assert!(is_malformed(decode(oid::INT2, Format::Text, b"40000")));
    assert!(is_malformed(decode(oid::INT4, Format::Text, b"1.5")));
    assert!(is_malformed(decode(oid::INT8, Format::Text, b"")));
    assert!(is_malformed(decode(oid::OID, Format::Text, b"-1")));
}

#[test]
fn numeric_in_both_formats() {
    let ascending: Vec<SortValue> = [
        "-Infinity",
        "-123456789012345678901234567890.5",
        "-1",
        "-0.001",
        "0",
        "0.0000000000000000000001",
        "1.5",
        "2",
        "99999999999999999999999999",
        "Infinity",
        "NaN",
    ]
    .iter()
    .map(|s| text(oid::NUMERIC, s))
    .collect();
    assert_ascending(&ascending, "numeric");
    // Binary: -12.50 as numeric_send sends it.
    assert_eq!(
        binary(oid::NUMERIC, &unhex("0002000040000002000c1388")),
        text(oid::NUMERIC, "-12.5")
    );
    assert_eq!(
        binary(oid::NUMERIC, &unhex("00000000d0000020")),
        text(oid::NUMERIC, "Infinity")
    );
    assert_eq!(text(oid::NUMERIC, "1.0"), text(oid::NUMERIC, "1.000"));
    assert!(is_malformed(decode(oid::NUMERIC, Format::Text, b"1.2.3")));
    assert!(is_malformed(decode(oid::NUMERIC, Format::Binary, &[0, 1])));
}

#[test]
fn floats_in_both_formats() {
    for type_oid in [oid::FLOAT4, oid::FLOAT8] {
        let ascending: Vec<SortValue> = [
            "-Infinity",
            "-1e+30",
            "-1.5",
            "0",
            "1e-05",
            "0.1",
            "1",
            "3.4e+38",
            "Infinity",
            "NaN",
        ]
        .iter()
        .map(|s| text(type_oid, s))
        .collect();
        assert_ascending(&ascending, "float");
        assert_eq!(text(type_oid, "-0"), text(type_oid, "0"), "-0 == 0");
        assert_eq!(text(type_oid, "NaN"), text(type_oid, "NaN"), "NaN == NaN");
        assert!(is_malformed(decode(type_oid, Format::Text, b"abc")));
        assert!(is_malformed(decode(type_oid, Format::Text, b"")));
    }
    // Binary: big-endian IEEE (float8send / float4send).
    for (hex, t) in [
        ("3fb999999999999a", "0.1"),
        ("c004000000000000", "-2.5"),
        ("7ff8000000000000", "NaN"),
        ("8000000000000000", "-0"),
        ("7ff0000000000000", "Infinity"),
    ] {
        assert_eq!(binary(oid::FLOAT8, &unhex(hex)), text(oid::FLOAT8, t));
    }
    assert_eq!(
        binary(oid::FLOAT4, &unhex("3dcccccd")),
        text(oid::FLOAT4, "0.1")
    );
    assert_eq!(
        binary(oid::FLOAT4, &unhex("c0200000")),
        text(oid::FLOAT4, "-2.5")
    );
    // float4 text is rounded once, to single precision: 0.1 is not float8's 0.1.
    assert_ne!(text(oid::FLOAT4, "0.1"), text(oid::FLOAT8, "0.1"));
    // Any NaN payload is NaN.
    assert_eq!(
        binary(oid::FLOAT8, &unhex("fff8000000000001")),
        text(oid::FLOAT8, "NaN")
    );
    assert!(is_malformed(decode(oid::FLOAT8, Format::Binary, &[0; 4])));
}

#[test]
fn text_types_by_bytes() {
    for type_oid in [oid::TEXT, oid::VARCHAR, oid::NAME] {
        let ascending: Vec<SortValue> = ["", "A", "Z", "a", "a ", "ab", "b", "é"]
            .iter()
            .map(|s| text(type_oid, s))
            .collect();
        assert_ascending(&ascending, "text");
        assert_eq!(text(type_oid, "x"), binary(type_oid, b"x"));
        // Trailing spaces count for text and varchar.
        assert_ne!(text(type_oid, "a"), text(type_oid, "a  "));
    }
    // bpchar: trailing spaces are insignificant.
    assert_eq!(text(oid::BPCHAR, "ab   "), text(oid::BPCHAR, "ab"));
    assert_eq!(binary(oid::BPCHAR, b"ab "), text(oid::BPCHAR, "ab"));
    assert!(text(oid::BPCHAR, "a   ") < text(oid::BPCHAR, "a!"));
    assert!(text(oid::BPCHAR, " a") < text(oid::BPCHAR, "a"));
    assert_eq!(text(oid::BPCHAR, "   "), text(oid::BPCHAR, ""));
}

#[test]
fn bools() {
    assert_ascending(&[text(oid::BOOL, "f"), text(oid::BOOL, "t")], "bool");
    assert_eq!(binary(oid::BOOL, &[1]), text(oid::BOOL, "t"));
    assert_eq!(binary(oid::BOOL, &[0]), text(oid::BOOL, "f"));
    assert!(is_malformed(decode(oid::BOOL, Format::Text, b"true")));
    assert!(is_malformed(decode(oid::BOOL, Format::Binary, &[])));
}

#[test]
fn uuids_by_bytes() {
    let a = text(oid::UUID, "00000000-0000-0000-0000-000000000000");
    let b = text(oid::UUID, "0e0f4a3c-9b8d-4d2e-8f00-1a2b3c4d5e6f");
    let c = text(oid::UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    let d = text(oid::UUID, "ffffffff-ffff-ffff-ffff-ffffffffffff");
    assert_ascending(&[a, b, c.clone(), d], "uuid");
    assert_eq!(
        binary(oid::UUID, &unhex("a0eebc999c0b4ef8bb6d6bb9bd380a11")),
        c
    );
    // uuid_in's other spellings.
    for s in [
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
    ] {
        assert_eq!(lit(oid::UUID, s), c, "{s}");
    }
    for bad in [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
        "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
    ] {
        assert!(
            is_malformed(decode(oid::UUID, Format::Text, bad.as_bytes())),
            "{bad}"
        );
    }
    assert!(is_malformed(decode(oid::UUID, Format::Binary, &[0; 15])));
}

/// `(x::date::text, date_send(x))` from Postgres 15.
const DATES: &[(&str, &str)] = &[
    ("-infinity", "80000000"),
    ("4713-01-01 BC", "ffda97cd"),
    ("0001-01-01 BC", "fff4da8b"),
    ("1600-02-29", "fffdc58a"),
    ("2000-01-01", "00000000"),
    ("2026-01-05", "0000251d"),
    ("5874897-12-31", "7fda970c"),
    ("infinity", "7fffffff"),
];

#[test]
fn dates_in_both_formats() {
    let mut from_text = Vec::new();
    for (t, hex) in DATES {
        let v = text(oid::DATE, t);
        assert_eq!(v, binary(oid::DATE, &unhex(hex)), "{t}");
        assert_eq!(v, lit(oid::DATE, t), "{t} as a literal");
        from_text.push(v);
    }
    assert_ascending(&from_text, "date");
    for bad in [
        "01/05/2026",
        "05.01.2026",
        "Mon Jan 05 2026",
        "2026-1-5",
        "2026-02-30",
        "2025-02-29",
        "2026-13-01",
        "2026-00-10",
        "0000-01-01",
        "2026-01-05 AD",
        "2026-01-05 13:00:00",
        "",
    ] {
        assert!(
            is_malformed(decode(oid::DATE, Format::Text, bad.as_bytes())),
            "{bad}"
        );
    }
}

/// `(x::timestamp::text, timestamp_send(x))` from Postgres 15.
const TIMESTAMPS: &[(&str, &str)] = &[
    ("-infinity", "8000000000000000"),
    ("4713-01-01 00:00:00 BC", "fd0f7fbdaf17e000"),
    ("0001-01-01 00:00:00 BC", "ff1fc63d1bb12000"),
    ("0001-01-01 00:00:00", "ff1fe2ffc59c6000"),
    ("1999-12-31 23:59:59.999999", "ffffffffffffffff"),
    ("2000-01-01 00:00:00", "0000000000000000"),
    ("2026-01-05 13:45:00.25", "0002eaa308b7bf90"),
    ("294276-12-31 23:59:59.999999", "7fffff5bb3b29fff"),
    ("infinity", "7fffffffffffffff"),
];

#[test]
fn timestamps_in_both_formats() {
    let mut from_text = Vec::new();
    for (t, hex) in TIMESTAMPS {
        let v = text(oid::TIMESTAMP, t);
        assert_eq!(v, binary(oid::TIMESTAMP, &unhex(hex)), "{t}");
        assert_eq!(v, lit(oid::TIMESTAMP, t), "{t} as a literal");
        from_text.push(v);
    }
    assert_ascending(&from_text, "timestamp");
    for bad in [
        "2026-01-05",
        "2026-01-05T13:45:00",
        "2026-01-05 13:45",
        "2026-01-05 13:45:00+01",
        "2026-01-05 24:00:00",
        "2026-01-05 13:60:00",
        "2026-01-05 13:45:00.1234567",
        "2026-01-05 13:45:00.",
        "Mon Jan 05 13:45:00 2026",
        "01/05/2026 13:45:00",
        "2026-01-05 13:45:00 bc",
    ] {
        assert!(
            is_malformed(decode(oid::TIMESTAMP, Format::Text, bad.as_bytes())),
            "{bad}"
        );
    }
}

/// `(x::text, timestamptz_send(x))` from Postgres 15 under the TimeZone noted.
const TIMESTAMPTZS: &[(&str, &str)] = &[
    ("-infinity", "8000000000000000"),
    // Europe/Amsterdam: local mean time before 1937 is +00:19:32.
    ("0044-03-15 12:00:00+00:19:32 BC", "ff1af9e8b56b8300"),
    ("1900-01-01 00:00:00+00:19:32", "fff4c9ee36303300"),
    ("2026-01-05 13:45:00.25+01", "0002eaa232241b90"),
    ("2026-07-01 12:00:00+02", "0002f88885f3a800"),
    ("10000-01-01 01:00:00+01", "0380e70b913b8000"),
    ("infinity", "7fffffffffffffff"),
];

#[test]
fn timestamptz_in_both_formats_by_instant() {
    let mut from_text = Vec::new();
    for (t, hex) in TIMESTAMPTZS {
        let v = text(oid::TIMESTAMPTZ, t);
        assert_eq!(v, binary(oid::TIMESTAMPTZ, &unhex(hex)), "{t}");
        assert_eq!(v, lit(oid::TIMESTAMPTZ, t), "{t} as a literal");
        from_text.push(v);
    }
    assert_ascending(&from_text, "timestamptz");
    // One instant printed under three TimeZones (UTC, Asia/Kolkata, America/St_Johns).
    let utc = text(oid::TIMESTAMPTZ, "2026-01-05 13:45:00.25+00");
    assert_eq!(utc, binary(oid::TIMESTAMPTZ, &unhex("0002eaa308b7bf90")));
    assert_eq!(text(oid::TIMESTAMPTZ, "2026-01-05 19:15:00.25+05:30"), utc);
    assert_eq!(text(oid::TIMESTAMPTZ, "2026-01-05 10:15:00.25-03:30"), utc);
    // Offsets change across DST from row to row: compare instants, not wall clocks.
    // New York, spring forward: 01:59:59-05 is one second before 03:00:00-04.
    let before = text(oid::TIMESTAMPTZ, "2026-03-08 01:59:59-05");
    let after = text(oid::TIMESTAMPTZ, "2026-03-08 03:00:00-04");
    match (&before, &after) {
        (SortValue::TimestampTz(a), SortValue::TimestampTz(b)) => assert_eq!(b - a, 1_000_000),
        _ => panic!("not timestamptz"),
    }
    // Amsterdam, fall back: 02:30+02 comes before 02:15+01.
    assert!(
        text(oid::TIMESTAMPTZ, "2026-10-25 02:30:00+02")
            < text(oid::TIMESTAMPTZ, "2026-10-25 02:15:00+01")
    );
    for bad in [
        "2026-01-05 13:45:00",
        "2026-01-05 13:45:00+1",
        "2026-01-05 13:45:00+01:3",
        "2026-01-05 13:45:00+0100",
        "2026-01-05 13:45:00Z",
        "2026-01-05 13:45:00 CET",
        "2026-01-05 13:45:00+16",
        "Mon Jan 05 13:45:00 2026 CET",
    ] {
        assert!(
            is_malformed(decode(oid::TIMESTAMPTZ, Format::Text, bad.as_bytes())),
            "{bad}"
        );
    }
}

#[test]
fn timestamp_literals() {
    let base = text(oid::TIMESTAMP, "2026-01-05 13:45:00");
    assert_eq!(lit(oid::TIMESTAMP, "2026-01-05T13:45:00"), base);
    assert_eq!(lit(oid::TIMESTAMP, " 2026-01-05 13:45 "), base);
    // A zone on a timestamp literal is ignored, as Postgres does.
    assert_eq!(lit(oid::TIMESTAMP, "2026-01-05 13:45:00+05"), base);
    assert_eq!(
        lit(oid::TIMESTAMP, "2026-01-05"),
        text(oid::TIMESTAMP, "2026-01-05 00:00:00")
    );
    assert_eq!(
        lit(oid::TIMESTAMP, "2026-01-05 24:00:00"),
        text(oid::TIMESTAMP, "2026-01-06 00:00:00")
    );
    // More than six fractional digits round to microseconds, half to even.
    assert_eq!(
        lit(oid::TIMESTAMP, "2026-01-05 13:45:00.0000005"),
        text(oid::TIMESTAMP, "2026-01-05 13:45:00")
    );
    assert_eq!(
        lit(oid::TIMESTAMP, "2026-01-05 13:45:00.0000015"),
        text(oid::TIMESTAMP, "2026-01-05 13:45:00.000002")
    );
    assert_eq!(
        lit(oid::TIMESTAMP, "2026-01-05 13:45:00.00000051"),
        text(oid::TIMESTAMP, "2026-01-05 13:45:00.000001")
    );
    let utc = text(oid::TIMESTAMPTZ, "2026-01-05 13:45:00+00");
    assert_eq!(lit(oid::TIMESTAMPTZ, "2026-01-05T13:45:00Z"), utc);
    assert_eq!(lit(oid::TIMESTAMPTZ, "2026-01-05 15:15:00+0130"), utc);
    assert_eq!(lit(oid::TIMESTAMPTZ, "2026-01-05 08:45-05"), utc);
    // Without an offset a timestamptz literal depends on the session TimeZone.
    for bad in ["2026-01-05 13:45:00", "2026-01-05", "now", "today"] {
        assert!(is_malformed(parse_literal(oid::TIMESTAMPTZ, bad)), "{bad}");
    }
    assert_eq!(
        lit(oid::TIMESTAMPTZ, "-infinity"),
        binary(oid::TIMESTAMPTZ, &unhex("8000000000000000"))
    );
    assert_eq!(
        lit(oid::DATE, " 2026-01-05 "),
        text(oid::DATE, "2026-01-05")
    );
    assert!(is_malformed(parse_literal(oid::DATE, "yesterday")));
}

#[test]
fn unsupported_types() {
    for type_oid in [114, 1186, 3802, 1083, 17, 790, 0] {
        assert!(!supports(type_oid));
        let err = decode(type_oid, Format::Text, b"x").unwrap_err();
        assert!(matches!(err, ValueError::UnsupportedType { oid, .. } if oid == type_oid));
        assert_eq!(err.sqlstate(), "0A000");
        assert!(matches!(
            parse_literal(type_oid, "x"),
            Err(ValueError::UnsupportedType { .. })
        ));
    }
    for type_oid in [
        oid::INT2,
        oid::INT4,
        oid::INT8,
        oid::OID,
        oid::NUMERIC,
        oid::FLOAT4,
        oid::FLOAT8,
        oid::TEXT,
        oid::VARCHAR,
        oid::BPCHAR,
        oid::NAME,
        oid::BOOL,
        oid::DATE,
        oid::TIMESTAMP,
        oid::TIMESTAMPTZ,
        oid::UUID,
    ] {
        assert!(supports(type_oid));
    }
}

#[test]
fn integer_literals_compare_like_postgres() {
    assert_eq!(lit(oid::INT8, "42"), SortValue::Int(42));
    assert_eq!(lit(oid::INT4, " -7 "), SortValue::Int(-7));
    // count(*) > 2.5: the literal is numeric and compares exactly with the integers.
    let two_and_half = lit(oid::INT8, "2.5");
    assert!(matches!(two_and_half, SortValue::Numeric(_)));
    assert!(SortValue::Int(2) < two_and_half);
    assert!(SortValue::Int(3) > two_and_half);
    assert_eq!(lit(oid::INT8, "3.000"), SortValue::Int(3));
    assert_eq!(
        SortValue::Int(3).cmp(&lit(oid::INT8, "3.0")),
        Ordering::Equal
    );
    // Beyond int8 (Postgres reads it as numeric).
    let huge = lit(oid::INT8, "99999999999999999999");
    assert!(SortValue::Int(i64::MAX) < huge);
    assert!(SortValue::Int(i64::MIN) > lit(oid::INT8, "-1e30"));
    assert!(is_malformed(parse_literal(oid::INT4, "abc")));
    assert_eq!(
        lit(oid::NUMERIC, "1.50"),
        text(oid::NUMERIC, "1.5"),
        "numeric literals"
    );
}

#[test]
fn other_literals() {
    assert_eq!(lit(oid::FLOAT8, "1.5"), text(oid::FLOAT8, "1.5"));
    assert_eq!(
        lit(oid::FLOAT8, "-Infinity"),
        text(oid::FLOAT8, "-Infinity")
    );
    assert_eq!(lit(oid::FLOAT4, "0.1"), text(oid::FLOAT4, "0.1"));
    assert_eq!(lit(oid::FLOAT8, "nan"), text(oid::FLOAT8, "NaN"));
    // float8in / float4in reject overflow and underflow.
    for bad in ["1e400", "-1e400", "1e-400", "abc", ""] {
        assert!(is_malformed(parse_literal(oid::FLOAT8, bad)), "{bad}");
    }
    for bad in ["1e39", "1e-50"] {
        assert!(is_malformed(parse_literal(oid::FLOAT4, bad)), "{bad}");
    }
    assert_eq!(lit(oid::FLOAT8, "0e10"), text(oid::FLOAT8, "0"));
    assert_eq!(lit(oid::TEXT, "it's"), SortValue::Text(b"it's".to_vec()));
    assert_eq!(lit(oid::TEXT, " x "), SortValue::Text(b" x ".to_vec()));
    assert_eq!(lit(oid::BPCHAR, "ab  "), text(oid::BPCHAR, "ab"));
    for (s, v) in [
        ("t", true),
        ("TRUE", true),
        ("tr", true),
        ("yes", true),
        ("y", true),
        ("on", true),
        ("1", true),
        (" true ", true),
        ("f", false),
        ("False", false),
        ("no", false),
        ("off", false),
        ("of", false),
        ("0", false),
    ] {
        assert_eq!(lit(oid::BOOL, s), SortValue::Bool(v), "{s}");
    }
    for bad in ["o", "truex", "2", "", "nope", "00"] {
        assert!(is_malformed(parse_literal(oid::BOOL, bad)), "{bad}");
    }
}

#[test]
fn errors_carry_sqlstates() {
    let m = ValueError::Malformed {
        oid: 23,
        detail: "x".into(),
    };
    assert_eq!(m.sqlstate(), "22P02");
    assert_eq!(m.to_string(), "malformed value of type OID 23: x");
    let o = ValueError::OutOfRange {
        oid: 20,
        message: "bigint out of range",
    };
    assert_eq!(o.sqlstate(), "22003");
    assert_eq!(o.to_string(), "bigint out of range");
}

/// `(value, float8out)` from Postgres 15 (extra_float_digits = 1).
const FLOAT8_OUT: &[(f64, &str)] = &[
    (1e23, "9.999999999999999e+22"),
    (1000000.0, "1000000"),
    (1e15, "1e+15"),
    (123456789012345.0, "123456789012345"),
    (1e-5, "1e-05"),
    (1.5e-5, "1.5e-05"),
    (0.0001, "0.0001"),
    (0.000123, "0.000123"),
    (9007199254740992.0, "9.007199254740992e+15"),
    (1234567890123456.0, "1.234567890123456e+15"),
    (123456789012345.6, "123456789012345.6"),
    (1e20, "1e+20"),
    (1e100, "1e+100"),
    (5e-324, "5e-324"),
    (2.2250738585072014e-308, "2.2250738585072014e-308"),
    (f64::MAX, "1.7976931348623157e+308"),
    (123456.789, "123456.789"),
    (-2.5, "-2.5"),
    (100.0, "100"),
    (1.0 / 3.0, "0.3333333333333333"),
    (0.1 + 0.2, "0.30000000000000004"),
    ((0.1 + 0.2 + 0.3) / 3.0, "0.20000000000000004"),
    (-0.0, "-0"),
    (0.0, "0"),
    (f64::NAN, "NaN"),
    (f64::INFINITY, "Infinity"),
    (f64::NEG_INFINITY, "-Infinity"),
];

/// `(value, float4out)` from Postgres 15.
const FLOAT4_OUT: &[(f32, &str)] = &[
    (1e6, "1e+06"),
    (100000.0, "100000"),
    (123456.0, "123456"),
    (1234567.0, "1.234567e+06"),
    (16777215.0, "1.6777215e+07"),
    (16777216.0, "1.6777216e+07"),
    (0.1, "0.1"),
    (0.0001, "0.0001"),
    (0.00001, "1e-05"),
    (3.4028235e38, "3.4028235e+38"),
    (1e-45, "1e-45"),
    (1e-40, "1e-40"),
    (1e10, "1e+10"),
    (1.0 / 3.0, "0.33333334"),
    (2.0 / 3.0, "0.6666667"),
    (100000.5, "100000.5"),
    (1.1 + 2.2, "3.3000002"),
    (0.1 + 0.2, "0.3"),
    (9.80665, "9.80665"),
    (1234.5678, "1234.5677"),
    (-1.5, "-1.5"),
    (-0.0, "-0"),
    (f32::NAN, "NaN"),
    (f32::NEG_INFINITY, "-Infinity"),
];

#[test]
fn float_output_matches_postgres() {
    for &(v, want) in FLOAT8_OUT {
        assert_eq!(float8_out(v), want, "{v:e}");
    }
    for &(v, want) in FLOAT4_OUT {
        assert_eq!(float4_out(v), want, "{v:e}");
    }
}

#[test]
fn float_output_round_trips() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let v = f64::from_bits(rng.r#gen());
        let s = float8_out(v);
        let back = parse_float8(&s).unwrap();
        assert!(
            back.to_bits() == v.to_bits() || (v.is_nan() && back.is_nan()),
            "{s}"
        );
        let w = f32::from_bits(rng.r#gen());
        let s = float4_out(w);
        let back = parse_float4(&s).unwrap();
        assert!(
            back.to_bits() == w.to_bits() || (w.is_nan() && back.is_nan()),
            "{s}"
        );
    }
    // Every power of two, subnormals included.
    for k in 0..2046u64 {
        let v = if k < 52 {
            f64::from_bits(1 << k)
        } else {
            f64::from_bits((k - 51) << 52)
        };
        assert_eq!(parse_float8(&float8_out(v)), Some(v), "{v:e}");
    }
}
