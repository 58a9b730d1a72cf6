//! What the SQL tests share: running a planned job on the local runtime.

use eddy_jobs::{compile_str, CompileOptions};
use eddy_operators::{Factory, RunSettings};
use eddy_runtime::exec::{execute, CancelHandle, ExecOptions};
use std::path::Path;

/// Compiles the job file `toml` planned from `script` at `parallelism` and runs it to its end
/// on the local runtime (dead letters under `dir`); panics with the plan on any error.
pub fn run_job(script: &str, toml: &str, parallelism: u32, dir: &Path) {
    let options = CompileOptions {
        parallelism: Some(parallelism),
        ..Default::default()
    };
    let graph =
        compile_str(script, toml, &options).unwrap_or_else(|e| panic!("{e}\nthe plan:\n{toml}"));
    let factory = Factory::new(RunSettings {
        dead_letter_path: dir.join("dead-letter.jsonl"),
        ..Default::default()
    });
    execute(
        &graph,
        &factory,
        &ExecOptions::default(),
        &CancelHandle::default(),
    )
    .unwrap_or_else(|e| {
        panic!("{script} at parallelism {parallelism} failed: {e}\nthe plan:\n{toml}")
    });
}
