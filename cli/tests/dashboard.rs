//! The live dashboard in a real browser: a warehouse filled by the analytics job, `eddy serve`
//! showing it, headless Chromium (driven over WebDriver by chromedriver) loading the page. The
//! test waits for live data, checks that the numbers on the page are the warehouse's, then
//! commits a new minute and sees the page update by itself (server-sent events).

mod common;

use common::shop::{eddy, generate, wait_for, warehouse, Serve};
use eddy_postgres::testing::PgServer;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One HTTP/1.1 request with a JSON body; the JSON answer.
fn http(method: &str, url: &str, body: Option<&Value>) -> Value {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read the head, then exactly the body it announces (the driver keeps connections open).
    let mut answer = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut byte).unwrap();
        assert!(n > 0, "{method} {url}: the connection closed early");
        answer.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let body = match length {
        Some(length) => {
            while answer.len() < head_end + length {
                let n = stream.read(&mut byte).unwrap();
                assert!(n > 0, "{method} {url}: the connection closed early");
                answer.extend_from_slice(&byte[..n]);
            }
            String::from_utf8_lossy(&answer[head_end..head_end + length]).into_owned()
        }
        None => {
            stream.read_to_end(&mut answer).unwrap();
            let body = String::from_utf8_lossy(&answer[head_end..]).into_owned();
            if head.contains("transfer-encoding: chunked") {
                dechunk(&body)
            } else {
                body
            }
        }
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {url}: {e}: {body}"))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromedriver is not installed: apt-get install chromium chromium-driver (.ci/run does)");
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        wait_for(Duration::from_secs(30), "chromedriver", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
    _profile: tempfile::TempDir,
}

impl<'a> Browser<'a> {
    fn open(driver: &'a Driver) -> Browser<'a> {
        let profile = tempfile::tempdir().unwrap();
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromium is not installed: apt-get install chromium (.ci/run does)");
        let answer = http(
            "POST",
            &format!("{}/session", driver.url),
            Some(
                &json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", "--disable-quic", "--no-first-run",
                             "--window-size=1400,1000",
                             format!("--user-data-dir={}", profile.path().display())]
                }}}}),
            ),
        );
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        Browser {
            driver,
            session,
            _profile: profile,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}/{path}", self.driver.url, self.session)
    }

    fn go(&self, page: &str) {
        http("POST", &self.url("url"), Some(&json!({ "url": page })));
    }

    /// Runs a script in the page; its return value.
    fn eval(&self, script: &str) -> Value {
        http(
            "POST",
            &self.url("execute/sync"),
            Some(&json!({ "script": script, "args": [] })),
        )["value"]
            .clone()
    }

    fn screenshot(&self) -> Vec<u8> {
        let png = http("GET", &self.url("screenshot"), None)["value"]
            .as_str()
            .unwrap()
            .to_string();
        base64_decode(&png)
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            http(
                "DELETE",
                &format!("{}/session/{}", self.driver.url, self.session),
                None,
            )
        });
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            _ => 63,
        }
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | value(c) << (18 - 6 * i));
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

/// What the page shows, read from its DOM.
const READ_PAGE: &str = r#"
const t = (id) => document.querySelector(`[data-testid="${id}"]`).textContent;
const d = (id) => document.querySelector(`[data-testid="${id}"]`);
return {
  version: Number(d("status").dataset.version || 0),
  error: t("error"),
  revenueWindow: t("revenue-latest-window"),
  revenue: t("revenue-latest"),
  orders: t("orders-latest"),
  activeUsers: t("active-users"),
  activeSessions: t("active-sessions"),
  events: t("events-latest"),
  activityWindow: t("activity-window"),
  funnelWindow: t("funnel-window"),
  viewed: d("funnel-viewed") && d("funnel-viewed").dataset.value,
  carted: d("funnel-carted") && d("funnel-carted").dataset.value,
  purchased: d("funnel-purchased") && d("funnel-purchased").dataset.value,
  topWindow: t("top-window"),
  top: [...document.querySelectorAll('[data-testid="top-product"]')].map((r) => [
    r.dataset.rank, r.querySelector(".product").textContent,
    r.querySelector(".revenue").textContent, r.querySelector(".units").textContent]),
  alerts: [...document.querySelectorAll('[data-testid="alert"]')].map((a) => [a.dataset.metric, a.dataset.window]),
  chartPoints: document.querySelectorAll('[data-testid="revenue-chart"] circle').length,
  deadLetters: t("dead-letters"),
  lateEvents: t("late-events"),
};
"#;

fn number(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn the_dashboard_shows_the_warehouse_live_in_chromium() {
    let pg = PgServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = warehouse(&pg, "shop");
    let history = dir.path().join("history");
    generate(&format!("file:{}", history.display()), dir.path(), &[]);
    let out = eddy()
        .current_dir(dir.path())
        .arg("run")
        .arg(common::repo().join("jobs/ecommerce/analytics.toml"))
        .arg("--topics-from")
        .arg(&history)
        .args(["--param", &format!("warehouse={url}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serve = Serve::start(&["--warehouse", &url]);
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.go(&format!("{}/", serve.url));
    let mut page = Value::Null;
    wait_for(
        Duration::from_secs(60),
        "the page to show live data",
        || {
            page = browser.eval(READ_PAGE);
            page["version"].as_u64().unwrap_or(0) >= 1 && page["revenue"] != "–"
        },
    );
    assert_eq!(page["error"], "", "{page}");

    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let ts = |c: &str| format!("to_char({c}, 'YYYY-MM-DD HH24:MI:SS')");
    let latest = db
        .query_one(
            &format!("SELECT {}, revenue_usd::float8, orders FROM kpi_revenue_minute ORDER BY window_start DESC LIMIT 1", ts("window_start")),
            &[],
        )
        .unwrap();
    assert_eq!(page["revenueWindow"], latest.get::<_, String>(0));
    assert!(
        (number(&page["revenue"]) - latest.get::<_, f64>(1)).abs() <= 0.005,
        "{page}"
    );
    assert_eq!(page["orders"], latest.get::<_, i64>(2).to_string());
    let points: i64 = db
        .query_one(
            "SELECT (extract(epoch FROM max(window_start) - greatest(min(window_start),
                     max(window_start) - interval '59 minutes')) / 60)::bigint + 1
             FROM kpi_revenue_minute",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        page["chartPoints"], points,
        "one point per minute, also without orders"
    );
    let activity = db
        .query_one(
            &format!("SELECT {}, active_users, active_sessions, events FROM kpi_traffic_minute ORDER BY window_start DESC LIMIT 1", ts("window_start")),
            &[],
        )
        .unwrap();
    assert_eq!(page["activityWindow"], activity.get::<_, String>(0));
    assert_eq!(page["activeUsers"], activity.get::<_, i64>(1).to_string());
    assert_eq!(
        page["activeSessions"],
        activity.get::<_, i64>(2).to_string()
    );
    assert_eq!(page["events"], activity.get::<_, i64>(3).to_string());
    let funnel = db
        .query_one(
            &format!("SELECT {}, viewed, carted, purchased FROM kpi_funnel_5min ORDER BY window_start DESC LIMIT 1", ts("window_start")),
            &[],
        )
        .unwrap();
    assert_eq!(page["funnelWindow"], funnel.get::<_, String>(0));
    assert_eq!(page["viewed"], funnel.get::<_, i64>(1).to_string());
    assert_eq!(page["carted"], funnel.get::<_, i64>(2).to_string());
    assert_eq!(page["purchased"], funnel.get::<_, i64>(3).to_string());
    let top: Vec<(i32, String, f64, i64)> = db
        .query(
            "SELECT rank, product_id, revenue_usd::float8, units FROM kpi_top_products_5min
             WHERE window_start = (SELECT max(window_start) FROM kpi_top_products_5min) ORDER BY rank",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let shown = page["top"].as_array().unwrap();
    assert_eq!(shown.len(), top.len());
    assert_eq!(top.len(), 10, "ten products");
    for (row, (rank, product, revenue, units)) in shown.iter().zip(&top) {
        assert_eq!(row[0], rank.to_string());
        assert_eq!(row[1], *product);
        assert!((number(&row[2]) - revenue).abs() <= 0.005, "{row}");
        assert_eq!(row[3], units.to_string());
    }
    let alerts: Vec<(String, String)> = db
        .query(
            &format!(
                "SELECT metric, {} FROM alerts ORDER BY window_start DESC, metric LIMIT 20",
                ts("window_start")
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let shown: Vec<(String, String)> = page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_str().unwrap().into(), a[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(shown, alerts);
    assert!(
        alerts.iter().any(|(m, _)| m == "revenue_usd"),
        "the revenue drop is on the page"
    );
    let counts = db
        .query_one(
            "SELECT (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM late_events)",
            &[],
        )
        .unwrap();
    assert_eq!(page["deadLetters"], counts.get::<_, i64>(0).to_string());
    assert_eq!(page["lateEvents"], counts.get::<_, i64>(1).to_string());
    assert!(counts.get::<_, i64>(0) > 0 && counts.get::<_, i64>(1) > 0);

    // A new minute committed (as a sink's commit does: the row and a notification in one
    // transaction) reaches the open page without a reload.
    let before = page["version"].as_u64().unwrap();
    db.batch_execute(
        "BEGIN;
         INSERT INTO kpi_revenue_minute VALUES
           ('2026-01-01 00:12:00', '2026-01-01 00:13:00', 12345.67, 89, 120, 138.7154);
         SELECT pg_notify('eddy_commit', 'kpi_revenue_minute');
         COMMIT;",
    )
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "the page to show the new minute",
        || {
            page = browser.eval(READ_PAGE);
            page["revenueWindow"] == "2026-01-01 00:12:00"
        },
    );
    assert_eq!(page["revenue"], "12345.67");
    assert!(page["version"].as_u64().unwrap() > before);

    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let target = std::env::var_os("EDDY_DASHBOARD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("dashboard.png"));
    std::fs::write(&target, png).unwrap();
}

#[test]
fn sigterm_stops_serve_while_a_dashboard_stream_is_open() {
    let pg = PgServer::start().unwrap();
    let url = warehouse(&pg, "term");
    let serve = Serve::start(&["--warehouse", &url]);
    // An open event stream, as a dashboard page holds one.
    let host = serve.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&host).unwrap();
    write!(
        stream,
        "GET /api/v1/dashboard/stream HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 64];
    let _ = stream.read(&mut first);
    // Before the fix it waited for the stream forever and ignored SIGTERM.
    assert_eq!(serve.terminate(Duration::from_secs(15)), Some(0));
}
