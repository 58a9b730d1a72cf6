//! How the RPC seeds of the corpus were made: valid messages of every kind the `rpc_messages`
//! target decodes, each behind its selector byte. Run by hand when the protocol changes:
//! `cargo test -p eddy-fuzzing --test seeds -- --ignored`.

use eddy_proto::v1;
use prost::Message;

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_rpc_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/rpc_messages");
    std::fs::create_dir_all(&dir).unwrap();
    let subtasks = r#"[{"node":0,"state":{"subtask":0,"key_groups":{"start":0,"end":128},"state":{"splits":[[0,128,42]]}}}]"#;
    let job = serde_json::json!({
        "job_text": "name = \"j\"\n[[source]]\nname = \"s\"\nconnector = \"nexmark\"\n[[sink]]\nname = \"o\"\ninput = \"s.bid\"\nconnector = \"blackhole\"\n",
        "job_path": "j.toml", "params": {}, "parallelism": 1, "checkpoint_interval_ms": 0,
        "checkpoint_dir": "", "retain_checkpoints": 1, "generate_events": null, "generate_rate": 1000
    });
    let seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        ("ack", 0, v1::CheckpointAck { job_id: "job-1".into(), attempt: 1, checkpoint: 1, task: 0, finished: false, subtasks_json: subtasks.into(), term: 1 }.encode_to_vec()),
        ("finished", 0, v1::CheckpointAck { job_id: "job-1".into(), attempt: 1, checkpoint: 0, task: 1, finished: true, subtasks_json: subtasks.replace("\"node\":0", "\"node\":1").into(), term: 0 }.encode_to_vec()),
        ("frame-watermark", 1, v1::ExchangeFrame { kind: Some(v1::exchange_frame::Kind::Watermark(1_767_225_600_000)) }.encode_to_vec()),
        ("frame-batch", 1, v1::ExchangeFrame { kind: Some(v1::exchange_frame::Kind::Batch(vec![1, 0, 2, 5, 0, 0])) }.encode_to_vec()),
        ("complete", 2, v1::CompleteRequest { job_id: "job-1".into(), attempt: 1, metadata_json: br#"{"format":1,"job":"j","checkpoint":3,"finished":false,"completed_at_ms":0,"max_parallelism":128,"operators":[]}"#.to_vec(), checkpoint: 3, location: "/tmp".into() }.encode_to_vec()),
        ("deploy", 3, v1::DeployRequest { job_id: "job-1".into(), attempt: 1, job_json: serde_json::to_vec(&job).unwrap(), tasks: vec![0, 1], task_addrs: vec!["127.0.0.1:1".into(); 2], restore_checkpoint: 0, restore_dir: String::new(), first_checkpoint: 1 }.encode_to_vec()),
        ("ended", 4, v1::AttemptEndedRequest { worker_id: 1, job_id: "job-1".into(), attempt: 1, failed: true, error: "boom".into(), tasks: vec![], domain: 2, cancelled: false }.encode_to_vec()),
        ("bearer", 6, b"admin.OSdCbVIIvQ1gQ-n3kpZ-ikn52x5qRsZeSNinHcAgBrQ".to_vec()),
        ("create-token", 6, v1::CreateTokenRequest { name: "ci".into(), role: "operator".into(), bootstrap: false, valid_for_ms: 3_600_000 }.encode_to_vec()),
        ("submit-paths", 7, v1::SubmitRequest { job_path: "j.toml".into(), checkpoint_dir: "/tmp/../etc/ckpt".into(), from_savepoint: "/tmp/sp".into(), params: [("input".to_string(), "/etc/passwd".to_string()), ("output".to_string(), "out/../../x/".to_string())].into_iter().collect(), ..Default::default() }.encode_to_vec()),
        ("vote", 5, v1::RaftPayload { data: br#"{"vote":{"leader_id":{"term":2,"node_id":1},"committed":false},"last_log_id":null}"#.to_vec() }.encode_to_vec()),
    ];
    for (name, selector, body) in seeds {
        let mut data = vec![selector];
        data.extend(body);
        std::fs::write(dir.join(name), data).unwrap();
    }
}
