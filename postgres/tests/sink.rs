//! Staging and commits against a real PostgreSQL server.

use eddy_postgres::testing::PgServer;
use eddy_postgres::{commit, Dimension, Op, PgError, Stager, Target};

fn target(server: &PgServer, table: &str, key: &[&str]) -> Target {
    Target {
        url: server.url(),
        table: table.into(),
        columns: vec!["w".into(), "n".into(), "at".into()],
        key: key.iter().map(|k| k.to_string()).collect(),
        dimensions: Vec::new(),
    }
}

fn rows(server: &PgServer, sql: &str) -> Vec<(i64, Option<f64>)> {
    server
        .client()
        .query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn rows_appear_once_when_their_checkpoint_commits_and_never_twice() {
    let server = PgServer::start().unwrap();
    server
        .client()
        .batch_execute(
            "CREATE TABLE out (id bigserial, w bigint, n double precision, at timestamp)",
        )
        .unwrap();
    let t = target(&server, "out", &[]);
    let mut stager = Stager::connect(t.clone(), "job/sink", "run-1").unwrap();
    stager.push(
        Op::Upsert,
        br#"{"w":1,"n":1.5,"at":"2026-01-01 00:00:01.000"}"#,
    );
    stager.push(
        Op::Upsert,
        br#"{"w":2,"n":null,"at":"2026-01-01 00:00:02.000"}"#,
    );
    stager.flush(1).unwrap();
    stager.push(
        Op::Upsert,
        br#"{"w":3,"n":"3e0","at":"2026-01-01 00:00:03.000"}"#,
    );
    stager.flush(2).unwrap();
    let query = "SELECT w, n FROM out ORDER BY w";
    assert!(rows(&server, query).is_empty(), "staged rows are invisible");
    commit(&t, "job/sink", "run-1", 1).unwrap();
    assert_eq!(rows(&server, query), vec![(1, Some(1.5)), (2, None)]);
    // A restore repeats the commit of the checkpoint it restores: nothing changes.
    commit(&t, "job/sink", "run-1", 1).unwrap();
    assert_eq!(rows(&server, query).len(), 2);
    commit(&t, "job/sink", "run-1", 2).unwrap();
    commit(&t, "job/sink", "run-1", 2).unwrap();
    assert_eq!(
        rows(&server, query),
        vec![(1, Some(1.5)), (2, None), (3, Some(3.0))]
    );
    let staged: i64 = server
        .client()
        .query_one("SELECT count(*) FROM eddy_sink_stage", &[])
        .unwrap()
        .get(0);
    assert_eq!(staged, 0, "committed rows leave the stage");
}

#[test]
fn a_keyed_table_keeps_the_last_change_of_each_key() {
    let server = PgServer::start().unwrap();
    server
        .client()
        .batch_execute("CREATE TABLE kpi (w bigint PRIMARY KEY, n double precision, at timestamp)")
        .unwrap();
    let t = target(&server, "kpi", &["w"]);
    let mut stager = Stager::connect(t.clone(), "job/kpi", "run-1").unwrap();
    stager.push(Op::Upsert, br#"{"w":1,"n":1,"at":null}"#);
    stager.push(Op::Upsert, br#"{"w":1,"n":2,"at":null}"#);
    stager.push(Op::Upsert, br#"{"w":2,"n":5,"at":null}"#);
    stager.flush(1).unwrap();
    stager.commit(1).unwrap();
    stager.push(Op::Upsert, br#"{"w":1,"n":3,"at":null}"#);
    stager.push(Op::Delete, br#"{"w":2,"n":5,"at":null}"#);
    stager.push(Op::Upsert, br#"{"w":3,"n":7,"at":null}"#);
    stager.flush(2).unwrap();
    stager.commit(2).unwrap();
    assert_eq!(
        rows(&server, "SELECT w, n FROM kpi ORDER BY w"),
        vec![(1, Some(3.0)), (3, Some(7.0))]
    );
}

#[test]
fn a_missing_table_or_column_is_named() {
    let server = PgServer::start().unwrap();
    let err = Stager::connect(target(&server, "nowhere", &[]), "s", "r")
        .err()
        .unwrap();
    assert!(matches!(err, PgError::NoTable { .. }), "{err}");
    assert!(
        err.to_string().contains("`nowhere` does not exist"),
        "{err}"
    );
    server
        .client()
        .batch_execute("CREATE TABLE half (w bigint)")
        .unwrap();
    let err = Stager::connect(target(&server, "half", &[]), "s", "r")
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("no columns n, at; its columns are: w"),
        "{err}"
    );
    let err = Stager::connect(
        Target {
            url: "postgresql://eddy:secret@127.0.0.1:1/postgres".into(),
            ..target(&server, "half", &[])
        },
        "s",
        "r",
    )
    .err()
    .unwrap();
    let text = err.to_string();
    assert!(
        text.starts_with("cannot connect to PostgreSQL at"),
        "{text}"
    );
    assert!(
        !text.contains("secret"),
        "the password is not shown: {text}"
    );
}

#[test]
fn facts_get_surrogate_keys_from_dimensions_created_once() {
    let server = PgServer::start().unwrap();
    server
        .client()
        .batch_execute(
            "CREATE TABLE dim_product (product_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                       product_id text NOT NULL UNIQUE);
             CREATE TABLE dim_time (time_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                    minute timestamp NOT NULL UNIQUE);
             CREATE TABLE fact (event_id text PRIMARY KEY,
                                product_key bigint NOT NULL REFERENCES dim_product,
                                time_key bigint NOT NULL REFERENCES dim_time,
                                quantity bigint);
             CREATE TABLE dim_loose (product_key bigint, name text);",
        )
        .unwrap();
    let dimensions = vec![
        Dimension {
            column: "product_id".into(),
            table: "dim_product".into(),
            natural: "product_id".into(),
            key: "product_key".into(),
        },
        Dimension {
            column: "at".into(),
            table: "dim_time".into(),
            natural: "minute".into(),
            key: "time_key".into(),
        },
    ];
    let target = Target {
        url: server.url(),
        table: "fact".into(),
        columns: vec![
            "event_id".into(),
            "product_id".into(),
            "at".into(),
            "quantity".into(),
        ],
        key: vec!["event_id".into()],
        dimensions: dimensions.clone(),
    };
    let mut stager = Stager::connect(target.clone(), "job/facts", "run-1").unwrap();
    for (id, product, q) in [
        ("e1", "p1", 1),
        ("e2", "p2", 2),
        ("e3", "p1", 3),
        ("e1", "p1", 4),
    ] {
        let row = format!(
            r#"{{"event_id":"{id}","product_id":"{product}","at":"2026-01-01 00:01:00.000","quantity":{q}}}"#
        );
        stager.push(Op::Upsert, row.as_bytes());
    }
    stager.flush(1).unwrap();
    commit(&target, "job/facts", "run-1", 1).unwrap();
    commit(&target, "job/facts", "run-1", 1).unwrap();
    let facts: Vec<(String, String, i64)> = server
        .client()
        .query(
            "SELECT f.event_id, p.product_id, f.quantity FROM fact f
             JOIN dim_product p USING (product_key) JOIN dim_time t USING (time_key)
             WHERE t.minute = '2026-01-01 00:01:00' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        facts,
        vec![
            ("e1".into(), "p1".into(), 4),
            ("e2".into(), "p2".into(), 2),
            ("e3".into(), "p1".into(), 3)
        ]
    );
    let dims: i64 = server
        .client()
        .query_one(
            "SELECT (SELECT count(*) FROM dim_product) + (SELECT count(*) FROM dim_time)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dims, 3, "two products and one minute, created once");
    // A dimension without a unique natural key is refused with the fix.
    let loose = Target {
        dimensions: vec![Dimension {
            column: "product_id".into(),
            table: "dim_loose".into(),
            natural: "name".into(),
            key: "product_key".into(),
        }],
        key: vec![],
        columns: vec!["event_id".into(), "product_id".into()],
        ..target.clone()
    };
    let err = Stager::connect(loose, "s", "r").err().unwrap();
    assert!(
        err.to_string()
            .contains("ALTER TABLE dim_loose ADD UNIQUE (name)"),
        "{err}"
    );
}

/// Failure path #23: the sink quotes names inside SQL literals by doubling `'`, which is only
/// safe while `standard_conforming_strings` is on. A database that turns it off (a backslash
/// then escapes) still gets its rows, into a table whose name holds both `'` and `\`.
#[test]
fn names_with_quotes_and_backslashes_are_safe_where_strings_are_not_standard() {
    let server = PgServer::start().unwrap();
    let mut admin = server.client();
    admin
        .batch_execute(
            r#"ALTER DATABASE postgres SET standard_conforming_strings = off;
               CREATE TABLE "o'b\x" (id bigserial, w bigint, n double precision, at timestamp)"#,
        )
        .unwrap();
    // A new session of the database's default reads strings the old way…
    let off: String = server
        .client()
        .query_one("SHOW standard_conforming_strings", &[])
        .unwrap()
        .get(0);
    assert_eq!(off, "off");
    // …and the sink's own sessions the standard way.
    let on: String = eddy_postgres::connect(&server.url())
        .unwrap()
        .query_one("SHOW standard_conforming_strings", &[])
        .unwrap()
        .get(0);
    assert_eq!(on, "on");
    let t = target(&server, r"o'b\x", &[]);
    let mut stager = Stager::connect(t.clone(), r"job/o'b\x", "run-1").unwrap();
    stager.push(
        Op::Upsert,
        br#"{"w":7,"n":0.5,"at":"2026-01-01 00:00:01.000"}"#,
    );
    stager.flush(1).unwrap();
    commit(&t, r"job/o'b\x", "run-1", 1).unwrap();
    assert_eq!(
        rows(&server, r#"SELECT w, n FROM "o'b\x""#),
        vec![(7, Some(0.5))]
    );
}
