//! Aggregate accumulators shared by window, session and group aggregation.
//!
//! An accumulator takes rows with a sign (+1 for insertions, -1 for retractions), can be merged
//! (session windows merge), and yields the SQL result. MIN and MAX keep every value with its
//! multiplicity only when their input can retract; on append-only input they keep just the
//! current extreme.

use eddy_runtime::expr::{AggregateCall, AggregateFunction};
use eddy_runtime::types::{sort_order, DataType, Decimal, Value};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A value ordered as ORDER BY orders it, so it can key a sorted map.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SortKey(pub Value);

impl PartialEq for SortKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for SortKey {}
impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        sort_order(&self.0, &other.0)
    }
}

/// The running state of one aggregate call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Acc {
    /// COUNT: rows (or non-null values) seen.
    Count(i64),
    /// COUNT(DISTINCT x): each distinct value with its multiplicity, and how many values have a
    /// positive one (kept up to date, so the result costs nothing per row).
    Distinct {
        counts: FxHashMap<Value, i64>,
        positive: i64,
    },
    /// SUM and AVG over BIGINT.
    SumInt { sum: i64, count: i64 },
    /// SUM and AVG over DOUBLE.
    SumFloat { sum: f64, count: i64 },
    /// SUM and AVG over DECIMAL, exact, at the input's scale.
    SumDecimal { sum: i128, count: i64 },
    /// MIN / MAX over append-only input.
    Extreme(Option<Value>),
    /// MIN / MAX over input with retractions: every value with its multiplicity.
    Multiset(BTreeMap<SortKey, i64>),
}

/// How to evaluate one aggregate call: the compiled call plus what the accumulator needs.
pub struct AggregateSpec {
    pub call: AggregateCall,
    /// Whether the input can retract (MIN/MAX then keep all values).
    pub retracting: bool,
    input_type: Option<DataType>,
}

impl AggregateSpec {
    pub fn new(call: AggregateCall, retracting: bool) -> AggregateSpec {
        let input_type = call.arg.as_ref().map(|a| a.data_type());
        AggregateSpec {
            call,
            retracting,
            input_type,
        }
    }

    /// A fresh accumulator.
    pub fn create(&self) -> Acc {
        use AggregateFunction::*;
        match self.call.function {
            Count if self.call.distinct => Acc::Distinct {
                counts: FxHashMap::default(),
                positive: 0,
            },
            Count => Acc::Count(0),
            Sum | Avg => match self.input_type {
                Some(DataType::Double) => Acc::SumFloat { sum: 0.0, count: 0 },
                Some(DataType::Decimal { .. }) => Acc::SumDecimal { sum: 0, count: 0 },
                _ => Acc::SumInt { sum: 0, count: 0 },
            },
            Min | Max if self.retracting => Acc::Multiset(BTreeMap::new()),
            Min | Max => Acc::Extreme(None),
        }
    }

    /// Adds (sign > 0) or retracts (sign < 0) one input row.
    pub fn update(&self, acc: &mut Acc, row: &[Value], sign: i64) {
        if let Some(filter) = &self.call.filter {
            if !filter.eval_predicate(row) {
                return;
            }
        }
        let value = match &self.call.arg {
            None => {
                // COUNT(*)
                if let Acc::Count(c) = acc {
                    *c += sign;
                }
                return;
            }
            Some(arg) => arg.eval(row),
        };
        if value.is_null() {
            return;
        }
        match acc {
            Acc::Count(c) => *c += sign,
            Acc::Distinct { counts, positive } => add_distinct(counts, positive, value, sign),
            Acc::SumInt { sum, count } => {
                if let Value::Int(v) = value {
                    *sum = sum.wrapping_add(v.wrapping_mul(sign));
                    *count += sign;
                }
            }
            Acc::SumFloat { sum, count } => {
                if let Some(v) = value.as_f64() {
                    *sum += v * sign as f64;
                    *count += sign;
                }
            }
            Acc::SumDecimal { sum, count } => {
                if let Value::Decimal(d) = value {
                    let scale = self.decimal_scale();
                    if let Some(d) = d.rescale(scale) {
                        *sum += d.unscaled as i128 * sign as i128;
                        *count += sign;
                    }
                }
            }
            Acc::Extreme(current) => {
                let better = match current {
                    None => true,
                    Some(c) => {
                        let ord = sort_order(&value, c);
                        match self.call.function {
                            AggregateFunction::Min => ord == Ordering::Less,
                            _ => ord == Ordering::Greater,
                        }
                    }
                };
                if better && sign > 0 {
                    *current = Some(value);
                }
            }
            Acc::Multiset(values) => {
                let key = SortKey(value);
                let n = values.entry(key.clone()).or_insert(0);
                *n += sign;
                if *n <= 0 {
                    values.remove(&key);
                }
            }
        }
    }

    fn decimal_scale(&self) -> u8 {
        match self.input_type {
            Some(DataType::Decimal { scale, .. }) => scale,
            _ => 0,
        }
    }

    /// Folds `other` into `acc` (session windows that merge).
    pub fn merge(&self, acc: &mut Acc, other: Acc) {
        match (acc, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Distinct { counts, positive }, Acc::Distinct { counts: other, .. }) => {
                for (v, n) in other {
                    add_distinct(counts, positive, v, n);
                }
            }
            (Acc::SumInt { sum, count }, Acc::SumInt { sum: s, count: c }) => {
                *sum = sum.wrapping_add(s);
                *count += c;
            }
            (Acc::SumFloat { sum, count }, Acc::SumFloat { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (Acc::SumDecimal { sum, count }, Acc::SumDecimal { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (Acc::Extreme(a), Acc::Extreme(Some(b))) => {
                let replace = match a {
                    None => true,
                    Some(x) => {
                        let ord = sort_order(&b, x);
                        match self.call.function {
                            AggregateFunction::Min => ord == Ordering::Less,
                            _ => ord == Ordering::Greater,
                        }
                    }
                };
                if replace {
                    *a = Some(b);
                }
            }
            (Acc::Multiset(a), Acc::Multiset(b)) => {
                for (v, n) in b {
                    *a.entry(v).or_insert(0) += n;
                }
                a.retain(|_, n| *n > 0);
            }
            _ => {}
        }
    }

    /// The SQL result of the aggregate.
    pub fn result(&self, acc: &Acc) -> Value {
        use AggregateFunction::*;
        let avg = self.call.function == Avg;
        match acc {
            Acc::Count(c) => Value::Int(*c),
            Acc::Distinct { positive, .. } => Value::Int(*positive),
            Acc::SumInt { count: 0, .. }
            | Acc::SumFloat { count: 0, .. }
            | Acc::SumDecimal { count: 0, .. } => Value::Null,
            Acc::SumInt { sum, count } if avg => Value::Int(sum / count),
            Acc::SumInt { sum, .. } => Value::Int(*sum),
            Acc::SumFloat { sum, count } if avg => Value::Float(sum / *count as f64),
            Acc::SumFloat { sum, .. } => Value::Float(*sum),
            Acc::SumDecimal { sum, count } => {
                let in_scale = self.decimal_scale();
                let out_scale = match self.call.result_type {
                    DataType::Decimal { scale, .. } => scale,
                    _ => in_scale,
                };
                let scaled = if out_scale >= in_scale {
                    sum.checked_mul(10i128.pow((out_scale - in_scale) as u32))
                } else {
                    Some(sum / 10i128.pow((in_scale - out_scale) as u32))
                };
                let value = match scaled {
                    Some(v) if avg => {
                        // Round half up, as Flink's decimal division does.
                        let c = *count as i128;
                        let q = v / c;
                        let r = v % c;
                        Some(if 2 * r.abs() >= c.abs() {
                            q + v.signum() * c.signum()
                        } else {
                            q
                        })
                    }
                    other => other,
                };
                match value.and_then(|v| i64::try_from(v).ok()) {
                    Some(unscaled) => Value::Decimal(Decimal {
                        unscaled,
                        scale: out_scale,
                    }),
                    None => Value::Null,
                }
            }
            Acc::Extreme(v) => v.clone().unwrap_or(Value::Null),
            Acc::Multiset(values) => {
                let entry = if self.call.function == Min {
                    values.keys().next()
                } else {
                    values.keys().next_back()
                };
                entry.map(|k| k.0.clone()).unwrap_or(Value::Null)
            }
        }
    }
}

/// Adds `n` occurrences (negative: retractions) of a value to a distinct count.
fn add_distinct(counts: &mut FxHashMap<Value, i64>, positive: &mut i64, value: Value, n: i64) {
    let (before, after) = match counts.entry(value) {
        std::collections::hash_map::Entry::Occupied(mut e) => {
            let before = *e.get();
            *e.get_mut() += n;
            let after = *e.get();
            if after == 0 {
                e.remove();
            }
            (before, after)
        }
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(n);
            (0, n)
        }
    };
    *positive += i64::from(after > 0) - i64::from(before > 0);
}

/// The accumulators of all aggregate calls of one group.
pub type Accs = Vec<Acc>;

/// Creates accumulators for every call.
pub fn create_all(specs: &[AggregateSpec]) -> Accs {
    specs.iter().map(AggregateSpec::create).collect()
}

/// Updates every accumulator with one row.
pub fn update_all(specs: &[AggregateSpec], accs: &mut Accs, row: &[Value], sign: i64) {
    for (spec, acc) in specs.iter().zip(accs.iter_mut()) {
        spec.update(acc, row, sign);
    }
}

/// Appends every result to `out`.
pub fn results_into(specs: &[AggregateSpec], accs: &Accs, out: &mut Vec<Value>) {
    out.extend(specs.iter().zip(accs).map(|(s, a)| s.result(a)));
}
