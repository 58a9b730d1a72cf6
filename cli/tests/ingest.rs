//! The ingest API of `eddy serve` against a real Kafka broker (tansu): every event validated
//! against its JSON Schema, valid ones in their type's topic under their session, refused ones
//! in the dead-letter topic with the reason and the original text, answers that say which
//! events were refused and why, and 503 (nothing acknowledged) when Kafka is gone.

mod common;

use common::shop::Serve;
use eddy_kafka::testing::{Broker, Storage};
use eddy_kafka::{block_on, Kafka, Reader, ReaderEvent};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// POSTs `body`; the status and the JSON answer.
fn post(url: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Every record of a topic: (partition, value).
fn topic(broker: &str, name: &str) -> Vec<(i32, Value)> {
    let ends = block_on(async {
        Kafka::connect(broker)
            .await
            .unwrap()
            .end_offsets(name)
            .await
            .unwrap()
    })
    .unwrap();
    let from: Vec<(i32, i64)> = (0..ends.len() as i32).map(|p| (p, 0)).collect();
    let mut reader = Reader::start(broker, name, from).unwrap();
    let mut next = vec![0i64; ends.len()];
    let mut records = Vec::new();
    let started = Instant::now();
    while next.iter().zip(&ends).any(|(n, e)| n < e) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "reading {name}"
        );
        for (p, next) in next.iter_mut().enumerate() {
            if let Some(ReaderEvent::Records(f)) = reader.try_next(p as i32) {
                for r in f.records {
                    *next = r.offset + 1;
                    let text = String::from_utf8(r.record.value.unwrap()).unwrap();
                    records.push((p as i32, serde_json::from_str(&text).unwrap()));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    records
}

fn click(id: &str, session: &str) -> String {
    format!(
        r#"{{"type":"click","event":{{"event_id":"{id}","user_id":"u1","session_id":"{session}","product_id":"p1","ts":"2026-01-01T00:00:00.000Z","page":"product","referrer":null}}}}"#
    )
}

#[test]
fn events_are_validated_stored_once_acknowledged_and_refusals_explained() {
    let broker = Broker::start().unwrap();
    let serve = Serve::start(&["--kafka", &broker.address(), "--partitions", "3"]);
    let url = &serve.url;

    // One valid event.
    let (status, answer) = post(
        url,
        "/api/v1/events",
        "application/json",
        &click("c1", "s1"),
    );
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );

    // One refused event: 422 and the reason, naming the field and the rule.
    let bad = r#"{"type":"cart","event":{"event_id":"a1","user_id":"u1","session_id":"s1","product_id":"p1","quantity":0,"ts":"2026-01-01T00:00:00Z"}}"#;
    let (status, answer) = post(url, "/api/v1/events", "application/json", bad);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["rejected"][0]["reason"],
        "cart event: /quantity: 0 must be at least 1"
    );

    // A batch as a JSON array: the answer lists the refused ones by index.
    let batch = format!(
        "[{}, {{\"type\":\"clik\",\"event\":{{}}}}, {}, {{\"type\":\"purchase\",\"event\":{{\"event_id\":\"o1\"}}}}]",
        click("c2", "s2"),
        click("c3", "s2")
    );
    let (status, answer) = post(url, "/api/v1/events/batch", "application/json", &batch);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2);
    let rejected: Vec<u64> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(rejected, vec![1, 3]);
    assert!(answer["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("unknown event type `clik`"));
    assert!(answer["rejected"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("purchase event: /user_id: required field missing"));

    // A batch as lines: a line that is not JSON is refused alone.
    let lines = format!(
        "{}\n{{not json\n\n{}\n",
        click("c4", "s4"),
        click("c5", "s5")
    );
    let (status, answer) = post(url, "/api/v1/events/batch", "application/x-ndjson", &lines);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"][0]["index"], 1);
    assert!(answer["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("not valid JSON"));

    // A body that is neither: 400, nothing stored.
    let (status, answer) = post(url, "/api/v1/events/batch", "application/json", "[1, 2");
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("not a JSON array"));

    // What Kafka holds: the accepted clicks once each, one session in one partition, the
    // payload as sent; the refused ones in the dead-letter topic with reason and text.
    let clicks = topic(&broker.address(), "shop.clicks");
    let mut ids: Vec<&str> = clicks
        .iter()
        .map(|(_, v)| v["event_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["c1", "c2", "c3", "c4", "c5"]);
    let partitions: Vec<i32> = clicks
        .iter()
        .filter(|(_, v)| v["session_id"] == "s2")
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(partitions.len(), 2);
    assert_eq!(partitions[0], partitions[1], "one session, one partition");
    assert_eq!(clicks[0].1["page"], "product");
    let refused = topic(&broker.address(), "shop.dead_letter");
    assert_eq!(refused.len(), 4);
    assert!(refused.iter().all(|(_, v)| v["reason"].is_string()
        && v["payload"].is_string()
        && v["received_at"].is_string()));
    assert!(refused.iter().any(|(_, v)| v["payload"] == "{not json"));
    assert!(refused
        .iter()
        .any(|(_, v)| v["payload"] == bad && v["type"] == "cart"));
    let metrics = {
        let mut s = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    assert!(
        metrics.contains("eddy_ingest_events_accepted_total 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("eddy_ingest_events_rejected_total 4"),
        "{metrics}"
    );

    // Kafka gone: 503, the client is to send again.
    drop(broker);
    let started = Instant::now();
    let (status, answer) = post(
        url,
        "/api/v1/events",
        "application/json",
        &click("c6", "s6"),
    );
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("send them again"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(45));
}

#[test]
fn the_generator_writes_each_partition_in_the_order_it_generated() {
    // Sends spawned on several threads were appended in any order, up to seconds of event
    // time apart: a job reading the topics then found events late that the ground truth does
    // not count as late (found by `eddy chaos --scenario ecommerce`). A broker that commits
    // concurrent requests in any order (tansu on SQLite) must get them one at a time.
    for storage in [Storage::Memory, Storage::Sqlite] {
        generated_in_order(Broker::start_with(storage).unwrap());
    }
}

fn generated_in_order(broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "gen",
        "ecommerce",
        "--seed",
        "3",
        "--start",
        "2026-01-01T00:00:00Z",
        "--rate",
        "50",
        "--duration",
        "3min",
        "--users",
        "500",
        "--products",
        "100",
        "--fast",
    ];
    let to_kafka = common::shop::eddy()
        .args(args)
        .args([
            "--to",
            &format!("kafka://{}", broker.address()),
            "--partitions",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        to_kafka.status.success(),
        "{}",
        String::from_utf8_lossy(&to_kafka.stderr)
    );
    let files = dir.path().join("topics");
    let to_files = common::shop::eddy()
        .args(args)
        .arg("--to")
        .arg(format!("file:{}", files.display()))
        .output()
        .unwrap();
    assert!(
        to_files.status.success(),
        "{}",
        String::from_utf8_lossy(&to_files.stderr)
    );
    let generated: Vec<String> = std::fs::read_to_string(files.join("shop.clicks.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event_id"].to_string())
        .collect();
    let position: std::collections::HashMap<&String, usize> = generated
        .iter()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    let stored = topic(&broker.address(), "shop.clicks");
    assert_eq!(stored.len(), generated.len());
    for p in 0..2 {
        let order: Vec<usize> = stored
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, v)| position[&v["event_id"].to_string()])
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "partition {p} holds clicks out of their generated order"
        );
    }
}

#[test]
fn too_many_or_too_large_events_are_refused_whole_with_413() {
    let broker = Broker::start().unwrap();
    let serve = Serve::start(&["--kafka", &broker.address(), "--partitions", "1"]);
    let url = &serve.url;
    // More events than a request may carry: refused before anything is stored.
    let many: String = (0..10_001)
        .map(|i| click(&format!("m{i}"), "s9") + "\n")
        .collect();
    let (status, answer) = post(url, "/api/v1/events/batch", "application/x-ndjson", &many);
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("10001 events in one request, at most 10000"),
        "{answer}"
    );
    // One event too large for a Kafka record among good ones: nothing of the request is
    // stored (no 503 after part of it was).
    let huge = format!(
        r#"{{"type":"click","event":{{"event_id":"big","user_id":"u1","session_id":"s1","product_id":"p1","ts":"2026-01-01T00:00:00.000Z","page":"{}","referrer":null}}}}"#,
        "x".repeat(1 << 20)
    );
    let body = format!("[{}, {huge}, {}]", click("g1", "s1"), click("g2", "s1"));
    let (status, answer) = post(url, "/api/v1/events/batch", "application/json", &body);
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("event 1 is"),
        "{answer}"
    );
    let ends = block_on(async {
        Kafka::connect(&broker.address())
            .await
            .unwrap()
            .end_offsets("shop.clicks")
            .await
            .unwrap()
    })
    .unwrap();
    assert_eq!(ends.iter().sum::<i64>(), 0, "nothing was stored");
}
