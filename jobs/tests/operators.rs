//! Operators that the Nexmark queries do not cover, each run as a small job through the real
//! compiler, executor, JSON source and file sink, at parallelism 1 and 2, with answers worked
//! out by hand.

use eddy_jobs::{compile_str, CompileOptions};
use eddy_operators::{Factory, RunSettings};
use serde_json::Value;
use std::path::Path;

/// Clicks: user, page, amount (a decimal), ts. Times are seconds after midnight.
const CLICKS: &[(i64, &str, &str, u32)] = &[
    (1, "home", "1.50", 0),
    (2, "cart", "2.25", 1),
    (1, "cart", "0.75", 3),
    (3, "home", "10.00", 4),
    (2, "home", "1.00", 9),
    (1, "buy", "5.00", 12),
    (3, "buy", "3.00", 15),
    (2, "buy", "4.00", 21),
];

fn write_clicks(dir: &Path, name: &str, rows: &[(i64, &str, &str, u32)]) -> String {
    let path = dir.join(name);
    let text: String = rows
        .iter()
        .map(|(user, page, amount, s)| {
            format!(
                "{{\"user\":{user},\"page\":\"{page}\",\"amount\":{amount},\"ts\":\"2026-01-01 00:00:{s:02}.000\"}}\n"
            )
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn source(name: &str, param: &str) -> String {
    format!(
        r#"
[[source]]
name = "{name}"
connector = "file"
format = "json"
path = "${{{param}}}"
columns = [
    {{ name = "user", type = "BIGINT" }},
    {{ name = "page", type = "STRING" }},
    {{ name = "amount", type = "DECIMAL(10, 2)" }},
    {{ name = "ts", type = "TIMESTAMP" }},
]
watermark = {{ column = "ts", delay = "0s" }}
"#
    )
}

/// Compiles job text with an `input` parameter and runs it to the end.
fn execute_job(text: &str, input: &str, parallelism: u32, dir: &Path) {
    let options = CompileOptions {
        params: [("input".to_string(), input.to_string())]
            .into_iter()
            .collect(),
        parallelism: Some(parallelism),
        generate: None,
        topic_files: None,
    };
    let graph = compile_str("test.toml", text, &options).unwrap_or_else(|e| panic!("{e}"));
    eddy_operators::run_to_end(&graph, dir.join("dead.jsonl")).unwrap();
}

/// Runs a job over the clicks at a parallelism and returns the output rows, sorted by text.
fn run(job_body: &str, parallelism: u32) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let input = write_clicks(dir.path(), "clicks.jsonl", CLICKS);
    let output = dir.path().join("out.jsonl");
    let text = format!(
        "[params]\ninput = {{}}\n{}\n{job_body}\n[[sink]]\nname = \"out\"\ninput = \"result\"\nconnector = \"file\"\npath = \"{}\"\n",
        source("clicks", "input"),
        output.display()
    );
    execute_job(&text, &input, parallelism, dir.path());
    let mut rows: Vec<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| {
            // Normalise number rendering through serde_json.
            serde_json::from_str::<Value>(l).unwrap().to_string()
        })
        .collect();
    rows.sort();
    rows
}

fn both(job_body: &str, expected: &[&str]) {
    let mut expected: Vec<String> = expected
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap().to_string())
        .collect();
    expected.sort();
    for p in [1, 2] {
        assert_eq!(run(job_body, p), expected, "parallelism {p}");
    }
}

#[test]
fn tumbling_window_with_every_aggregate() {
    both(
        r#"
[[operator]]
name = "result"
type = "window_aggregate"
input = "clicks"
window = { type = "tumble", time = "ts", size = "10s" }
group_by = ["page"]
aggregates = [
    "count(*) AS n",
    "sum(amount) AS total",
    "min(amount) AS lo",
    "max(user) AS hi",
    "avg(user) AS avg_user",
    "count(DISTINCT user) AS users",
    "count(*) FILTER (WHERE amount > 1) AS big",
]
"#,
        &[
            r#"{"page":"home","window_start":"2026-01-01 00:00:00.000","window_end":"2026-01-01 00:00:10.000","n":3,"total":12.5,"lo":1.0,"hi":3,"avg_user":2,"users":3,"big":2}"#,
            r#"{"page":"cart","window_start":"2026-01-01 00:00:00.000","window_end":"2026-01-01 00:00:10.000","n":2,"total":3.0,"lo":0.75,"hi":2,"avg_user":1,"users":2,"big":1}"#,
            r#"{"page":"buy","window_start":"2026-01-01 00:00:10.000","window_end":"2026-01-01 00:00:20.000","n":2,"total":8.0,"lo":3.0,"hi":3,"avg_user":2,"users":2,"big":2}"#,
            r#"{"page":"buy","window_start":"2026-01-01 00:00:20.000","window_end":"2026-01-01 00:00:30.000","n":1,"total":4.0,"lo":4.0,"hi":2,"avg_user":2,"users":1,"big":1}"#,
        ],
    );
}

#[test]
fn session_windows_merge_rows_closer_than_the_gap() {
    both(
        r#"
[[operator]]
name = "result"
type = "window_aggregate"
input = "clicks"
window = { type = "session", time = "ts", gap = "5s" }
group_by = ["user"]
aggregates = ["count(*) AS n"]
"#,
        &[
            // user 1: 0, 3 (one session), 12; user 2: 1, then 9 (8 s later), 21; user 3: 4, 15
            r#"{"user":1,"window_start":"2026-01-01 00:00:00.000","window_end":"2026-01-01 00:00:08.000","n":2}"#,
            r#"{"user":1,"window_start":"2026-01-01 00:00:12.000","window_end":"2026-01-01 00:00:17.000","n":1}"#,
            r#"{"user":2,"window_start":"2026-01-01 00:00:01.000","window_end":"2026-01-01 00:00:06.000","n":1}"#,
            r#"{"user":2,"window_start":"2026-01-01 00:00:09.000","window_end":"2026-01-01 00:00:14.000","n":1}"#,
            r#"{"user":2,"window_start":"2026-01-01 00:00:21.000","window_end":"2026-01-01 00:00:26.000","n":1}"#,
            r#"{"user":3,"window_start":"2026-01-01 00:00:04.000","window_end":"2026-01-01 00:00:09.000","n":1}"#,
            r#"{"user":3,"window_start":"2026-01-01 00:00:15.000","window_end":"2026-01-01 00:00:20.000","n":1}"#,
        ],
    );
}

#[test]
fn interval_join_pairs_rows_within_the_bounds() {
    // Each click with the same user's other-page clicks 0 to 10 s later (user 3's are 11 s apart).
    both(
        r#"
[[operator]]
name = "later"
type = "key_by"
input = "clicks"
key = ["user"]

[[operator]]
name = "result"
type = "interval_join"
left = "clicks AS A"
right = "later AS B"
on = "A.user = B.user AND A.page <> B.page"
left_time = "ts"
right_time = "ts"
lower = "0s"
upper = "10s"
columns = ["A.user", "A.page AS first", "B.page AS next_page"]
"#,
        &[
            r#"{"user":1,"first":"home","next_page":"cart"}"#,
            r#"{"user":1,"first":"cart","next_page":"buy"}"#,
            r#"{"user":2,"first":"cart","next_page":"home"}"#,
        ],
    );
}

#[test]
fn union_and_filter() {
    both(
        r#"
[[operator]]
name = "homes"
type = "filter"
input = "clicks"
where = "page = 'home'"

[[operator]]
name = "buys"
type = "filter"
input = "clicks"
where = "page = 'buy' AND amount >= 4"

[[operator]]
name = "both"
type = "union"
inputs = ["homes", "buys"]

[[operator]]
name = "result"
type = "select"
input = "both"
columns = ["user", "page"]
"#,
        &[
            r#"{"user":1,"page":"home"}"#,
            r#"{"user":3,"page":"home"}"#,
            r#"{"user":2,"page":"home"}"#,
            r#"{"user":1,"page":"buy"}"#,
            r#"{"user":2,"page":"buy"}"#,
        ],
    );
}

#[test]
fn window_top_n_is_final_per_window() {
    both(
        r#"
[[operator]]
name = "spend"
type = "window_aggregate"
input = "clicks"
window = { type = "tumble", time = "ts", size = "20s" }
group_by = ["user"]
aggregates = ["sum(amount) AS total"]

[[operator]]
name = "result"
type = "top_n"
input = "spend"
partition_by = ["window_end"]
order_by = ["total DESC"]
limit = 2
rank_column = "rank"
window_end = "window_end"
"#,
        &[
            r#"{"user":3,"window_start":"2026-01-01 00:00:00.000","window_end":"2026-01-01 00:00:20.000","total":13.0,"rank":1}"#,
            r#"{"user":1,"window_start":"2026-01-01 00:00:00.000","window_end":"2026-01-01 00:00:20.000","total":7.25,"rank":2}"#,
            r#"{"user":2,"window_start":"2026-01-01 00:00:20.000","window_end":"2026-01-01 00:00:40.000","total":4.0,"rank":1}"#,
        ],
    );
}

#[test]
fn deduplicate_keeps_the_first_row() {
    both(
        r#"
[[operator]]
name = "first"
type = "deduplicate"
input = "clicks"
key = ["user"]
time = "ts"
keep = "first"

[[operator]]
name = "result"
type = "select"
input = "first"
columns = ["user", "page"]
"#,
        &[
            r#"{"user":1,"page":"home"}"#,
            r#"{"user":2,"page":"cart"}"#,
            r#"{"user":3,"page":"home"}"#,
        ],
    );
}

#[test]
fn continuous_top_n_without_rank_keeps_the_best_rows() {
    both(
        r#"
[[operator]]
name = "result"
type = "top_n"
input = "clicks"
partition_by = ["page"]
order_by = ["amount DESC"]
limit = 1
"#,
        &[
            r#"{"user":3,"page":"home","amount":10.0,"ts":"2026-01-01 00:00:04.000"}"#,
            r#"{"user":2,"page":"cart","amount":2.25,"ts":"2026-01-01 00:00:01.000"}"#,
            r#"{"user":1,"page":"buy","amount":5.0,"ts":"2026-01-01 00:00:12.000"}"#,
        ],
    );
}

/// A row that arrives after its window fired is dropped, as Flink drops it without allowed
/// lateness; the other rows are counted normally.
#[test]
fn late_rows_are_dropped_from_closed_windows() {
    let dir = tempfile::tempdir().unwrap();
    // The source emits a watermark every 8 polls of up to 1024 lines: the filler puts the late
    // row after a watermark that has passed 10 s.
    let mut rows = vec![(1, "a", "1", 0)];
    rows.extend(std::iter::repeat_n((1, "a", "1", 11), 9000));
    rows.extend([(1, "a", "1", 2), (1, "a", "1", 12)]);
    let input = write_clicks(dir.path(), "late.jsonl", &rows);
    let output = dir.path().join("out.jsonl");
    let text = format!(
        "[params]\ninput = {{}}\n{}\n[[operator]]\nname = \"w\"\ntype = \"window_aggregate\"\ninput = \"clicks\"\n\
         window = {{ type = \"tumble\", time = \"ts\", size = \"10s\" }}\naggregates = [\"count(*) AS n\"]\n\
         [[sink]]\nname = \"s\"\ninput = \"w\"\nconnector = \"file\"\npath = \"{}\"\n",
        source("clicks", "input"),
        output.display()
    );
    execute_job(&text, &input, 1, dir.path());
    let out = std::fs::read_to_string(&output).unwrap();
    // The row at 2 s arrives after the watermark reached 11 s: window [0, 10) had fired.
    assert!(
        out.contains("\"window_end\":\"2026-01-01 00:00:10.000\",\"n\":1"),
        "{out}"
    );
    assert!(
        out.contains("\"window_end\":\"2026-01-01 00:00:20.000\",\"n\":9001"),
        "{out}"
    );
}

/// Identical rows are ranked separately, across batches (the changelog is a multiset diff).
#[test]
fn continuous_top_n_keeps_identical_rows_apart() {
    let dir = tempfile::tempdir().unwrap();
    // Fillers of another partition push each row of partition `a` into its own batch.
    let mut rows = vec![(1, "a", "5.00", 0)];
    rows.extend(std::iter::repeat_n((9, "f", "1.00", 1), 2000));
    rows.push((1, "a", "5.00", 0));
    rows.extend(std::iter::repeat_n((9, "f", "1.00", 1), 2000));
    rows.push((2, "a", "9.00", 2));
    let input = write_clicks(dir.path(), "dups.jsonl", &rows);
    let output = dir.path().join("out.jsonl");
    let text = format!(
        "[params]\ninput = {{}}\n{}\n[[operator]]\nname = \"t\"\ntype = \"top_n\"\ninput = \"clicks\"\n\
         partition_by = [\"page\"]\norder_by = [\"amount DESC\"]\nlimit = 2\n\
         [[sink]]\nname = \"s\"\ninput = \"t\"\nconnector = \"file\"\npath = \"{}\"\n",
        source("clicks", "input"),
        output.display()
    );
    for p in [1, 2] {
        execute_job(&text, &input, p, dir.path());
        let mut out: Vec<String> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["user"].to_string())
            .collect();
        out.sort();
        // a: the 9.00 row and one of the two identical 5.00 rows; f: two identical fillers.
        assert_eq!(out, vec!["1", "2", "9", "9"], "parallelism {p}");
    }
}

/// Runs a whole job text whose files are written first; the output rows sorted by text.
fn run_files(files: &[(&str, String)], job: &str, parallelism: u32) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut text = job.replace("$OUT", &dir.path().join("out.jsonl").display().to_string());
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        text = text.replace(&format!("${name}"), &path.display().to_string());
    }
    let text = format!("[params]\ninput = {{ default = \"\" }}\n{text}");
    execute_job(&text, "", parallelism, dir.path());
    let mut rows: Vec<String> = std::fs::read_to_string(dir.path().join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
        .collect();
    rows.sort();
    rows
}

fn sorted(expected: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = expected
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap().to_string())
        .collect();
    rows.sort();
    rows
}

#[test]
fn temporal_join_meets_the_version_in_force_at_each_row() {
    // Prices of users' plans from a time on (a versioned table), and the clicks.
    // In time order: the watermark has no delay, so an out-of-order version would be late.
    let versions = [(1, "1.00", 0), (2, "3.00", 5), (1, "2.00", 10), (1, "9.00", 30)]
        .iter()
        .map(|(user, price, s)| {
            format!("{{\"user\":{user},\"page\":\"plan\",\"amount\":{price},\"ts\":\"2026-01-01 00:00:{s:02}.000\"}}\n")
        })
        .collect::<String>();
    let job = format!(
        "{}{}{}",
        source("clicks", "input").replace("${input}", "$clicks.jsonl"),
        source("plans", "input").replace("${input}", "$plans.jsonl"),
        r#"
[[operator]]
name = "result"
type = "temporal_join"
left = "clicks AS C"
right = "plans AS P"
on = "C.`user` = P.`user`"
left_time = "ts"
right_time = "ts"
join_type = "left"
columns = ["C.`user` AS `user`", "SECOND(C.ts) AS s", "P.amount AS price", "C.amount * P.amount AS cost"]

[[sink]]
name = "out"
input = "result"
connector = "file"
path = "$OUT"
"#
    );
    let clicks_text: String = CLICKS
        .iter()
        .map(|(user, page, amount, s)| {
            format!("{{\"user\":{user},\"page\":\"{page}\",\"amount\":{amount},\"ts\":\"2026-01-01 00:00:{s:02}.000\"}}\n")
        })
        .collect();
    let expected = sorted(&[
        r#"{"user":1,"s":0,"price":1.00,"cost":1.5000}"#,
        r#"{"user":2,"s":1,"price":null,"cost":null}"#,
        r#"{"user":1,"s":3,"price":1.00,"cost":0.7500}"#,
        r#"{"user":3,"s":4,"price":null,"cost":null}"#,
        r#"{"user":2,"s":9,"price":3.00,"cost":3.0000}"#,
        r#"{"user":1,"s":12,"price":2.00,"cost":10.0000}"#,
        r#"{"user":3,"s":15,"price":null,"cost":null}"#,
        r#"{"user":2,"s":21,"price":3.00,"cost":12.0000}"#,
    ]);
    for p in [1, 2] {
        let files = [
            ("clicks.jsonl", clicks_text.clone()),
            ("plans.jsonl", versions.clone()),
        ];
        assert_eq!(run_files(&files, &job, p), expected, "parallelism {p}");
    }
    // An inner temporal join drops the clicks without a version.
    let inner = job.replace("join_type = \"left\"\n", "");
    let files = [("clicks.jsonl", clicks_text), ("plans.jsonl", versions)];
    assert_eq!(run_files(&files, &inner, 2).len(), 5);
}

#[test]
fn anomaly_detection_scores_windows_against_their_history() {
    // Two series of 20 minutes; `orders` drops to nothing in minute 15 (a missing window
    // counts as 0) and `visits` spikes in minute 17.
    let mut lines = String::new();
    for minute in 1..=20 {
        let noise = [0, 3, -2, 1, -4][minute % 5];
        if minute != 15 {
            lines.push_str(&format!(
                "{{\"metric\":\"orders\",\"end\":\"2026-01-01 00:{minute:02}:00.000\",\"value\":{}}}\n",
                100 + noise
            ));
        }
        let visits = if minute == 17 {
            5000
        } else {
            1000 + 10 * noise
        };
        lines.push_str(&format!(
            "{{\"metric\":\"visits\",\"end\":\"2026-01-01 00:{minute:02}:00.000\",\"value\":{visits}}}\n"
        ));
    }
    let job = r#"
[[source]]
name = "series"
connector = "file"
format = "json"
path = "$series.jsonl"
columns = [
    { name = "metric", type = "STRING" },
    { name = "end", type = "TIMESTAMP" },
    { name = "value", type = "BIGINT" },
]

[[operator]]
name = "result"
type = "anomaly"
input = "series"
key = ["metric"]
time = "end"
value = "value"
every = "1min"
history = 10
min_history = 5

[[sink]]
name = "out"
input = "result"
connector = "file"
path = "$OUT"
"#;
    for p in [1, 2] {
        let rows = run_files(&[("series.jsonl", lines.clone())], job, p);
        let found: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                let v: Value = serde_json::from_str(r).unwrap();
                (
                    v["metric"].as_str().unwrap().into(),
                    v["window_end"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("orders".to_string(), "2026-01-01 00:15:00.000".to_string()),
                ("visits".to_string(), "2026-01-01 00:17:00.000".to_string()),
            ],
            "parallelism {p}: {rows:?}"
        );
        let orders: Value = serde_json::from_str(&rows[0]).unwrap();
        assert_eq!(orders["observed"], 0.0);
        assert_eq!(orders["expected"], 100.0);
        assert!(orders["score"].as_f64().unwrap() < -3.5);
        assert_eq!(orders["window_start"], "2026-01-01 00:14:00.000");
    }
}

/// State TTL, with a processing-time clock moved by hand: a group aggregate starts a group over,
/// a deduplication forgets its first row, a join drops rows and a top-N its partition, once
/// they were not written for the TTL; what was written within it stays. Through the memory
/// and RocksDB backends.
#[test]
fn state_ttl_drops_state_not_written_for_that_long() {
    use eddy_operators::checkpointing::{RocksOptions, StateBackendChoice};
    use eddy_operators::ttl::Clock;
    use eddy_runtime::exec::TaskFactory;
    use eddy_runtime::operator::{Operator, Output};
    use eddy_runtime::types::{Row, Value as V};
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    let job = format!(
        r#"
[params]
input = {{}}
{}
[[operator]]
name = "per_user"
type = "group_aggregate"
input = "clicks"
group_by = ["user"]
aggregates = ["COUNT(*) AS n"]
ttl = "10s"

[[operator]]
name = "first_page"
type = "deduplicate"
input = "clicks"
key = ["user"]
time = "ts"
keep = "first"
ttl = "10s"

[[operator]]
name = "pages"
type = "join"
left = "clicks AS A"
right = "clicks AS B"
on = "A.user = B.user"
columns = ["A.page AS a", "B.page AS b"]
ttl = "10s"

[[operator]]
name = "latest"
type = "top_n"
input = "clicks"
partition_by = ["user"]
order_by = ["ts DESC"]
limit = 1
ttl = "10s"

[[sink]]
name = "o1"
input = "per_user"
connector = "blackhole"

[[sink]]
name = "o4"
input = "latest"
connector = "blackhole"

[[sink]]
name = "o2"
input = "first_page"
connector = "blackhole"

[[sink]]
name = "o3"
input = "pages"
connector = "blackhole"
"#,
        source("clicks", "input")
    );
    let options = CompileOptions {
        params: [("input".to_string(), "unused.jsonl".to_string())]
            .into_iter()
            .collect(),
        parallelism: Some(1),
        generate: None,
        topic_files: None,
    };
    let graph = compile_str("ttl.toml", &job, &options).unwrap_or_else(|e| panic!("{e}"));
    let node = |name: &str| graph.nodes.iter().position(|n| n.name == name).unwrap();
    let click = |user: i64, page: &str, second: i64| {
        Row::insert(vec![
            V::Int(user),
            V::Str(page.into()),
            V::Null,
            V::Timestamp(second * 1000),
        ])
    };
    // Rows as `kind values`, with strings unquoted.
    let show = |rows: Vec<Row>| -> Vec<String> {
        rows.iter()
            .map(|r| {
                let values: Vec<String> = r
                    .values
                    .iter()
                    .map(|v| match v {
                        V::Int(i) => i.to_string(),
                        V::Str(s) => s.to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect();
                format!("{:?} {}", r.kind, values.join(","))
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let backends = [
        StateBackendChoice::Memory,
        StateBackendChoice::RocksDb {
            dir: dir.path().join("state"),
            options: RocksOptions::new(8 << 20, 1000).unwrap(),
        },
    ];
    for state in backends {
        let clock = Arc::new(AtomicI64::new(0));
        let factory = Factory::new(RunSettings {
            dead_letter_path: dir.path().join("dead.jsonl"),
            state,
            clock: Clock::Manual(Arc::clone(&clock)),
            ..Default::default()
        });
        let step = |op: &mut Box<dyn Operator>, at_s: i64, input: usize, rows: Vec<Row>| {
            clock.store(at_s * 1000, Ordering::Relaxed);
            let mut out = Output::new(1);
            op.process(input, rows, &mut out).unwrap();
            show(out.take(0))
        };

        let mut agg = factory.operator(&graph, node("per_user"), 0).unwrap();
        assert_eq!(
            step(&mut agg, 0, 0, vec![click(1, "home", 0)]),
            ["Insert 1,1"]
        );
        assert_eq!(
            step(&mut agg, 5, 0, vec![click(1, "cart", 5)]),
            ["UpdateBefore 1,1", "UpdateAfter 1,2"]
        );
        // Written at 5 s: kept at 14 s.
        assert_eq!(
            step(&mut agg, 14, 0, vec![click(2, "home", 14)]),
            ["Insert 2,1"]
        );
        // Not written since 5 s: gone at 15 s, so user 1 starts over.
        assert_eq!(
            step(&mut agg, 15, 0, vec![click(1, "buy", 15)]),
            ["Insert 1,1"]
        );
        // User 2, last written at 14 s, starts over at 24 s; user 1, written at 15 s, is kept.
        // (Keys of one batch come out in no particular order.)
        let mut got = step(
            &mut agg,
            24,
            0,
            vec![click(2, "cart", 24), click(1, "home", 24)],
        );
        got.sort();
        assert_eq!(got, ["Insert 2,1", "UpdateAfter 1,2", "UpdateBefore 1,1"]);

        let mut dedup = factory.operator(&graph, node("first_page"), 0).unwrap();
        assert_eq!(
            step(&mut dedup, 0, 0, vec![click(1, "home", 0)]),
            ["Insert 1,home,Null,Timestamp(0)"]
        );
        // A later row is a duplicate: nothing, and no write.
        assert!(step(&mut dedup, 5, 0, vec![click(1, "cart", 5)]).is_empty());
        // The first row was written at 0 s: forgotten at 10 s.
        assert_eq!(
            step(&mut dedup, 10, 0, vec![click(1, "buy", 10)]),
            ["Insert 1,buy,Null,Timestamp(10000)"]
        );

        let mut join = factory.operator(&graph, node("pages"), 0).unwrap();
        assert!(step(&mut join, 0, 0, vec![click(1, "home", 0)]).is_empty());
        assert_eq!(
            step(&mut join, 5, 1, vec![click(1, "cart", 5)]),
            ["Insert home,cart"]
        );
        // At 10 s the left row of 0 s is gone.
        assert!(step(&mut join, 10, 1, vec![click(1, "buy", 10)]).is_empty());
        assert_eq!(
            step(&mut join, 12, 0, vec![click(1, "x", 12)]),
            ["Insert x,cart", "Insert x,buy"]
        );
        // At 15 s the right row of 5 s is gone; the one of 10 s stays.
        assert_eq!(
            step(&mut join, 15, 0, vec![click(1, "y", 15)]),
            ["Insert y,buy"]
        );

        let mut top = factory.operator(&graph, node("latest"), 0).unwrap();
        let latest = |page: &str, s: i64| format!("1,{page},Null,Timestamp({})", s * 1000);
        assert_eq!(
            step(&mut top, 0, 0, vec![click(1, "home", 0)]),
            [format!("Insert {}", latest("home", 0))]
        );
        let mut got = step(&mut top, 5, 0, vec![click(1, "cart", 5)]);
        got.sort();
        assert_eq!(
            got,
            [
                format!("Delete {}", latest("home", 0)),
                format!("Insert {}", latest("cart", 5))
            ]
        );
        // An older row does not make the cut while the partition is kept...
        assert!(step(&mut top, 14, 0, vec![click(1, "old", 1)]).is_empty());
        // ...and is the best once the partition, unchanged since 5 s, is gone at 15 s.
        assert_eq!(
            step(&mut top, 15, 0, vec![click(1, "older", 1)]),
            [format!("Insert {}", latest("older", 1))]
        );
    }
}
