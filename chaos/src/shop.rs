//! The e-commerce warehouse against the generator's ground truth: every KPI, alert, late count
//! and total, compared row by row (doubles to 1e-9 relative, as the team's oracle compares).
//! Used by the chaos harness's shop scenario and by the e-commerce tests.

use serde_json::Value;

fn rows(client: &mut postgres::Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    Ok(client
        .query(sql, &[])
        .map_err(|e| format!("{sql}: {e}"))?
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect())
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
        (Some(g), Some(w)) if double => match (g.parse::<f64>(), w.parse::<f64>()) {
            (Ok(g), Ok(w)) => (g - w).abs() <= 1e-9 * g.abs().max(w.abs()).max(1e-300),
            _ => g == w,
        },
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
    let got = match rows(
        client,
        &format!(
            "SELECT {} FROM {from} t ORDER BY {}",
            select.join(", "),
            order.join(", ")
        ),
    ) {
        Ok(got) => got,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let want: Vec<Vec<Option<String>>> = expected
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
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
    let mut client = match postgres::Client::connect(url, postgres::NoTls) {
        Ok(c) => c,
        Err(e) => return vec![format!("cannot connect to the warehouse at {url}: {e}")],
    };
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
    let mut alerts = expected["alerts"].as_array().cloned().unwrap_or_default();
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
    let late: Vec<(String, i64)> =
        match client.query("SELECT kpi, count(*) FROM late_events GROUP BY 1", &[]) {
            Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
            Err(e) => {
                problems.push(format!("late_events: {e}"));
                Vec::new()
            }
        };
    for (kpi, want) in expected["late_events"].as_object().into_iter().flatten() {
        let got = late.iter().find(|(k, _)| k == kpi).map_or(0, |(_, n)| *n);
        if Some(got) != want.as_i64() {
            problems.push(format!("late events of {kpi}: {got}, expected {want}"));
        }
    }
    let t = &expected["totals"];
    let totals = match rows(
        &mut client,
        "SELECT (SELECT count(*) FROM fact_clicks)::text, (SELECT count(*) FROM fact_cart)::text,
                (SELECT count(*) FROM fact_orders)::text,
                (SELECT count(DISTINCT order_id) FROM fact_orders)::text,
                (SELECT count(*) FROM dead_letters)::text,
                (SELECT sum(quantity) FROM fact_cart)::text,
                (SELECT sum(quantity) FROM fact_orders)::text,
                (SELECT sum(amount_usd) FROM fact_orders)::text,
                (SELECT count(*) FROM dim_user)::text, (SELECT count(*) FROM dim_product)::text",
    ) {
        Ok(t) => t,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
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
    for (got, field) in totals.first().into_iter().flatten().zip(fields) {
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
    let connect = |url: &str| {
        postgres::Client::connect(url, postgres::NoTls)
            .map_err(|e| format!("cannot connect to {url}: {e}"))
    };
    let (mut ca, mut cb) = match (connect(a), connect(b)) {
        (Ok(ca), Ok(cb)) => (ca, cb),
        (Err(e), _) | (_, Err(e)) => return vec![e],
    };
    let mut problems = Vec::new();
    for q in queries {
        let text_rows = |c: &mut postgres::Client| -> Result<Vec<String>, String> {
            Ok(
                c.query(&format!("SELECT row_to_json(x)::text FROM ({q}) x"), &[])
                    .map_err(|e| format!("{q}: {e}"))?
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
            )
        };
        let (ra, rb) = match (text_rows(&mut ca), text_rows(&mut cb)) {
            (Ok(ra), Ok(rb)) => (ra, rb),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(e);
                continue;
            }
        };
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
