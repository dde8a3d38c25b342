//! Postgres `numeric` arithmetic the merge needs: parse and print both wire formats, add, and
//! divide exactly as `numeric_div` does, so `avg()` recombined from per-shard `sum()` and
//! `count()` prints the same digits one Postgres would have printed.
//!
//! The representation follows Postgres's own: base-10000 digits, a weight (the power of 10000
//! of the first digit) and a display scale (`dscale`, decimal digits after the point that
//! `numeric_out` prints). Values are kept normalized the way `make_result` stores them: no
//! leading or trailing zero digits, zero has no digits, weight 0 and a positive sign, so the
//! binary form this module sends is byte for byte what `numeric_send` sends.
//!
//! Rules reproduced (Postgres 14+, checked against Postgres 15):
//! - input (`numeric_in`): surrounding white space, a sign, digits with one optional point, an
//!   optional exponent; `NaN`, `Infinity`, `inf` (either sign, any case). The display scale is
//!   the count of digits after the point less the exponent, never below 0.
//! - `add` (`numeric_add`): exact; the result's display scale is the larger of the two.
//!   `Infinity + -Infinity` is NaN, NaN absorbs everything.
//! - `div_pg` (`numeric_div`): the result scale comes from `select_div_scale` (at least 16
//!   significant digits, at least either input's display scale, at most 1000) and the exact
//!   quotient is rounded half away from zero at that scale.
//! - order (`cmp_numerics`): by value, so `1.0 == 1.00`; NaN equals NaN and is greater than
//!   everything, `-Infinity` is less than every finite value and `Infinity` greater.

use std::cmp::Ordering;
use std::fmt;

use super::value::ValueError;

/// `numeric`'s type OID, for errors.
const NUMERIC: u32 = 1700;
/// The base of one stored digit.
const NBASE: u32 = 10_000;
/// Decimal digits per stored digit.
const DEC_DIGITS: i32 = 4;
/// `select_div_scale`: at least this many significant digits in a quotient.
const MIN_SIG_DIGITS: i32 = 16;
/// `NUMERIC_MAX_DISPLAY_SCALE`: the largest scale a division picks.
const MAX_DISPLAY_SCALE: i32 = 1000;
/// `NUMERIC_DSCALE_MAX`: the largest display scale the storage format holds.
const DSCALE_MAX: i32 = 0x3FFF;
/// The weight is stored in an int16.
const WEIGHT_MAX: i32 = i16::MAX as i32;
const WEIGHT_MIN: i32 = i16::MIN as i32;

/// Sign words of the binary format (`NUMERIC_POS` ... `NUMERIC_NINF`).
const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;

/// What kind of value a [`Decimal`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pos,
    Neg,
    NaN,
    PosInf,
    NegInf,
}

/// An arbitrary-precision Postgres `numeric`, NaN and ±Infinity included.
///
/// Equality and order are numeric (`1.0 == 1.00`), like Postgres's; compare
/// [`Decimal::to_text`] to tell display scales apart.
#[derive(Clone)]
pub struct Decimal {
    kind: Kind,
    /// Power of 10000 of `digits[0]`; 0 for zero and the special values.
    weight: i32,
    /// Decimal digits after the point in the text form; 0 for the special values.
    dscale: i32,
    /// Base-10000 digits, most significant first, no leading or trailing zeros.
    digits: Vec<u16>,
}

impl Decimal {
    /// NaN.
    pub fn nan() -> Decimal {
        Decimal::special(Kind::NaN)
    }

    /// Zero with display scale 0.
    pub fn zero() -> Decimal {
        Decimal {
            kind: Kind::Pos,
            weight: 0,
            dscale: 0,
            digits: Vec::new(),
        }
    }

    fn special(kind: Kind) -> Decimal {
        Decimal {
            kind,
            weight: 0,
            dscale: 0,
            digits: Vec::new(),
        }
    }

    /// Whether this is NaN.
    pub fn is_nan(&self) -> bool {
        self.kind == Kind::NaN
    }

    /// Whether this is neither NaN nor an infinity.
    pub fn is_finite(&self) -> bool {
        matches!(self.kind, Kind::Pos | Kind::Neg)
    }

    /// The display scale: digits after the point in the text form (0 for the special values).
    pub fn dscale(&self) -> i32 {
        self.dscale
    }

    /// Whether the value fits Postgres's storage format (its weight is an int16). A sum of
    /// values near 10^131072 can leave it, where Postgres says "value overflows numeric format".
    pub fn fits_storage(&self) -> bool {
        (WEIGHT_MIN..=WEIGHT_MAX).contains(&self.weight) && self.dscale <= DSCALE_MAX
    }

    /// Parses `numeric_in`'s input (which includes every `numeric_out` output and plain
    /// integers like `-42`).
    pub fn parse(text: &str) -> Result<Decimal, ValueError> {
        let bad = || malformed(format!("invalid input syntax for type numeric: \"{text}\""));
        let s = text.trim_matches(is_pg_space);
        match s.to_ascii_lowercase().as_str() {
            "nan" => return Ok(Decimal::nan()),
            "infinity" | "+infinity" | "inf" | "+inf" => return Ok(Decimal::special(Kind::PosInf)),
            "-infinity" | "-inf" => return Ok(Decimal::special(Kind::NegInf)),
            _ => {}
        }
        let b = s.as_bytes();
        let mut i = 0;
        let mut neg = false;
        if let Some(&c) = b.first()
            && (c == b'+' || c == b'-')
        {
            neg = c == b'-';
            i = 1;
        }
        // All mantissa digits, and how many of them follow the point.
        let mut dec: Vec<u8> = Vec::new();
        let mut frac_len: i64 = 0;
        let mut seen_point = false;
        let mut any_digit = false;
        while i < b.len() {
            match b[i] {
                c @ b'0'..=b'9' => {
                    any_digit = true;
                    // Leading zeros carry no value; dropping them keeps `dec` short.
                    if !(dec.is_empty() && c == b'0') {
                        dec.push(c - b'0');
                    }
                    if seen_point {
                        frac_len += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            i += 1;
        }
        if !any_digit {
            return Err(bad());
        }
        let mut exponent: i64 = 0;
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            i += 1;
            let mut exp_neg = false;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                exp_neg = b[i] == b'-';
                i += 1;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                // Saturate: anything this large is rejected below anyway.
                exponent = (exponent * 10 + i64::from(b[i] - b'0')).min(i64::from(i32::MAX));
                i += 1;
            }
            if i == start {
                return Err(bad());
            }
            if exp_neg {
                exponent = -exponent;
            }
        }
        if i != b.len() {
            return Err(bad());
        }
        let dscale = (frac_len - exponent).max(0);
        if dscale > i64::from(DSCALE_MAX) {
            return Err(overflow());
        }
        // value = dec * 10^exp10; align exp10 down to a multiple of 4 by appending zeros.
        let exp10 = exponent - frac_len;
        let pad = exp10.rem_euclid(i64::from(DEC_DIGITS));
        dec.extend(std::iter::repeat_n(0, pad as usize));
        let exp_limbs = (exp10 - pad) / i64::from(DEC_DIGITS);
        if exp_limbs.abs() > i64::from(i32::MAX / 4) {
            return Err(overflow());
        }
        let mut limbs = Vec::with_capacity(dec.len() / 4 + 1);
        for chunk in dec.rchunks(DEC_DIGITS as usize) {
            limbs.push(chunk.iter().fold(0u32, |acc, &d| acc * 10 + u32::from(d)));
        }
        let value = Decimal::from_mag(neg, limbs, exp_limbs as i32, dscale as i32);
        if !value.fits_storage() {
            return Err(overflow());
        }
        Ok(value)
    }

    /// Reads `numeric_send`'s binary format (what `numeric_recv` accepts): int16 ndigits, int16
    /// weight, uint16 sign, uint16 dscale, then ndigits base-10000 int16 digits. Digits hidden
    /// by the display scale are truncated away, as `numeric_recv` does.
    pub fn from_binary(bytes: &[u8]) -> Result<Decimal, ValueError> {
        if bytes.len() < 8 {
            return Err(malformed(format!(
                "binary numeric of {} bytes (needs at least 8)",
                bytes.len()
            )));
        }
        let word = |i: usize| u16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]);
        let ndigits = word(0) as i16;
        let weight = i32::from(word(1) as i16);
        let sign = word(2);
        let dscale = word(3);
        if ndigits < 0 || bytes.len() != 8 + 2 * ndigits as usize {
            return Err(malformed(format!(
                "binary numeric of {} bytes with {ndigits} digits",
                bytes.len()
            )));
        }
        match sign {
            SIGN_NAN => return Ok(Decimal::nan()),
            SIGN_PINF => return Ok(Decimal::special(Kind::PosInf)),
            SIGN_NINF => return Ok(Decimal::special(Kind::NegInf)),
            SIGN_POS | SIGN_NEG => {}
            other => {
                return Err(malformed(format!(
                    "invalid sign in external \"numeric\" value: {other:#06x}"
                )));
            }
        }
        if i32::from(dscale) > DSCALE_MAX {
            return Err(malformed(format!(
                "invalid scale in external \"numeric\" value: {dscale}"
            )));
        }
        let mut digits = Vec::with_capacity(ndigits as usize);
        for i in 0..ndigits as usize {
            let d = word(4 + i);
            if u32::from(d) >= NBASE {
                return Err(malformed(format!(
                    "invalid digit in external \"numeric\" value: {d}"
                )));
            }
            digits.push(d);
        }
        let dscale = i32::from(dscale);
        truncate_digits(&mut digits, weight, dscale);
        let limbs: Vec<u32> = digits.iter().rev().map(|&d| u32::from(d)).collect();
        let exp = weight - (digits.len() as i32 - 1);
        Ok(Decimal::from_mag(sign == SIGN_NEG, limbs, exp, dscale))
    }

    /// An integer (display scale 0), like `int8_numeric`.
    pub fn from_i64(v: i64) -> Decimal {
        let mut mag = v.unsigned_abs();
        let mut limbs = Vec::new();
        while mag > 0 {
            limbs.push((mag % u64::from(NBASE)) as u32);
            mag /= u64::from(NBASE);
        }
        Decimal::from_mag(v < 0, limbs, 0, 0)
    }

    /// `numeric_out`: exactly `dscale` digits after the point; `NaN`, `Infinity`, `-Infinity`.
    pub fn to_text(&self) -> String {
        match self.kind {
            Kind::NaN => return "NaN".to_owned(),
            Kind::PosInf => return "Infinity".to_owned(),
            Kind::NegInf => return "-Infinity".to_owned(),
            Kind::Pos | Kind::Neg => {}
        }
        let mut out = String::new();
        if self.kind == Kind::Neg {
            out.push('-');
        }
        if self.weight < 0 {
            out.push('0');
        } else {
            for w in (0..=self.weight).rev() {
                let d = self.digit_at(w);
                if w == self.weight {
                    out.push_str(&d.to_string());
                } else {
                    out.push_str(&format!("{d:04}"));
                }
            }
        }
        if self.dscale > 0 {
            out.push('.');
            let mut left = self.dscale;
            let mut w = -1;
            while left > 0 {
                let four = format!("{:04}", self.digit_at(w));
                let take = left.min(DEC_DIGITS) as usize;
                out.push_str(&four[..take]);
                left -= take as i32;
                w -= 1;
            }
        }
        out
    }

    /// `numeric_send`. Like Postgres 15, ±Infinity carry display scale 32 (what its header
    /// bits read as), NaN 0, zero its display scale with weight 0.
    pub fn to_binary(&self) -> Vec<u8> {
        let (sign, dscale) = match self.kind {
            Kind::Pos => (SIGN_POS, self.dscale as u16),
            Kind::Neg => (SIGN_NEG, self.dscale as u16),
            Kind::NaN => (SIGN_NAN, 0),
            Kind::PosInf => (SIGN_PINF, 32),
            Kind::NegInf => (SIGN_NINF, 32),
        };
        let mut out = Vec::with_capacity(8 + 2 * self.digits.len());
        out.extend_from_slice(&(self.digits.len() as i16).to_be_bytes());
        out.extend_from_slice(&(self.weight as i16).to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in &self.digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    /// `numeric_add`: exact; display scale is the larger of the two.
    pub fn add(&self, other: &Decimal) -> Decimal {
        use Kind::*;
        match (self.kind, other.kind) {
            (NaN, _) | (_, NaN) | (PosInf, NegInf) | (NegInf, PosInf) => return Decimal::nan(),
            (PosInf, _) | (_, PosInf) => return Decimal::special(PosInf),
            (NegInf, _) | (_, NegInf) => return Decimal::special(NegInf),
            _ => {}
        }
        let dscale = self.dscale.max(other.dscale);
        let (a, ea) = self.to_mag();
        let (b, eb) = other.to_mag();
        let e = ea.min(eb);
        let a = shift_limbs(&a, (ea - e) as usize);
        let b = shift_limbs(&b, (eb - e) as usize);
        let (a_neg, b_neg) = (self.kind == Neg, other.kind == Neg);
        if a_neg == b_neg {
            return Decimal::from_mag(a_neg, mag_add(&a, &b), e, dscale);
        }
        match mag_cmp(&a, &b) {
            Ordering::Equal => Decimal::from_mag(false, Vec::new(), 0, dscale),
            Ordering::Greater => Decimal::from_mag(a_neg, mag_sub(&a, &b), e, dscale),
            Ordering::Less => Decimal::from_mag(b_neg, mag_sub(&b, &a), e, dscale),
        }
    }

    /// `numeric_div`: the scale `select_div_scale` picks, the exact quotient rounded half away
    /// from zero at it. Dividing by zero is an error (as are ±Infinity divided by zero);
    /// ±Infinity divided by a finite value is a signed infinity, a finite value divided by
    /// ±Infinity is 0, Infinity by Infinity and anything with NaN is NaN.
    pub fn div_pg(&self, other: &Decimal) -> Result<Decimal, ValueError> {
        use Kind::*;
        match (self.kind, other.kind) {
            (NaN, _) | (_, NaN) => return Ok(Decimal::nan()),
            (PosInf | NegInf, PosInf | NegInf) => return Ok(Decimal::nan()),
            (PosInf | NegInf, _) => {
                if other.digits.is_empty() {
                    return Err(ValueError::DivisionByZero);
                }
                let neg = (self.kind == NegInf) != (other.kind == Neg);
                return Ok(Decimal::special(if neg { NegInf } else { PosInf }));
            }
            (_, PosInf | NegInf) => return Ok(Decimal::zero()),
            _ => {}
        }
        if other.digits.is_empty() {
            return Err(ValueError::DivisionByZero);
        }
        let rscale = select_div_scale(self, other);
        let neg = (self.kind == Neg) != (other.kind == Neg);
        if self.digits.is_empty() {
            return Ok(Decimal::from_mag(false, Vec::new(), 0, rscale));
        }
        // |self| = x * 10000^ex, |other| = y * 10000^ey. Compute
        // q = floor(|self / other| * 10^(rscale + 1)): one digit more than kept, which decides
        // the rounding (the truncated tail below it cannot change a half-away-from-zero choice).
        let (x, ex) = self.to_mag();
        let (y, ey) = other.to_mag();
        let e10 = i64::from(DEC_DIGITS) * i64::from(ex - ey) + i64::from(rscale) + 1;
        let (num, den) = if e10 >= 0 {
            (mul_pow10(&x, e10 as usize), y)
        } else {
            (x, mul_pow10(&y, e10.unsigned_abs() as usize))
        };
        let (q, _) = mag_divmod(&num, &den);
        let (mut q, last) = mag_divmod_small(&q, 10);
        if last >= 5 {
            q = mag_add(&q, &[1]);
        }
        // q * 10^-rscale; pad to a whole number of base-10000 digits after the point.
        let pad = (DEC_DIGITS - rscale % DEC_DIGITS) % DEC_DIGITS;
        let q = mul_pow10(&q, pad as usize);
        let exp = -(rscale + pad) / DEC_DIGITS;
        Ok(Decimal::from_mag(neg, q, exp, rscale))
    }

    /// Builds a finite value from a little-endian base-10000 magnitude times 10000^exp, and
    /// normalizes it (strips zero digits; zero is positive with weight 0).
    fn from_mag(neg: bool, mut limbs: Vec<u32>, mut exp: i32, dscale: i32) -> Decimal {
        let lead = limbs.iter().take_while(|&&d| d == 0).count();
        limbs.drain(..lead);
        exp += lead as i32;
        mag_trim(&mut limbs);
        if limbs.is_empty() {
            return Decimal {
                kind: Kind::Pos,
                weight: 0,
                dscale,
                digits: Vec::new(),
            };
        }
        let weight = exp + limbs.len() as i32 - 1;
        Decimal {
            kind: if neg { Kind::Neg } else { Kind::Pos },
            weight,
            dscale,
            digits: limbs.iter().rev().map(|&d| d as u16).collect(),
        }
    }

    /// The little-endian base-10000 magnitude and the power of 10000 of its lowest digit.
    fn to_mag(&self) -> (Vec<u32>, i32) {
        if self.digits.is_empty() {
            return (Vec::new(), 0);
        }
        let limbs = self.digits.iter().rev().map(|&d| u32::from(d)).collect();
        (limbs, self.weight - (self.digits.len() as i32 - 1))
    }

    /// The stored digit of weight `w` (0 outside the stored ones).
    fn digit_at(&self, w: i32) -> u16 {
        let i = i64::from(self.weight) - i64::from(w);
        if i < 0 {
            return 0;
        }
        self.digits.get(i as usize).copied().unwrap_or(0)
    }

    /// -1, 0 or 1 for finite values.
    fn signum(&self) -> i8 {
        match self.kind {
            _ if self.digits.is_empty() => 0,
            Kind::Neg => -1,
            _ => 1,
        }
    }

    /// Compares magnitudes of two finite values.
    fn cmp_abs(&self, other: &Decimal) -> Ordering {
        match (self.digits.is_empty(), other.digits.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        // Normalized: the first digit is non-zero and there are no trailing zeros, so the
        // weight decides first and then the digits in order (a longer tail is larger).
        self.weight
            .cmp(&other.weight)
            .then_with(|| self.digits.cmp(&other.digits))
    }
}

/// `select_div_scale`.
fn select_div_scale(a: &Decimal, b: &Decimal) -> i32 {
    // Normalized values have a non-zero first digit; zero has weight 0 and first digit 0.
    let (w1, f1) = (a.weight, a.digits.first().copied().unwrap_or(0));
    let (w2, f2) = (b.weight, b.digits.first().copied().unwrap_or(0));
    let mut qweight = w1 - w2;
    if f1 <= f2 {
        qweight -= 1;
    }
    (MIN_SIG_DIGITS - qweight * DEC_DIGITS)
        .max(a.dscale)
        .max(b.dscale)
        .clamp(0, MAX_DISPLAY_SCALE)
}

/// Drops the digits (most significant first, first of weight `weight`) a display scale hides.
fn truncate_digits(digits: &mut Vec<u16>, weight: i32, dscale: i32) {
    // Keep digits of weight >= -ceil(dscale / 4).
    let frac_digits = (dscale + DEC_DIGITS - 1) / DEC_DIGITS;
    let keep = i64::from(weight) + i64::from(frac_digits) + 1;
    if keep < digits.len() as i64 {
        digits.truncate(keep.max(0) as usize);
    }
    // In the last kept fractional digit, zero the decimal places beyond dscale.
    let hidden = frac_digits * DEC_DIGITS - dscale;
    if hidden > 0
        && keep > 0
        && digits.len() as i64 == keep
        && let Some(last) = digits.last_mut()
    {
        let m = 10u16.pow(hidden as u32);
        *last -= *last % m;
    }
}

fn malformed(detail: String) -> ValueError {
    ValueError::Malformed {
        oid: NUMERIC,
        detail,
    }
}

fn overflow() -> ValueError {
    ValueError::OutOfRange {
        oid: NUMERIC,
        message: "value overflows numeric format",
    }
}

/// The characters C's `isspace` accepts, which `numeric_in` skips around a value.
fn is_pg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Decimal) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    /// `cmp_numerics`: -Infinity < finite values < Infinity < NaN; NaN equals NaN.
    fn cmp(&self, other: &Decimal) -> Ordering {
        fn rank(k: Kind) -> u8 {
            match k {
                Kind::NegInf => 0,
                Kind::Pos | Kind::Neg => 1,
                Kind::PosInf => 2,
                Kind::NaN => 3,
            }
        }
        let by_rank = rank(self.kind).cmp(&rank(other.kind));
        if by_rank != Ordering::Equal || rank(self.kind) != 1 {
            return by_rank;
        }
        let (sa, sb) = (self.signum(), other.signum());
        if sa != sb {
            return sa.cmp(&sb);
        }
        match sa {
            0 => Ordering::Equal,
            1 => self.cmp_abs(other),
            _ => other.cmp_abs(self),
        }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({})", self.to_text())
    }
}

// ---- Little-endian base-10000 magnitudes ----

fn mag_trim(a: &mut Vec<u32>) {
    while a.last() == Some(&0) {
        a.pop();
    }
}

/// `a` with `n` zero digits below it (times 10000^n).
fn shift_limbs(a: &[u32], n: usize) -> Vec<u32> {
    if a.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0; n];
    out.extend_from_slice(a);
    out
}

fn mag_cmp(a: &[u32], b: &[u32]) -> Ordering {
    let la = a.len() - a.iter().rev().take_while(|&&d| d == 0).count();
    let lb = b.len() - b.iter().rev().take_while(|&&d| d == 0).count();
    la.cmp(&lb)
        .then_with(|| a[..la].iter().rev().cmp(b[..lb].iter().rev()))
}

fn mag_add(a: &[u32], b: &[u32]) -> Vec<u32> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n + 1);
    let mut carry = 0;
    for i in 0..n {
        let s = a.get(i).copied().unwrap_or(0) + b.get(i).copied().unwrap_or(0) + carry;
        out.push(s % NBASE);
        carry = s / NBASE;
    }
    if carry > 0 {
        out.push(carry);
    }
    out
}

/// `a - b` for `a >= b`.
fn mag_sub(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0;
    for (i, &ai) in a.iter().enumerate() {
        let sub = b.get(i).copied().unwrap_or(0) + borrow;
        if ai >= sub {
            out.push(ai - sub);
            borrow = 0;
        } else {
            out.push(ai + NBASE - sub);
            borrow = 1;
        }
    }
    debug_assert_eq!(borrow, 0, "mag_sub needs a >= b");
    mag_trim(&mut out);
    out
}

/// `a * k` for `k < NBASE`.
fn mag_mul_small(a: &[u32], k: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + 1);
    let mut carry = 0u32;
    for &d in a {
        let p = d * k + carry;
        out.push(p % NBASE);
        carry = p / NBASE;
    }
    if carry > 0 {
        out.push(carry);
    }
    out
}

/// `a * 10^n`.
fn mul_pow10(a: &[u32], n: usize) -> Vec<u32> {
    let shifted = shift_limbs(a, n / DEC_DIGITS as usize);
    match n % DEC_DIGITS as usize {
        0 => shifted,
        r => mag_mul_small(&shifted, 10u32.pow(r as u32)),
    }
}

/// `(a / k, a % k)` for `0 < k < NBASE`.
fn mag_divmod_small(a: &[u32], k: u32) -> (Vec<u32>, u32) {
    let mut q = vec![0; a.len()];
    let mut rem = 0u32;
    for i in (0..a.len()).rev() {
        let cur = rem * NBASE + a[i];
        q[i] = cur / k;
        rem = cur % k;
    }
    mag_trim(&mut q);
    (q, rem)
}

/// `(u / v, u % v)` for non-zero `v`: long division in base 10000 (Knuth's algorithm D).
fn mag_divmod(u: &[u32], v: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let mut v = v.to_vec();
    mag_trim(&mut v);
    let mut u = u.to_vec();
    mag_trim(&mut u);
    assert!(!v.is_empty(), "mag_divmod by zero");
    if mag_cmp(&u, &v) == Ordering::Less {
        return (Vec::new(), u);
    }
    if v.len() == 1 {
        let (q, r) = mag_divmod_small(&u, v[0]);
        let r = if r == 0 { Vec::new() } else { vec![r] };
        return (q, r);
    }
    let base = u64::from(NBASE);
    let n = v.len();
    let m = u.len() - n;
    // Normalize so the divisor's top digit is at least NBASE / 2; the quotient is unchanged.
    let d = NBASE / (v[n - 1] + 1);
    let vn = mag_mul_small(&v, d);
    debug_assert_eq!(vn.len(), n);
    let mut un = mag_mul_small(&u, d);
    un.resize(u.len() + 1, 0);
    let (v1, v2) = (u64::from(vn[n - 1]), u64::from(vn[n - 2]));
    let mut q = vec![0u32; m + 1];
    for j in (0..=m).rev() {
        // Estimate the quotient digit from the top two remainder digits, then refine it with
        // the third: the estimate is then at most one too large.
        let top = u64::from(un[j + n]) * base + u64::from(un[j + n - 1]);
        let mut qhat = top / v1;
        let mut rhat = top % v1;
        while qhat >= base || qhat * v2 > rhat * base + u64::from(un[j + n - 2]) {
            qhat -= 1;
            rhat += v1;
            if rhat >= base {
                break;
            }
        }
        // un[j..=j+n] -= qhat * vn
        let mut carry = 0u64;
        let mut borrow = 0i64;
        for i in 0..n {
            let p = qhat * u64::from(vn[i]) + carry;
            carry = p / base;
            let t = i64::from(un[i + j]) - (p % base) as i64 - borrow;
            if t < 0 {
                un[i + j] = (t + base as i64) as u32;
                borrow = 1;
            } else {
                un[i + j] = t as u32;
                borrow = 0;
            }
        }
        let t = i64::from(un[j + n]) - carry as i64 - borrow;
        if t < 0 {
            // qhat was one too large: add the divisor back.
            un[j + n] = (t + base as i64) as u32;
            qhat -= 1;
            let mut carry = 0u32;
            for i in 0..n {
                let s = un[i + j] + vn[i] + carry;
                un[i + j] = s % NBASE;
                carry = s / NBASE;
            }
            un[j + n] = (un[j + n] + carry) % NBASE;
        } else {
            un[j + n] = t as u32;
        }
        q[j] = qhat as u32;
    }
    mag_trim(&mut q);
    un.truncate(n);
    let (r, _) = mag_divmod_small(&un, d);
    (q, r)
}

#[cfg(test)]
#[path = "decimal_tests.rs"]
mod tests;
