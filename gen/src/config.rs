//! What traffic to generate: the shop (users, products, currencies), how shoppers behave, what
//! goes wrong (malformed and late events) and the anomalies to inject.

use eddy_runtime::types::{parse_duration, parse_timestamp, Timestamp};

/// A bad generator setting: names the setting and says what is allowed.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// The command-line flag, e.g. `--late-by`.
    pub setting: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

fn bad(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_string(),
        message: message.into(),
    }
}

/// The share of views that are product pages (the others are search, category and home pages,
/// which do not lead to a cart).
pub const PRODUCT_PAGE_SHARE: f64 = 0.8;

/// A currency the shop sells in, with its rate at the start and its share of shoppers.
#[derive(Clone, Debug, PartialEq)]
pub struct Currency {
    /// ISO 4217 code.
    pub code: &'static str,
    /// USD per unit at the start, in millionths (6 decimals, as the rate events carry).
    pub rate_micros: i64,
    /// Share of users who pay in it.
    pub share: f64,
}

/// The currencies of the generated shop. USD has a constant rate of 1; the others drift.
pub const CURRENCIES: [Currency; 4] = [
    Currency {
        code: "USD",
        rate_micros: 1_000_000,
        share: 0.50,
    },
    Currency {
        code: "EUR",
        rate_micros: 1_084_000,
        share: 0.25,
    },
    Currency {
        code: "GBP",
        rate_micros: 1_268_000,
        share: 0.15,
    },
    Currency {
        code: "JPY",
        rate_micros: 6_700,
        share: 0.10,
    },
];

/// What an anomaly changes while it lasts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AnomalyKind {
    /// Fewer sessions buy: the purchase probability is multiplied by the factor (e.g. 0.2).
    RevenueDrop,
    /// More sessions start: the arrival rate is multiplied by the factor (e.g. 5).
    TrafficSpike,
}

/// An injected anomaly: from `at` (event time since the start) for `duration`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anomaly {
    /// What it changes.
    pub kind: AnomalyKind,
    /// Its start: milliseconds of event time after [`Config::start`].
    pub at: i64,
    /// How long it lasts, in milliseconds of event time (1 min unless `for=` says); positive.
    pub duration: i64,
    /// Multiplies the purchase probability or the arrival rate; non-negative.
    pub factor: f64,
}

impl Anomaly {
    /// Parses `revenue-drop:at=10min,for=3min,factor=0.2` or `traffic-spike:at=20min,for=2min,factor=5`.
    pub fn parse(text: &str) -> Result<Anomaly, ConfigError> {
        let setting = "--anomaly";
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        let (kind, default_factor) = match kind {
            "revenue-drop" => (AnomalyKind::RevenueDrop, 0.2),
            "traffic-spike" => (AnomalyKind::TrafficSpike, 5.0),
            other => {
                return Err(bad(
                    setting,
                    format!("unknown anomaly `{other}`; use revenue-drop or traffic-spike, e.g. revenue-drop:at=10min,for=3min,factor=0.2"),
                ))
            }
        };
        let mut anomaly = Anomaly {
            kind,
            at: -1,
            duration: 60_000,
            factor: default_factor,
        };
        for part in rest.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(setting, format!("`{part}` is not key=value")))?;
            let duration = || {
                parse_duration(v).ok_or_else(|| {
                    bad(
                        setting,
                        format!("`{k}={v}`: not a duration (e.g. 90s, 10min)"),
                    )
                })
            };
            match k {
                "at" => anomaly.at = duration()?,
                "for" => anomaly.duration = duration()?,
                "factor" => {
                    anomaly.factor = v
                        .parse()
                        .ok()
                        .filter(|f: &f64| *f >= 0.0 && f.is_finite())
                        .ok_or_else(|| {
                            bad(setting, format!("`factor={v}`: not a non-negative number"))
                        })?
                }
                other => {
                    return Err(bad(
                        setting,
                        format!("unknown key `{other}`; use at, for and factor"),
                    ))
                }
            }
        }
        if anomaly.at < 0 {
            return Err(bad(
                setting,
                format!("`{text}` needs at=DURATION (its start, from the first event)"),
            ));
        }
        if anomaly.duration <= 0 {
            return Err(bad(setting, "`for` must be positive"));
        }
        Ok(anomaly)
    }

    /// Whether event time `t` (since the start) is inside the anomaly.
    pub fn covers(&self, t: i64) -> bool {
        t >= self.at && t < self.at + self.duration
    }
}

/// Every setting of a generated data set. The same settings always give the same events.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Decides every random choice.
    pub seed: u64,
    /// Event time of the first event.
    pub start: Timestamp,
    /// Shop events (clicks, carts, purchases) per second of event time, on average.
    pub rate: f64,
    /// Stop after this much event time (ms).
    pub duration: Option<i64>,
    /// Stop after this many shop events (valid or malformed; rate updates not counted).
    pub events: Option<u64>,
    /// Sessions draw their user uniformly from this many (`u0`, `u1`, ...); at least 1.
    pub users: u32,
    /// Catalogue size; product `p00000` is the most popular (ids are popularity ranks).
    pub products: u32,
    /// Zipf exponent of product popularity (1 is a classic long tail).
    pub popularity: f64,
    /// Mean product views per session.
    pub views_per_session: f64,
    /// Probability that a product view leads to adding it to the cart.
    pub cart_rate: f64,
    /// Probability that a session with a non-empty cart ends with a purchase.
    pub purchase_rate: f64,
    /// Mean time between two actions of a session (ms of event time).
    pub think_time: i64,
    /// Share of shop events sent malformed (they must be rejected, never counted).
    pub malformed_share: f64,
    /// Share of shop events sent late: their time is `late_by` before they are sent.
    pub late_share: f64,
    /// How far back a late event's time is set (ms); must exceed `max_disorder`.
    pub late_by: i64,
    /// No late events before this much event time, so every source has seen data and late
    /// events are late under any interleaving of the sources.
    pub late_after: i64,
    /// Events reach the shop's collector up to this long after they happen (ms); the jobs'
    /// watermark delay must cover it.
    pub max_disorder: i64,
    /// A currency rate event per currency this often (ms of event time).
    pub rate_interval: i64,
    /// Anomalies to inject; overlapping ones of a kind multiply their factors.
    pub anomalies: Vec<Anomaly>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            start: parse_timestamp("2026-01-01 00:00:00").unwrap_or(0),
            rate: 1000.0,
            duration: None,
            events: None,
            users: 20_000,
            products: 2_000,
            popularity: 1.0,
            views_per_session: 5.0,
            cart_rate: 0.25,
            purchase_rate: 0.6,
            think_time: 8_000,
            malformed_share: 0.005,
            late_share: 0.001,
            late_by: 3_600_000,
            late_after: 300_000,
            max_disorder: 2_000,
            rate_interval: 5_000,
            anomalies: Vec::new(),
        }
    }
}

impl Config {
    /// Checks the settings together; the first bad one is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let share = |v: f64, name: &str| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(bad(name, format!("{v} is not between 0 and 1")))
            }
        };
        share(self.cart_rate, "--cart-rate")?;
        share(self.purchase_rate, "--purchase-rate")?;
        share(self.malformed_share, "--malformed-share")?;
        share(self.late_share, "--late-share")?;
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err(bad(
                "--rate",
                "must be a positive number of events per second",
            ));
        }
        if self.users == 0 {
            return Err(bad("--users", "must be at least 1"));
        }
        if self.products == 0 {
            return Err(bad("--products", "must be at least 1"));
        }
        if self.views_per_session < 1.0 {
            return Err(bad("--views-per-session", "must be at least 1"));
        }
        if self.late_share > 0.0 && self.late_by <= self.max_disorder {
            return Err(bad(
                "--late-by",
                "must exceed --max-disorder, or late events would be on time",
            ));
        }
        Ok(())
    }

    /// The expected number of shop events of one session, to turn `rate` into session arrivals.
    pub fn events_per_session(&self) -> f64 {
        // Views: geometric on 1.. with mean V, so P(k) = p (1-p)^(k-1), p = 1/V.
        let v = self.views_per_session;
        let p = 1.0 / v;
        // P(no view leads to a cart) = E[(1 - c)^K] = p x / (1 - (1 - p) x), x = 1 - c.
        // Only product pages (80% of views) lead to carts.
        let c = PRODUCT_PAGE_SHARE * self.cart_rate;
        let x = 1.0 - c;
        let no_cart = p * x / (1.0 - (1.0 - p) * x);
        v + v * c + (1.0 - no_cart) * self.purchase_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomalies_parse_with_clear_errors() {
        let a = Anomaly::parse("revenue-drop:at=10min,for=3min,factor=0.2").unwrap();
        assert_eq!(
            a,
            Anomaly {
                kind: AnomalyKind::RevenueDrop,
                at: 600_000,
                duration: 180_000,
                factor: 0.2
            }
        );
        assert!(a.covers(600_000) && !a.covers(780_000));
        let spike = Anomaly::parse("traffic-spike:at=90s").unwrap();
        assert_eq!(spike.factor, 5.0);
        let e = Anomaly::parse("revenue-dip:at=1min").unwrap_err();
        assert!(e.message.contains("revenue-drop or traffic-spike"), "{e}");
        let e = Anomaly::parse("traffic-spike:for=1min").unwrap_err();
        assert!(e.message.contains("needs at="), "{e}");
        let e = Anomaly::parse("traffic-spike:at=soon").unwrap_err();
        assert!(e.message.contains("not a duration"), "{e}");
    }

    #[test]
    fn settings_are_checked() {
        let mut c = Config {
            duration: Some(60_000),
            ..Config::default()
        };
        assert_eq!(c.validate(), Ok(()));
        c.cart_rate = 1.5;
        assert_eq!(c.validate().unwrap_err().setting, "--cart-rate");
        c.cart_rate = 0.25;
        c.late_by = 1000;
        assert_eq!(c.validate().unwrap_err().setting, "--late-by");
    }
}
