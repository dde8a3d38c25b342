//! Recombining per-shard partial aggregates into the value one Postgres would have returned.
//!
//! Each shard runs the aggregate over its own rows; the proxy combines one column's partials:
//! - `count`: partial counts are `int8`; the result is their sum (`int8`).
//! - `sum`: the result has the column's own type, the one Postgres gives `sum` of the input:
//!   `int8` (sum of `int2`/`int4`), `numeric` (sum of `int8`/`numeric`), `float4`, `float8`.
//!   NULL partials (a shard without rows) are skipped; all NULL is NULL. Overflow fails as in
//!   Postgres: "bigint out of range", "value out of range: overflow", "value overflows
//!   numeric format". Float sums add in the type's own precision, like `float4pl` and
//!   `float8pl`; being a different grouping of the additions, their last bits can differ
//!   from one Postgres's sum (which is order dependent there too).
//! - `min`/`max`: the winning shard's bytes, verbatim, compared with [`value::decode`]'s order
//!   (the first of equal values wins).
//! - `avg` ([`AvgAccumulator`]): total sum / total count from a hidden `sum(x)` and
//!   `count(x)` per shard. `numeric` averages (of `int2`, `int4`, `int8`, `numeric`) divide
//!   exactly as `numeric_div`, which is how Postgres computes them, so the digits match.
//!   `float8` averages divide in `f64`; for `float4` input Postgres accumulates in `float8`,
//!   so a hidden `sum(x)` of type `float4` (which Postgres sums in single precision) can
//!   differ in the last digits; a plan that sends `sum(x::float8)` gets Postgres's result.
//!
//! Results are encoded in the column's own type and wire format; text output is exactly what
//! Postgres prints (`int8out`, `numeric_out`, `float4out`/`float8out`).
//!
//! [`value::decode`]: super::value::decode

use super::decimal::Decimal;
use super::value::{self, Format, SortValue, ValueError, float4_out, float8_out, oid};

/// Which aggregate an [`Accumulator`] combines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Min,
    Max,
}

/// Combines one column's per-shard partial values into the final value, encoded in the
/// column's own type and format.
#[derive(Debug, Clone)]
pub struct Accumulator {
    oid: u32,
    format: Format,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// The running count (counts are never NULL).
    Count(i64),
    SumInt8(Option<i64>),
    SumNumeric(Option<Decimal>),
    SumFloat4(Option<f32>),
    SumFloat8(Option<f64>),
    /// The best value so far and its bytes as received.
    Extreme {
        max: bool,
        best: Option<(SortValue, Vec<u8>)>,
    },
}

impl Accumulator {
    /// `oid`/`format`: the column's RowDescription (the partials arrive in the same type and
    /// format, since every shard runs the same statement).
    pub fn new(kind: AggKind, oid: u32, format: Format) -> Result<Accumulator, ValueError> {
        let state = match kind {
            AggKind::Count if oid == oid::INT8 => State::Count(0),
            AggKind::Count => {
                return Err(ValueError::UnsupportedType {
                    oid,
                    what: "count() with a result other than bigint",
                });
            }
            AggKind::Sum => match oid {
                oid::INT8 => State::SumInt8(None),
                oid::NUMERIC => State::SumNumeric(None),
                oid::FLOAT4 => State::SumFloat4(None),
                oid::FLOAT8 => State::SumFloat8(None),
                _ => {
                    return Err(ValueError::UnsupportedType {
                        oid,
                        what: "sum() of this type",
                    });
                }
            },
            AggKind::Min | AggKind::Max if value::supports(oid) => State::Extreme {
                max: kind == AggKind::Max,
                best: None,
            },
            AggKind::Min | AggKind::Max => {
                return Err(ValueError::UnsupportedType {
                    oid,
                    what: "min()/max() of this type",
                });
            }
        };
        Ok(Accumulator { oid, format, state })
    }

    /// Adds one shard's partial (`None` is SQL NULL, which is skipped).
    pub fn add(&mut self, value: Option<&[u8]>) -> Result<(), ValueError> {
        let Some(bytes) = value else {
            return Ok(());
        };
        let (oid, format) = (self.oid, self.format);
        match &mut self.state {
            State::Count(total) => *total = add_int8(*total, read_int8(format, bytes)?)?,
            State::SumInt8(total) => {
                let v = read_int8(format, bytes)?;
                *total = Some(match *total {
                    Some(t) => add_int8(t, v)?,
                    None => v,
                });
            }
            State::SumNumeric(total) => {
                let v = read_numeric(format, bytes)?;
                *total = Some(match total.take() {
                    Some(t) => add_numeric(&t, &v)?,
                    None => v,
                });
            }
            State::SumFloat4(total) => {
                let v = read_float(oid, format, bytes)? as f32;
                *total = Some(match *total {
                    Some(t) => checked_float(t + v, t.is_infinite() || v.is_infinite())?,
                    None => v,
                });
            }
            State::SumFloat8(total) => {
                let v = read_float(oid, format, bytes)?;
                *total = Some(match *total {
                    Some(t) => checked_float(t + v, t.is_infinite() || v.is_infinite())?,
                    None => v,
                });
            }
            State::Extreme { max, best } => {
                let v = value::decode(oid, format, bytes)?;
                let better = match best {
                    None => true,
                    Some((b, _)) if *max => v > *b,
                    Some((b, _)) => v < *b,
                };
                if better {
                    *best = Some((v, bytes.to_vec()));
                }
            }
        }
        Ok(())
    }

    /// The combined value (`None` is NULL) in the column's type and format.
    pub fn finish(&self) -> Option<Vec<u8>> {
        let format = self.format;
        match &self.state {
            State::Count(total) => Some(encode_int8(format, *total)),
            State::SumInt8(total) => total.map(|t| encode_int8(format, t)),
            State::SumNumeric(total) => total.as_ref().map(|t| encode_numeric(format, t)),
            State::SumFloat4(total) => total.map(|t| match format {
                Format::Text => float4_out(t).into_bytes(),
                Format::Binary => t.to_be_bytes().to_vec(),
            }),
            State::SumFloat8(total) => total.map(|t| encode_float8(format, t)),
            State::Extreme { best, .. } => best.as_ref().map(|(_, bytes)| bytes.clone()),
        }
    }
}

/// `avg`: total sum / total count, emitted in the avg column's type and format.
#[derive(Debug, Clone)]
pub struct AvgAccumulator {
    avg_format: Format,
    sum_oid: u32,
    sum_format: Format,
    count_format: Format,
    sum: AvgSum,
    count: i64,
}

#[derive(Debug, Clone)]
enum AvgSum {
    /// `avg` returning `numeric`; the sums are `int8` or `numeric`.
    Numeric(Option<Decimal>),
    /// `avg` returning `float8`; the sums are `float8` or `float4`.
    Float(Option<f64>),
}

impl AvgAccumulator {
    /// `avg_oid`/`avg_format`: the avg column as the client sees it; `sum_oid`/`sum_format`
    /// and `count_format`: the hidden per-shard `sum(x)` and `count(x)` (an `int8`) columns.
    /// Supported: `avg` of type `numeric` over `int8` or `numeric` sums, and `avg` of type
    /// `float8` over `float8` or `float4` sums.
    pub fn new(
        avg_oid: u32,
        avg_format: Format,
        sum_oid: u32,
        sum_format: Format,
        count_format: Format,
    ) -> Result<AvgAccumulator, ValueError> {
        let sum = match (avg_oid, sum_oid) {
            (oid::NUMERIC, oid::INT8 | oid::NUMERIC) => AvgSum::Numeric(None),
            (oid::FLOAT8, oid::FLOAT8 | oid::FLOAT4) => AvgSum::Float(None),
            (oid::NUMERIC | oid::FLOAT8, _) => {
                return Err(ValueError::UnsupportedType {
                    oid: sum_oid,
                    what: "avg() from a sum() of this type",
                });
            }
            _ => {
                return Err(ValueError::UnsupportedType {
                    oid: avg_oid,
                    what: "avg() of this type",
                });
            }
        };
        Ok(AvgAccumulator {
            avg_format,
            sum_oid,
            sum_format,
            count_format,
            sum,
            count: 0,
        })
    }

    /// Adds one shard's hidden `sum(x)` and `count(x)` (`None` is NULL: a shard without
    /// non-NULL inputs has a NULL sum).
    pub fn add(&mut self, sum: Option<&[u8]>, count: Option<&[u8]>) -> Result<(), ValueError> {
        if let Some(count) = count {
            self.count = add_int8(self.count, read_int8(self.count_format, count)?)?;
        }
        let Some(bytes) = sum else {
            return Ok(());
        };
        match &mut self.sum {
            AvgSum::Numeric(total) => {
                let v = if self.sum_oid == oid::INT8 {
                    Decimal::from_i64(read_int8(self.sum_format, bytes)?)
                } else {
                    read_numeric(self.sum_format, bytes)?
                };
                *total = Some(match total.take() {
                    Some(t) => add_numeric(&t, &v)?,
                    None => v,
                });
            }
            AvgSum::Float(total) => {
                let v = read_float(self.sum_oid, self.sum_format, bytes)?;
                *total = Some(match *total {
                    Some(t) => checked_float(t + v, t.is_infinite() || v.is_infinite())?,
                    None => v,
                });
            }
        }
        Ok(())
    }

    /// The average, or `None` (NULL) when the total count is 0.
    pub fn finish(&self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        match &self.sum {
            AvgSum::Numeric(total) => {
                let total = total.clone().unwrap_or_else(Decimal::zero);
                // The count is not zero, so the division cannot fail.
                let avg = total.div_pg(&Decimal::from_i64(self.count)).ok()?;
                Some(encode_numeric(self.avg_format, &avg))
            }
            // float8_avg: Sx / N.
            AvgSum::Float(total) => Some(encode_float8(
                self.avg_format,
                total.unwrap_or(0.0) / self.count as f64,
            )),
        }
    }
}

fn read_int8(format: Format, bytes: &[u8]) -> Result<i64, ValueError> {
    match value::decode(oid::INT8, format, bytes)? {
        SortValue::Int(v) => Ok(v),
        other => Err(ValueError::Malformed {
            oid: oid::INT8,
            detail: format!("decoded as {other:?}"),
        }),
    }
}

fn read_numeric(format: Format, bytes: &[u8]) -> Result<Decimal, ValueError> {
    match format {
        Format::Text => {
            Decimal::parse(
                std::str::from_utf8(bytes).map_err(|_| ValueError::Malformed {
                    oid: oid::NUMERIC,
                    detail: "not UTF-8 text".to_owned(),
                })?,
            )
        }
        Format::Binary => Decimal::from_binary(bytes),
    }
}

/// A `float4` or `float8` value (`float4` widened exactly).
fn read_float(type_oid: u32, format: Format, bytes: &[u8]) -> Result<f64, ValueError> {
    match value::decode(type_oid, format, bytes)? {
        SortValue::Float(f) => Ok(f.0),
        other => Err(ValueError::Malformed {
            oid: type_oid,
            detail: format!("decoded as {other:?}"),
        }),
    }
}

fn add_int8(a: i64, b: i64) -> Result<i64, ValueError> {
    a.checked_add(b).ok_or(ValueError::OutOfRange {
        oid: oid::INT8,
        message: "bigint out of range",
    })
}

fn add_numeric(a: &Decimal, b: &Decimal) -> Result<Decimal, ValueError> {
    let sum = a.add(b);
    if sum.fits_storage() {
        Ok(sum)
    } else {
        Err(ValueError::OutOfRange {
            oid: oid::NUMERIC,
            message: "value overflows numeric format",
        })
    }
}

/// `float4pl`/`float8pl`: an infinite result from finite inputs is an overflow error.
fn checked_float<F: FloatLike>(result: F, input_inf: bool) -> Result<F, ValueError> {
    if result.is_inf() && !input_inf {
        Err(ValueError::OutOfRange {
            oid: F::OID,
            message: "value out of range: overflow",
        })
    } else {
        Ok(result)
    }
}

trait FloatLike: Copy {
    const OID: u32;
    fn is_inf(self) -> bool;
}

impl FloatLike for f32 {
    const OID: u32 = oid::FLOAT4;
    fn is_inf(self) -> bool {
        self.is_infinite()
    }
}

impl FloatLike for f64 {
    const OID: u32 = oid::FLOAT8;
    fn is_inf(self) -> bool {
        self.is_infinite()
    }
}

fn encode_int8(format: Format, v: i64) -> Vec<u8> {
    match format {
        Format::Text => v.to_string().into_bytes(),
        Format::Binary => v.to_be_bytes().to_vec(),
    }
}

fn encode_numeric(format: Format, v: &Decimal) -> Vec<u8> {
    match format {
        Format::Text => v.to_text().into_bytes(),
        Format::Binary => v.to_binary(),
    }
}

fn encode_float8(format: Format, v: f64) -> Vec<u8> {
    match format {
        Format::Text => float8_out(v).into_bytes(),
        Format::Binary => v.to_be_bytes().to_vec(),
    }
}

#[cfg(test)]
#[path = "agg_tests.rs"]
mod tests;
