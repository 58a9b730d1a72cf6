//! Tests of the Nexmark format against hand-written lines and against the shared data set
//! (`/work/shared/nexmark`, skipped with a message when absent).

use super::*;
use ::nexmark::EventGenerator;
use eddy_runtime::types::{parse_timestamp, Row, Value};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

const SHARED_EVENTS: &str = "/work/shared/nexmark/events-100k.jsonl.gz";
const BASE_TIME: u64 = 1_767_225_600_000;

const PERSON_LINE: &str = r#"{"event_type":0,"person":{"id":1000,"name":"vicky noris","emailAddress":"yplkvgz@qbxfg.com","creditCard":"7878 5821 1864 2539","city":"cheyenne","state":"az","dateTime":"2026-01-01 00:00:00.000","extra":"lwai"},"auction":null,"bid":null}"#;
const AUCTION_LINE: &str = r#"{"event_type":1,"person":null,"auction":{"id":1000,"itemName":"sbei","description":"gvse","initialBid":595843,"reserve":691876,"dateTime":"2026-01-01 00:00:00.001","expires":"2026-01-01 00:00:01.697","seller":1000,"category":12,"extra":"uama"},"bid":null}"#;
const BID_LINE: &str = r#"{"event_type":2,"person":null,"auction":null,"bid":{"auction":1000,"bidder":1001,"price":73134520,"channel":"channel-7568","url":"https://www.nexmark.com/rswp/bsu/_gzj/item.htm?query=1&channel_id=163053568","dateTime":"2026-01-01 00:00:00.004","extra":"tjeg"}}"#;

fn ts(text: &str) -> Value {
    Value::Timestamp(parse_timestamp(text).unwrap())
}

fn bid_row() -> Row {
    Row::insert(vec![
        Value::Int(1000),
        Value::Int(1001),
        Value::Int(73134520),
        Value::str("channel-7568"),
        Value::str("https://www.nexmark.com/rswp/bsu/_gzj/item.htm?query=1&channel_id=163053568"),
        ts("2026-01-01 00:00:00.004"),
        Value::str("tjeg"),
    ])
}

fn parse_all(line: &str) -> Result<Option<(NexmarkTable, Row)>, FormatError> {
    NexmarkParser::all_columns().parse(line.as_bytes())
}

fn error_of(line: &str) -> String {
    parse_all(line).unwrap_err().0
}

#[test]
fn tables_and_schemas() {
    assert_eq!(NexmarkTable::from_name("BID"), Some(NexmarkTable::Bid));
    assert_eq!(NexmarkTable::from_name("bids"), None);
    for t in NexmarkTable::ALL {
        assert_eq!(NexmarkTable::from_name(t.name()), Some(t));
        assert_eq!(t.schema().fields[t.time_column()].name, "dateTime");
        assert_eq!(NexmarkTable::ALL[t.index()], t);
    }
    assert_eq!(
        NexmarkTable::Person.schema().names(),
        "id, name, emailAddress, creditCard, city, state, dateTime, extra"
    );
    assert_eq!(
        NexmarkTable::Auction.schema().names(),
        "id, itemName, description, initialBid, reserve, dateTime, expires, seller, category, extra"
    );
    assert_eq!(
        NexmarkTable::Bid.schema().names(),
        "auction, bidder, price, channel, url, dateTime, extra"
    );
}

#[test]
fn parses_the_three_event_types() {
    let (t, row) = parse_all(PERSON_LINE).unwrap().unwrap();
    assert_eq!(t, NexmarkTable::Person);
    assert_eq!(
        row.values,
        vec![
            Value::Int(1000),
            Value::str("vicky noris"),
            Value::str("yplkvgz@qbxfg.com"),
            Value::str("7878 5821 1864 2539"),
            Value::str("cheyenne"),
            Value::str("az"),
            ts("2026-01-01 00:00:00.000"),
            Value::str("lwai"),
        ]
    );
    let (t, row) = parse_all(AUCTION_LINE).unwrap().unwrap();
    assert_eq!(t, NexmarkTable::Auction);
    assert_eq!(
        row.values,
        vec![
            Value::Int(1000),
            Value::str("sbei"),
            Value::str("gvse"),
            Value::Int(595843),
            Value::Int(691876),
            ts("2026-01-01 00:00:00.001"),
            ts("2026-01-01 00:00:01.697"),
            Value::Int(1000),
            Value::Int(12),
            Value::str("uama"),
        ]
    );
    assert_eq!(
        parse_all(BID_LINE).unwrap(),
        Some((NexmarkTable::Bid, bid_row()))
    );
    // Line endings and blank lines.
    assert_eq!(
        parse_all(&format!("{BID_LINE}\r\n")).unwrap(),
        Some((NexmarkTable::Bid, bid_row()))
    );
    assert_eq!(parse_all("  \n").unwrap(), None);
}

#[test]
fn accepts_any_json_layout() {
    // Keys in another order, event_type last, whitespace, escapes, unknown keys with nested
    // values, null text fields.
    let line = r#" { "bid" : { "extra" : "t\u006aeg", "dateTime":"2026-01-01T00:00:00.004Z",
        "url":"https:\/\/www.nexmark.com\/rswp\/bsu\/_gzj\/item.htm?query=1&channel_id=163053568",
        "unknown": {"a": [1, 2, {"b": "}"}]}, "channel":"channel-7568", "price":73134520,
        "bidder":1001, "auction":1000 },
        "person" : null, "auction": null, "other": [ ], "event_type" : 2 } "#;
    assert_eq!(
        parse_all(line).unwrap(),
        Some((NexmarkTable::Bid, bid_row()))
    );

    let line = r#"{"event_type":2,"bid":{"auction":1,"bidder":2,"price":3,"channel":null,"dateTime":"2026-01-01 00:00:00.000","extra":"\ud83d\ude00 \"q\" \\ \n"}}"#;
    let (_, row) = parse_all(line).unwrap().unwrap();
    assert_eq!(row.values[3], Value::Null);
    assert_eq!(row.values[4], Value::Null);
    assert_eq!(row.values[6], Value::str("😀 \"q\" \\ \n"));
}

#[test]
fn projection_and_unwanted_tables() {
    // q2: only auction, price, dateTime of bids; persons and auctions unwanted.
    let mask =
        |cols: &[usize], n: usize| Some((0..n).map(|i| cols.contains(&i)).collect::<Vec<_>>());
    let mut parser = NexmarkParser::new([None, None, mask(&[0, 2, 5], 7)]);
    assert_eq!(parser.parse(PERSON_LINE.as_bytes()).unwrap(), None);
    assert_eq!(parser.parse(AUCTION_LINE.as_bytes()).unwrap(), None);
    // Lines of unwanted tables are not looked at past event_type.
    assert_eq!(parser.parse(br#"{"event_type":0, garbage"#).unwrap(), None);
    let (_, row) = parser.parse(BID_LINE.as_bytes()).unwrap().unwrap();
    assert_eq!(
        row.values,
        vec![
            Value::Int(1000),
            Value::Null,
            Value::Int(73134520),
            Value::Null,
            Value::Null,
            ts("2026-01-01 00:00:00.004"),
            Value::Null,
        ]
    );
    // Unneeded columns are not decoded: a bad bidder does not matter.
    let line = BID_LINE.replace("\"bidder\":1001", "\"bidder\":\"x\"");
    assert!(parser.parse(line.as_bytes()).unwrap().is_some());
    assert!(parse_all(&line).is_err());

    // The generator path honours the same masks.
    let event = EventGenerator::new(generator_config(BASE_TIME, 1000))
        .nth(4)
        .unwrap();
    let (t, row) = event_to_row(event, &[None, None, mask(&[0, 2, 5], 7)]).unwrap();
    assert_eq!(t, NexmarkTable::Bid);
    assert_eq!(row, parser.parse(BID_LINE.as_bytes()).unwrap().unwrap().1);
    let person = EventGenerator::new(generator_config(BASE_TIME, 1000))
        .next()
        .unwrap();
    assert_eq!(event_to_row(person, &[None, None, mask(&[0], 7)]), None);
}

#[test]
fn malformed_lines_give_errors_naming_the_field() {
    let bad_price = BID_LINE.replace("73134520", "\"abc\"");
    assert_eq!(
        error_of(&bad_price),
        r#"bid.price: expected an integer, found "abc""#
    );
    assert_eq!(
        error_of(&BID_LINE.replace("73134520", "1.5")),
        "bid.price: expected an integer, found 1.5"
    );
    assert_eq!(
        error_of(&BID_LINE.replace("73134520", "99999999999999999999")),
        "bid.price: expected an integer in range, found 99999999999999999999"
    );
    assert_eq!(
        error_of(&BID_LINE.replace("73134520", "null")),
        "bid.price: expected an integer, found null"
    );
    assert_eq!(
        error_of(&BID_LINE.replace("\"price\":73134520,", "")),
        "bid.price: missing"
    );
    assert_eq!(
        error_of(&BID_LINE.replace("2026-01-01 00:00:00.004", "yesterday")),
        "bid.dateTime: expected a timestamp ('YYYY-MM-DD HH:MM:SS.mmm', ISO 8601, or epoch milliseconds), found \"yesterday\""
    );
    assert_eq!(
        error_of(&BID_LINE.replace("\"channel-7568\"", "7568")),
        "bid.channel: expected a string, found 7568"
    );
    assert_eq!(
        error_of(&PERSON_LINE.replace("\"event_type\":0,", "")),
        "event_type: missing"
    );
    assert_eq!(
        error_of(&PERSON_LINE.replace("\"event_type\":0", "\"event_type\":7")),
        "event_type: expected 0, 1 or 2, found 7"
    );
    assert_eq!(
        error_of(&PERSON_LINE.replace("\"event_type\":0", "\"event_type\":\"0\"")),
        "event_type: expected 0, 1 or 2, found \"0\""
    );
    assert_eq!(
        error_of(r#"{"event_type":2,"person":null,"auction":null,"bid":null}"#),
        "bid: expected an object for event_type 2, found null"
    );
    assert_eq!(
        error_of(r#"{"bid":null,"event_type":2}"#),
        "bid: expected an object for event_type 2, found null"
    );
    assert_eq!(
        error_of(r#"{"event_type":2}"#),
        "bid: missing (event_type is 2)"
    );
    assert_eq!(
        error_of(r#"{"event_type":2,"bid":[1]}"#),
        "bid: expected an object, found an array"
    );
    assert_eq!(
        error_of(&format!("{BID_LINE}x")),
        format!(
            "invalid JSON at byte {}: unexpected text after the JSON object",
            BID_LINE.len()
        )
    );
    let url = BID_LINE.find("https").unwrap();
    assert_eq!(
        error_of(&BID_LINE[..url + 10]),
        format!(
            "bid.url: invalid JSON at byte {}: unterminated string",
            url - 1
        )
    );
    assert_eq!(
        error_of("[]"),
        "invalid JSON at byte 0: expected '{' at the start of the line"
    );
    assert!(
        error_of(&BID_LINE.replace("\"extra\":\"tjeg\"", "\"extra\":\"\\q\""))
            .contains("invalid escape")
    );
    assert!(
        error_of(&BID_LINE.replace("\"extra\":\"tjeg\"", "\"extra\":\"\\ud800\""))
            .contains("unpaired surrogate")
    );
    assert!(
        error_of(&BID_LINE.replace("\"person\":null", "\"person\":nul"))
            .starts_with("invalid JSON")
    );
    let invalid_utf8 = BID_LINE
        .replace("tjeg", "tj\u{0}eg")
        .replace('\u{0}', "\\u0000");
    assert!(parse_all(&invalid_utf8).is_ok());
    let mut bytes = BID_LINE.as_bytes().to_vec();
    let at = BID_LINE.find("tjeg").unwrap();
    bytes[at] = 0xff;
    assert_eq!(
        NexmarkParser::all_columns().parse(&bytes).unwrap_err().0,
        "bid.extra: invalid UTF-8 in string"
    );
}

/// The shared input, decompressed, or None (with a message) when /work/shared is absent.
fn shared_events() -> Option<Vec<u8>> {
    if !Path::new(SHARED_EVENTS).exists() {
        eprintln!("skipping: {SHARED_EVENTS} is absent");
        return None;
    }
    let file = std::fs::File::open(SHARED_EVENTS).unwrap();
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut text)
        .unwrap();
    Some(text)
}

/// Checks the generator against the first `n` lines of the shared file.
fn check_generator_reproduces_shared_file(n: usize) {
    let Some(text) = shared_events() else { return };
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 100_000);
    let generator = EventGenerator::new(generator_config(BASE_TIME, 1000));
    let mut parser = NexmarkParser::all_columns();
    let columns = [Some(vec![]), Some(vec![]), Some(vec![])];
    for (i, event) in generator.take(n).enumerate() {
        let line = event_to_json_line(&event);
        assert_eq!(line.as_bytes(), lines[i], "line {} differs", i + 1);
        // The generator's rows equal the parsed rows.
        let parsed = parser.parse(lines[i]).unwrap();
        assert_eq!(parsed, event_to_row(event, &columns), "line {}", i + 1);
    }
}

/// All 100,000 lines (about 2 s in a debug build): the generator is a faithful substitute for
/// the shared input file.
#[test]
fn generator_reproduces_the_shared_file() {
    check_generator_reproduces_shared_file(100_000);
}

/// Every line of the shared file parses, with the counts the README states.
#[test]
fn parses_the_shared_file() {
    let Some(text) = shared_events() else { return };
    let mut parser = NexmarkParser::all_columns();
    let mut counts = [0usize; 3];
    let mut last_time = i64::MIN;
    for line in text.split(|&b| b == b'\n') {
        if let Some((t, row)) = parser.parse(line).unwrap() {
            counts[t.index()] += 1;
            let time = row.values[t.time_column()].as_timestamp().unwrap();
            assert!(time >= last_time);
            last_time = time;
        }
    }
    assert_eq!(counts, [2_000, 6_000, 92_000]);
    assert_eq!(
        last_time,
        parse_timestamp("2026-01-01 00:01:39.999").unwrap()
    );
}

/// Parse throughput on the shared file:
/// `cargo test --release -p eddy-operators format::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let Some(text) = shared_events() else { return };
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let all = |n: usize| Some(vec![true; n]);
    let pick =
        |cols: &[usize], n: usize| Some((0..n).map(|i| cols.contains(&i)).collect::<Vec<_>>());
    let cases: [(&str, [Option<Vec<bool>>; 3]); 4] = [
        ("all tables, all columns", [all(8), all(10), all(7)]),
        ("q0: bid, all columns", [None, None, all(7)]),
        (
            "q2: bid auction/price/dateTime",
            [None, None, pick(&[0, 2, 5], 7)],
        ),
        (
            "q8: person id/name/dateTime, auction seller/dateTime",
            [pick(&[0, 1, 6], 8), pick(&[5, 7], 10), None],
        ),
    ];
    for (name, columns) in cases {
        let mut parser = NexmarkParser::new(columns);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            let mut rows = 0usize;
            for line in &lines {
                if parser.parse(line).unwrap().is_some() {
                    rows += 1;
                }
            }
            std::hint::black_box(rows);
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{name:55} {:>6.2} M lines/s ({:.0} ns/line, {:.0} MB/s)",
            lines.len() as f64 / best / 1e6,
            best * 1e9 / lines.len() as f64,
            text.len() as f64 / best / 1e6
        );
    }
    let start = Instant::now();
    let mut out = Vec::with_capacity(64 << 20);
    let mut parser = NexmarkParser::new([None, None, all(7)]);
    let schema = NexmarkTable::Bid.schema();
    let rows: Vec<Row> = lines
        .iter()
        .filter_map(|l| parser.parse(l).unwrap())
        .map(|(_, r)| r)
        .collect();
    let parse_done = start.elapsed();
    let start = Instant::now();
    for row in &rows {
        write_json_row(&schema, &row.values, &mut out);
    }
    let write = start.elapsed().as_secs_f64();
    println!(
        "write_json_row (bid rows)                              {:>6.2} M rows/s ({} rows, parse took {parse_done:?})",
        rows.len() as f64 / write / 1e6,
        rows.len()
    );
}
