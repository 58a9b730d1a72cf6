//! One round of a chaos run: the job started, run to its end while faults happen, and its
//! output checked. A job round also starts a decoy copy of the job and cancels it mid-run, to
//! check that a cancelled job writes nothing after its cancel returned.

use crate::monitor::Monitor;
use crate::report::RoundResult;
use crate::scenario::{Dependencies, Scenario};
use crate::{ChaosConfig, ChaosError};
use eddy_proto::leader::Coordinators;
use eddy_proto::v1::{CancelRequest, SubmitRequest};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One run of the job to its end.
pub(crate) struct Round {
    number: usize,
    pub job: String,
    submitted: Instant,
    kind: RoundKind,
}

/// What a round checks at its end.
enum RoundKind {
    /// The committed files of `output` against the reference, and a decoy job.
    Job {
        output: PathBuf,
        decoy: Option<Decoy>,
    },
    /// The warehouse at `url` against the generator's ground truth.
    Shop {
        url: String,
        truth: serde_json::Value,
    },
}

/// A job cancelled mid-run, and what its committed output held when the cancel returned.
struct Decoy {
    job: String,
    output: PathBuf,
    at_cancel: Option<Vec<(String, u64)>>,
}

/// The committed files of a sink directory (not hidden, not `_`), with their sizes.
pub(crate) fn committed_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().ok()?;
            (meta.is_file() && !name.starts_with('.') && !name.starts_with('_'))
                .then_some((name, meta.len()))
        })
        .collect();
    files.sort();
    files
}

/// Submits `config`'s job with `params` (and the run's checkpoint settings); its id.
async fn submit(
    config: &ChaosConfig,
    client: &Coordinators,
    params: HashMap<String, String>,
    checkpoints: &Path,
    parallelism: u32,
) -> Result<String, ChaosError> {
    let job = config.scenario.job();
    let text = std::fs::read_to_string(job).map_err(|e| ChaosError::io(job, e))?;
    let request = SubmitRequest {
        job_text: text,
        job_path: job.display().to_string(),
        params,
        parallelism,
        checkpoint_interval_ms: config.checkpoint_interval.as_millis() as u64,
        checkpoint_dir: checkpoints.display().to_string(),
        retain_checkpoints: 2,
        max_source_rate: config.scenario.max_rate(),
        ..Default::default()
    };
    client
        .call(Duration::from_secs(60), |c| {
            let r = request.clone();
            async move { eddy_proto::net::client_api(c).submit(r).await }
        })
        .await
        .map(|r| r.into_inner().job_id)
        .map_err(|e| ChaosError::Cluster(format!("submit: {}", e.message())))
}

/// A new warehouse database `db` with the e-commerce migrations; its URL.
fn create_warehouse(deps: &Dependencies, db: &str) -> Result<String, ChaosError> {
    let server = deps
        .postgres
        .as_ref()
        .ok_or_else(|| ChaosError::Setup("no PostgreSQL server".into()))?;
    let mut client = postgres::Client::connect(&server.url(), postgres::NoTls)
        .map_err(|e| ChaosError::Setup(format!("PostgreSQL: {e}")))?;
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .map_err(|e| ChaosError::Setup(format!("CREATE DATABASE {db}: {e}")))?;
    let url = deps.postgres_url(db);
    let migrations: Vec<eddy_postgres::migrate::Migration> =
        eddy_jobs::ecommerce::WAREHOUSE_MIGRATIONS
            .iter()
            .map(|(name, sql)| eddy_postgres::migrate::Migration { name, sql })
            .collect();
    eddy_postgres::migrate::migrate(&url, &migrations)
        .map_err(|e| ChaosError::Setup(format!("warehouse migrations: {e}")))?;
    Ok(url)
}

/// Generates a round's shop traffic into Kafka topics `<topics>.*`; the ground truth.
fn generate(
    config: &ChaosConfig,
    args: &[String],
    deps: &Dependencies,
    topics: &str,
    truth: &Path,
) -> Result<serde_json::Value, ChaosError> {
    let out = std::process::Command::new(&config.exe)
        .args(["gen", "ecommerce"])
        .args(args)
        .args(["--fast", "--partitions", "2", "--topics", topics])
        .arg("--to")
        .arg(format!("kafka://{}", deps.broker_address()))
        .arg("--expected")
        .arg(truth)
        .output()
        .map_err(|e| ChaosError::io(&config.exe, e))?;
    if !out.status.success() {
        return Err(ChaosError::Setup(format!(
            "eddy gen ecommerce: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = std::fs::read_to_string(truth).map_err(|e| ChaosError::io(truth, e))?;
    serde_json::from_str(&text).map_err(|e| ChaosError::Setup(format!("{}: {e}", truth.display())))
}

impl Round {
    /// Starts round `number`: its job (and a decoy, or the shop's traffic and warehouse).
    pub async fn start(
        config: &ChaosConfig,
        client: &Coordinators,
        monitor: &Monitor,
        checkpoints: &Path,
        deps: &Dependencies,
        number: usize,
    ) -> Result<Round, ChaosError> {
        let (job, kind) = match &config.scenario {
            Scenario::Job(scenario) => {
                let params = |output: &Path| {
                    let mut p: HashMap<String, String> = scenario.params.iter().cloned().collect();
                    p.insert("output".into(), format!("{}/", output.display()));
                    p
                };
                let output = config.dir.join(format!("round-{number}"));
                let job = submit(
                    config,
                    client,
                    params(&output),
                    &checkpoints.join(format!("round-{number}")),
                    config.parallelism,
                )
                .await?;
                let decoy_output = config.dir.join(format!("decoy-{number}"));
                let decoy = submit(
                    config,
                    client,
                    params(&decoy_output),
                    &checkpoints.join(format!("decoy-{number}")),
                    1,
                )
                .await
                .ok()
                .map(|job| Decoy {
                    job,
                    output: decoy_output,
                    at_cancel: None,
                });
                (job, RoundKind::Job { output, decoy })
            }
            Scenario::Shop(shop) => {
                let truth_file = config.dir.join(format!("truth-{number}.json"));
                // A produce the broker fails (it answered UnknownServerError once, right after
                // a restart) may still have stored the record: the round's traffic is then
                // written again into new topics and a new warehouse, never appended twice.
                let mut tries = 0;
                let (db, url, truth) = loop {
                    tries += 1;
                    let db = match tries {
                        1 => format!("shop{number}"),
                        n => format!("shop{number}try{n}"),
                    };
                    let made = crate::off_runtime(|| {
                        let url = create_warehouse(deps, &db)?;
                        let truth = generate(config, &shop.generate, deps, &db, &truth_file)?;
                        Ok::<_, ChaosError>((url, truth))
                    });
                    match made {
                        Ok((url, truth)) => break (db, url, truth),
                        Err(e) if tries < 3 => {
                            tracing::warn!(round = number, error = %e, "the round's traffic is written again");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                let params: HashMap<String, String> = [
                    ("brokers", deps.broker_address()),
                    ("warehouse", url.clone()),
                    ("topics", db.clone()),
                    ("end_when_idle", "3s".to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                let job = submit(
                    config,
                    client,
                    params,
                    &checkpoints.join(format!("round-{number}")),
                    config.parallelism,
                )
                .await?;
                (job, RoundKind::Shop { url, truth })
            }
        };
        monitor.watch(&job);
        tracing::info!(round = number, %job, "round started");
        Ok(Round {
            number,
            job,
            submitted: Instant::now(),
            kind,
        })
    }

    pub fn finished(&self, monitor: &Monitor) -> bool {
        monitor.latest(&self.job).is_some_and(|s| s.terminal)
    }

    /// Waits until the job runs and has completed a checkpoint (or ended), at most `limit`.
    pub async fn wait_running(&self, monitor: &Monitor, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if monitor
                .latest(&self.job)
                .is_some_and(|s| s.terminal || s.last_checkpoint > 0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the job's end, restarting processes that crash meanwhile.
    pub async fn wait_finished_supervised(
        &self,
        monitor: &Monitor,
        limit: Duration,
        cluster: &mut crate::cluster::Cluster,
        injector: &mut crate::inject::Injector,
    ) {
        let until = Instant::now() + limit;
        while Instant::now() < until && !self.finished(monitor) {
            injector.crashes.extend(cluster.reap());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How long the rest of the input takes at the paced rate, from the submission.
    pub fn time_left(&self, config: &ChaosConfig) -> Duration {
        let total = Duration::from_secs_f64(
            config.scenario.input_records() as f64 / config.scenario.max_rate().max(1) as f64,
        );
        total.saturating_sub(self.submitted.elapsed())
    }

    /// Cancels the decoy job (once) and notes what it had committed when the cancel returned.
    pub async fn cancel_decoy(&mut self, client: &Coordinators) {
        let RoundKind::Job {
            decoy: slot @ Some(_),
            ..
        } = &mut self.kind
        else {
            return;
        };
        let decoy = slot.as_mut().expect("matched Some");
        if decoy.at_cancel.is_some() {
            return;
        }
        let request = CancelRequest {
            job_id: decoy.job.clone(),
        };
        let cancelled = client
            .call(Duration::from_secs(30), |c| {
                let r = request.clone();
                async move { eddy_proto::net::client_api(c).cancel(r).await }
            })
            .await;
        match cancelled {
            Ok(_) => decoy.at_cancel = Some(committed_files(&decoy.output)),
            // Already over (finished before): nothing to check about a cancel.
            Err(e) => {
                tracing::info!(job = %decoy.job, error = %e.message(), "decoy not cancelled");
                *slot = None;
            }
        }
    }

    /// The checks of a round whose job ended (or ran out of time).
    pub async fn verify(self, config: &ChaosConfig, monitor: &Monitor) -> RoundResult {
        let last = monitor.latest(&self.job);
        let state = last.as_ref().map(|s| s.state.clone()).unwrap_or_default();
        let mut problems = Vec::new();
        if state != "finished" {
            problems.push(format!(
                "job {} of round {} ended as `{state}` ({})",
                self.job,
                self.number,
                last.as_ref().map(|s| s.message.as_str()).unwrap_or("")
            ));
        }
        let mut decoy_cancelled = false;
        let diff = match &self.kind {
            RoundKind::Job { output, decoy } => {
                let Scenario::Job(scenario) = &config.scenario else {
                    unreachable!("a job round belongs to a job scenario")
                };
                if let Some(Decoy {
                    job,
                    output,
                    at_cancel: Some(before),
                }) = decoy
                {
                    decoy_cancelled = true;
                    // Time for a zombie to show itself.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let after = committed_files(output);
                    if &after != before {
                        problems.push(format!(
                            "cancelled job {job} wrote after its cancel returned: {before:?} became {after:?}"
                        ));
                    }
                }
                check_output(output, &scenario.expected, &config.dir, self.number)
            }
            RoundKind::Shop { url, truth } => {
                let diff = crate::off_runtime(|| check_warehouse(url, truth));
                if diff.error.is_some() {
                    let dump = config.dir.join(format!("warehouse-{}", self.number));
                    crate::off_runtime(|| dump_warehouse(url, &dump));
                }
                diff
            }
        };
        if let Some(e) = &diff.error {
            problems.push(e.clone());
        }
        RoundResult {
            round: self.number,
            job: self.job,
            state,
            expected: diff.expected,
            found: diff.found,
            missing: diff.missing,
            duplicated: diff.duplicated,
            unexpected: diff.unexpected,
            decoy_cancelled,
            problems,
        }
    }
}

/// Writes the KPI and late-event tables of a warehouse that differs from the truth as JSON
/// lines into `dir`, for a post-mortem.
fn dump_warehouse(url: &str, dir: &Path) {
    let Ok(mut client) = postgres::Client::connect(url, postgres::NoTls) else {
        return;
    };
    let _ = std::fs::create_dir_all(dir);
    for table in [
        "kpi_revenue_minute",
        "kpi_traffic_minute",
        "kpi_funnel_5min",
        "kpi_top_products_5min",
        "alerts",
        "late_events",
    ] {
        let sql = format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY 1");
        if let Ok(rows) = client.query(&sql, &[]) {
            let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let _ = std::fs::write(dir.join(format!("{table}.jsonl")), lines.join("\n"));
        }
    }
}

/// The warehouse against the ground truth: fact rows counted, every KPI compared.
fn check_warehouse(url: &str, truth: &serde_json::Value) -> OutputDiff {
    let totals = &truth["totals"];
    let expected: u64 = ["clicks", "carts", "order_lines"]
        .iter()
        .filter_map(|f| totals[*f].as_u64())
        .sum();
    let found: u64 = postgres::Client::connect(url, postgres::NoTls)
        .and_then(|mut c| {
            c.query_one(
                "SELECT ((SELECT count(*) FROM fact_clicks) + (SELECT count(*) FROM fact_cart) + (SELECT count(*) FROM fact_orders))::bigint",
                &[],
            )
        })
        .map(|row| row.get::<_, i64>(0) as u64)
        .unwrap_or(0);
    let problems = crate::shop::compare_with_truth(url, truth);
    OutputDiff {
        expected: expected as usize,
        found: found as usize,
        missing: expected.saturating_sub(found) as usize,
        // Facts are upserted by their keys: a row twice shows in the KPIs, among the problems.
        duplicated: 0,
        unexpected: found.saturating_sub(expected) as usize,
        error: (!problems.is_empty()).then(|| {
            format!(
                "the warehouse differs from the ground truth: {}",
                problems.join("; ")
            )
        }),
    }
}

/// How the committed output compares with the reference.
#[derive(Debug, Default)]
pub(crate) struct OutputDiff {
    expected: usize,
    found: usize,
    missing: usize,
    duplicated: usize,
    unexpected: usize,
    error: Option<String>,
}

fn check_output(output: &Path, expected: &Path, dir: &Path, round: usize) -> OutputDiff {
    let scratch = dir.join(format!("round-{round}.jsonl"));
    let mut text = Vec::new();
    for (name, _) in committed_files(output) {
        if let Ok(bytes) = std::fs::read(output.join(name)) {
            text.extend_from_slice(&bytes);
        }
    }
    if let Err(e) = std::fs::write(&scratch, &text) {
        return OutputDiff {
            error: Some(format!("cannot write {}: {e}", scratch.display())),
            ..Default::default()
        };
    }
    let rows = |p: &Path| eddy_jobs::compare::read_rows(p);
    match (rows(expected), rows(&scratch)) {
        (Ok(e), Ok(a)) => {
            let d = eddy_jobs::compare::diff(&e, &a);
            OutputDiff {
                expected: e.len(),
                found: a.len(),
                missing: d.missing.len(),
                duplicated: d.duplicated,
                unexpected: d.extra.len() - d.duplicated,
                error: (!d.is_equal()).then(|| d.to_string()),
            }
        }
        (Err(e), _) | (_, Err(e)) => OutputDiff {
            error: Some(e),
            ..Default::default()
        },
    }
}
