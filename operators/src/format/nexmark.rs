//! The Nexmark input: the nested JSON-lines layout of Flink's Nexmark source (see
//! `shared/nexmark/README.md`), and the built-in generator that produces the same events.
//!
//! Parsing this format is the first cost of every Nexmark query, so [`NexmarkParser`] is a
//! hand-rolled scanner that never builds a document: it stops at `event_type` for tables the job
//! does not read, and materialises only the columns the job needs.

use super::scanner::{read_value, unescape, ReadError, Scanner};
use super::writer::{write_i64, write_json_string, write_timestamp};
use super::FormatError;
use ::nexmark::config::NexmarkConfig;
use ::nexmark::event::Event;
use eddy_runtime::types::{DataType, Field, Row, Schema, Timestamp, Value};
use std::sync::Arc;

/// Which Nexmark table an event belongs to; also the output port index of a Nexmark source
/// (person=0, auction=1, bid=2), so that one source feeds the three table views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NexmarkTable {
    /// New users (`event_type` 0): the sellers and bidders that auctions and bids refer to.
    Person = 0,
    /// Items put up for sale (`event_type` 1), each open until `expires`.
    Auction = 1,
    /// Offers on auctions (`event_type` 2): 92% of the stream, hence the parser's fast paths.
    Bid = 2,
}

use DataType::{BigInt, String as Text, Timestamp as Time};

/// Column names and types as in the Flink views of `shared/flink/queries/ddl.sql`.
const PERSON_COLUMNS: [(&str, DataType); 8] = [
    ("id", BigInt),
    ("name", Text),
    ("emailAddress", Text),
    ("creditCard", Text),
    ("city", Text),
    ("state", Text),
    ("dateTime", Time),
    ("extra", Text),
];
const AUCTION_COLUMNS: [(&str, DataType); 10] = [
    ("id", BigInt),
    ("itemName", Text),
    ("description", Text),
    ("initialBid", BigInt),
    ("reserve", BigInt),
    ("dateTime", Time),
    ("expires", Time),
    ("seller", BigInt),
    ("category", BigInt),
    ("extra", Text),
];
const BID_COLUMNS: [(&str, DataType); 7] = [
    ("auction", BigInt),
    ("bidder", BigInt),
    ("price", BigInt),
    ("channel", Text),
    ("url", Text),
    ("dateTime", Time),
    ("extra", Text),
];

impl NexmarkTable {
    /// All tables in port order, for iterating over a source's outputs.
    pub const ALL: [NexmarkTable; 3] = [
        NexmarkTable::Person,
        NexmarkTable::Auction,
        NexmarkTable::Bid,
    ];

    /// The table's SQL name, which is also its key in the JSON layout.
    pub fn name(self) -> &'static str {
        match self {
            NexmarkTable::Person => "person",
            NexmarkTable::Auction => "auction",
            NexmarkTable::Bid => "bid",
        }
    }

    /// The table named `name` (ASCII case-insensitive, as SQL identifiers are).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The port index (and index into per-table arrays such as the parser's column masks).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The table's columns, as the Flink views declare them, so that plans and expected results
    /// agree on names, order and types.
    pub fn schema(self) -> Schema {
        Schema::new(
            self.columns()
                .iter()
                .map(|&(name, ty)| Field::new(name, ty))
                .collect(),
        )
    }

    /// The index of `dateTime`, the event-time column that watermarks are derived from.
    pub fn time_column(self) -> usize {
        match self {
            NexmarkTable::Person => 6,
            NexmarkTable::Auction | NexmarkTable::Bid => 5,
        }
    }

    fn columns(self) -> &'static [(&'static str, DataType)] {
        match self {
            NexmarkTable::Person => &PERSON_COLUMNS,
            NexmarkTable::Auction => &AUCTION_COLUMNS,
            NexmarkTable::Bid => &BID_COLUMNS,
        }
    }

    fn from_event_type(event_type: i64) -> Option<Self> {
        match event_type {
            0 => Some(NexmarkTable::Person),
            1 => Some(NexmarkTable::Auction),
            2 => Some(NexmarkTable::Bid),
            _ => None,
        }
    }

    fn from_key(key: &[u8]) -> Option<Self> {
        match key {
            b"person" => Some(NexmarkTable::Person),
            b"auction" => Some(NexmarkTable::Auction),
            b"bid" => Some(NexmarkTable::Bid),
            _ => None,
        }
    }
}

/// Numbers and timestamps are always written by the generator and event time must exist, so a
/// missing or null one is a broken line; text columns may be NULL.
fn is_required(ty: DataType) -> bool {
    ty != DataType::String
}

/// Turns a per-table column mask into bits; None = table not wanted. Entries missing from a
/// short mask count as needed, so that a mistake costs speed, never silently lost data.
fn mask_bits(columns: &[Option<Vec<bool>>; 3]) -> [Option<u16>; 3] {
    let mut bits = [None; 3];
    for table in NexmarkTable::ALL {
        if let Some(mask) = &columns[table.index()] {
            let mut b = 0u16;
            for i in 0..table.columns().len() {
                if mask.get(i).copied().unwrap_or(true) {
                    b |= 1 << i;
                }
            }
            bits[table.index()] = Some(b);
        }
    }
    bits
}

/// Parses lines of the nested Nexmark JSON layout into rows of the three table schemas, doing
/// only the work the job needs (see [`NexmarkParser::new`]). Reusable across lines: it keeps a
/// scratch buffer for strings with escapes.
#[derive(Debug, Clone)]
pub struct NexmarkParser {
    masks: [Option<u16>; 3],
    scratch: Vec<u8>,
}

impl NexmarkParser {
    /// `columns[table]` is None when the job does not read that table at all (its lines are
    /// skipped after `event_type`), else a mask of the columns it needs (unneeded columns become
    /// NULL without being decoded: projection pushdown).
    pub fn new(columns: [Option<Vec<bool>>; 3]) -> Self {
        NexmarkParser {
            masks: mask_bits(&columns),
            scratch: Vec::new(),
        }
    }

    /// A parser that decodes every column of every table, for tools and tests.
    pub fn all_columns() -> Self {
        Self::new([Some(vec![]), Some(vec![]), Some(vec![])])
    }

    /// Parses one line. Ok(None) means "nothing to emit": the line belongs to an unwanted table
    /// (such lines are not validated beyond `event_type`) or is blank. A line ending ('\n',
    /// "\r\n") is allowed. Errors name the field, e.g. `bid.price: expected an integer, found
    /// "abc"`.
    pub fn parse(&mut self, line: &[u8]) -> Result<Option<(NexmarkTable, Row)>, FormatError> {
        let mut sc = Scanner::new(line);
        if sc.at_end() {
            return Ok(None);
        }
        sc.expect(b'{', "expected '{' at the start of the line")?;
        let mut table: Option<NexmarkTable> = None;
        // Where each table's sub-object starts when it came before `event_type`.
        let mut pending: [Option<usize>; 3] = [None; 3];
        let mut row: Option<Row> = None;
        if sc.peek_ws() == Some(b'}') {
            sc.advance(1);
        } else {
            loop {
                let (raw, escaped) = sc.string()?;
                let owned;
                let key: &[u8] = if escaped {
                    owned = unescape_key(raw, &sc)?;
                    &owned
                } else {
                    raw
                };
                sc.expect(b':', "expected ':' after a key")?;
                if key == b"event_type" {
                    let t = read_event_type(&mut sc)?;
                    if table.is_some_and(|old| old != t) {
                        return Err(FormatError(
                            "event_type: appears twice with different values".into(),
                        ));
                    }
                    table = Some(t);
                    if self.masks[t.index()].is_none() {
                        return Ok(None);
                    }
                } else if let Some(k) = NexmarkTable::from_key(key) {
                    match table {
                        Some(t) if t == k => row = Some(self.parse_record(&mut sc, t)?),
                        Some(_) => sc.skip_value()?,
                        None => {
                            sc.skip_ws();
                            pending[k.index()] = Some(sc.pos());
                            sc.skip_value()?;
                        }
                    }
                } else {
                    sc.skip_value()?;
                }
                match sc.peek_ws() {
                    Some(b',') => sc.advance(1),
                    Some(b'}') => {
                        sc.advance(1);
                        break;
                    }
                    _ => return Err(sc.error("expected ',' or '}' after a value").into()),
                }
            }
        }
        if !sc.at_end() {
            return Err(sc.error("unexpected text after the JSON object").into());
        }
        let table = table.ok_or_else(|| FormatError("event_type: missing".into()))?;
        let row = match (row, pending[table.index()]) {
            (Some(row), _) => row,
            (None, Some(pos)) => self.parse_record(&mut Scanner::at(line, pos), table)?,
            (None, None) => {
                return Err(FormatError(format!(
                    "{}: missing (event_type is {})",
                    table.name(),
                    table.index()
                )))
            }
        };
        Ok(Some((table, row)))
    }

    /// Parses the sub-object of `table` at the cursor into a row.
    fn parse_record(
        &mut self,
        sc: &mut Scanner<'_>,
        table: NexmarkTable,
    ) -> Result<Row, FormatError> {
        let name = table.name();
        let columns = table.columns();
        let mask = self.masks[table.index()].unwrap_or(0);
        let start = sc.pos();
        match sc.peek_ws() {
            Some(b'{') => sc.advance(1),
            Some(b'n') if sc.null() => {
                return Err(FormatError(format!(
                    "{name}: expected an object for event_type {}, found null",
                    table.index()
                )))
            }
            _ => return Err(sc.mismatch(start, "an object").named(name)),
        }
        let mut values = vec![Value::Null; columns.len()];
        let mut seen = 0u16;
        // Keys usually come in schema order: try the column after the last one first.
        let mut next = 0;
        if sc.peek_ws() == Some(b'}') {
            sc.advance(1);
        } else {
            loop {
                let (raw, escaped) = sc.string()?;
                let owned;
                let key: &[u8] = if escaped {
                    owned = unescape_key(raw, sc)?;
                    &owned
                } else {
                    raw
                };
                sc.expect(b':', "expected ':' after a key")?;
                let column = if columns.get(next).is_some_and(|c| c.0.as_bytes() == key) {
                    Some(next)
                } else {
                    columns.iter().position(|c| c.0.as_bytes() == key)
                };
                match column {
                    Some(i) if mask & (1 << i) != 0 => {
                        let ty = columns[i].1;
                        let value = read_value(sc, ty, &mut self.scratch)
                            .map_err(|e| e.named(format_args!("{name}.{}", columns[i].0)))?;
                        if value.is_null() && is_required(ty) {
                            let expected = ReadError::Mismatch(format!(
                                "expected {}, found null",
                                super::scanner::expected_text(ty)
                            ));
                            return Err(expected.named(format_args!("{name}.{}", columns[i].0)));
                        }
                        values[i] = value;
                        seen |= 1 << i;
                        next = i + 1;
                    }
                    Some(i) => {
                        sc.skip_value()?;
                        next = i + 1;
                    }
                    None => sc.skip_value()?,
                }
                match sc.peek_ws() {
                    Some(b',') => sc.advance(1),
                    Some(b'}') => {
                        sc.advance(1);
                        break;
                    }
                    _ => return Err(sc.error("expected ',' or '}' after a value").into()),
                }
            }
        }
        for (i, &(column, ty)) in columns.iter().enumerate() {
            if mask & (1 << i) != 0 && seen & (1 << i) == 0 && is_required(ty) {
                return Err(FormatError(format!("{name}.{column}: missing")));
            }
        }
        Ok(Row::insert(values))
    }
}

/// Decodes a key that contains escapes (rare: only for matching it against known names).
fn unescape_key(raw: &[u8], sc: &Scanner<'_>) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    unescape(raw, &mut out).map_err(|what| FormatError::from(sc.error(what)))?;
    Ok(out)
}

/// Reads the value of `event_type`: the JSON integer 0, 1 or 2.
fn read_event_type(sc: &mut Scanner<'_>) -> Result<NexmarkTable, FormatError> {
    let start = sc.pos();
    let value = read_value(sc, DataType::BigInt, &mut Vec::new());
    match value {
        Ok(Value::Int(n)) => {
            if let Some(t) = NexmarkTable::from_event_type(n) {
                return Ok(t);
            }
        }
        Err(ReadError::Syntax(e)) => return Err(e.into()),
        _ => {}
    }
    Err(sc.mismatch(start, "0, 1 or 2").named("event_type"))
}

/// A generator id or price as BIGINT (they never exceed i64 in practice; saturate if they did).
fn to_i64(v: usize) -> Value {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A generator time (u64 ms) as TIMESTAMP.
fn to_ts(v: u64) -> Value {
    Value::Timestamp(Timestamp::try_from(v).unwrap_or(Timestamp::MAX))
}

/// Turns generated events into rows with the same schemas as parsed lines, for the built-in
/// generator source (so jobs run without an input file). `columns` works as in
/// [`NexmarkParser::new`]: None for an unwanted table gives None, unneeded columns are NULL.
pub fn event_to_row(event: Event, columns: &[Option<Vec<bool>>; 3]) -> Option<(NexmarkTable, Row)> {
    let table = match &event {
        Event::Person(_) => NexmarkTable::Person,
        Event::Auction(_) => NexmarkTable::Auction,
        Event::Bid(_) => NexmarkTable::Bid,
    };
    let mask = columns[table.index()].as_ref()?;
    let need = |i: usize| mask.get(i).copied().unwrap_or(true);
    let text = |i: usize, s: String| {
        if need(i) {
            Value::Str(Arc::from(s))
        } else {
            Value::Null
        }
    };
    let int = |i: usize, v: usize| if need(i) { to_i64(v) } else { Value::Null };
    let time = |i: usize, v: u64| if need(i) { to_ts(v) } else { Value::Null };
    let values = match event {
        Event::Person(p) => vec![
            int(0, p.id),
            text(1, p.name),
            text(2, p.email_address),
            text(3, p.credit_card),
            text(4, p.city),
            text(5, p.state),
            time(6, p.date_time),
            text(7, p.extra),
        ],
        Event::Auction(a) => vec![
            int(0, a.id),
            text(1, a.item_name),
            text(2, a.description),
            int(3, a.initial_bid),
            int(4, a.reserve),
            time(5, a.date_time),
            time(6, a.expires),
            int(7, a.seller),
            int(8, a.category),
            text(9, a.extra),
        ],
        Event::Bid(b) => vec![
            int(0, b.auction),
            int(1, b.bidder),
            int(2, b.price),
            text(3, b.channel),
            text(4, b.url),
            time(5, b.date_time),
            text(6, b.extra),
        ],
    };
    Some((table, Row::insert(values)))
}

/// The generator configuration the shared data was made with (see `shared/nexmark/README.md`):
/// the crate's defaults except `base_time`, and `first_rate = next_rate = rate_per_sec` so that
/// the rate is constant and event `n` is at `base_time + n * 1000 / rate` ms.
pub fn generator_config(base_time_ms: u64, rate_per_sec: usize) -> NexmarkConfig {
    NexmarkConfig {
        base_time: base_time_ms,
        first_rate: rate_per_sec,
        next_rate: rate_per_sec,
        ..NexmarkConfig::default()
    }
}

/// Writes the first `events` events of the generator with `generator_config(base_time_ms,
/// rate_per_sec)` as JSON lines ([`event_to_json_line`]): the input files that benchmarks give
/// both engines and that tests regenerate instead of shipping.
pub fn write_nexmark_events(
    out: &mut impl std::io::Write,
    events: u64,
    base_time_ms: u64,
    rate_per_sec: usize,
) -> std::io::Result<()> {
    let generator = nexmark::EventGenerator::new(generator_config(base_time_ms, rate_per_sec));
    for event in generator.take(usize::try_from(events).unwrap_or(usize::MAX)) {
        out.write_all(event_to_json_line(&event).as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Renders an event in the layout of `shared/nexmark/events-100k.jsonl.gz` (keys in the README's
/// order, timestamps `YYYY-MM-DD HH:MM:SS.mmm`, no trailing newline), so that the generator can
/// write input files that Flink reads too, and tests can regenerate the shared file.
pub fn event_to_json_line(event: &Event) -> String {
    let mut out = Vec::with_capacity(512);
    let int = |out: &mut Vec<u8>, key: &[u8], v: usize| {
        out.extend_from_slice(key);
        write_i64(i64::try_from(v).unwrap_or(i64::MAX), out);
    };
    let text = |out: &mut Vec<u8>, key: &[u8], v: &str| {
        out.extend_from_slice(key);
        write_json_string(v, out);
    };
    let time = |out: &mut Vec<u8>, key: &[u8], v: u64| {
        out.extend_from_slice(key);
        out.push(b'"');
        write_timestamp(Timestamp::try_from(v).unwrap_or(Timestamp::MAX), &mut *out);
        out.push(b'"');
    };
    match event {
        Event::Person(p) => {
            int(&mut out, br#"{"event_type":0,"person":{"id":"#, p.id);
            text(&mut out, br#","name":"#, &p.name);
            text(&mut out, br#","emailAddress":"#, &p.email_address);
            text(&mut out, br#","creditCard":"#, &p.credit_card);
            text(&mut out, br#","city":"#, &p.city);
            text(&mut out, br#","state":"#, &p.state);
            time(&mut out, br#","dateTime":"#, p.date_time);
            text(&mut out, br#","extra":"#, &p.extra);
            out.extend_from_slice(br#"},"auction":null,"bid":null}"#);
        }
        Event::Auction(a) => {
            int(
                &mut out,
                br#"{"event_type":1,"person":null,"auction":{"id":"#,
                a.id,
            );
            text(&mut out, br#","itemName":"#, &a.item_name);
            text(&mut out, br#","description":"#, &a.description);
            int(&mut out, br#","initialBid":"#, a.initial_bid);
            int(&mut out, br#","reserve":"#, a.reserve);
            time(&mut out, br#","dateTime":"#, a.date_time);
            time(&mut out, br#","expires":"#, a.expires);
            int(&mut out, br#","seller":"#, a.seller);
            int(&mut out, br#","category":"#, a.category);
            text(&mut out, br#","extra":"#, &a.extra);
            out.extend_from_slice(br#"},"bid":null}"#);
        }
        Event::Bid(b) => {
            int(
                &mut out,
                br#"{"event_type":2,"person":null,"auction":null,"bid":{"auction":"#,
                b.auction,
            );
            int(&mut out, br#","bidder":"#, b.bidder);
            int(&mut out, br#","price":"#, b.price);
            text(&mut out, br#","channel":"#, &b.channel);
            text(&mut out, br#","url":"#, &b.url);
            time(&mut out, br#","dateTime":"#, b.date_time);
            text(&mut out, br#","extra":"#, &b.extra);
            out.extend_from_slice(b"}}");
        }
    }
    // Every piece above is valid UTF-8, so this never takes the lossy path.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
