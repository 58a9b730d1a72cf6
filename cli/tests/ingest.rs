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

/// Sends one HTTP/1.1 request with `headers`; the status, the head and the body of the answer.
fn request(url: &str, head: &str, body: &str) -> (u16, String, String) {
    let host = url.split_once("://").map_or(url, |(_, h)| h);
    let host = host.replace("0.0.0.0", "127.0.0.1");
    let mut stream = TcpStream::connect(&host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "{head}\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// POSTs `body` with `key` (none: no `Authorization`); the status, head and JSON answer.
fn post_as(
    url: &str,
    key: Option<&str>,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String, Value) {
    let auth = key.map_or(String::new(), |k| format!("\r\nAuthorization: Bearer {k}"));
    let (status, head, body) = request(
        url,
        &format!("POST {path} HTTP/1.1\r\nContent-Type: {content_type}{auth}"),
        body,
    );
    (
        status,
        head,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

/// POSTs `body` with the server's producer key; the status and the JSON answer.
fn post(serve: &Serve, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let (status, _, answer) = post_as(&serve.url, Some(&serve.key), path, content_type, body);
    (status, answer)
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
        &serve,
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
    let (status, answer) = post(&serve, "/api/v1/events", "application/json", bad);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["rejected"][0]["reason"],
        "cart event: /quantity: 0 is less than the minimum of 1"
    );

    // A batch as a JSON array: the answer lists the refused ones by index.
    let batch = format!(
        "[{}, {{\"type\":\"clik\",\"event\":{{}}}}, {}, {{\"type\":\"purchase\",\"event\":{{\"event_id\":\"o1\"}}}}]",
        click("c2", "s2"),
        click("c3", "s2")
    );
    let (status, answer) = post(&serve, "/api/v1/events/batch", "application/json", &batch);
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
        .contains(r#"purchase event: /: "user_id" is a required property"#));

    // A batch as lines: a line that is not JSON is refused alone.
    let lines = format!(
        "{}\n{{not json\n\n{}\n",
        click("c4", "s4"),
        click("c5", "s5")
    );
    let (status, answer) = post(
        &serve,
        "/api/v1/events/batch",
        "application/x-ndjson",
        &lines,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"][0]["index"], 1);
    assert!(answer["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("not valid JSON"));

    // A body that is neither: 400, nothing stored.
    let (status, answer) = post(&serve, "/api/v1/events/batch", "application/json", "[1, 2");
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
        metrics.contains(r#"eddy_ingest_events_accepted_total{key="test"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"eddy_ingest_events_rejected_total{key="test"} 4"#),
        "{metrics}"
    );

    // Kafka gone: 503, the client is to send again.
    drop(broker);
    let started = Instant::now();
    let (status, answer) = post(
        &serve,
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
    // More events than a request may carry: refused before anything is stored.
    let many: String = (0..10_001)
        .map(|i| click(&format!("m{i}"), "s9") + "\n")
        .collect();
    let (status, answer) = post(
        &serve,
        "/api/v1/events/batch",
        "application/x-ndjson",
        &many,
    );
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
    let (status, answer) = post(&serve, "/api/v1/events/batch", "application/json", &body);
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

/// How many records a topic holds.
fn stored(broker: &str, name: &str) -> i64 {
    block_on(async {
        Kafka::connect(broker)
            .await
            .unwrap()
            .end_offsets(name)
            .await
            .unwrap()
    })
    .unwrap()
    .iter()
    .sum()
}

#[test]
fn only_producer_keys_post_events_and_each_within_its_rate() {
    let broker = Broker::start().unwrap();
    let serve = Serve::start(&["--kafka", &broker.address(), "--partitions", "1"]);
    let url = &serve.url;
    let slow = common::shop::api_key(&serve.keys, "slow", &["--rate", "5"]);
    let event = click("k0", "s1");

    // No key, a made-up key, a wrong secret for a real name: 401, and a viewer key 403.
    let (forged_name, _) = serve.key.split_once('.').unwrap();
    let wrong = format!("{forged_name}.AAAA");
    for key in [None, Some("who.ever"), Some(wrong.as_str())] {
        let (status, head, answer) =
            post_as(url, key, "/api/v1/events", "application/json", &event);
        assert_eq!(status, 401, "{key:?}: {answer}");
        assert!(head.contains("www-authenticate: Bearer"), "{head}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("eddy api-key create"),
            "{answer}"
        );
    }
    let (status, _, answer) = post_as(
        url,
        Some(&serve.viewer),
        "/api/v1/events/batch",
        "application/json",
        &event,
    );
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("viewer key"),
        "{answer}"
    );
    // The health check needs no key.
    let (status, _, _) = request(url, "GET /api/v1/health HTTP/1.1", "");
    assert_eq!(status, 200);
    assert_eq!(
        stored(&broker.address(), "shop.clicks"),
        0,
        "refused requests stored nothing"
    );

    // A key of 5 events a second: a batch of 6 can never pass (413), and quick single posts
    // are cut off at the rate with 429 and Retry-After, storing nothing of what was refused.
    // (The server reads the new key within a second.)
    let six: String = (0..6)
        .map(|i| click(&format!("six{i}"), "s2") + "\n")
        .collect();
    let created = Instant::now();
    let answer = loop {
        let (status, _, answer) = post_as(
            url,
            Some(&slow),
            "/api/v1/events/batch",
            "application/x-ndjson",
            &six,
        );
        if status != 401 || created.elapsed() > Duration::from_secs(10) {
            assert_eq!(status, 413, "{answer}");
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("may post 5 a second"),
        "{answer}"
    );
    let started = Instant::now();
    let (mut accepted, mut throttled) = (0, 0);
    for i in 0..20 {
        let (status, head, answer) = post_as(
            url,
            Some(&slow),
            "/api/v1/events",
            "application/json",
            &click(&format!("r{i}"), "s3"),
        );
        match status {
            200 => accepted += 1,
            429 => {
                throttled += 1;
                assert!(head.contains("retry-after: 1"), "{head}");
                assert!(
                    answer["error"].as_str().unwrap().contains("over its rate"),
                    "{answer}"
                );
            }
            _ => panic!("{status}: {answer}"),
        }
    }
    let allowed = 5 + (started.elapsed().as_secs_f64() * 5.0).ceil() as i64;
    assert!(
        throttled > 0,
        "20 quick posts on a key of 5/s were all taken"
    );
    assert!(
        accepted >= 5 && accepted <= allowed,
        "{accepted} taken, at most {allowed}"
    );
    assert_eq!(stored(&broker.address(), "shop.clicks"), accepted);

    // A revoked key is refused within a few seconds, without a restart; others still work.
    common::shop::succeeded(
        common::shop::eddy()
            .args(["api-key", "revoke", "slow", "--file"])
            .arg(&serve.keys)
            .output()
            .unwrap(),
    );
    let revoked_at = Instant::now();
    loop {
        let (status, _, answer) = post_as(
            url,
            Some(&slow),
            "/api/v1/events",
            "application/json",
            &event,
        );
        if status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "{status}: {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, answer) = post(
        &serve,
        "/api/v1/events",
        "application/json",
        &click("k1", "s1"),
    );
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_server_refuses_to_start_open_and_guards_its_dashboard_off_loopback() {
    let run = |args: &[&str]| {
        let out = common::shop::eddy()
            .arg("serve")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--listen", "127.0.0.1:0", "--kafka", "127.0.0.1:1"]);
    assert!(e.contains("--api-keys") && e.contains("--insecure"), "{e}");
    let e = run(&[
        "--listen",
        "0.0.0.0:0",
        "--warehouse",
        "postgres://127.0.0.1:1/x",
    ]);
    assert!(
        e.contains("open to the network") && e.contains("viewer key"),
        "{e}"
    );

    // Off loopback, /metrics needs a viewer key: by header, or once by URL, then by cookie.
    let broker = Broker::start().unwrap();
    let serve = Serve::start_on(
        "0.0.0.0:0",
        &["--kafka", &broker.address(), "--partitions", "1"],
    );
    let url = &serve.url;
    let (status, answer) = post(
        &serve,
        "/api/v1/events",
        "application/json",
        &click("v1", "s1"),
    );
    assert_eq!(status, 200, "{answer}");
    let get = |extra: &str| request(url, &format!("GET /metrics HTTP/1.1{extra}"), "");
    assert_eq!(get("").0, 401);
    let bearer = |k: &str| format!("\r\nAuthorization: Bearer {k}");
    assert_eq!(
        get(&bearer(&serve.key)).0,
        403,
        "a producer key shows no metrics"
    );
    let (status, _, body) = get(&bearer(&serve.viewer));
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"eddy_ingest_events_accepted_total{key="test"} 1"#),
        "{body}"
    );
    let (status, head, _) = request(
        url,
        &format!("GET /metrics?key={} HTTP/1.1", serve.viewer),
        "",
    );
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /metrics"), "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap();
    assert_eq!(get(&format!("\r\nCookie: {cookie}")).0, 200);
    let (status, _, _) = request(url, "GET /metrics?key=watch.nope HTTP/1.1", "");
    assert_eq!(status, 401);
}

#[test]
fn events_go_over_https_with_the_servers_certificate() {
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    common::shop::succeeded(
        common::shop::eddy()
            .args(["certs", "init", "--workers", "0"])
            .arg(&certs)
            .output()
            .unwrap(),
    );
    let node = certs.join("coordinator-1");
    let cert = node.join("node.pem").display().to_string();
    let key = node.join("node.key").display().to_string();
    let serve = Serve::start(&[
        "--kafka",
        &broker.address(),
        "--partitions",
        "1",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert!(serve.url.starts_with("https://127.0.0.1:"), "{}", serve.url);
    // Plain HTTP on the HTTPS port gets no answer.
    let host = serve.url.trim_start_matches("https://");
    let mut plain = TcpStream::connect(host).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = write!(plain, "GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut answer = String::new();
    let _ = plain.read_to_string(&mut answer);
    assert!(!answer.contains("200 OK"), "{answer}");

    let ca = certs.join("ca").join("ca.pem").display().to_string();
    let expected = common::shop::generate(
        &serve.url,
        dir.path(),
        &["--fast", "--api-key", &serve.key, "--ca", &ca],
    );
    let clicks = expected["totals"]["clicks"]
        .as_i64()
        .expect("a click total");
    assert!(clicks > 0);
    assert_eq!(stored(&broker.address(), "shop.clicks"), clicks);
    // Without the CA the generator does not trust the server, and says so at once.
    let out = common::shop::eddy()
        .args([
            "gen",
            "ecommerce",
            "--events",
            "10",
            "--fast",
            "--to",
            &serve.url,
        ])
        .args(["--api-key", &serve.key])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("TLS with") && e.contains("--ca"), "{e}");
}
