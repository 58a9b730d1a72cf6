//! Joins bounded by event time, written in SQL and run on the local runtime over small files at
//! parallelism 1 and 2: the event-time temporal join (`LEFT JOIN rates FOR SYSTEM_TIME AS OF
//! O.ts`) and the interval join (`o.ts BETWEEN c.ts AND c.ts + INTERVAL ..`).

mod common;

use eddy_sql::{compile_texts, SinkDir, SqlOptions};
use std::collections::BTreeMap;

const SCRIPT: &str = "
CREATE TABLE orders (
    id BIGINT, currency STRING, amount DECIMAL(10, 2), ts TIMESTAMP(3),
    WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${ORDERS}', 'format' = 'json');
CREATE TABLE rates (
    currency STRING, rate DECIMAL(10, 4), ts TIMESTAMP(3),
    WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${RATES}', 'format' = 'json');
CREATE TABLE usd (id BIGINT, amount_usd DECIMAL(20, 6)) WITH ('connector' = 'blackhole');
INSERT INTO usd
SELECT O.id, O.amount * R.rate
FROM orders AS O LEFT JOIN rates FOR SYSTEM_TIME AS OF O.ts AS R ON O.currency = R.currency;
";

#[test]
fn each_order_meets_the_rate_in_force_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let orders = dir.path().join("orders.jsonl");
    let rates = dir.path().join("rates.jsonl");
    let at = |s: u32| format!("2026-01-01T00:00:{s:02}.000Z");
    std::fs::write(
        &rates,
        [("EUR", "1.1", 0), ("USD", "1.0", 0), ("EUR", "1.2", 10)]
            .iter()
            .map(|(c, r, s)| {
                format!(
                    "{{\"currency\":\"{c}\",\"rate\":{r},\"ts\":\"{}\"}}\n",
                    at(*s)
                )
            })
            .collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        &orders,
        [
            (1, "EUR", 5),
            (2, "EUR", 12),
            (3, "GBP", 6),
            (4, "USD", 20),
            (5, "EUR", 10),
        ]
        .iter()
        .map(|(id, c, s)| {
            format!(
                "{{\"id\":{id},\"currency\":\"{c}\",\"amount\":10.00,\"ts\":\"{}\"}}\n",
                at(*s)
            )
        })
        .collect::<String>(),
    )
    .unwrap();
    let options = SqlOptions {
        params: [
            ("ORDERS".to_string(), orders.display().to_string()),
            ("RATES".to_string(), rates.display().to_string()),
        ]
        .into(),
        sink_dir: Some(SinkDir {
            dir: dir.path().to_path_buf(),
            parts: false,
        }),
        ..Default::default()
    };
    let job = compile_texts(vec![("usd.sql".into(), SCRIPT.into())], &options)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        job.toml.contains("type = \"temporal_join\""),
        "{}",
        job.toml
    );
    assert!(job.toml.contains("join_type = \"left\""), "{}", job.toml);
    for parallelism in [1, 2] {
        common::run_job("usd.sql", &job.toml, parallelism, dir.path());
        let text = std::fs::read_to_string(dir.path().join("usd.jsonl")).unwrap();
        let got: BTreeMap<i64, Option<f64>> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let usd = &v["amount_usd"];
                let usd = usd
                    .as_f64()
                    .or_else(|| usd.as_str().and_then(|s| s.parse().ok()));
                (v["id"].as_i64().unwrap(), usd)
            })
            .collect();
        let want = BTreeMap::from([
            (1, Some(11.0)),
            (2, Some(12.0)),
            (3, None),
            (4, Some(10.0)),
            (5, Some(12.0)),
        ]);
        assert_eq!(got, want, "p={parallelism}: {text}");
    }
}

/// Runs `script` (its tables' paths as parameters) at parallelism 1 and 2; the rows of sink
/// `sink`, each its values in the order of their column names, sorted.
fn run(
    script: &str,
    params: &[(&str, &std::path::Path)],
    sink: &str,
    dir: &std::path::Path,
) -> Vec<Vec<serde_json::Value>> {
    let options = SqlOptions {
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect(),
        sink_dir: Some(SinkDir {
            dir: dir.to_path_buf(),
            parts: false,
        }),
        ..Default::default()
    };
    let job = compile_texts(vec![("job.sql".into(), script.into())], &options)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut results = Vec::new();
    for parallelism in [1, 2] {
        common::run_job("job.sql", &job.toml, parallelism, dir);
        let text = std::fs::read_to_string(dir.join(format!("{sink}.jsonl"))).unwrap();
        let mut rows: Vec<Vec<serde_json::Value>> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object().unwrap().values().cloned().collect()
            })
            .collect();
        rows.sort_by_key(|r| format!("{r:?}"));
        results.push(rows);
    }
    assert_eq!(results[0], results[1], "parallelism 1 and 2 differ");
    assert!(
        job.toml.contains("type = \"interval_join\""),
        "{}",
        job.toml
    );
    results.remove(0)
}

#[test]
fn orders_within_ten_seconds_of_a_click_meet_it() {
    let dir = tempfile::tempdir().unwrap();
    let at = |s: u32| format!("2026-01-01T00:00:{s:02}.000Z");
    let clicks = dir.path().join("clicks.jsonl");
    let orders = dir.path().join("orders.jsonl");
    let lines = |rows: &[(&str, u32)]| {
        rows.iter()
            .map(|(u, s)| format!("{{\"user\":\"{u}\",\"ts\":\"{}\"}}\n", at(*s)))
            .collect::<String>()
    };
    std::fs::write(&clicks, lines(&[("u1", 0), ("u1", 30), ("u2", 40)])).unwrap();
    std::fs::write(
        &orders,
        lines(&[("u1", 5), ("u1", 35), ("u1", 45), ("u2", 1)]),
    )
    .unwrap();
    for bound in [
        "o.ts BETWEEN c.ts AND c.ts + INTERVAL '10' SECOND",
        "o.ts >= c.ts AND c.ts > o.ts - INTERVAL '11' SECOND",
        "c.ts <= o.ts AND o.ts < c.ts + INTERVAL '11' SECOND",
    ] {
        let script = format!("
        CREATE TABLE clicks (`user` STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH ('connector' = 'filesystem', 'path' = '${{CLICKS}}', 'format' = 'json');
        CREATE TABLE orders (`user` STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH ('connector' = 'filesystem', 'path' = '${{ORDERS}}', 'format' = 'json');
        CREATE TABLE pairs (`user` STRING, clicked TIMESTAMP(3), ordered TIMESTAMP(3)) WITH ('connector' = 'blackhole');
        INSERT INTO pairs
        SELECT c.`user`, c.ts, o.ts FROM clicks c, orders o
        WHERE c.`user` = o.`user` AND {bound};
    ");
        let rows = run(
            &script,
            &[("CLICKS", &clicks), ("ORDERS", &orders)],
            "pairs",
            dir.path(),
        );
        let pairs: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                let field = |i: usize| r[i].as_str().unwrap_or_default().to_string();
                // A row's values by column name: clicked, ordered, user.
                (field(0), field(1))
            })
            .collect();
        assert_eq!(pairs.len(), 2, "{rows:?}");
        assert!(
            pairs[0].0.contains("00:00:00") && pairs[0].1.contains("00:00:05"),
            "{rows:?}"
        );
        assert!(
            pairs[1].0.contains("00:00:30") && pairs[1].1.contains("00:00:35"),
            "{rows:?}"
        );
    }
}
