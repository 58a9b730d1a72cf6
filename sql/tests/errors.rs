//! Wrong scripts get an error that names the file, line and column, says what is wrong and,
//! where there is one, how to fix it; never a panic.

use eddy_sql::{compile_texts, SqlError, SqlOptions};
use std::collections::BTreeMap;

const DDL: &str = include_str!("queries/ddl.sql");

const SINK: &str =
    "CREATE TABLE out (auction BIGINT, price BIGINT) WITH ('connector' = 'blackhole');\n";

/// Plans `script` after the Nexmark DDL; the error.
fn error(script: &str) -> SqlError {
    error_with(script, &[("INPUT", "in.json")])
}

fn error_with(script: &str, params: &[(&str, &str)]) -> SqlError {
    let options = SqlOptions {
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    };
    let files = vec![
        ("ddl.sql".to_string(), DDL.to_string()),
        ("job.sql".to_string(), script.to_string()),
    ];
    match compile_texts(files, &options) {
        Ok(job) => panic!("planned, but should not have:\n{}", job.toml),
        Err(e) => e,
    }
}

/// The error is at `line:column` of job.sql and says `what`.
fn at(e: &SqlError, line: u64, column: u64, what: &str) {
    assert_eq!(e.file, "job.sql", "{e}");
    assert_eq!((e.line, e.column), (line, column), "{e}");
    assert!(e.to_string().contains(what), "`{what}` not in:\n{e}");
}

#[test]
fn an_unknown_table_is_named() {
    let e = error(&format!(
        "{SINK}INSERT INTO out SELECT auction, price FROM bids;"
    ));
    at(&e, 2, 44, "no table or view `bids`");
}

#[test]
fn an_unknown_column_lists_the_columns() {
    let e = error(&format!(
        "{SINK}INSERT INTO out SELECT auction, pricee FROM bid;"
    ));
    at(&e, 2, 33, "no column `pricee`");
    assert!(e.to_string().contains("price"), "{e}");
}

#[test]
fn a_syntax_error_points_at_the_token() {
    let e = error(&format!(
        "{SINK}INSERT INTO out SELECT auction price, FROM bid;"
    ));
    assert_eq!((e.file.as_str(), e.line), ("job.sql", 2), "{e}");
}

#[test]
fn placeholders_need_a_value_and_values_a_placeholder() {
    let e = error_with(
        &format!("{SINK}INSERT INTO out SELECT auction, price FROM bid;"),
        &[],
    );
    assert_eq!(
        (e.file.as_str(), e.line, e.column),
        ("ddl.sql", 44, 14),
        "{e}"
    );
    assert!(e.to_string().contains("--param INPUT=VALUE"), "{e}");
    let e = error_with(
        &format!("{SINK}INSERT INTO out SELECT auction, price FROM bid;"),
        &[("INPUT", "x"), ("OUTPUT", "y")],
    );
    assert!(e.to_string().contains("--param OUTPUT"), "{e}");
}

#[test]
fn a_bare_select_has_nowhere_to_go() {
    let e = error("SELECT auction FROM bid;");
    at(&e, 1, 1, "nowhere to write");
}

#[test]
fn the_insert_must_match_the_table() {
    let e = error(&format!("{SINK}INSERT INTO out SELECT auction FROM bid;"));
    at(&e, 2, 1, "the query gives 1 columns and `out` takes 2");
    let e = error(&format!(
        "{SINK}INSERT INTO out SELECT auction, channel FROM bid;"
    ));
    at(&e, 2, 1, "cannot go into `out`.`price`");
}

#[test]
fn grouping_needs_every_column_grouped_or_aggregated() {
    let e = error(&format!(
        "{SINK}INSERT INTO out SELECT auction, price FROM bid GROUP BY auction;"
    ));
    assert!(
        e.to_string()
            .contains("`price` is neither grouped nor aggregated"),
        "{e}"
    );
}

#[test]
fn unsupported_constructs_say_what_is_supported() {
    let cases = [
        ("INSERT INTO out SELECT B.auction, B.price FROM bid B LEFT JOIN auction A ON A.id = B.auction;", "LEFT JOIN"),
        ("INSERT INTO out SELECT auction, price FROM bid ORDER BY price;", "ORDER BY"),
        ("SET 'table.exec.unknown' = 'x';", "unknown option"),
        ("SET 'table.exec.state.ttl' = 'a while';", "is not a duration such as '1 h'"),
        ("CREATE FUNCTION f AS 'com.example.F';", "no implementation of the Java class"),
        ("CREATE TABLE k (a BIGINT) WITH ('connector' = 'kafka', 'topic' = 't');\nINSERT INTO k SELECT auction FROM bid;", "no Kafka sink yet"),
        ("INSERT INTO out SELECT auction, price FROM TABLE(CUMULATE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '1' SECOND, INTERVAL '5' SECOND)) GROUP BY auction, price, window_start, window_end;", "CUMULATE"),
        ("INSERT INTO out SELECT auction, count(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(price), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;", "is not the time attribute"),
    ];
    for (script, what) in cases {
        let e = error(&format!("{SINK}{script}"));
        assert_eq!(e.file, "job.sql", "{script}: {e}");
        assert!(e.line >= 2, "{script}: {e}");
        assert!(
            e.to_string().contains(what),
            "{script}: `{what}` not in:\n{e}"
        );
    }
}

#[test]
fn hostile_input_is_an_error_not_a_crash() {
    let deep = format!(
        "{SINK}INSERT INTO out SELECT {}auction{}, price FROM bid;",
        "(".repeat(500),
        ")".repeat(500)
    );
    let e = error(&deep);
    assert!(e.to_string().contains("nests too deeply"), "{e}");
    for text in [
        "",
        ";;;",
        "CREATE TABLE",
        "INSERT INTO",
        "'unterminated",
        "EXECUTE STATEMENT SET BEGIN",
    ] {
        let options = SqlOptions::default();
        let r = compile_texts(vec![("x.sql".into(), text.into())], &options);
        assert!(r.is_err(), "{text:?}");
    }
}

#[test]
fn window_columns_exist_only_after_the_window_aggregate() {
    let sink = "CREATE TABLE w (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, `dateTime` TIMESTAMP(3), extra VARCHAR, window_start TIMESTAMP(3), window_end TIMESTAMP(3), window_time TIMESTAMP(3)) WITH ('connector' = 'blackhole');\n";
    let e = error(&format!(
        "{sink}INSERT INTO w SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND));"
    ));
    at(&e, 2, 15, "GROUP BY window_start, window_end");
}

#[test]
fn a_view_that_reaches_itself_is_refused() {
    let e = error(&format!(
        "{SINK}CREATE VIEW v AS SELECT auction, price FROM w;\nCREATE VIEW w AS SELECT * FROM v;\nINSERT INTO out SELECT * FROM v;"
    ));
    assert!(e.to_string().contains("refers to itself"), "{e}");
}

#[test]
fn numbers_only_widen_into_sink_columns() {
    let e = error(&format!(
        "{SINK}INSERT INTO out SELECT auction, 0.908 * price FROM bid;"
    ));
    at(&e, 2, 1, "cannot go into `out`.`price`");
}

#[test]
fn legacy_window_bounds_repeat_the_window() {
    let e = error(
        "CREATE TABLE s (b BIGINT, t TIMESTAMP(3)) WITH ('connector' = 'blackhole');\n\
         INSERT INTO s SELECT bidder, TUMBLE_END(`dateTime`, INTERVAL '1' MINUTE) FROM bid GROUP BY bidder, TUMBLE(`dateTime`, INTERVAL '10' SECOND);",
    );
    assert!(e.to_string().contains("with the same arguments"), "{e}");
}

#[test]
fn generate_stands_in_only_for_the_nexmark_path() {
    let options = SqlOptions {
        generate: true,
        ..Default::default()
    };
    let script = "CREATE TABLE o (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');\nINSERT INTO o SELECT auction FROM bid;";
    let files = vec![
        ("ddl.sql".to_string(), DDL.to_string()),
        ("job.sql".to_string(), script.to_string()),
    ];
    let e = compile_texts(files.clone(), &options).unwrap_err();
    assert!(
        e.to_string()
            .contains("'path' has a placeholder without a value"),
        "{e}"
    );
    let options = SqlOptions {
        params: [("OUT".to_string(), "o.jsonl".to_string())].into(),
        ..options
    };
    compile_texts(files, &options).unwrap();
}

#[test]
fn a_chain_of_a_thousand_operators_is_refused_before_it_is_parsed() {
    let e = error(&format!(
        "{SINK}INSERT INTO out SELECT auction, price{} FROM bid;",
        " + 1".repeat(5000)
    ));
    assert!(e.to_string().contains("more than 2000 operators"), "{e}");
}
