//! The report of a run: every fault with its time, target and recovery; recovery percentiles
//! per kind; each round's output against the reference; the invariants; the verdict. Printed as
//! a table and written as JSON (`--report`).

use crate::faults::{FaultKind, Planned};
use crate::monitor::Observed;
use crate::ChaosConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// One injected fault and how the job recovered.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub index: usize,
    pub kind: FaultKind,
    /// What was hit, resolved at injection (e.g. `c2 (leader)`).
    pub target: String,
    /// When it began, in ms since the start of the run.
    pub at_ms: u64,
    /// How long it was in effect (a kill: until the restart).
    pub duration_ms: u64,
    /// From the heal (or restart) to the job's next completed checkpoint.
    pub checkpoint_recovery_ms: Option<u64>,
    /// From the heal to a second of source throughput at 90 % of the undisturbed rate.
    pub throughput_recovery_ms: Option<u64>,
    pub within_bound: bool,
}

/// One run of the job to its end and its checks.
#[derive(Clone, Debug, Serialize)]
pub struct RoundResult {
    pub round: usize,
    pub job: String,
    pub state: String,
    pub expected: usize,
    pub found: usize,
    pub missing: usize,
    pub duplicated: usize,
    /// Rows in the output that the reference does not have at all.
    pub unexpected: usize,
    /// Whether a decoy job was cancelled during the round (and checked for writes after).
    pub decoy_cancelled: bool,
    pub problems: Vec<String>,
}

/// Recovery percentiles of one kind of fault, in ms.
#[derive(Clone, Debug, Serialize)]
pub struct KindSummary {
    pub kind: FaultKind,
    pub count: usize,
    pub checkpoint_p50_ms: Option<u64>,
    pub checkpoint_p99_ms: Option<u64>,
    pub checkpoint_max_ms: Option<u64>,
    pub throughput_p50_ms: Option<u64>,
    pub throughput_p99_ms: Option<u64>,
    pub throughput_max_ms: Option<u64>,
    /// Faults not recovered from within the bound.
    pub over_bound: usize,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub job: String,
    pub seed: u64,
    pub workers: usize,
    pub parallelism: u32,
    pub max_recovery_ms: u64,
    pub elapsed_s: f64,
    /// Source records per second before the first fault.
    pub baseline_rate: Option<f64>,
    pub schedule: Vec<Planned>,
    pub faults: Vec<FaultRecord>,
    pub kinds: Vec<KindSummary>,
    pub rounds: Vec<RoundResult>,
    /// Broken invariants (history, Raft, output, cancelled jobs, recovery bounds).
    pub violations: Vec<String>,
    /// Terms in which a leader was seen.
    pub terms_seen: usize,
    /// Fault kinds left out, and why.
    pub skipped: Vec<String>,
    /// Processes that exited by themselves (the harness restarted them, as a supervisor
    /// would). Not a verdict by itself: what it cost shows in the recoveries and the output.
    pub crashes: Vec<crate::cluster::Crash>,
    pub passed: bool,
    /// Why the run stopped before its schedule ended without a verdict on Eddy (the host's
    /// own disk filled up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<String>,
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &ChaosConfig,
        schedule: Vec<Planned>,
        faults: Vec<FaultRecord>,
        rounds: Vec<RoundResult>,
        observed: Observed,
        skipped: Vec<String>,
        baseline_rate: Option<f64>,
        elapsed: Duration,
    ) -> Report {
        let mut by_kind: BTreeMap<FaultKind, Vec<&FaultRecord>> = BTreeMap::new();
        for f in &faults {
            by_kind.entry(f.kind).or_default().push(f);
        }
        let kinds = by_kind
            .into_iter()
            .map(|(kind, records)| {
                let mut ckpt: Vec<u64> = records
                    .iter()
                    .filter_map(|r| r.checkpoint_recovery_ms)
                    .collect();
                let mut tput: Vec<u64> = records
                    .iter()
                    .filter_map(|r| r.throughput_recovery_ms)
                    .collect();
                ckpt.sort_unstable();
                tput.sort_unstable();
                KindSummary {
                    kind,
                    count: records.len(),
                    checkpoint_p50_ms: percentile(&ckpt, 0.5),
                    checkpoint_p99_ms: percentile(&ckpt, 0.99),
                    checkpoint_max_ms: ckpt.last().copied(),
                    throughput_p50_ms: percentile(&tput, 0.5),
                    throughput_p99_ms: percentile(&tput, 0.99),
                    throughput_max_ms: tput.last().copied(),
                    over_bound: records.iter().filter(|r| !r.within_bound).count(),
                }
            })
            .collect();
        let mut violations = observed.violations;
        for r in &rounds {
            violations.extend(r.problems.iter().cloned());
        }
        for f in faults.iter().filter(|f| !f.within_bound) {
            violations.push(format!(
                "fault {} ({} on {}): not recovered within {} ms (checkpoint after {}, throughput after {})",
                f.index,
                f.kind.name(),
                f.target,
                config.max_recovery.as_millis(),
                show(f.checkpoint_recovery_ms),
                show(f.throughput_recovery_ms),
            ));
        }
        let passed = violations.is_empty() && !rounds.is_empty();
        Report {
            job: config.scenario.job().display().to_string(),
            seed: config.seed,
            workers: config.workers,
            parallelism: config.parallelism,
            max_recovery_ms: config.max_recovery.as_millis() as u64,
            elapsed_s: elapsed.as_secs_f64(),
            baseline_rate,
            schedule,
            faults,
            kinds,
            rounds,
            violations,
            terms_seen: observed.leaders.len(),
            skipped,
            crashes: Vec::new(),
            passed,
            inconclusive: None,
        }
    }

    /// The report as a terminal table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chaos: {} on {} workers at parallelism {}, seed {}, {} faults in {:.0} s",
            self.job,
            self.workers,
            self.parallelism,
            self.seed,
            self.faults.len(),
            self.elapsed_s
        );
        let _ = writeln!(
            out,
            "\n{:<30} {:>5}  {:>26}  {:>26}  {:>5}",
            "fault kind", "count", "to checkpoint p50/p99/max", "to 90% rate p50/p99/max", "over"
        );
        for k in &self.kinds {
            let _ = writeln!(
                out,
                "{:<30} {:>5}  {:>26}  {:>26}  {:>5}",
                k.kind.name(),
                k.count,
                format!(
                    "{} / {} / {}",
                    show(k.checkpoint_p50_ms),
                    show(k.checkpoint_p99_ms),
                    show(k.checkpoint_max_ms)
                ),
                format!(
                    "{} / {} / {}",
                    show(k.throughput_p50_ms),
                    show(k.throughput_p99_ms),
                    show(k.throughput_max_ms)
                ),
                k.over_bound
            );
        }
        let _ = writeln!(
            out,
            "\n{:<6} {:<10} {:>9} {:>9} {:>8} {:>11} {:>11}  cancel checked",
            "round", "state", "expected", "found", "missing", "duplicated", "unexpected"
        );
        for r in &self.rounds {
            let _ = writeln!(
                out,
                "{:<6} {:<10} {:>9} {:>9} {:>8} {:>11} {:>11}  {}",
                r.round,
                r.state,
                r.expected,
                r.found,
                r.missing,
                r.duplicated,
                r.unexpected,
                if r.decoy_cancelled { "yes" } else { "no" }
            );
        }
        for s in &self.skipped {
            let _ = writeln!(out, "skipped: {s}");
        }
        for c in &self.crashes {
            let _ = writeln!(
                out,
                "crashed (restarted): {} ({}): {}",
                c.node, c.status, c.log_tail
            );
        }
        if let Some(why) = &self.inconclusive {
            let _ = writeln!(out, "\nverdict: INCONCLUSIVE: {why}");
            for v in &self.violations {
                let _ = writeln!(out, "  - {v}");
            }
        } else if self.violations.is_empty() {
            let _ = writeln!(
                out,
                "\nverdict: PASS (0 lost, 0 duplicated, every recovery within {} ms; {} Raft terms, one leader each)",
                self.max_recovery_ms, self.terms_seen
            );
        } else {
            let _ = writeln!(out, "\nverdict: FAIL");
            for v in &self.violations {
                let _ = writeln!(out, "  - {v}");
            }
        }
        out
    }
}

/// A duration in ms for the table, `-` when there is none.
pub fn show(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_string(), |ms| format!("{ms}ms"))
}
