//! What the SQL tests share: running a planned job on the local runtime.

use eddy_jobs::{compile_str, CompileOptions};
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
    eddy_operators::run_to_end(&graph, dir.join("dead-letter.jsonl")).unwrap_or_else(|e| {
        panic!("{script} at parallelism {parallelism} failed: {e}\nthe plan:\n{toml}")
    });
}
