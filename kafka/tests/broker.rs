//! The producer and reader against a real broker (tansu on loopback).

use eddy_kafka::testing::Broker;
use eddy_kafka::{block_on, Kafka, Producer, Reader, ReaderEvent, StartAt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads until every partition is caught up at its end offset; (partition, offset, value).
fn read_to_end(
    broker: &str,
    topic: &str,
    from: Vec<(i32, i64)>,
    ends: &[i64],
) -> Vec<(i32, i64, String)> {
    let mut reader = Reader::start(broker, topic, from.clone()).unwrap();
    let mut next: BTreeMap<i32, i64> = from.into_iter().collect();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while next.iter().any(|(&p, &o)| o < ends[p as usize]) {
        assert!(Instant::now() < deadline, "reading stalled at {next:?}");
        if let Some(e) = reader.failure() {
            panic!("{e}");
        }
        let mut idle = true;
        for p in 0..ends.len() as i32 {
            if let Some(ReaderEvent::Records(f)) = reader.try_next(p) {
                idle = false;
                for r in f.records {
                    assert_eq!(
                        r.offset, next[&f.partition],
                        "offsets in order, none skipped"
                    );
                    next.insert(f.partition, r.offset + 1);
                    got.push((
                        f.partition,
                        r.offset,
                        String::from_utf8(r.record.value.unwrap()).unwrap(),
                    ));
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    got
}

#[test]
fn acknowledged_records_are_read_once_in_order_and_from_any_offset() {
    let broker = Broker::start().expect("a Kafka broker");
    let address = broker.address();
    let topic = "events";
    let (ends, sent) = block_on(async {
        let kafka = Arc::new(Kafka::connect(&address).await.unwrap());
        assert_eq!(kafka.ensure_topic(topic, 3).await.unwrap(), 3);
        assert_eq!(
            kafka.ensure_topic(topic, 5).await.unwrap(),
            3,
            "an existing topic keeps its partitions"
        );
        let producer = Arc::new(Producer::new(Arc::clone(&kafka)));
        // Concurrent sends, as from many HTTP requests; each returns with its offset.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..3000 {
            let producer = Arc::clone(&producer);
            tasks.spawn(async move {
                let key = format!("session-{}", i % 50);
                let (p, o) = producer
                    .send(
                        topic,
                        Some(key.clone().into_bytes()),
                        format!("{{\"n\":{i}}}").into_bytes(),
                    )
                    .await
                    .unwrap();
                (i, key, p, o)
            });
        }
        let mut sent = Vec::new();
        while let Some(r) = tasks.join_next().await {
            sent.push(r.unwrap());
        }
        (kafka.end_offsets(topic).await.unwrap(), sent)
    })
    .unwrap();
    assert_eq!(ends.iter().sum::<i64>(), 3000);
    // One key, one partition.
    let mut partition_of = BTreeMap::new();
    for (_, key, p, _) in &sent {
        assert_eq!(*partition_of.entry(key.clone()).or_insert(*p), *p);
    }
    let all = read_to_end(&address, topic, vec![(0, 0), (1, 0), (2, 0)], &ends);
    assert_eq!(all.len(), 3000);
    let mut values: Vec<&str> = all.iter().map(|(_, _, v)| v.as_str()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 3000, "no record twice");
    for (i, _, p, o) in &sent {
        assert!(
            all.contains(&(*p, *o, format!("{{\"n\":{i}}}"))),
            "acknowledged record {i} is where its offset says"
        );
    }
    // Resuming from checkpointed offsets reads exactly the rest.
    let middle: Vec<(i32, i64)> = (0..3).map(|p| (p, ends[p as usize] / 2)).collect();
    let rest = read_to_end(&address, topic, middle.clone(), &ends);
    let expected: usize = (0..3).map(|p| (ends[p] - ends[p] / 2) as usize).sum();
    assert_eq!(rest.len(), expected);
    assert!(rest.iter().all(|(p, o, _)| *o >= middle[*p as usize].1));
    let starts = block_on(async {
        let kafka = Kafka::connect(&address).await.unwrap();
        eddy_kafka::start_offsets(&kafka, topic, &[0, 1, 2], StartAt::Latest)
            .await
            .unwrap()
    })
    .unwrap();
    assert_eq!(starts.iter().map(|(_, o)| *o).collect::<Vec<_>>(), ends);
}

#[test]
fn unreachable_brokers_and_missing_topics_are_named() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let started = Instant::now();
    let e = block_on(Kafka::connect(&dead))
        .unwrap()
        .err()
        .expect("no broker there");
    assert!(
        e.to_string()
            .contains(&format!("cannot reach Kafka at `{dead}`")),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let broker = Broker::start().expect("a Kafka broker");
    let e = block_on(async {
        let kafka = Kafka::connect(&broker.address()).await.unwrap();
        kafka.partition_count("nope").await.unwrap_err()
    })
    .unwrap();
    assert!(e.to_string().contains("topic `nope` does not exist"), "{e}");
}

#[test]
fn a_broker_with_sqlite_storage_keeps_its_records_across_a_crash() {
    use eddy_kafka::testing::Storage;
    let mut broker = Broker::start_with(Storage::Sqlite).expect("a Kafka broker");
    let address = broker.address();
    let topic = "kept";
    let sent = block_on(async {
        let kafka = Arc::new(Kafka::connect(&address).await.unwrap());
        kafka.ensure_topic(topic, 2).await.unwrap();
        let producer = Producer::new(Arc::clone(&kafka));
        let mut sent = Vec::new();
        for i in 0..200 {
            let (p, o) = producer
                .send(topic, None, format!("{{\"n\":{i}}}").into_bytes())
                .await
                .unwrap();
            sent.push((p, o, format!("{{\"n\":{i}}}")));
        }
        sent
    })
    .unwrap();
    broker.kill();
    broker.start_again().expect("the broker starts again");
    let ends: Vec<i64> = (0..2)
        .map(|p| {
            sent.iter()
                .filter(|(q, _, _)| *q == p)
                .map(|(_, o, _)| o + 1)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut got = read_to_end(&address, topic, vec![(0, 0), (1, 0)], &ends);
    got.sort();
    let mut sent = sent;
    sent.sort();
    assert_eq!(got, sent, "every acknowledged record survives the crash");
}

/// Records sent one after the other are appended in that order, also when they span many
/// requests and when the topic was not prepared: the ingest API sends a request's events
/// together and answers once all are stored, and a currency's rates or a session's clicks out
/// of order change the jobs' results. Some records are large, so requests are cut by size, and
/// the runtime has several threads, as the ingest API's has; with SQLite storage tansu commits
/// concurrent requests in any order.
#[test]
fn records_of_a_partition_are_appended_in_the_order_they_were_sent() {
    use eddy_kafka::testing::Storage;
    for storage in [Storage::Memory, Storage::Sqlite] {
        let broker = Broker::start_with(storage).expect("a Kafka broker");
        let address = broker.address();
        let n = 400;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        for (topic, prepared) in [("prepared", true), ("unprepared", false)] {
            let offsets = runtime.block_on(async {
                let kafka = Arc::new(Kafka::connect(&address).await.unwrap());
                kafka.ensure_topic(topic, 1).await.unwrap();
                let producer = Producer::new(kafka);
                if prepared {
                    producer.prepare(topic).await.unwrap();
                }
                // One request's sends, first polled in order (as the ingest API's).
                let sends = (0..n).map(|i| {
                    let pad = if i % 4 == 0 { 100_000 } else { 10 };
                    let value = format!("{i} {}", "x".repeat(pad));
                    producer.send(topic, None, value.into_bytes())
                });
                let acks = futures::future::join_all(sends).await;
                acks.into_iter().map(|a| a.unwrap().1).collect::<Vec<_>>()
            });
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "{storage:?}, {topic}: acknowledged offsets follow the order of sending"
            );
            let got = read_to_end(&address, topic, vec![(0, 0)], &[n as i64]);
            let values: Vec<usize> = got
                .iter()
                .map(|(_, _, v)| v.split(' ').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(
                values,
                (0..n).collect::<Vec<_>>(),
                "{storage:?}, {topic}: read back in order"
            );
        }
    }
}
