//! The generated stream: shoppers' sessions simulated in event time, rendered as the JSON
//! envelopes a shop's collector would send, in the order it would send them.
//!
//! Sessions arrive as a Poisson process (faster during a traffic spike). A session views a few
//! products (Zipf popularity), adds some of them to its cart and, at the end, may buy what is in
//! the cart (less often during a revenue drop). Every currency gets a rate event every
//! `rate_interval` (the first one dated `late_by` before the start). Events are sent up to `max_disorder` after they happen (so the stream is a
//! little out of order, as real collectors are), a share is sent malformed, and a share is
//! sent late: with a time `late_by` in the past.

use crate::config::{AnomalyKind, Config, CURRENCIES, PRODUCT_PAGE_SHARE};
use crate::rng::{Rng, Zipf};
use eddy_runtime::types::Timestamp;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write;

/// The four event types, as the ingest API names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A page view; only product pages lead to a cart.
    Click,
    /// A product added to a session's cart.
    Cart,
    /// An order of a session's cart, in the session's currency.
    Purchase,
    /// A currency's rate to USD; keyed by currency, not by session.
    CurrencyRate,
}

impl EventKind {
    /// Every kind in declaration order, so `kind as usize` indexes per-kind arrays.
    pub const ALL: [EventKind; 4] = [
        EventKind::Click,
        EventKind::Cart,
        EventKind::Purchase,
        EventKind::CurrencyRate,
    ];

    /// The `type` of the ingest envelope and the name of the event's JSON Schema.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Click => "click",
            EventKind::Cart => "cart",
            EventKind::Purchase => "purchase",
            EventKind::CurrencyRate => "currency_rate",
        }
    }
}

/// One item of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Popularity rank, as [`Ids::product`] renders it.
    pub product: u32,
    /// Units; carting a product again adds to it.
    pub quantity: u32,
    /// In the order's currency, in hundredths.
    pub unit_price_cents: i64,
}

/// A valid event, as data: what the ground truth counts.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A page view.
    Click {
        /// Numbered per kind from 0; [`Ids::event`] renders it.
        id: u64,
        /// Below [`Config::users`]; [`Ids::user`] renders it.
        user: u32,
        /// Numbered from 0 in arrival order; [`Ids::session`] renders it.
        session: u64,
        /// Popularity rank; [`Ids::product`] renders it.
        product: u32,
        /// Event time (ms since the epoch).
        ts: Timestamp,
        /// `product`, `search`, `category` or `home`.
        page: &'static str,
        /// Only on a session's first click, and not always then.
        referrer: Option<&'static str>,
    },
    /// A product added to the cart.
    Cart {
        /// Numbered per kind from 0.
        id: u64,
        /// The session's user.
        user: u32,
        /// The session.
        session: u64,
        /// The product of the session's previous click.
        product: u32,
        /// Units added by this event (1 to 3), not the cart's total.
        quantity: u32,
        /// Event time (ms since the epoch).
        ts: Timestamp,
    },
    /// An order: the whole cart, at the session's end.
    Purchase {
        /// Numbered per kind from 0.
        id: u64,
        /// The session's user.
        user: u32,
        /// The session.
        session: u64,
        /// Never empty; prices in `currency`.
        items: Vec<Item>,
        /// Index into [`CURRENCIES`].
        currency: usize,
        /// Event time (ms since the epoch).
        ts: Timestamp,
    },
    /// A new rate of one currency, in force from `ts` on.
    CurrencyRate {
        /// Index into [`CURRENCIES`].
        currency: usize,
        /// USD per unit, in millionths.
        rate_micros: i64,
        /// Event time (ms); the first rates are dated `late_by` before the start.
        ts: Timestamp,
    },
}

impl Event {
    /// Its type, which picks the envelope's `type` and the Kafka topic.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Click { .. } => EventKind::Click,
            Event::Cart { .. } => EventKind::Cart,
            Event::Purchase { .. } => EventKind::Purchase,
            Event::CurrencyRate { .. } => EventKind::CurrencyRate,
        }
    }

    /// The event's own time (for a late event, long before it is sent).
    pub fn ts(&self) -> Timestamp {
        match self {
            Event::Click { ts, .. }
            | Event::Cart { ts, .. }
            | Event::Purchase { ts, .. }
            | Event::CurrencyRate { ts, .. } => *ts,
        }
    }

    fn ts_mut(&mut self) -> &mut Timestamp {
        match self {
            Event::Click { ts, .. }
            | Event::Cart { ts, .. }
            | Event::Purchase { ts, .. }
            | Event::CurrencyRate { ts, .. } => ts,
        }
    }
}

/// Ids as they appear in the JSON, derived from the seed so that two data sets do not collide.
pub struct Ids;

impl Ids {
    /// `u17`; not seeded, so data sets share their users.
    pub fn user(user: u32) -> String {
        format!("u{user}")
    }
    /// `p00042`; not seeded, so data sets share their catalogue.
    pub fn product(product: u32) -> String {
        format!("p{product:05}")
    }
    /// `s<seed>-<n>`; also the Kafka key of the session's events.
    pub fn session(seed: u64, session: u64) -> String {
        format!("s{seed}-{session}")
    }
    /// `<letter><seed>-<n>`, the letter by kind (c, a, o, r), so ids are unique across kinds.
    pub fn event(seed: u64, kind: EventKind, id: u64) -> String {
        let letter = match kind {
            EventKind::Click => 'c',
            EventKind::Cart => 'a',
            EventKind::Purchase => 'o',
            EventKind::CurrencyRate => 'r',
        };
        format!("{letter}{seed}-{id}")
    }
}

/// What became of a generated event.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// Sent as is; `late`: its time lies `late_by` before it was sent.
    Valid {
        /// The event as sent; a late one's `ts` is already moved back.
        event: Event,
        /// Drawn by [`Config::late_share`]: in the fact tables, but late for every window.
        late: bool,
    },
    /// Sent broken in the way named (the ingest API must reject it).
    Malformed {
        /// E.g. `truncated JSON`, `missing user_id`; for messages.
        flaw: &'static str,
    },
}

/// One line the generator sends: an ingest envelope `{"type": ..., "event": {...}}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    /// The type it was generated as (a malformed envelope may name another).
    pub kind: EventKind,
    /// When it is sent, on the event-time clock: pace by this.
    pub at: Timestamp,
    /// Events with the same key must stay in order (one session, one currency).
    pub key: String,
    /// The JSON text.
    pub envelope: String,
    /// Whether ingest must accept it and, if so, what the ground truth counts.
    pub fate: Fate,
}

/// Event times as the envelopes write them: RFC 3339, UTC, milliseconds.
pub use eddy_runtime::types::format_rfc3339 as rfc3339;

/// `cents` as a decimal with two places (`1999` → `19.99`).
pub fn money(cents: i64, out: &mut String) {
    let sign = if cents < 0 { "-" } else { "" };
    let _ = write!(out, "{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100);
}

/// A rate in millionths as a decimal with six places.
pub fn rate(micros: i64, out: &mut String) {
    let _ = write!(out, "{}.{:06}", micros / 1_000_000, micros % 1_000_000);
}

const PAGES: [&str; 4] = ["product", "search", "category", "home"];
const REFERRERS: [Option<&str>; 4] = [
    None,
    Some("https://www.google.com/"),
    Some("https://www.instagram.com/"),
    Some("https://news.example.com/deals"),
];

/// Renders a valid event as its ingest envelope.
pub fn envelope(seed: u64, event: &Event) -> String {
    let mut s = String::with_capacity(200);
    let kind = event.kind();
    let _ = write!(s, "{{\"type\":\"{}\",\"event\":{{", kind.name());
    let common = |s: &mut String, id: u64, user: u32, session: u64| {
        let _ = write!(
            s,
            "\"event_id\":\"{}\",\"user_id\":\"{}\",\"session_id\":\"{}\",",
            Ids::event(seed, kind, id),
            Ids::user(user),
            Ids::session(seed, session)
        );
    };
    match event {
        Event::Click {
            id,
            user,
            session,
            product,
            ts,
            page,
            referrer,
        } => {
            common(&mut s, *id, *user, *session);
            let _ = write!(s, "\"product_id\":\"{}\",\"ts\":\"", Ids::product(*product));
            rfc3339(*ts, &mut s);
            let _ = write!(s, "\",\"page\":\"{page}\",\"referrer\":");
            match referrer {
                Some(r) => {
                    let _ = write!(s, "\"{r}\"");
                }
                None => s.push_str("null"),
            }
        }
        Event::Cart {
            id,
            user,
            session,
            product,
            quantity,
            ts,
        } => {
            common(&mut s, *id, *user, *session);
            let _ = write!(
                s,
                "\"product_id\":\"{}\",\"quantity\":{quantity},\"ts\":\"",
                Ids::product(*product)
            );
            rfc3339(*ts, &mut s);
            s.push('"');
        }
        Event::Purchase {
            id,
            user,
            session,
            items,
            currency,
            ts,
        } => {
            common(&mut s, *id, *user, *session);
            s.push_str("\"items\":[");
            let mut total = 0;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(
                    s,
                    "{{\"product_id\":\"{}\",\"quantity\":{},\"unit_price\":",
                    Ids::product(item.product),
                    item.quantity
                );
                money(item.unit_price_cents, &mut s);
                s.push('}');
                total += item.unit_price_cents * item.quantity as i64;
            }
            s.push_str("],\"total_amount\":");
            money(total, &mut s);
            let _ = write!(
                s,
                ",\"currency\":\"{}\",\"ts\":\"",
                CURRENCIES[*currency].code
            );
            rfc3339(*ts, &mut s);
            s.push('"');
        }
        Event::CurrencyRate {
            currency,
            rate_micros,
            ts,
        } => {
            let _ = write!(
                s,
                "\"currency\":\"{}\",\"rate_to_usd\":",
                CURRENCIES[*currency].code
            );
            rate(*rate_micros, &mut s);
            s.push_str(",\"ts\":\"");
            rfc3339(*ts, &mut s);
            s.push('"');
        }
    }
    s.push_str("}}");
    s
}

/// The ways a malformed event is broken, each caught by a different rule of the schemas.
const FLAWS: [&str; 8] = [
    "truncated JSON",
    "missing user_id",
    "wrong type",
    "out of range",
    "bad timestamp",
    "unknown type",
    "extra field",
    "bad currency",
];

/// Breaks a valid envelope in one of [`FLAWS`]' ways.
fn corrupt(envelope: &str, kind: EventKind, rng: &mut Rng) -> (String, &'static str) {
    let flaw = FLAWS[rng.below(FLAWS.len() as u64) as usize];
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(envelope) else {
        return (envelope[..envelope.len() / 2].to_string(), FLAWS[0]);
    };
    let event = &mut value["event"];
    match flaw {
        "truncated JSON" => return (envelope[..envelope.len() / 2].to_string(), flaw),
        "missing user_id" if kind != EventKind::CurrencyRate => {
            event.as_object_mut().map(|o| o.remove("user_id"));
        }
        "wrong type" => match kind {
            EventKind::Cart => event["quantity"] = "two".into(),
            EventKind::Purchase => event["total_amount"] = "lots".into(),
            _ => event["product_id"] = 42.into(),
        },
        "out of range" => match kind {
            EventKind::Cart => event["quantity"] = 0.into(),
            EventKind::Purchase => event["items"] = serde_json::json!([]),
            _ => event["session_id"] = "".into(),
        },
        "bad timestamp" => event["ts"] = "yesterday".into(),
        "unknown type" => value["type"] = "clik".into(),
        "extra field" => event["coupon"] = "FREE".into(),
        "bad currency" if kind == EventKind::Purchase => event["currency"] = "usd".into(),
        // Flaws that do not apply to this type: a type mismatch instead.
        _ => {
            event["ts"] = 1234.into();
            return (value.to_string(), "bad timestamp");
        }
    }
    (value.to_string(), flaw)
}

/// A session in progress.
struct Session {
    user: u32,
    currency: usize,
    views_left: u32,
    /// The product just viewed, to be added to the cart as the next action.
    to_cart: Option<u32>,
    cart: Vec<Item>,
    referrer: Option<&'static str>,
}

/// The generator: an iterator of [`Sent`] lines in sending order.
pub struct Generator {
    config: Config,
    /// Behaviour (sessions, choices).
    rng: Rng,
    /// What is broken or late, drawn separately so that the shop's traffic is the same with and
    /// without malformed or late events.
    faults: Rng,
    /// Currency drift.
    rates: Rng,
    popularity: Zipf,
    /// Per product: its price in USD cents.
    prices: Vec<i64>,
    currency_cdf: Vec<f64>,
    /// Current rate of each currency, in millionths.
    rate_micros: Vec<i64>,
    /// Session arrivals per ms, before anomalies.
    arrivals_per_ms: f64,
    next_arrival: Timestamp,
    next_rates: Timestamp,
    sessions: HashMap<u64, Session>,
    /// Sessions by the time of their next action.
    agenda: BinaryHeap<Reverse<(Timestamp, u64)>>,
    next_session: u64,
    next_id: [u64; 4],
    /// Generated, waiting to be sent: by (send time, generation order).
    outbox: BinaryHeap<Reverse<(Timestamp, u64)>>,
    pending: HashMap<u64, Sent>,
    sequence: u64,
    /// Shop events generated so far.
    generated: u64,
    /// Event time reached by the simulation.
    clock: Timestamp,
    finished: bool,
}

impl Generator {
    /// A generator for `config`, which must pass [`Config::validate`]; the same config always
    /// yields the same lines.
    pub fn new(config: Config) -> Generator {
        let mut setup = Rng::stream(config.seed, 1);
        // Prices: log-uniform between $3 and $300, rounded to .99 like shops do.
        let prices = (0..config.products)
            .map(|_| {
                let dollars = (3.0f64.ln() + setup.f64() * (100.0f64).ln()).exp();
                (dollars.floor() as i64).max(1) * 100 + 99
            })
            .collect();
        let mut total = 0.0;
        let currency_cdf = CURRENCIES
            .iter()
            .map(|c| {
                total += c.share;
                total
            })
            .collect();
        let arrivals_per_ms = config.rate / config.events_per_session() / 1000.0;
        let mut rng = Rng::stream(config.seed, 2);
        // The shop is open before the data set starts: sessions are simulated from a warm-up
        // period on, so the first minute already has sessions at every stage.
        let warmup = (config.views_per_session * 3.0) as i64 * config.think_time;
        let next_arrival = config.start - warmup + rng.exp(1.0 / arrivals_per_ms) as i64;
        Generator {
            popularity: Zipf::new(config.products, config.popularity),
            prices,
            currency_cdf,
            rate_micros: CURRENCIES.iter().map(|c| c.rate_micros).collect(),
            arrivals_per_ms,
            next_arrival,
            next_rates: config.start,
            rng,
            faults: Rng::stream(config.seed, 3),
            rates: Rng::stream(config.seed, 4),
            sessions: HashMap::new(),
            agenda: BinaryHeap::new(),
            next_session: 0,
            next_id: [0; 4],
            outbox: BinaryHeap::new(),
            pending: HashMap::new(),
            sequence: 0,
            generated: 0,
            clock: config.start - warmup,
            finished: false,
            config,
        }
    }

    /// Its settings, e.g. for the [`Truth`](crate::Truth) of the same data set.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The factor of every anomaly of `kind` covering event time `t`.
    fn factor(&self, kind: AnomalyKind, t: Timestamp) -> f64 {
        self.config
            .anomalies
            .iter()
            .filter(|a| a.kind == kind && a.covers(t - self.config.start))
            .map(|a| a.factor)
            .product()
    }

    /// The price of a product in a currency at the current rate, in hundredths.
    fn price(&self, product: u32, currency: usize) -> i64 {
        let usd = self.prices[product as usize];
        if currency == 0 {
            return usd;
        }
        // Local prices are set from the starting rate and end in .99 (or whole for JPY-like
        // currencies worth under a cent).
        let local = usd as f64 * 1e6 / CURRENCIES[currency].rate_micros as f64;
        if local > 100_000.0 {
            (local / 100.0).round() as i64 * 100
        } else {
            (local / 100.0).floor() as i64 * 100 + 99
        }
    }

    fn id(&mut self, kind: EventKind) -> u64 {
        let slot = &mut self.next_id[kind as usize];
        *slot += 1;
        *slot - 1
    }

    fn bounded_out(&self, t: Timestamp) -> bool {
        let over_time = self
            .config
            .duration
            .is_some_and(|d| t >= self.config.start + d);
        let over_count = self.config.events.is_some_and(|n| self.generated >= n);
        over_time || over_count
    }

    /// Simulates until one event happens; false when the data set is complete.
    fn simulate(&mut self) -> bool {
        let next_action = self.agenda.peek().map(|Reverse((t, _))| *t);
        let t = [Some(self.next_rates), Some(self.next_arrival), next_action]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.next_rates);
        if self.bounded_out(t) {
            return false;
        }
        self.clock = t;
        if t == self.next_rates {
            for (currency, info) in CURRENCIES.iter().enumerate() {
                if currency > 0 && t > self.config.start {
                    // A random walk of about 0.1% per step.
                    let step = (self.rates.f64() - 0.5) * 0.002;
                    let r = self.rate_micros[currency] as f64 * (1.0 + step);
                    self.rate_micros[currency] = (r.round() as i64).max(1);
                }
                // The first rates have been in force since `late_by` before the start, so
                // that late orders find the rate of their time.
                let ts = if t == self.config.start {
                    t - self.config.late_by.max(0)
                } else {
                    t
                };
                let event = Event::CurrencyRate {
                    currency,
                    rate_micros: self.rate_micros[currency],
                    ts,
                };
                self.send(event, info.code.to_string(), false);
            }
            self.next_rates = t + self.config.rate_interval.max(1);
        } else if t == self.next_arrival {
            let spike = self.factor(AnomalyKind::TrafficSpike, t).max(1e-9);
            let gap = self.rng.exp(1.0 / (self.arrivals_per_ms * spike));
            self.next_arrival = t + gap.round() as i64;
            let id = self.next_session;
            self.next_session += 1;
            let u = self.rng.f64();
            let currency = self.currency_cdf.partition_point(|&c| c <= u).min(3);
            let session = Session {
                user: self.rng.below(self.config.users as u64) as u32,
                currency,
                views_left: self.rng.geometric(self.config.views_per_session),
                to_cart: None,
                cart: Vec::new(),
                referrer: REFERRERS[self.rng.below(REFERRERS.len() as u64) as usize],
            };
            self.sessions.insert(id, session);
            self.agenda.push(Reverse((t, id)));
        } else {
            let Some(Reverse((_, id))) = self.agenda.pop() else {
                return true;
            };
            self.act(id, t);
        }
        true
    }

    /// The next action of a session at `t`.
    fn act(&mut self, id: u64, t: Timestamp) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        let mut go_on = true;
        if let Some(product) = session.to_cart.take() {
            let quantity = match self.rng.below(10) {
                0..=6 => 1,
                7 | 8 => 2,
                _ => 3,
            };
            let price = self.price(product, session.currency);
            match session.cart.iter_mut().find(|i| i.product == product) {
                Some(item) => item.quantity += quantity,
                None => session.cart.push(Item {
                    product,
                    quantity,
                    unit_price_cents: price,
                }),
            }
            let event = Event::Cart {
                id: self.id(EventKind::Cart),
                user: session.user,
                session: id,
                product,
                quantity,
                ts: t,
            };
            self.shop_event(event, id);
        } else if session.views_left > 0 {
            session.views_left -= 1;
            let product = self.popularity.sample(&mut self.rng);
            let page = if self.rng.chance(PRODUCT_PAGE_SHARE) {
                PAGES[0]
            } else {
                PAGES[1 + self.rng.below(3) as usize]
            };
            if page == "product" && self.rng.chance(self.config.cart_rate) {
                session.to_cart = Some(product);
            }
            let event = Event::Click {
                id: self.id(EventKind::Click),
                user: session.user,
                session: id,
                product,
                ts: t,
                page,
                referrer: session.referrer.take(),
            };
            self.shop_event(event, id);
        } else {
            go_on = false;
            let buys = self.config.purchase_rate * self.factor(AnomalyKind::RevenueDrop, t);
            if !session.cart.is_empty() && self.rng.chance(buys) {
                let event = Event::Purchase {
                    id: self.id(EventKind::Purchase),
                    user: session.user,
                    session: id,
                    items: std::mem::take(&mut session.cart),
                    currency: session.currency,
                    ts: t,
                };
                self.shop_event(event, id);
            }
        }
        if go_on {
            let think = self.rng.exp(self.config.think_time as f64).max(200.0) as i64;
            self.sessions.insert(id, session);
            self.agenda.push(Reverse((t + think, id)));
        }
    }

    /// A click, cart or purchase: maybe late, maybe malformed, a little delayed.
    fn shop_event(&mut self, mut event: Event, session: u64) {
        if event.ts() < self.config.start {
            return; // warm-up
        }
        self.generated += 1;
        let since_start = event.ts() - self.config.start;
        let late =
            since_start >= self.config.late_after && self.faults.chance(self.config.late_share);
        if late {
            *event.ts_mut() -= self.config.late_by;
        }
        let key = Ids::session(self.config.seed, session);
        if self.faults.chance(self.config.malformed_share) {
            let kind = event.kind();
            let valid = envelope(self.config.seed, &event);
            let (text, flaw) = corrupt(&valid, kind, &mut self.faults);
            let delay = self.delay();
            self.enqueue(Sent {
                kind,
                at: self.clock + delay,
                key,
                envelope: text,
                fate: Fate::Malformed { flaw },
            });
            return;
        }
        self.send(event, key, late);
    }

    /// How long after it happens an event reaches the collector.
    fn delay(&mut self) -> i64 {
        let max = self.config.max_disorder;
        if max <= 0 {
            return 0;
        }
        (self.faults.exp(max as f64 / 8.0) as i64).min(max)
    }

    fn send(&mut self, event: Event, key: String, late: bool) {
        let delay = if event.kind() == EventKind::CurrencyRate {
            0
        } else {
            self.delay()
        };
        let sent = Sent {
            kind: event.kind(),
            at: self.clock + delay,
            key,
            envelope: envelope(self.config.seed, &event),
            fate: Fate::Valid { event, late },
        };
        self.enqueue(sent);
    }

    fn enqueue(&mut self, sent: Sent) {
        let seq = self.sequence;
        self.sequence += 1;
        self.outbox.push(Reverse((sent.at, seq)));
        self.pending.insert(seq, sent);
    }

    /// The next line to send, once nothing generated later can be sent before it.
    fn release(&mut self, all: bool) -> Option<Sent> {
        let Reverse((at, seq)) = *self.outbox.peek()?;
        // Everything generated later is sent at or after the simulation's clock.
        if !all && at > self.clock {
            return None;
        }
        self.outbox.pop();
        self.pending.remove(&seq)
    }
}

impl Iterator for Generator {
    type Item = Sent;

    fn next(&mut self) -> Option<Sent> {
        loop {
            if let Some(sent) = self.release(self.finished) {
                return Some(sent);
            }
            if self.finished {
                return None;
            }
            if !self.simulate() {
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            seed: 42,
            rate: 200.0,
            duration: Some(300_000),
            ..Config::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_lines() {
        let a: Vec<String> = Generator::new(config()).map(|s| s.envelope).collect();
        let b: Vec<String> = Generator::new(config()).map(|s| s.envelope).collect();
        assert_eq!(a, b);
        let c: Vec<String> = Generator::new(Config {
            seed: 43,
            ..config()
        })
        .map(|s| s.envelope)
        .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn lines_are_sent_in_order_within_the_disorder_bound() {
        let mut last_at = i64::MIN;
        let mut max_ts = i64::MIN;
        let mut shop = 0;
        for sent in Generator::new(config()) {
            assert!(sent.at >= last_at, "sending order");
            last_at = sent.at;
            if let Fate::Valid { event, late } = &sent.fate {
                if !late {
                    assert!(
                        event.ts() >= max_ts.saturating_sub(2_000),
                        "disorder beyond the bound"
                    );
                    max_ts = max_ts.max(event.ts());
                } else {
                    assert!(event.ts() < max_ts.saturating_sub(3_000_000));
                }
                if event.kind() != EventKind::CurrencyRate {
                    shop += 1;
                }
            }
        }
        // 200 events/s for 300 s, within sampling noise.
        assert!((50_000..70_000).contains(&shop), "{shop} shop events");
    }

    #[test]
    fn envelopes_are_json_with_exact_totals() {
        for sent in Generator::new(config()).take(5_000) {
            match &sent.fate {
                Fate::Valid { event, .. } => {
                    let v: serde_json::Value = serde_json::from_str(&sent.envelope).unwrap();
                    assert_eq!(v["type"], sent.kind.name());
                    if let Event::Purchase { items, .. } = event {
                        let total: i64 = items
                            .iter()
                            .map(|i| i.unit_price_cents * i.quantity as i64)
                            .sum();
                        let mut text = String::new();
                        money(total, &mut text);
                        assert!(sent.envelope.contains(&format!("\"total_amount\":{text},")));
                    }
                }
                Fate::Malformed { .. } => {}
            }
        }
        let mut ts = String::new();
        rfc3339(1_767_225_601_234, &mut ts);
        assert_eq!(ts, "2026-01-01T00:00:01.234Z");
    }
}
