//! Anomaly detection on per-key series of window results, with a robust z-score.
//!
//! Each value is compared with the key's previous `history` windows: the score is
//! `0.6745 * (x - median) / MAD` (Iglewicz and Hoaglin's modified z-score), where MAD is the
//! median absolute deviation from the median, taken as at least `min_spread * |median|` so that
//! a very regular series is not infinitely sensitive. A window whose |score| reaches the
//! threshold (3.5 is the usual choice) is emitted with the window, the observed value, the
//! expected one (the median), the MAD and the score.
//!
//! Why median and MAD rather than mean and standard deviation: revenue per minute is skewed
//! (a few large orders), and an anomaly itself inflates the standard deviation of the windows
//! after it, hiding the next one; the median and MAD ignore up to half of the history being
//! extreme. It needs no model fitting and no training period beyond `min_history` windows, and
//! it is deterministic, so a restored job scores exactly as an uninterrupted one.
//!
//! Windows must arrive in order per key (one window operator feeds a key). Windows missing
//! between two present ones are scored as 0: a minute without orders is the strongest drop.

use crate::compile::{
    column, compile_expr, compile_named, eval_key, input_schema, key_group, BuildError,
};
use eddy_runtime::expr::{Expr, Scope};
use eddy_runtime::graph::{AnomalySpec, JobGraph, NodeId};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{KeyedStateBackend, ValueState};
use eddy_runtime::types::{Row, Timestamp, Value};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The recent windows of one key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Series {
    last_end: Option<Timestamp>,
    history: VecDeque<f64>,
}

/// The detector's settings.
#[derive(Clone, Copy, Debug)]
struct Detector {
    every: i64,
    history: usize,
    min_history: usize,
    threshold: f64,
    min_spread: f64,
}

impl Detector {
    /// Scores `x` at window `end` against the series, emits an alert if due, then adds `x`.
    fn observe(
        &self,
        key: &[Value],
        series: &mut Series,
        end: Timestamp,
        x: f64,
        out: &mut Output,
    ) {
        if series.history.len() >= self.min_history {
            let history: Vec<f64> = series.history.iter().copied().collect();
            let expected = median(history.clone());
            let deviation = median(history.iter().map(|h| (h - expected).abs()).collect());
            let spread = deviation.max(self.min_spread * expected.abs()).max(1e-9);
            let score = 0.6745 * (x - expected) / spread;
            if score.abs() >= self.threshold {
                let mut values = key.to_vec();
                values.extend([
                    Value::Timestamp(end - self.every),
                    Value::Timestamp(end),
                    Value::Float(x),
                    Value::Float(expected),
                    Value::Float(deviation),
                    Value::Float(score),
                ]);
                out.emit(0, Row::insert(values));
            }
        }
        series.history.push_back(x);
        while series.history.len() > self.history {
            series.history.pop_front();
        }
        series.last_end = Some(end);
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The anomaly operator: emits a row per anomalous window (key columns, window start and end,
/// value, expected, MAD, score). Each key's series is keyed state, so it survives a restore.
pub struct Anomaly<B: KeyedStateBackend> {
    keys: Vec<Expr>,
    time: usize,
    value: Expr,
    detector: Detector,
    series: B::Value<Series>,
    max_parallelism: u32,
    out_of_order: u64,
}

impl<B: KeyedStateBackend> Anomaly<B> {
    /// Builds the operator of `node`, compiling `spec`'s key and value against its input; the
    /// series live in `backend`.
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        spec: &AnomalySpec,
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        let schema = input_schema(graph, node, 0);
        let scope = Scope::single(schema);
        Ok(Anomaly {
            keys: compile_named(&spec.key, &scope)?,
            time: column(schema, &spec.time)?,
            value: compile_expr(&spec.value, &scope)?,
            detector: Detector {
                every: spec.every,
                history: spec.history,
                min_history: spec.min_history,
                threshold: spec.threshold,
                min_spread: spec.min_spread,
            },
            series: backend.value_state("series"),
            max_parallelism,
            out_of_order: 0,
        })
    }
}

impl<B: KeyedStateBackend> Operator for Anomaly<B> {
    fn process(&mut self, _input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        let d = self.detector;
        for row in rows {
            let (Some(end), Some(x)) = (
                row.values[self.time].as_timestamp(),
                self.value.eval(&row.values).as_f64(),
            ) else {
                continue;
            };
            let key = eval_key(&self.keys, &row.values);
            let kg = key_group(&key, self.max_parallelism);
            let mut in_order = true;
            self.series.update(kg, &key, |slot| {
                let series = slot.get_or_insert_with(Series::default);
                if let Some(last) = series.last_end {
                    if end <= last {
                        in_order = false;
                        return;
                    }
                    // Missing windows are zeros; beyond a full history more zeros change
                    // nothing but the alerts of an already empty stretch.
                    let mut gap = last + d.every;
                    let mut filled = 0;
                    while gap < end && filled <= d.history {
                        d.observe(&key, series, gap, 0.0, out);
                        gap += d.every;
                        filled += 1;
                    }
                }
                d.observe(&key, series, end, x, out);
            });
            if !in_order {
                self.out_of_order += 1;
            }
        }
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> OpResult {
        if self.out_of_order > 0 {
            tracing::warn!(
                rows = self.out_of_order,
                "anomaly detector ignored windows that arrived out of order"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_and_a_spike_are_scored_and_a_noisy_series_is_quiet() {
        let d = Detector {
            every: 60,
            history: 30,
            min_history: 10,
            threshold: 3.5,
            min_spread: 0.01,
        };
        let mut series = Series::default();
        let mut out = Output::new(1);
        let key = [Value::str("revenue")];
        for i in 0..40 {
            let noise = [0.0, 3.0, -2.0, 1.0, -4.0][i % 5];
            let x = if i == 25 {
                20.0
            } else if i == 35 {
                400.0
            } else {
                100.0 + noise
            };
            d.observe(&key, &mut series, (i as i64 + 1) * 60, x, &mut out);
        }
        let alerts = out.take(0);
        let windows: Vec<i64> = alerts
            .iter()
            .map(|r| r.values[2].as_timestamp().unwrap())
            .collect();
        assert_eq!(windows, vec![26 * 60, 36 * 60], "{alerts:?}");
        assert_eq!(
            alerts[0].values[4],
            Value::Float(100.0),
            "expected: the median"
        );
        assert!(alerts[0].values[6].as_f64().unwrap() < -3.5);
        assert!(alerts[1].values[6].as_f64().unwrap() > 3.5);
        assert_eq!(series.history.len(), 30);
    }
}
