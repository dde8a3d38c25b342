//! `float4` and `float8`: Postgres's btree order ([`PgFloat`]), `float4in`/`float8in` text
//! parsing, and `float4out`/`float8out` printing.

use std::cmp::Ordering;

use super::is_c_space;

/// A `float4`/`float8` under Postgres's btree order: NaN equals NaN and sorts after
/// everything, `-0 == 0`. `float4` values are held widened (exactly) to `f64`.
#[derive(Debug, Clone, Copy)]
pub struct PgFloat(pub f64);

impl PartialEq for PgFloat {
    fn eq(&self, other: &PgFloat) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PgFloat {}

impl PartialOrd for PgFloat {
    fn partial_cmp(&self, other: &PgFloat) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PgFloat {
    /// `float8_cmp_internal`.
    fn cmp(&self, other: &PgFloat) -> Ordering {
        match (self.0.is_nan(), other.0.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal),
        }
    }
}

/// `float8in`'s text (what `float8out` prints, and the usual spellings of the specials).
pub(super) fn parse_float8(s: &str) -> Option<f64> {
    let s = s.trim_matches(is_c_space);
    match special_float(s) {
        Some(f) => Some(f),
        None if looks_decimal(s) => s.parse().ok(),
        None => None,
    }
}

/// `float4in`'s text, rounded once, straight to single precision, as `strtof` does.
pub(super) fn parse_float4(s: &str) -> Option<f32> {
    let s = s.trim_matches(is_c_space);
    match special_float(s) {
        Some(f) => Some(f as f32),
        None if looks_decimal(s) => s.parse().ok(),
        None => None,
    }
}

/// `float4in`/`float8in` reject a number that overflows to infinity or underflows to zero.
pub(super) fn float_literal_in_range(s: &str, is_inf: bool, is_zero: bool) -> bool {
    if special_float(s).is_some() {
        return true;
    }
    let nonzero_digits = s
        .split(['e', 'E'])
        .next()
        .is_some_and(|m| m.bytes().any(|c| (b'1'..=b'9').contains(&c)));
    if is_inf {
        return false;
    }
    !(is_zero && nonzero_digits)
}

fn special_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Digits, a point and an exponent only: Rust's parser also takes `inf`-like words, which
/// [`special_float`] has already handled the way Postgres does.
fn looks_decimal(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E'))
}

// ---- Float output (float4out / float8out) ----

/// `float8out` with `extra_float_digits` = 1 (the default since Postgres 12): the shortest
/// digits that read back as the same double, fixed-point for decimal exponents -4..14 and
/// `d.ddde±XX` otherwise (`1e+20`, `1.5e-05`); `NaN`, `Infinity`, `-Infinity`, `-0`.
pub fn float8_out(v: f64) -> String {
    float_out(v.to_bits(), 52, 11, 15)
}

/// `float4out` with `extra_float_digits` = 1: as [`float8_out`] for single precision, with
/// fixed-point for decimal exponents -4..5.
pub fn float4_out(v: f32) -> String {
    float_out(u64::from(v.to_bits()), 23, 8, 6)
}

/// Prints the IEEE value in `bits` as Postgres's Ryu-based output does: the shortest decimal
/// strictly inside the interval of values that round to it (bounds excluded), the closest to
/// the exact value among those (ties to even), then fixed-point when the decimal exponent is
/// in `-4..fixed_below`, else scientific with at least two exponent digits.
fn float_out(bits: u64, mant_bits: u32, exp_bits: u32, fixed_below: i32) -> String {
    let negative = (bits >> (mant_bits + exp_bits)) & 1 == 1;
    let ieee_mant = bits & ((1u64 << mant_bits) - 1);
    let ieee_exp = ((bits >> mant_bits) & ((1u64 << exp_bits) - 1)) as i32;
    let sign = if negative { "-" } else { "" };
    if ieee_exp == (1 << exp_bits) - 1 {
        return if ieee_mant != 0 {
            "NaN".to_owned()
        } else {
            format!("{sign}Infinity")
        };
    }
    if ieee_exp == 0 && ieee_mant == 0 {
        return format!("{sign}0");
    }
    let bias = (1 << (exp_bits - 1)) - 1;
    // The value is mv * 2^e2; the values rounding to it lie strictly between mm and mp (the
    // half-way points to its neighbours, closer below at a power of two).
    let (m2, e2) = if ieee_exp == 0 {
        (ieee_mant, 1 - bias - mant_bits as i32 - 2)
    } else {
        (
            ieee_mant | (1u64 << mant_bits),
            ieee_exp - bias - mant_bits as i32 - 2,
        )
    };
    let mm_shift = u64::from(ieee_mant != 0 || ieee_exp <= 1);
    let mv = 4 * m2;
    let (mm, mp) = (mv - 1 - mm_shift, mv + 2);
    let (digits, exp10) = shortest_digits(mm, mv, mp, e2);
    let len = digits.len() as i32;
    // Decimal exponent of the first digit.
    let exp = exp10 + len - 1;
    let ds: String = digits.iter().map(|&d| char::from(b'0' + d)).collect();
    let mut out = sign.to_owned();
    if (-4..fixed_below).contains(&exp) {
        if exp10 >= 0 {
            out.push_str(&ds);
            out.extend(std::iter::repeat_n('0', exp10 as usize));
        } else if exp >= 0 {
            let point = (exp + 1) as usize;
            out.push_str(&ds[..point]);
            out.push('.');
            out.push_str(&ds[point..]);
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&ds);
        }
    } else {
        out.push_str(&ds[..1]);
        if len > 1 {
            out.push('.');
            out.push_str(&ds[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
    }
    out
}

/// The shortest decimal digits `d` (and exponent `k`, value `d * 10^k`, no trailing zeros)
/// strictly between `mm * 2^e2` and `mp * 2^e2`, closest to `mv * 2^e2`, ties to even.
/// Computed exactly on decimal digit strings.
fn shortest_digits(mm: u64, mv: u64, mp: u64, e2: i32) -> (Vec<u8>, i32) {
    // Scale all three to integers: x * 2^e2 = (x * 5^-e2) * 10^e2 for e2 < 0.
    let scale = (-e2).max(0);
    let to_dec = |x: u64| {
        let mut big = BigDec::from_u64(x);
        if e2 >= 0 {
            big.mul_pow(2, e2 as u32);
        } else {
            big.mul_pow(5, (-e2) as u32);
        }
        big.to_digits()
    };
    let (lo, mid, hi) = (to_dec(mm), to_dec(mv), to_dec(mp));
    let n = hi.len();
    let pad = |d: Vec<u8>| {
        let mut v = vec![0; n - d.len()];
        v.extend(d);
        v
    };
    let (lo, mid) = (pad(lo), pad(mid));
    let mut hi_m1 = hi;
    dec_decrement(&mut hi_m1);
    // The most trailing digits r that can go: some c * 10^r lies in (lo, hi), i.e.
    // floor((hi - 1) / 10^r) > floor(lo / 10^r).
    let mut r = 0;
    while r < n && hi_m1[..n - r - 1] > lo[..n - r - 1] {
        r += 1;
    }
    let keep = n - r;
    // Candidates with a spare leading digit for a carry.
    let widen = |d: &[u8]| {
        let mut v = vec![0];
        v.extend_from_slice(d);
        v
    };
    let (lo_p, hi_p) = (widen(&lo[..keep]), widen(&hi_m1[..keep]));
    let down = widen(&mid[..keep]);
    let mut up = down.clone();
    dec_increment(&mut up);
    let rest = &mid[keep..];
    let round_up = match rest.first() {
        None => false,
        Some(&d) if d > 5 => true,
        Some(&5) => rest[1..].iter().any(|&d| d != 0) || down.last().is_some_and(|d| d % 2 == 1),
        Some(_) => false,
    };
    let inside = |c: &Vec<u8>| *c > lo_p && *c <= hi_p;
    let (first, second) = if round_up { (up, down) } else { (down, up) };
    let mut c = if inside(&first) { first } else { second };
    let lead = c.iter().take_while(|&&d| d == 0).count();
    c.drain(..lead);
    let trailing = c.iter().rev().take_while(|&&d| d == 0).count();
    c.truncate(c.len() - trailing);
    (c, r as i32 - scale + trailing as i32)
}

fn dec_decrement(d: &mut [u8]) {
    for x in d.iter_mut().rev() {
        if *x > 0 {
            *x -= 1;
            return;
        }
        *x = 9;
    }
}

fn dec_increment(d: &mut [u8]) {
    for x in d.iter_mut().rev() {
        if *x < 9 {
            *x += 1;
            return;
        }
        *x = 0;
    }
}

/// A non-negative integer in little-endian base-10^9 limbs, for exact float printing.
struct BigDec(Vec<u64>);

impl BigDec {
    const BASE: u64 = 1_000_000_000;

    fn from_u64(mut x: u64) -> BigDec {
        let mut limbs = Vec::new();
        while x > 0 {
            limbs.push(x % Self::BASE);
            x /= Self::BASE;
        }
        BigDec(limbs)
    }

    fn mul_small(&mut self, k: u64) {
        let mut carry = 0;
        for limb in &mut self.0 {
            let p = *limb * k + carry;
            *limb = p % Self::BASE;
            carry = p / Self::BASE;
        }
        while carry > 0 {
            self.0.push(carry % Self::BASE);
            carry /= Self::BASE;
        }
    }

    /// `self *= base^n` for base 2 or 5, in chunks that keep every product within u64.
    fn mul_pow(&mut self, base: u64, mut n: u32) {
        let chunk = if base == 2 { 30 } else { 13 };
        while n > 0 {
            let step = n.min(chunk);
            self.mul_small(base.pow(step));
            n -= step;
        }
    }

    /// Decimal digits, most significant first ("0" is `[0]`).
    fn to_digits(&self) -> Vec<u8> {
        let Some((top, rest)) = self.0.split_last() else {
            return vec![0];
        };
        let mut s = top.to_string();
        for limb in rest.iter().rev() {
            s.push_str(&format!("{limb:09}"));
        }
        s.bytes().map(|c| c - b'0').collect()
    }
}
