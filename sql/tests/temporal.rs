//! An event-time temporal join written in SQL (`LEFT JOIN rates FOR SYSTEM_TIME AS OF O.ts`),
//! run on the local runtime over small files: each order meets the rate in force at its time,
//! and an order without one keeps NULL.

use eddy_jobs::{compile_str, CompileOptions};
use eddy_operators::{Factory, RunSettings};
use eddy_runtime::exec::{execute, CancelHandle, ExecOptions};
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
        let graph = compile_str(
            "usd.sql",
            &job.toml,
            &CompileOptions {
                parallelism: Some(parallelism),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", job.toml));
        let factory = Factory::new(RunSettings {
            dead_letter_path: dir.path().join("dead-letter.jsonl"),
            ..Default::default()
        });
        execute(
            &graph,
            &factory,
            &ExecOptions::default(),
            &CancelHandle::default(),
        )
        .unwrap();
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
