//! The exact results the e-commerce jobs must produce for a generated data set, computed
//! directly from the generated events (no dataflow, no windows operator, no state backend), so
//! tests compare a job against an independent oracle.
//!
//! Definitions (the same as `jobs/ecommerce/analytics.toml`):
//! - a *line* is one item of an order; its USD amount is `quantity * unit_price * rate`, with the
//!   rate of the order's currency in force at the order's time (the latest rate event at or
//!   before it), exact to 8 decimals;
//! - windows are tumbling, aligned to the epoch, and hold the *on-time* events whose time falls
//!   in them; late events (sent `late_by` after their time) are counted per KPI instead;
//! - anomalies: a robust z-score of each window's value against the median and the median
//!   absolute deviation (MAD) of the previous windows, with minutes without orders counted as 0.
//!
//! The anomaly score is implemented here again on purpose, not shared with the operator: an
//! oracle that shares code with what it checks proves nothing.

use crate::config::{Config, CURRENCIES};
use crate::stream::{Event, EventKind, Fate, Ids, Sent};
use eddy_runtime::types::{timestamp_to_string, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

const MINUTE: i64 = 60_000;
const FIVE_MINUTES: i64 = 300_000;

/// The settings of the anomaly detector, as the job sets them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Detector {
    /// Windows of history the median and MAD are taken over.
    pub history: usize,
    /// No alert before this many windows of history.
    pub min_history: usize,
    /// Alert when |score| reaches this.
    pub threshold: f64,
    /// The MAD is taken as at least this fraction of |median| (a flat series is not
    /// infinitely sensitive).
    pub min_spread: f64,
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            history: 30,
            min_history: 10,
            threshold: 3.5,
            min_spread: 0.01,
        }
    }
}

/// Event counts and sums over the whole data set.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Totals {
    /// Valid clicks, late ones included (as are the other counts unless named late).
    pub clicks: u64,
    /// Valid cart events.
    pub carts: u64,
    /// Valid orders.
    pub purchases: u64,
    /// Items of valid orders: the rows of `fact_orders` (one per line).
    pub order_lines: u64,
    /// Rate events (never malformed, never late).
    pub currency_rates: u64,
    /// Sent malformed: rejected at ingest, in the dead-letter topic.
    pub malformed: u64,
    /// Valid but late, per type (they are in the fact tables, not in the windows).
    pub late_clicks: u64,
    /// Of `carts`, the late ones.
    pub late_carts: u64,
    /// Of `purchases`, the late ones.
    pub late_purchases: u64,
    /// Of `order_lines`, those of late orders.
    pub late_order_lines: u64,
    /// Units added over all cart events.
    pub cart_units: u64,
    /// Units over all order lines.
    pub order_units: u64,
    /// Sum of every line in USD, late ones included: 8 decimals.
    pub order_amount_usd: String,
    /// Distinct users of valid shop events.
    pub users: u64,
    /// Distinct products clicked, carted or ordered.
    pub products: u64,
    /// Distinct sessions with a valid shop event.
    pub sessions: u64,
}

/// `kpi_revenue_minute`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RevenueRow {
    /// UTC, as TIMESTAMP(3) prints (`2026-01-01 00:01:00.000`).
    pub window_start: String,
    /// Exclusive: one minute after the start.
    pub window_end: String,
    /// USD of the minute's on-time order lines, 8 decimals.
    pub revenue_usd: String,
    /// On-time orders of the minute.
    pub orders: u64,
    /// Units of the minute's on-time order lines.
    pub units: u64,
    /// `revenue_usd / orders`, as a DOUBLE.
    pub avg_order_value_usd: f64,
}

/// `kpi_traffic_minute`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TrafficRow {
    /// UTC, as TIMESTAMP(3) prints (`2026-01-01 00:01:00.000`).
    pub window_start: String,
    /// Exclusive: one minute after the start.
    pub window_end: String,
    /// On-time shop events: `clicks + carts + purchases` (an order counts once).
    pub events: u64,
    /// On-time clicks of the minute.
    pub clicks: u64,
    /// On-time cart events of the minute.
    pub carts: u64,
    /// On-time orders of the minute.
    pub purchases: u64,
    /// Distinct users with an on-time event in the minute.
    pub active_users: u64,
    /// Distinct sessions with an on-time event in the minute.
    pub active_sessions: u64,
}

/// `kpi_funnel_5min`: sessions that reached each step within the window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FunnelRow {
    /// UTC, as TIMESTAMP(3) prints (`2026-01-01 00:01:00.000`).
    pub window_start: String,
    /// Exclusive: five minutes after the start.
    pub window_end: String,
    /// Sessions with an on-time click in the window.
    pub viewed: u64,
    /// Sessions with an on-time cart event in the window.
    pub carted: u64,
    /// Sessions with an on-time order in the window.
    pub purchased: u64,
    /// `carted / viewed`; `None` (NULL) when `viewed` is 0. Can exceed 1: steps are per window.
    pub view_to_cart: Option<f64>,
    /// `purchased / carted`; `None` when `carted` is 0.
    pub cart_to_purchase: Option<f64>,
    /// `purchased / viewed`; `None` when `viewed` is 0.
    pub conversion: Option<f64>,
}

/// `kpi_top_products_5min`: the 10 products with the most USD revenue per window (ties by id).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TopProductRow {
    /// UTC, as TIMESTAMP(3) prints (`2026-01-01 00:01:00.000`).
    pub window_start: String,
    /// Exclusive: five minutes after the start.
    pub window_end: String,
    /// 1 to 10, 1 the most revenue.
    pub rank: u64,
    /// As [`Ids::product`] renders it (`p00042`).
    pub product_id: String,
    /// USD of the product's on-time order lines in the window, 8 decimals.
    pub revenue_usd: String,
    /// Units of those lines.
    pub units: u64,
}

/// `alerts`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertRow {
    /// The series scored: `revenue_usd` or `events` (per minute).
    pub metric: String,
    /// The minute scored; UTC, as TIMESTAMP(3) prints (`2026-01-01 00:01:00.000`).
    pub window_start: String,
    /// Exclusive: one minute after the start.
    pub window_end: String,
    /// The minute's value; 0 for a minute missing between two present ones.
    pub observed: f64,
    /// The median of the previous minutes (up to `history` of them).
    pub expected: f64,
    /// Their MAD, before the `min_spread` floor.
    pub deviation: f64,
    /// The robust z-score; its magnitude is at least the threshold.
    pub score: f64,
}

/// Late rows each window operator sends to its side output (`late_events`).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LateByKpi {
    /// Late order lines (the window reads lines).
    pub revenue_minute: u64,
    /// Late order lines.
    pub top_products_5min: u64,
    /// Late shop events (an order counts once).
    pub traffic_minute: u64,
    /// Late shop events (an order counts once).
    pub funnel_5min: u64,
}

/// Everything a test compares.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Expected {
    /// The data set's [`Config::seed`].
    pub seed: u64,
    /// [`Config::start`], formatted as the window bounds are.
    pub start: String,
    /// Counts over the whole data set.
    pub totals: Totals,
    /// By window; only minutes with an on-time order line.
    pub revenue_minute: Vec<RevenueRow>,
    /// By window; only minutes with an on-time shop event.
    pub traffic_minute: Vec<TrafficRow>,
    /// By window; only windows with an on-time shop event.
    pub funnel_5min: Vec<FunnelRow>,
    /// By window, then rank.
    pub top_products_5min: Vec<TopProductRow>,
    /// The revenue alerts by window, then the traffic alerts by window.
    pub alerts: Vec<AlertRow>,
    /// Rows each KPI's window sends to `late_events`.
    pub late_events: LateByKpi,
}

#[derive(Default)]
struct Traffic {
    clicks: u64,
    carts: u64,
    purchases: u64,
    users: HashSet<u32>,
    sessions: HashSet<u64>,
}

#[derive(Default)]
struct Funnel {
    viewed: HashSet<u64>,
    carted: HashSet<u64>,
    purchased: HashSet<u64>,
}

#[derive(Default)]
struct Revenue {
    /// USD in 10^-8.
    revenue: i64,
    orders: u64,
    units: u64,
}

struct Order {
    ts: Timestamp,
    late: bool,
    currency: usize,
    /// (product, quantity, unit price in hundredths)
    lines: Vec<(u32, u32, i64)>,
}

/// Collects generated events; [`Truth::finish`] computes the expected results.
pub struct Truth {
    seed: u64,
    start: Timestamp,
    detector: Detector,
    totals: Totals,
    traffic: BTreeMap<Timestamp, Traffic>,
    funnel: BTreeMap<Timestamp, Funnel>,
    orders: Vec<Order>,
    /// Per currency: (time, rate in 10^-6), in time order.
    rates: Vec<Vec<(Timestamp, i64)>>,
    users: HashSet<u32>,
    products: HashSet<u32>,
    sessions: HashSet<u64>,
    late: LateByKpi,
}

fn window(ts: Timestamp, size: i64) -> Timestamp {
    ts - ts.rem_euclid(size)
}

/// `unscaled / 10^scale` as text.
fn decimal(unscaled: i64, scale: u32) -> String {
    eddy_runtime::types::Decimal {
        unscaled,
        scale: scale as u8,
    }
    .to_string()
}

/// `a / b` as the job computes it: NULL when `b` is 0.
fn ratio(a: u64, b: u64) -> Option<f64> {
    (b != 0).then(|| a as f64 / b as f64)
}

impl Truth {
    /// For the data set of `config`; `detector` must be the job's settings, or the alerts
    /// differ. Feed it every [`Sent`] line, malformed ones included.
    pub fn new(config: &Config, detector: Detector) -> Truth {
        Truth {
            seed: config.seed,
            start: config.start,
            detector,
            totals: Totals::default(),
            traffic: BTreeMap::new(),
            funnel: BTreeMap::new(),
            orders: Vec::new(),
            rates: vec![Vec::new(); CURRENCIES.len()],
            users: HashSet::new(),
            products: HashSet::new(),
            sessions: HashSet::new(),
            late: LateByKpi::default(),
        }
    }

    /// Takes one sent line into account.
    pub fn observe(&mut self, sent: &Sent) {
        let (event, late) = match &sent.fate {
            Fate::Malformed { .. } => {
                self.totals.malformed += 1;
                return;
            }
            Fate::Valid { event, late } => (event, *late),
        };
        let t = &mut self.totals;
        match event {
            Event::CurrencyRate {
                currency,
                rate_micros,
                ts,
            } => {
                t.currency_rates += 1;
                self.rates[*currency].push((*ts, *rate_micros));
                return;
            }
            Event::Click { .. } => {
                t.clicks += 1;
                t.late_clicks += late as u64;
            }
            Event::Cart { quantity, .. } => {
                t.carts += 1;
                t.late_carts += late as u64;
                t.cart_units += *quantity as u64;
            }
            Event::Purchase { items, .. } => {
                t.purchases += 1;
                t.order_lines += items.len() as u64;
                t.late_purchases += late as u64;
                t.late_order_lines += if late { items.len() as u64 } else { 0 };
                t.order_units += items.iter().map(|i| i.quantity as u64).sum::<u64>();
            }
        }
        let (user, session, ts) = match event {
            Event::Click {
                user, session, ts, ..
            }
            | Event::Cart {
                user, session, ts, ..
            }
            | Event::Purchase {
                user, session, ts, ..
            } => (*user, *session, *ts),
            Event::CurrencyRate { .. } => unreachable!("returned above"),
        };
        self.users.insert(user);
        self.sessions.insert(session);
        match event {
            Event::Click { product, .. } | Event::Cart { product, .. } => {
                self.products.insert(*product);
            }
            Event::Purchase {
                items, currency, ..
            } => {
                self.products.extend(items.iter().map(|i| i.product));
                self.orders.push(Order {
                    ts,
                    late,
                    currency: *currency,
                    lines: items
                        .iter()
                        .map(|i| (i.product, i.quantity, i.unit_price_cents))
                        .collect(),
                });
            }
            Event::CurrencyRate { .. } => {}
        }
        if late {
            self.late.traffic_minute += 1;
            self.late.funnel_5min += 1;
            if let Event::Purchase { items, .. } = event {
                self.late.revenue_minute += items.len() as u64;
                self.late.top_products_5min += items.len() as u64;
            }
            return;
        }
        let traffic = self.traffic.entry(window(ts, MINUTE)).or_default();
        traffic.users.insert(user);
        traffic.sessions.insert(session);
        let funnel = self.funnel.entry(window(ts, FIVE_MINUTES)).or_default();
        match event.kind() {
            EventKind::Click => {
                traffic.clicks += 1;
                funnel.viewed.insert(session);
            }
            EventKind::Cart => {
                traffic.carts += 1;
                funnel.carted.insert(session);
            }
            EventKind::Purchase => {
                traffic.purchases += 1;
                funnel.purchased.insert(session);
            }
            EventKind::CurrencyRate => {}
        }
    }

    /// The rate of a currency at `ts`, in 10^-6; None before its first rate event.
    fn rate_at(&self, currency: usize, ts: Timestamp) -> Option<i64> {
        let versions = &self.rates[currency];
        let n = versions.partition_point(|(t, _)| *t <= ts);
        n.checked_sub(1).map(|i| versions[i].1)
    }

    /// The expected results.
    pub fn finish(mut self) -> Expected {
        self.rates
            .iter_mut()
            .for_each(|v| v.sort_by_key(|(t, _)| *t));
        let mut revenue: BTreeMap<Timestamp, Revenue> = BTreeMap::new();
        let mut products: BTreeMap<Timestamp, HashMap<u32, (i64, u64)>> = BTreeMap::new();
        let mut total_usd: i64 = 0;
        for order in &self.orders {
            let rate = self.rate_at(order.currency, order.ts);
            for &(product, quantity, cents) in &order.lines {
                let Some(rate) = rate else { continue };
                let usd = quantity as i64 * cents * rate;
                total_usd += usd;
                if order.late {
                    continue;
                }
                let r = revenue.entry(window(order.ts, MINUTE)).or_default();
                r.revenue += usd;
                r.units += quantity as u64;
                let p = products
                    .entry(window(order.ts, FIVE_MINUTES))
                    .or_default()
                    .entry(product)
                    .or_default();
                p.0 += usd;
                p.1 += quantity as u64;
            }
            if !order.late && rate.is_some() {
                revenue.entry(window(order.ts, MINUTE)).or_default().orders += 1;
            }
        }
        self.totals.order_amount_usd = decimal(total_usd, 8);
        self.totals.users = self.users.len() as u64;
        self.totals.products = self.products.len() as u64;
        self.totals.sessions = self.sessions.len() as u64;

        let ts = timestamp_to_string;
        let revenue_minute: Vec<RevenueRow> = revenue
            .iter()
            .map(|(&start, r)| RevenueRow {
                window_start: ts(start),
                window_end: ts(start + MINUTE),
                revenue_usd: decimal(r.revenue, 8),
                orders: r.orders,
                units: r.units,
                avg_order_value_usd: (r.revenue as f64 / 1e8) / r.orders as f64,
            })
            .collect();
        let traffic_minute: Vec<TrafficRow> = self
            .traffic
            .iter()
            .map(|(&start, t)| TrafficRow {
                window_start: ts(start),
                window_end: ts(start + MINUTE),
                events: t.clicks + t.carts + t.purchases,
                clicks: t.clicks,
                carts: t.carts,
                purchases: t.purchases,
                active_users: t.users.len() as u64,
                active_sessions: t.sessions.len() as u64,
            })
            .collect();
        let funnel_5min = self
            .funnel
            .iter()
            .map(|(&start, f)| {
                let (v, c, p) = (
                    f.viewed.len() as u64,
                    f.carted.len() as u64,
                    f.purchased.len() as u64,
                );
                FunnelRow {
                    window_start: ts(start),
                    window_end: ts(start + FIVE_MINUTES),
                    viewed: v,
                    carted: c,
                    purchased: p,
                    view_to_cart: ratio(c, v),
                    cart_to_purchase: ratio(p, c),
                    conversion: ratio(p, v),
                }
            })
            .collect();
        let mut top_products_5min = Vec::new();
        for (&start, per_product) in &products {
            let mut ranked: Vec<(&u32, &(i64, u64))> = per_product.iter().collect();
            ranked.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
            for (rank, (&product, &(usd, units))) in ranked.into_iter().take(10).enumerate() {
                top_products_5min.push(TopProductRow {
                    window_start: ts(start),
                    window_end: ts(start + FIVE_MINUTES),
                    rank: rank as u64 + 1,
                    product_id: Ids::product(product),
                    revenue_usd: decimal(usd, 8),
                    units,
                });
            }
        }
        let mut alerts = self.alerts(
            "revenue_usd",
            revenue
                .iter()
                .map(|(&s, r)| (s, r.revenue as f64 / 1e8))
                .collect(),
        );
        alerts.extend(
            self.alerts(
                "events",
                self.traffic
                    .iter()
                    .map(|(&s, t)| (s, (t.clicks + t.carts + t.purchases) as f64))
                    .collect(),
            ),
        );
        Expected {
            seed: self.seed,
            start: ts(self.start),
            totals: self.totals.clone(),
            revenue_minute,
            traffic_minute,
            funnel_5min,
            top_products_5min,
            alerts,
            late_events: self.late.clone(),
        }
    }

    /// The alerts of one per-minute series; minutes missing between two present ones are 0.
    fn alerts(&self, metric: &str, values: Vec<(Timestamp, f64)>) -> Vec<AlertRow> {
        let d = self.detector;
        let mut filled: Vec<(Timestamp, f64)> = Vec::new();
        for (start, value) in values {
            if let Some(&(last, _)) = filled.last() {
                let mut gap = last + MINUTE;
                while gap < start {
                    filled.push((gap, 0.0));
                    gap += MINUTE;
                }
            }
            filled.push((start, value));
        }
        let mut out = Vec::new();
        for i in 0..filled.len() {
            let history: Vec<f64> = filled[i.saturating_sub(d.history)..i]
                .iter()
                .map(|(_, v)| *v)
                .collect();
            if history.len() < d.min_history {
                continue;
            }
            let (start, observed) = filled[i];
            // Deliberately independent of operators/src/anomaly.rs (this crate does not depend
            // on it): the same definition, computed over whole series from the events rather
            // than from per-key state fed by windows, so the truth checks the operator rather
            // than repeating its code.
            let expected = median(history.clone());
            let deviation = median(history.iter().map(|h| (h - expected).abs()).collect());
            let spread = deviation.max(d.min_spread * expected.abs()).max(1e-9);
            let score = 0.6745 * (observed - expected) / spread;
            if score.abs() >= d.threshold {
                out.push(AlertRow {
                    metric: metric.to_string(),
                    window_start: timestamp_to_string(start),
                    window_end: timestamp_to_string(start + MINUTE),
                    observed,
                    expected,
                    deviation,
                    score,
                });
            }
        }
        out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Anomaly, AnomalyKind};
    use crate::stream::Generator;

    fn expected(config: Config) -> Expected {
        let mut truth = Truth::new(&config, Detector::default());
        for sent in Generator::new(config) {
            truth.observe(&sent);
        }
        truth.finish()
    }

    #[test]
    fn injected_anomalies_are_found_and_quiet_traffic_has_none() {
        let base = Config {
            seed: 5,
            rate: 300.0,
            duration: Some(40 * MINUTE),
            ..Config::default()
        };
        let quiet = expected(base.clone());
        assert!(quiet.revenue_minute.len() >= 40);
        let flagged: Vec<_> = quiet.alerts.iter().map(|a| &a.window_start).collect();
        assert!(
            flagged.len() <= 2,
            "false alarms on quiet traffic: {flagged:?}"
        );

        let anomalies = vec![
            Anomaly {
                kind: AnomalyKind::RevenueDrop,
                at: 20 * MINUTE,
                duration: 3 * MINUTE,
                factor: 0.0,
            },
            Anomaly {
                kind: AnomalyKind::TrafficSpike,
                at: 30 * MINUTE,
                duration: 2 * MINUTE,
                factor: 5.0,
            },
        ];
        let noisy = expected(Config {
            anomalies,
            ..base.clone()
        });
        let at = |metric: &str, minute: i64| {
            let start = timestamp_to_string(base.start + minute * MINUTE);
            noisy
                .alerts
                .iter()
                .any(|a| a.metric == metric && a.window_start == start)
        };
        // Orders placed in the minutes of the drop are missing (sessions that were already
        // shopping still buy a little later, so look at its middle).
        assert!(at("revenue_usd", 21), "{:?}", noisy.alerts);
        assert!(at("events", 31), "{:?}", noisy.alerts);
        // The totals add up.
        let t = &noisy.totals;
        assert_eq!(
            noisy.traffic_minute.iter().map(|r| r.events).sum::<u64>(),
            t.clicks + t.carts + t.purchases - t.late_clicks - t.late_carts - t.late_purchases
        );
        assert_eq!(
            noisy.late_events.revenue_minute, t.late_order_lines,
            "late lines"
        );
    }

    #[test]
    fn revenue_uses_the_rate_in_force_at_the_order() {
        let e = expected(Config {
            seed: 9,
            rate: 100.0,
            duration: Some(5 * MINUTE),
            ..Config::default()
        });
        let windows: i64 = e
            .revenue_minute
            .iter()
            .map(|r| {
                eddy_runtime::types::Decimal::parse(&r.revenue_usd)
                    .unwrap()
                    .unscaled
            })
            .sum();
        let total = eddy_runtime::types::Decimal::parse(&e.totals.order_amount_usd)
            .unwrap()
            .unscaled;
        assert!(windows > 0 && windows <= total);
        assert!(e.top_products_5min.iter().all(|r| r.rank <= 10));
    }
}
