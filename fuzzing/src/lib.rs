//! Fuzz targets: each takes arbitrary bytes, feeds them to one of Eddy's entry points for
//! untrusted input, and must return (never panic, never abort). `fuzz/` runs them under
//! libFuzzer (`cargo fuzz run job_file fuzzing/corpus/job_file`); `tests/corpus.rs` replays the
//! corpus kept in `fuzzing/corpus/` on every test run. docs/reliability.md says how.

use eddy_proto::v1;
use eddy_runtime::checkpoint::coordinator::{
    CheckpointCoordinator, CheckpointLimits, CoordinatorConfig, CoordinatorInput, NodeInfo,
};
use eddy_runtime::checkpoint::CheckpointStore;
use prost::Message;
use std::sync::{Arc, OnceLock};

/// A fuzz target: arbitrary bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/` and the corpus directories call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("job_file", job_file),
    ("expression", expression),
    ("ingest_payload", ingest_payload),
    ("rpc_messages", rpc_messages),
    ("sql_script", sql_script),
];

/// A job file (TOML) through the compiler: a graph or a located error.
pub fn job_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let options = eddy_jobs::CompileOptions {
        params: [
            ("input".to_string(), "events.jsonl".to_string()),
            ("output".to_string(), "out/".to_string()),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    if let Err(e) = eddy_jobs::compile_str("fuzz.toml", text, &options) {
        // Rendering the error (its source line and marker) must not panic either.
        let _ = e.to_string();
    }
}

/// A Flink SQL script through the planner, and the job it becomes through the job compiler:
/// after the Nexmark benchmark's DDL when the first byte is odd, alone otherwise.
pub fn sql_script(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut files = Vec::new();
    let mut options = eddy_sql::SqlOptions::default();
    if mode & 1 == 1 {
        files.push((
            "ddl.sql".to_string(),
            include_str!("../../sql/tests/queries/ddl.sql").to_string(),
        ));
        options
            .params
            .insert("INPUT".to_string(), "events.jsonl".to_string());
    }
    files.push(("fuzz.sql".to_string(), text.to_string()));
    match eddy_sql::compile_texts(files, &options) {
        Ok(job) => {
            let _ = eddy_jobs::compile_str("fuzz.sql", &job.toml, &Default::default());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// An expression through the parser and the type checker, over a schema of every type.
pub fn expression(data: &[u8]) {
    use eddy_runtime::types::{DataType, Field, Schema};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        Schema::new(vec![
            Field::new("id", DataType::BigInt),
            Field::new(
                "price",
                DataType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            Field::new("score", DataType::Double),
            Field::new("name", DataType::String),
            Field::new("ts", DataType::Timestamp),
            Field::new("ok", DataType::Boolean),
        ])
    });
    if let Ok(ast) = eddy_runtime::expr::parse_expr(text) {
        let _ = eddy_runtime::expr::compile(&ast, &eddy_runtime::expr::Scope::single(schema));
    }
}

/// An ingest request body: split as a batch (NDJSON and JSON array), every event validated
/// against the e-commerce schemas and routed, or turned into a dead letter. The same bytes
/// are also what `eddy serve` decodes before it reads a body: an `Authorization` or `Cookie`
/// header's key, and an API key file.
pub fn ingest_payload(data: &[u8]) {
    static CATALOG: OnceLock<eddy_ingest::Catalog> = OnceLock::new();
    let catalog = CATALOG.get_or_init(|| {
        eddy_ingest::Catalog::ecommerce("shop").expect("the shipped schemas compile")
    });
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for key in [
        eddy_ingest::access::key_of(Some(text), []),
        eddy_ingest::access::key_of(None, [text]),
    ]
    .into_iter()
    .flatten()
    {
        let _ = eddy_security::token::parse(key);
    }
    let _ = eddy_ingest::access::KeyFile::parse(text, std::path::Path::new("keys.toml"));
    for ndjson in [false, true] {
        if let Ok(events) = eddy_ingest::server::split_batch(text, ndjson) {
            for (_, event) in events {
                let _ = catalog.store(event, || "2026-01-01T00:00:00Z".to_string());
            }
        }
    }
}

/// A protobuf message from a hostile peer (the first byte picks which), decoded and handed to
/// what a service does with it before any effect: checkpoint acknowledgements into a
/// checkpoint coordinator, exchange frames into elements, commit and deploy requests into
/// metadata and jobs, Raft payloads into openraft requests; on the client API, the bearer
/// token and token requests into their checks, and a submission's paths into the check of the
/// allowed directories.
pub fn rpc_messages(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 8 {
        6 => {
            use eddy_security::token;
            if let Ok(text) = std::str::from_utf8(body) {
                let _ = token::parse(text);
            }
            if let Ok(r) = v1::CreateTokenRequest::decode(body) {
                let _ = token::TokenRole::parse(&r.role);
                let _ = token::check_name(&r.name);
            }
        }
        7 => {
            static ALLOWED: OnceLock<Option<eddy_security::paths::AllowedPaths>> = OnceLock::new();
            let allowed = ALLOWED.get_or_init(|| {
                eddy_security::paths::AllowedPaths::new(&[std::env::temp_dir()]).ok()
            });
            if let (Some(allowed), Ok(r)) = (allowed, v1::SubmitRequest::decode(body)) {
                for path in [
                    &r.checkpoint_dir,
                    &r.from_savepoint,
                    &r.topics_from,
                    &r.job_path,
                ] {
                    let _ = allowed.check("a path", path);
                }
                for value in r.params.values() {
                    let _ = allowed.check("a parameter", value);
                }
            }
        }
        0 => {
            let Ok(ack) = v1::CheckpointAck::decode(body) else {
                return;
            };
            let Ok(input) = eddy_coordinator::api::checkpoint_input(&ack) else {
                return;
            };
            let mut coordinator = coordinator();
            let _ = coordinator.handle(CoordinatorInput::Tick);
            let _ = coordinator.handle(input);
        }
        1 => {
            if let Ok(frame) = v1::ExchangeFrame::decode(body) {
                let _ = eddy_worker::exchange::decode_frame(frame);
            }
        }
        2 => {
            if let Ok(r) = v1::CompleteRequest::decode(body) {
                let _ = serde_json::from_slice::<eddy_runtime::checkpoint::CheckpointMetadata>(
                    &r.metadata_json,
                );
            }
        }
        3 => {
            if let Ok(r) = v1::DeployRequest::decode(body) {
                if let Ok(job) = serde_json::from_slice::<eddy_jobs::Submission>(&r.job_json) {
                    let _ = job.compile();
                }
            }
        }
        4 => {
            if let Ok(r) = v1::AttemptEndedRequest::decode(body) {
                let _ = r.fault_domain();
            }
        }
        _ => {
            use eddy_coordinator::raft::TypeConfig;
            use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
            if let Ok(p) = v1::RaftPayload::decode(body) {
                let _ = serde_json::from_slice::<AppendEntriesRequest<TypeConfig>>(&p.data);
                let _ = serde_json::from_slice::<VoteRequest<u64>>(&p.data);
                let _ = serde_json::from_slice::<InstallSnapshotRequest<TypeConfig>>(&p.data);
            }
        }
    }
}

/// A checkpoint coordinator of a two-task job (a source feeding a sink) over a storage that
/// is never written (nothing completes without both tasks).
fn coordinator() -> CheckpointCoordinator {
    #[derive(Debug)]
    struct Nowhere;
    impl eddy_runtime::checkpoint::storage::CheckpointStorage for Nowhere {
        fn put_file(&self, _: &str, _: &std::path::Path) -> std::io::Result<()> {
            Ok(())
        }
        fn put_bytes(&self, _: &str, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn get_bytes(&self, _: &str) -> std::io::Result<Vec<u8>> {
            Err(std::io::ErrorKind::NotFound.into())
        }
        fn get_file(&self, _: &str, _: &std::path::Path) -> std::io::Result<()> {
            Err(std::io::ErrorKind::NotFound.into())
        }
        fn list(&self, _: &str) -> std::io::Result<Vec<String>> {
            Ok(Vec::new())
        }
        fn delete(&self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn delete_prefix(&self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn describe(&self) -> String {
            "nowhere".into()
        }
    }
    let nodes = ["source", "sink"]
        .iter()
        .map(|n| NodeInfo {
            name: n.to_string(),
            kind: n.to_string(),
            parallelism: 1,
        })
        .collect();
    CheckpointCoordinator::new(
        CoordinatorConfig {
            job: "fuzz".into(),
            max_parallelism: 128,
            retain: 1,
            first_id: 1,
            limits: CheckpointLimits::default(),
            prune_on_complete: true,
        },
        CheckpointStore::new(Arc::new(Nowhere)),
        nodes,
        vec![true, false],
    )
}
