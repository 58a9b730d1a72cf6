//! The e-commerce tests' shared parts: a warehouse on a real PostgreSQL server, `eddy serve`,
//! the generator, and the comparison of the warehouse with the generator's ground truth.

use eddy_postgres::testing::PgServer;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn eddy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
}

/// The settings every e-commerce test generates with: 12 minutes of a small shop, with a
/// revenue drop to detect and the default shares of malformed and late events.
pub const GEN: &[&str] = &[
    "--seed",
    "7",
    "--start",
    "2026-01-01T00:00:00Z",
    "--rate",
    "80",
    "--duration",
    "12min",
    "--users",
    "3000",
    "--products",
    "400",
    "--malformed-share",
    "0.01",
    "--late-share",
    "0.003",
    "--anomaly",
    "revenue-drop:at=10min,for=1min,factor=0",
];

/// A new database on `server` with the warehouse's migrations applied; its URL.
pub fn warehouse(server: &PgServer, name: &str) -> String {
    server
        .client()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let url = server.url().replace("/postgres", &format!("/{name}"));
    let out = eddy()
        .args(["warehouse", "migrate", "--url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    url
}

/// Generates the test data set into `to` (`file:DIR`, `http://...`) and returns the ground
/// truth.
pub fn generate(to: &str, dir: &Path, extra: &[&str]) -> Value {
    let expected = dir.join(format!("expected-{}.json", std::process::id()));
    let out = eddy()
        .args(["gen", "ecommerce"])
        .args(GEN)
        .args(["--to", to, "--expected"])
        .arg(&expected)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&expected).unwrap()).unwrap()
}

/// A running `eddy serve`, killed on drop.
pub struct Serve {
    child: Child,
    pub url: String,
}

impl Serve {
    pub fn start(args: &[&str]) -> Serve {
        let mut child = eddy()
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("eddy serve prints its address");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("an address")
            .trim_end_matches(['/', ',', ')'])
            .to_string();
        Serve { child, url }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rows(client: &mut postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

/// A JSON value as the text PostgreSQL gives for it.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Compares doubles by value (to 1e-9 relative, as compare.py does), everything else as text.
fn same(got: &Option<String>, want: &Option<String>, double: bool) -> bool {
    match (got, want) {
        (Some(g), Some(w)) if double => {
            let (g, w): (f64, f64) = (g.parse().unwrap(), w.parse().unwrap());
            (g - w).abs() <= 1e-9 * g.abs().max(w.abs()).max(1e-300)
        }
        _ => got == want,
    }
}

const TS: &str = "to_char({}, 'YYYY-MM-DD HH24:MI:SS.MS')";

fn ts(column: &str) -> String {
    TS.replace("{}", column)
}

/// Checks one table against rows of the ground truth; `columns`: (SQL expression, truth
/// field, is a double). Returns the first differences.
fn table(
    client: &mut postgres::Client,
    name: &str,
    from: &str,
    order: &str,
    columns: &[(String, &str, bool)],
    expected: &Value,
) -> Vec<String> {
    let select: Vec<String> = columns
        .iter()
        .map(|(sql, _, _)| format!("({sql})::text"))
        .collect();
    // Ordered by the table's columns (qualified: an output column of the same name is text).
    let order: Vec<String> = order
        .split(',')
        .map(|c| format!("t.{}", c.trim()))
        .collect();
    let got = rows(
        client,
        &format!(
            "SELECT {} FROM {from} t ORDER BY {}",
            select.join(", "),
            order.join(", ")
        ),
    );
    let want: Vec<Vec<Option<String>>> = expected
        .as_array()
        .unwrap()
        .iter()
        .map(|r| columns.iter().map(|(_, f, _)| text(&r[*f])).collect())
        .collect();
    let mut problems = Vec::new();
    if got.len() != want.len() {
        problems.push(format!(
            "{name}: {} rows, expected {}",
            got.len(),
            want.len()
        ));
    }
    for (g, w) in got.iter().zip(&want) {
        let equal = g
            .iter()
            .zip(w)
            .zip(columns)
            .all(|((g, w), (_, _, double))| same(g, w, *double));
        if !equal {
            problems.push(format!("{name}: got {g:?}, expected {w:?}"));
        }
        if problems.len() > 5 {
            break;
        }
    }
    problems
}

/// Every KPI, alert, late count and total of the warehouse against the ground truth; the
/// differences, empty when all are equal.
pub fn compare_with_truth(url: &str, expected: &Value) -> Vec<String> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let c = |sql: &str, field: &'static str, double: bool| (sql.to_string(), field, double);
    let w = || (ts("window_start"), "window_start", false);
    let mut problems = Vec::new();
    problems.extend(table(
        &mut client,
        "kpi_revenue_minute",
        "kpi_revenue_minute",
        "window_start",
        &[
            w(),
            c("revenue_usd", "revenue_usd", false),
            c("orders", "orders", false),
            c("units", "units", false),
            c("avg_order_value_usd", "avg_order_value_usd", true),
        ],
        &expected["revenue_minute"],
    ));
    problems.extend(table(
        &mut client,
        "kpi_traffic_minute",
        "kpi_traffic_minute",
        "window_start",
        &[
            w(),
            c("events", "events", false),
            c("clicks", "clicks", false),
            c("carts", "carts", false),
            c("purchases", "purchases", false),
            c("active_users", "active_users", false),
            c("active_sessions", "active_sessions", false),
        ],
        &expected["traffic_minute"],
    ));
    problems.extend(table(
        &mut client,
        "kpi_funnel_5min",
        "kpi_funnel_5min",
        "window_start",
        &[
            w(),
            c("viewed", "viewed", false),
            c("carted", "carted", false),
            c("purchased", "purchased", false),
            c("view_to_cart", "view_to_cart", true),
            c("cart_to_purchase", "cart_to_purchase", true),
            c("conversion", "conversion", true),
        ],
        &expected["funnel_5min"],
    ));
    problems.extend(table(
        &mut client,
        "kpi_top_products_5min",
        "kpi_top_products_5min",
        "window_start, rank",
        &[
            w(),
            c("rank", "rank", false),
            c("product_id", "product_id", false),
            c("revenue_usd", "revenue_usd", false),
            c("units", "units", false),
        ],
        &expected["top_products_5min"],
    ));
    let mut alerts = expected["alerts"].as_array().unwrap().clone();
    alerts.sort_by_key(|a| (a["metric"].to_string(), a["window_start"].to_string()));
    problems.extend(table(
        &mut client,
        "alerts",
        "alerts",
        "metric, window_start",
        &[
            c("metric", "metric", false),
            w(),
            c("observed", "observed", true),
            c("expected", "expected", true),
            c("deviation", "deviation", true),
            c("score", "score", true),
        ],
        &Value::Array(alerts),
    ));
    let late: Vec<(String, i64)> = client
        .query("SELECT kpi, count(*) FROM late_events GROUP BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (kpi, want) in expected["late_events"].as_object().unwrap() {
        let got = late.iter().find(|(k, _)| k == kpi).map_or(0, |(_, n)| *n);
        if got != want.as_i64().unwrap() {
            problems.push(format!("late events of {kpi}: {got}, expected {want}"));
        }
    }
    let t = &expected["totals"];
    let totals = rows(
        &mut client,
        "SELECT (SELECT count(*) FROM fact_clicks)::text, (SELECT count(*) FROM fact_cart)::text,
                (SELECT count(*) FROM fact_orders)::text,
                (SELECT count(DISTINCT order_id) FROM fact_orders)::text,
                (SELECT count(*) FROM dead_letters)::text,
                (SELECT sum(quantity) FROM fact_cart)::text,
                (SELECT sum(quantity) FROM fact_orders)::text,
                (SELECT sum(amount_usd) FROM fact_orders)::text,
                (SELECT count(*) FROM dim_user)::text, (SELECT count(*) FROM dim_product)::text",
    );
    let fields = [
        "clicks",
        "carts",
        "order_lines",
        "purchases",
        "malformed",
        "cart_units",
        "order_units",
        "order_amount_usd",
        "users",
        "products",
    ];
    for (got, field) in totals[0].iter().zip(fields) {
        if *got != text(&t[field]) {
            problems.push(format!("total {field}: {got:?}, expected {}", t[field]));
        }
    }
    problems
}

/// Every table of two warehouses, natural keys in place of surrogate keys: the same rows.
pub fn compare_warehouses(a: &str, b: &str) -> Vec<String> {
    let queries = [
        format!("SELECT f.event_id, u.user_id, p.product_id, {}, f.session_id, {}, f.page, f.referrer FROM fact_clicks f JOIN dim_user u USING (user_key) JOIN dim_product p USING (product_key) JOIN dim_time t USING (time_key) ORDER BY 1", ts("t.minute"), ts("f.ts")),
        format!("SELECT f.event_id, u.user_id, p.product_id, {}, f.session_id, {}, f.quantity FROM fact_cart f JOIN dim_user u USING (user_key) JOIN dim_product p USING (product_key) JOIN dim_time t USING (time_key) ORDER BY 1", ts("t.minute"), ts("f.ts")),
        format!("SELECT f.order_id, f.line_number, u.user_id, p.product_id, c.currency, {}, {}, f.quantity, f.unit_price, f.amount, f.rate_to_usd, f.amount_usd, f.order_total FROM fact_orders f JOIN dim_user u USING (user_key) JOIN dim_product p USING (product_key) JOIN dim_currency c USING (currency_key) JOIN dim_time t USING (time_key) ORDER BY 1, 2", ts("t.minute"), ts("f.ts")),
        "SELECT * FROM kpi_revenue_minute ORDER BY 1".into(),
        "SELECT * FROM kpi_traffic_minute ORDER BY 1".into(),
        "SELECT * FROM kpi_funnel_5min ORDER BY 1".into(),
        "SELECT * FROM kpi_top_products_5min ORDER BY 1, 3".into(),
        "SELECT metric, window_start, window_end, observed, expected, deviation, score FROM alerts ORDER BY 1, 2".into(),
        "SELECT kpi, event_type, event_id, ts FROM late_events ORDER BY 1, 2, 3, 4".into(),
        "SELECT reason, event_type, payload FROM dead_letters ORDER BY 3, 1".into(),
    ];
    let mut ca = postgres::Client::connect(a, postgres::NoTls).unwrap();
    let mut cb = postgres::Client::connect(b, postgres::NoTls).unwrap();
    let mut problems = Vec::new();
    for q in queries {
        let text_rows = |c: &mut postgres::Client| -> Vec<String> {
            c.query(&format!("SELECT row_to_json(x)::text FROM ({q}) x"), &[])
                .unwrap_or_else(|e| panic!("{q}: {e}"))
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        let (ra, rb) = (text_rows(&mut ca), text_rows(&mut cb));
        if ra != rb {
            let first = ra.iter().zip(&rb).find(|(x, y)| x != y);
            problems.push(format!(
                "{q}: {} rows vs {}; first difference: {first:?}",
                ra.len(),
                rb.len()
            ));
        }
    }
    problems
}

/// Waits until `done()` or fails after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
