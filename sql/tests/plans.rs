//! What scripts plan into: the job file's operators for constructs the Nexmark queries do not
//! use (each checked by compiling the job file too).

use eddy_jobs::{compile_str, CompileOptions};
use eddy_sql::{compile_texts, SqlOptions};

const DDL: &str = include_str!("queries/ddl.sql");

fn plan_with(script: &str, options: &SqlOptions) -> String {
    let mut options = options.clone();
    options
        .params
        .insert("INPUT".to_string(), "in.json".to_string());
    let files = vec![
        ("ddl.sql".to_string(), DDL.to_string()),
        ("job.sql".to_string(), script.to_string()),
    ];
    let job = compile_texts(files, &options).unwrap_or_else(|e| panic!("{e}"));
    job.toml
}

/// The job file of `script` after the Nexmark DDL; it compiles.
fn plan(script: &str) -> String {
    let toml = plan_with(script, &SqlOptions::default());
    compile_str("job.sql", &toml, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    toml
}

#[test]
fn unlisted_insert_columns_get_null() {
    let toml = plan(
        "CREATE TABLE out (auction BIGINT, price BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO out (price) SELECT price FROM bid;",
    );
    assert!(toml.contains("CAST(NULL AS BIGINT) AS auction"), "{toml}");
}

#[test]
fn a_common_table_expression_may_shadow_the_view_it_reads() {
    let toml = plan(
        "CREATE TABLE out (auction BIGINT, price BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO out WITH bid AS (SELECT auction, price FROM bid WHERE price > 10) SELECT * FROM bid;",
    );
    assert!(toml.contains("where = \"price > 10\""), "{toml}");
}

#[test]
fn is_true_is_false_for_null() {
    let toml = plan(
        "CREATE TABLE out (auction BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO out SELECT auction FROM bid WHERE NOT ((price > 10) IS TRUE);",
    );
    assert!(
        toml.contains("NOT COALESCE((price > 10) = TRUE, FALSE)"),
        "{toml}"
    );
}

#[test]
fn quoted_names_are_names() {
    let toml = plan(
        "CREATE TABLE `out` (`auction` BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO out (`auction`) SELECT auction FROM `bid`;",
    );
    assert!(toml.contains("name = \"out\""), "{toml}");
}

#[test]
fn a_view_names_its_columns() {
    let toml = plan(
        "CREATE TABLE out (a BIGINT, b BIGINT) WITH ('connector' = 'blackhole');\n\
         CREATE VIEW v (b, a) AS SELECT auction, price FROM bid;\n\
         INSERT INTO out SELECT a, b FROM v;",
    );
    assert!(toml.contains("auction AS b"), "{toml}");
}

#[test]
fn secret_placeholders_stay_for_the_cluster() {
    let options = SqlOptions {
        deferred: ["PW".to_string()].into(),
        ..Default::default()
    };
    let toml = plan_with(
        "CREATE TABLE out (auction BIGINT) WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://db:5432/shop', 'table-name' = 'out', 'username' = 'eddy', 'password' = '${PW}');\n\
         INSERT INTO out SELECT auction FROM bid;",
        &options,
    );
    assert!(toml.contains("secret = true"), "{toml}");
    assert!(
        toml.contains("postgresql://eddy:${PW}@db:5432/shop"),
        "{toml}"
    );
    let options = CompileOptions {
        params: [("PW".to_string(), "p@ss".to_string())].into(),
        ..Default::default()
    };
    compile_str("job.sql", &toml, &options).unwrap_or_else(|e| panic!("{e}\n{toml}"));
}

#[test]
fn explain_adds_nothing_to_the_job() {
    let job = compile_texts(
        vec![
            ("ddl.sql".to_string(), DDL.to_string()),
            (
                "job.sql".to_string(),
                "CREATE TABLE out (auction BIGINT) WITH ('connector' = 'blackhole');\n\
                 EXPLAIN INSERT INTO out SELECT auction FROM bid;\n\
                 INSERT INTO out SELECT auction FROM bid WHERE price > 1;"
                    .to_string(),
            ),
        ],
        &SqlOptions {
            params: [("INPUT".to_string(), "in.json".to_string())].into(),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.explained.len(), 1);
    assert_eq!(job.sinks, 1);
    assert_eq!(job.toml.matches("[[sink]]").count(), 1, "{}", job.toml);
    compile_str("job.sql", &job.toml, &CompileOptions::default()).unwrap();
}

#[test]
fn select_distinct_groups_by_what_it_selects() {
    let toml = plan(
        "CREATE TABLE out (auction BIGINT, bidder BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO out SELECT DISTINCT auction, bidder FROM bid;",
    );
    assert!(toml.contains("type = \"group_aggregate\""), "{toml}");
    assert!(
        toml.contains("group_by = [\"auction\", \"bidder\"]"),
        "{toml}"
    );
}

#[test]
fn state_ttl_applies_to_the_operators_planned_after_it() {
    let toml = plan(
        "CREATE TABLE out (bidder BIGINT, n BIGINT) WITH ('connector' = 'blackhole');\n\
         CREATE TABLE out2 (bidder BIGINT, n BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO out SELECT bidder, COUNT(*) FROM bid GROUP BY bidder;\n\
         SET 'table.exec.state.ttl' = '1 h';\n\
         INSERT INTO out2 SELECT bidder, SUM(price) FROM bid GROUP BY bidder;",
    );
    assert_eq!(
        toml.matches("type = \"group_aggregate\"").count(),
        2,
        "{toml}"
    );
    assert_eq!(toml.matches("ttl = \"3600000ms\"").count(), 1, "{toml}");
    let windowed = plan(
        "SET 'table.exec.state.ttl' = '3600000';\n\
         CREATE TABLE out (auction BIGINT, n BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO out SELECT auction, COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;",
    );
    assert!(!windowed.contains("ttl"), "windows need no TTL: {windowed}");
    let off = plan(
        "SET 'table.exec.state.ttl' = '0';\n\
         CREATE TABLE out (bidder BIGINT, n BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO out SELECT bidder, COUNT(*) FROM bid GROUP BY bidder;",
    );
    assert!(!off.contains("ttl"), "0 keeps state forever: {off}");
}
