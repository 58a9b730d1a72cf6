//! How much the ingest API's validation costs: the generator's shop traffic, each envelope
//! routed by the ingest catalog (parsed, validated against its type's JSON Schema with the
//! `jsonschema` crate, keyed), against a baseline that only parses the same envelopes, in the
//! same invocation.
//!
//!     cargo run --release -p eddy-benches --bin eddy-bench-schema -- [EVENTS] [ROUNDS]
//!
//! (When the `jsonschema` crate replaced the hand-written validator, this bench, then
//! validating parsed events with both, measured it 1.6 times as fast: 3.5 M against 2.2 M
//! events/s on one core, with the same events refused.)

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(5), |a| a.parse())?;
    let config = eddy_gen::Config {
        seed: 11,
        rate: 1000.0,
        events: Some(events),
        ..eddy_gen::Config::default()
    };
    let envelopes: Vec<String> = eddy_gen::Generator::new(config)
        .map(|sent| sent.envelope)
        .collect();
    let catalog = eddy_ingest::Catalog::ecommerce("shop")?;
    println!(
        "{} envelopes, {rounds} rounds (best round counts)",
        envelopes.len()
    );
    let mut best = [f64::MAX; 2];
    let mut refused = [0usize; 2];
    for _ in 0..rounds {
        let started = Instant::now();
        refused[0] = envelopes
            .iter()
            .filter(|e| serde_json::from_str::<serde_json::Value>(e).is_err())
            .count();
        best[0] = best[0].min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        refused[1] = envelopes
            .iter()
            .filter(|e| catalog.route(e).is_err())
            .count();
        best[1] = best[1].min(started.elapsed().as_secs_f64());
    }
    let n = envelopes.len() as f64;
    println!("step                 events/s  refused");
    println!("parse only         {:>10.0} {:>8}", n / best[0], refused[0]);
    println!("parse+validate+key {:>10.0} {:>8}", n / best[1], refused[1]);
    println!("route / parse time: {:.2}", best[1] / best[0]);
    Ok(())
}
