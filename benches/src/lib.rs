//! The pieces of `eddy-bench`: run one Nexmark job as fast as it goes (on the built-in generator
//! or on a JSON-lines file, into blackhole sinks), and measure wall and CPU time around it, so
//! that Eddy's figures line up with those of Flink's `shared/flink/bench.sh`.
//!
//! Nothing here is run by the tests and nothing asserts on time: these are on-demand
//! measurements (see docs/benchmarks.md).

use anyhow::{bail, Context};
use eddy_jobs::{compile_file, CompileOptions};
use eddy_operators::format::write_nexmark_events;
use eddy_operators::{Factory, RunSettings};
use eddy_runtime::exec::{execute, CancelHandle, ExecOptions, JobStats};
use eddy_runtime::graph::{GeneratorSpec, JobGraph, NodeKind, SinkConnector};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Event time of the first generated event: that of the shared Nexmark data, so generated files
/// and the generator source continue the shared file's event stream.
pub const BASE_TIME_MS: u64 = 1_767_225_600_000;

/// Events per second of event time, as in the shared Nexmark data.
pub const RATE_PER_SEC: usize = 1000;

/// Replaces the connector of every sink with [`SinkConnector::Blackhole`], so that a benchmark
/// times the query and not the writing of its result (Flink's bench.sh also uses the Nexmark
/// benchmark's blackhole sinks). Returns how many sinks were replaced.
pub fn use_blackhole_sinks(graph: &mut JobGraph) -> usize {
    let mut replaced = 0;
    for node in &mut graph.nodes {
        if let NodeKind::Sink(sink) = &mut node.kind {
            sink.connector = SinkConnector::Blackhole;
            replaced += 1;
        }
    }
    replaced
}

/// The CPU time (user + system) this process has used so far, all threads included, also those
/// that have exited (`utime` + `stime` of `/proc/self/stat`). Read before and after a run, it
/// gives the CPU cost of the run without a libc dependency; the resolution is one clock tick
/// (10 ms: Linux reports these fields in USER_HZ, which is 100 on every mainstream platform).
pub fn process_cpu_time() -> std::io::Result<Duration> {
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unexpected /proc/self/stat",
        )
    };
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| -> std::io::Result<u64> {
        fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(bad)
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / USER_HZ))
}

/// The busy CPU time of the whole machine so far (user, nice, system, irq and softirq of the
/// first line of `/proc/stat`, as Flink's run_query.py counts it). Its growth during a run minus
/// the run's own CPU time is what other processes used meanwhile: near 0 on a quiet machine, and
/// the sign of a disturbed measurement otherwise.
pub fn machine_cpu_time() -> std::io::Result<Duration> {
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    if fields.len() < 7 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unexpected /proc/stat",
        ));
    }
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6];
    Ok(Duration::from_millis(busy * 1000 / USER_HZ))
}

/// The files a file source reads for `path`: the file itself, or the regular, non-hidden files
/// of a directory in name order (the same rule as Eddy's file source).
pub fn input_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if std::fs::metadata(path)?.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let hidden = entry.file_name().to_string_lossy().starts_with(['.', '_']);
        if !hidden && entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// How many events a JSON-lines input holds: its non-empty lines, over all files of a
/// directory, `.gz` files decompressed (with the system's `gzip`). This is what the source
/// reads, person, auction and bid events alike; the job's own statistics cannot tell it, because
/// they count only the rows of the ports a query consumes.
pub fn count_events(path: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for file in input_files(path).with_context(|| format!("cannot read `{}`", path.display()))? {
        let counted = if file.extension().is_some_and(|e| e == "gz") {
            let mut child = Command::new("gzip")
                .arg("-dc")
                .arg(&file)
                .stdout(Stdio::piped())
                .spawn()
                .context("cannot run `gzip -dc` to count the events of a .gz file")?;
            let n = count_lines(child.stdout.take().expect("piped above"))?;
            if !child.wait()?.success() {
                bail!("`gzip -dc {}` failed", file.display());
            }
            n
        } else {
            count_lines(File::open(&file)?)?
        };
        total += counted;
    }
    Ok(total)
}

/// Counts the lines that are not empty once trailing `\r` and `\n` are removed.
pub fn count_lines(mut reader: impl Read) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut lines = 0;
    let mut content = false;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for &b in &buffer[..n] {
            match b {
                b'\n' => {
                    lines += u64::from(content);
                    content = false;
                }
                b'\r' => {}
                _ => content = true,
            }
        }
    }
    Ok(lines + u64::from(content))
}

/// Writes the first `events` events of the Nexmark generator as JSON lines, in the exact layout
/// and with the settings of the shared data file (base time [`BASE_TIME_MS`], rate
/// [`RATE_PER_SEC`]): a bigger input that Flink and Eddy can both be timed on. Its first 100,000
/// lines are `shared/nexmark/events-100k.jsonl.gz`.
pub fn write_events(events: u64, out: &Path) -> anyhow::Result<()> {
    if out.extension().is_some_and(|e| e == "gz") {
        bail!("--out writes plain JSON lines; give a name without .gz (and gzip it yourself if needed)");
    }
    let file = File::create(out).with_context(|| format!("cannot create `{}`", out.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    write_nexmark_events(&mut writer, events, BASE_TIME_MS, RATE_PER_SEC)?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("cannot write `{}`", out.display()))
}

/// Where a benchmarked job gets its events.
#[derive(Clone, Debug)]
pub enum Input {
    /// The built-in Nexmark generator, making this many events as fast as it can.
    Generator { events: u64 },
    /// A JSON-lines file (or directory) holding `events` events (see [`count_events`]).
    File { path: PathBuf, events: u64 },
}

impl Input {
    /// All events the source produces, whichever ports the query reads.
    pub fn events(&self) -> u64 {
        match self {
            Input::Generator { events } | Input::File { events, .. } => *events,
        }
    }
}

/// The cost of one run of a job.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Events the source produced (see [`Input::events`]).
    pub events: u64,
    /// Wall time of the run: building the tasks, processing every event, flushing every window.
    /// Like Flink's `job_s`, it leaves out compiling the job.
    pub wall: Duration,
    /// CPU time of the process over the same span, all threads.
    pub cpu: Duration,
    /// CPU time the rest of the machine used over the same span (see [`machine_cpu_time`]).
    pub other_cpu: Duration,
    /// The executor's per-node record counts.
    pub stats: JobStats,
}

/// Compiles the job file for `input` with every node at `parallelism`, sends its results to
/// blackhole sinks, runs it to the end and measures it.
pub fn run_job(
    job: &Path,
    input: &Input,
    parallelism: u32,
    options: &ExecOptions,
) -> anyhow::Result<Measurement> {
    let input_param = match input {
        Input::Generator { .. } => "<generated>".to_string(),
        Input::File { path, .. } => path.display().to_string(),
    };
    let params = BTreeMap::from([
        ("input".to_string(), input_param),
        ("output".to_string(), "/dev/null".to_string()),
    ]);
    let compile_options = CompileOptions {
        params,
        parallelism: Some(parallelism),
        generate: match input {
            Input::Generator { events } => Some(GeneratorSpec {
                events: Some(*events),
                rate: RATE_PER_SEC as u64,
                base_time: BASE_TIME_MS as i64,
                throttle: false,
            }),
            Input::File { .. } => None,
        },
        topic_files: None,
    };
    let mut graph = compile_file(job, &compile_options).map_err(|e| anyhow::anyhow!("{e}"))?;
    use_blackhole_sinks(&mut graph);
    let dead_letter_path = std::env::temp_dir().join(format!(
        "eddy-bench-dead-letter-{}.jsonl",
        std::process::id()
    ));
    let factory = Factory::new(RunSettings {
        dead_letter_path: dead_letter_path.clone(),
        ..Default::default()
    });

    let machine_before = machine_cpu_time()?;
    let cpu_before = process_cpu_time()?;
    let started = Instant::now();
    let stats = execute(&graph, &factory, options, &CancelHandle::default())
        .with_context(|| format!("job `{}` failed", graph.name))?;
    let wall = started.elapsed();
    let cpu = process_cpu_time()?.saturating_sub(cpu_before);
    let other_cpu = machine_cpu_time()?
        .saturating_sub(machine_before)
        .saturating_sub(cpu);

    if factory.dead_letter_count() > 0 {
        bail!(
            "{} input lines were malformed (see {}): the measurement would not be meaningful",
            factory.dead_letter_count(),
            dead_letter_path.display()
        );
    }
    Ok(Measurement {
        events: input.events(),
        wall,
        cpu,
        other_cpu,
        stats,
    })
}

/// The median of some durations (the mean of the middle two for an even count).
pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    let n = values.len();
    match n {
        0 => Duration::ZERO,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

#[cfg(test)]
mod tests {
    /// This crate's directory, read at run time first: a target dir shared between checkouts
    /// may hold a test binary built in another one.
    fn crate_dir() -> std::path::PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
            .into()
    }

    use super::*;

    #[test]
    fn counts_non_empty_lines_like_the_source() {
        assert_eq!(count_lines(&b""[..]).unwrap(), 0);
        assert_eq!(count_lines(&b"a\nb\n"[..]).unwrap(), 2);
        assert_eq!(count_lines(&b"a\n\r\n\nb"[..]).unwrap(), 2);
        assert_eq!(count_lines(&b"a\r\nb\r\n"[..]).unwrap(), 2);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Duration::from_secs;
        assert_eq!(median(vec![s(3), s(1), s(2)]), s(2));
        assert_eq!(
            median(vec![s(4), s(1), s(2), s(3)]),
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn cpu_times_are_readable() {
        process_cpu_time().unwrap();
        machine_cpu_time().unwrap();
    }

    #[test]
    fn every_sink_becomes_a_blackhole() {
        let job = crate_dir().join("../jobs/nexmark/q0.toml");
        let options = CompileOptions {
            params: BTreeMap::from([("input".to_string(), "in.jsonl".to_string())]),
            parallelism: None,
            generate: None,
            topic_files: None,
        };
        let mut graph = compile_file(&job, &options).unwrap();
        assert_eq!(use_blackhole_sinks(&mut graph), 1);
        assert!(graph.nodes.iter().all(|n| match &n.kind {
            NodeKind::Sink(s) => matches!(s.connector, SinkConnector::Blackhole),
            _ => true,
        }));
    }
}
