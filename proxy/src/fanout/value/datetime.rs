//! `date`, `timestamp` and `timestamptz` text in the ISO DateStyle, parsed into Postgres's
//! binary form (days or microseconds since 2000-01-01).

use super::is_c_space;

const USECS_PER_DAY: i64 = 86_400_000_000;
/// Days from 1970-01-01 to 2000-01-01, Postgres's epoch.
const PG_EPOCH_DAYS: i64 = 10_957;

/// A byte cursor over date/time text.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, s: &str) -> bool {
        if self.b[self.i..].starts_with(s.as_bytes()) {
            self.i += s.len();
            true
        } else {
            false
        }
    }

    /// Between `min` and `max` digits: their value and how many there were.
    fn digits(&mut self, min: usize, max: usize) -> Option<(i64, usize)> {
        let start = self.i;
        let mut v: i64 = 0;
        while self.i - start < max
            && let Some(c @ b'0'..=b'9') = self.peek()
        {
            v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
            self.i += 1;
        }
        let n = self.i - start;
        (n >= min).then_some((v, n))
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (astronomical year: 0 is 1 BC).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count from March, so the leap day ends a year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD`: the year as printed (BC not applied yet), month, day.
fn date_fields(c: &mut Cursor<'_>) -> Option<(i64, i64, i64)> {
    let (year, _) = c.digits(1, 9)?;
    if !c.eat(b'-') {
        return None;
    }
    let (month, _) = c.digits(2, 2)?;
    if !c.eat(b'-') {
        return None;
    }
    let (day, _) = c.digits(2, 2)?;
    Some((year, month, day))
}

/// Days since 2000-01-01 of a printed year (1.. with `bc`), month and day, validated.
fn epoch_days(year: i64, month: i64, day: i64, bc: bool) -> Option<i64> {
    if year < 1 || !(1..=12).contains(&month) {
        return None;
    }
    let year = if bc { 1 - year } else { year };
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) - PG_EPOCH_DAYS)
}

/// `infinity` / `-infinity`.
fn infinity(s: &str) -> Option<bool> {
    match s {
        "infinity" | "+infinity" => Some(true),
        "-infinity" => Some(false),
        _ => None,
    }
}

/// A date in ISO form (`2026-01-05`, `0044-03-15 BC`, `infinity`) as days since 2000-01-01.
pub(super) fn parse_date(s: &str, literal: bool) -> Option<i32> {
    let s = if literal {
        s.trim_matches(is_c_space)
    } else {
        s
    };
    if let Some(pos) = infinity(&s.to_ascii_lowercase()) {
        return Some(if pos { i32::MAX } else { i32::MIN });
    }
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    let (year, month, day) = date_fields(&mut c)?;
    let bc = c.eat_str(" BC");
    if !c.done() {
        return None;
    }
    let days = epoch_days(year, month, day, bc)?;
    // Leave the two sentinels to the infinities.
    i32::try_from(days)
        .ok()
        .filter(|d| *d != i32::MIN && *d != i32::MAX)
}

/// A timestamp in ISO form as microseconds since 2000-01-01 (UTC for `with_tz`).
///
/// Output form (`literal` false): `YYYY-MM-DD HH:MM:SS[.ffffff]`, then for timestamptz the
/// offset `±HH[:MM[:SS]]`, then ` BC` for years before 1. A literal may also use `T`, omit
/// the seconds (or the whole time), carry more fractional digits (rounded to microseconds as
/// Postgres does), write the offset as `±HHMM` or `Z`; timestamp ignores an offset, and
/// timestamptz requires one.
pub(super) fn parse_timestamp(s: &str, with_tz: bool, literal: bool) -> Option<i64> {
    if let Some(pos) = infinity(&s.to_ascii_lowercase()) {
        return Some(if pos { i64::MAX } else { i64::MIN });
    }
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    let (year, month, day) = date_fields(&mut c)?;
    let mut usecs: i64 = 0;
    let has_time = c.eat(b' ') || (literal && c.eat(b'T'));
    if has_time {
        let (h, _) = c.digits(2, 2)?;
        if !c.eat(b':') {
            return None;
        }
        let (m, _) = c.digits(2, 2)?;
        let mut sec = 0;
        let mut frac = 0;
        if c.eat(b':') {
            sec = c.digits(2, 2)?.0;
            if c.eat(b'.') {
                frac = fraction_usecs(&mut c, literal)?;
            }
        } else if !literal {
            return None;
        }
        let hour_ok = h < 24 || (literal && h == 24 && m == 0 && sec == 0 && frac == 0);
        if !hour_ok || m > 59 || sec > if literal { 60 } else { 59 } {
            return None;
        }
        usecs = ((h * 60 + m) * 60 + sec) * 1_000_000 + frac;
    } else if !literal || with_tz {
        return None;
    }
    let offset = if has_time {
        utc_offset(&mut c, literal)?
    } else {
        None
    };
    let bc = c.eat_str(" BC");
    if !c.done() || (with_tz && offset.is_none()) || (!literal && !with_tz && offset.is_some()) {
        return None;
    }
    let days = epoch_days(year, month, day, bc)?;
    let mut ts = days.checked_mul(USECS_PER_DAY)?.checked_add(usecs)?;
    if with_tz {
        ts = ts.checked_sub(offset.unwrap_or(0).checked_mul(1_000_000)?)?;
    }
    (ts != i64::MIN && ts != i64::MAX).then_some(ts)
}

/// Fractional seconds after the point, in microseconds: up to 6 digits in output form; a
/// literal's longer fraction is rounded half to even (`rint`).
fn fraction_usecs(c: &mut Cursor<'_>, literal: bool) -> Option<i64> {
    let start = c.i;
    while let Some(b'0'..=b'9') = c.peek() {
        c.i += 1;
    }
    let digits = &c.b[start..c.i];
    if digits.is_empty() || (!literal && digits.len() > 6) {
        return None;
    }
    let mut us = 0i64;
    for k in 0..6 {
        us = us * 10 + digits.get(k).map_or(0, |d| i64::from(d - b'0'));
    }
    if digits.len() > 6 {
        let rest = &digits[6..];
        let up = match rest[0] {
            b'6'..=b'9' => true,
            b'5' => rest[1..].iter().any(|&d| d != b'0') || us % 2 == 1,
            _ => false,
        };
        us += i64::from(up);
    }
    Some(us)
}

/// An optional UTC offset, in seconds east of Greenwich.
fn utc_offset(c: &mut Cursor<'_>, literal: bool) -> Option<Option<i64>> {
    if literal && c.eat(b'Z') {
        return Some(Some(0));
    }
    let neg = match c.peek() {
        Some(b'+') => false,
        Some(b'-') => true,
        _ => return Some(None),
    };
    c.i += 1;
    let (h, n) = c.digits(2, if literal { 4 } else { 2 })?;
    let (mut h, mut m, mut s) = (h, 0, 0);
    if n == 4 {
        (h, m) = (h / 100, h % 100);
    } else if n != 2 {
        return None;
    } else if c.eat(b':') {
        m = c.digits(2, 2)?.0;
        if c.eat(b':') {
            s = c.digits(2, 2)?.0;
        }
    }
    if m > 59 || s > 59 || h > 15 {
        return None;
    }
    let secs = (h * 60 + m) * 60 + s;
    Some(Some(if neg { -secs } else { secs }))
}
