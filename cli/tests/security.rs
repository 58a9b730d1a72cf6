//! Who gets into a cluster: three coordinator and a worker process with mutual TLS
//! (certificates from `eddy certs`), probed by clients with no certificate, a certificate from
//! another CA, and certificates of the wrong role; bearer tokens with roles, revoked and
//! forged; jobs with paths outside the allowed directories; and a certificate reload on SIGHUP.

mod common;

use common::cluster_cli;
use eddy_chaos::cluster::{Cluster, Node};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// `eddy ARGS` with the client certificate directory `tls` (or none) and the cluster's admin
/// token.
fn eddy(cluster: &Cluster, tls: Option<&Path>, args: &[&str]) -> Output {
    cluster_cli(cluster, tls, Some(cluster.token()), args)
}

/// `eddy ARGS` with the bearer token `token` (or none).
fn eddy_as(cluster: &Cluster, tls: Option<&Path>, token: Option<&str>, args: &[&str]) -> Output {
    cluster_cli(cluster, tls, token, args)
}

fn refused(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 1: refused; 2: a submission refused (as a bad job is).
    assert!(matches!(out.status.code(), Some(1 | 2)), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn only_certificates_of_the_cluster_with_the_right_role_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, cluster) = common::proxied_cluster(dir.path(), 1, "info,openraft=error");
    runtime.block_on(async {
        let certs = cluster.client_tls_dir().parent().unwrap().to_path_buf();
        let client = certs.join("client");

        // No certificate: the handshake fails, and the error says what to do.
        let out = eddy(&cluster, None, &["list", "--timeout", "2s"]);
        refused(&out, "EDDY_TLS_DIR");

        // A certificate from another CA: refused in the handshake.
        let other = dir.path().join("other");
        let specs = eddy_security::certs::default_nodes(1, &[], &[]).unwrap();
        eddy_security::certs::init(&other, &specs).unwrap();
        let out = eddy(
            &cluster,
            Some(&other.join("client")),
            &["list", "--timeout", "2s"],
        );
        assert_eq!(out.status.code(), Some(1));

        // A worker's certificate cannot use the client API.
        let out = eddy(&cluster, Some(&certs.join("worker-1")), &["list"]);
        refused(&out, "needs a client certificate");

        // A client's certificate cannot deploy, trigger or commit on a worker, and neither a
        // client's nor a worker's can speak Raft.
        use eddy_proto::v1::raft_service_client::RaftServiceClient;
        use eddy_proto::v1::worker_control_client::WorkerControlClient;
        use eddy_proto::v1::{RaftPayload, TriggerRequest};
        let worker = cluster.addrs[&Node::Worker(0)].clone();
        let coordinator = cluster.addrs[&Node::Coordinator(1)].clone();
        for identity in ["client", "worker-1"] {
            eddy_proto::net::use_tls(&certs.join(identity)).unwrap();
            let timeout = Duration::from_secs(5);
            if identity == "client" {
                let mut w =
                    WorkerControlClient::new(eddy_proto::net::channel(&worker, timeout).unwrap());
                let status = w
                    .trigger_checkpoint(TriggerRequest::default())
                    .await
                    .unwrap_err();
                assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
                assert!(
                    status.message().contains("coordinator certificate"),
                    "{status:?}"
                );
            }
            let mut r =
                RaftServiceClient::new(eddy_proto::net::channel(&coordinator, timeout).unwrap());
            let status = r
                .vote(RaftPayload {
                    data: b"{}".to_vec(),
                })
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::PermissionDenied,
                "{identity}: {status:?}"
            );
        }

        // Tokens: none is refused; a viewer lists but cannot cancel; a revoked token is
        // refused; the bootstrap works only once.
        let out = eddy_as(&cluster, Some(&client), None, &["list"]);
        refused(&out, "a token is required");
        let out = eddy(
            &cluster,
            Some(&client),
            &["token", "create", "--name", "dash", "--role", "viewer"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let viewer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = eddy_as(&cluster, Some(&client), Some(&viewer), &["list"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = eddy_as(&cluster, Some(&client), Some(&viewer), &["cancel", "job-1"]);
        refused(
            &out,
            "the token `dash` is a viewer token; this needs operator",
        );
        let forged = format!("dash.{}", "A".repeat(43));
        let out = eddy_as(&cluster, Some(&client), Some(&forged), &["list"]);
        refused(&out, "unknown, revoked, expired or wrong");
        let out = eddy(&cluster, Some(&client), &["token", "revoke", "dash"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = eddy_as(&cluster, Some(&client), Some(&viewer), &["list"]);
        refused(&out, "unknown, revoked, expired or wrong");
        let out = eddy_as(&cluster, Some(&client), None, &["token", "bootstrap"]);
        refused(&out, "already has tokens");
        // A token valid for 4 s works, then no longer.
        let created = Instant::now();
        let out = eddy(
            &cluster,
            Some(&client),
            &[
                "token",
                "create",
                "--name",
                "brief",
                "--role",
                "viewer",
                "--valid-for",
                "4s",
            ],
        );
        let brief = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = eddy_as(&cluster, Some(&client), Some(&brief), &["list"]);
        if created.elapsed() < Duration::from_secs(3) {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(4100).saturating_sub(created.elapsed())).await;
        let out = eddy_as(&cluster, Some(&client), Some(&brief), &["list"]);
        refused(&out, "expired");
        let out = eddy(&cluster, Some(&client), &["token", "list"]);
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            listed.contains("dash\tviewer") && listed.contains("revoked"),
            "{listed}"
        );

        // Files: a job that reads /etc/passwd, or writes outside the allowed directories
        // (through `..` or a symbolic link), is refused at submission.
        let q0 = common::repo().join("jobs/nexmark/q0.toml");
        let input = format!("input={}", common::input().display());
        let inside = format!("output={}/cluster/out/", dir.path().display());
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        // q0 with two `--param`s.
        let submit = |a: &str, b: &str| {
            eddy(
                &cluster,
                Some(&client),
                &["submit", q0.to_str().unwrap(), "--param", a, "--param", b],
            )
        };
        let escape = format!("output={}/../escape/", dir.path().display());
        let linked = format!("input={}/etc/passwd", dir.path().display());
        for (a, b) in [
            ("input=/etc/passwd", inside.as_str()),
            (input.as_str(), escape.as_str()),
            (linked.as_str(), inside.as_str()),
        ] {
            refused(&submit(a, b), "outside the allowed paths");
        }
        let out = submit(&input, &inside);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Secret parameters: the job gets them; errors and the replicated state never show
        // them.
        let secret = dir.path().join("cluster/secret-9f3a.jsonl");
        std::fs::copy(common::input(), &secret).unwrap();
        // The output directory is secret too: the leader's list of guarded outputs keeps it.
        let out_dir = dir.path().join("cluster/secret-9f3a-out");
        let submit_secret = |input: &str| {
            eddy(
                &cluster,
                Some(&client),
                &[
                    "submit",
                    q0.to_str().unwrap(),
                    "--secret-param",
                    &format!("output={}/", out_dir.display()),
                    "--secret-param",
                    &format!("input={input}"),
                ],
            )
        };
        let out = submit_secret(secret.to_str().unwrap());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = eddy(
            &cluster,
            Some(&client),
            &["status", &job, "--wait", "--wait-timeout", "60s"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(std::fs::read_dir(&out_dir).unwrap().count() > 0);
        let out = submit_secret("/etc/secret-9f3a");
        refused(&out, "`***` is outside");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("9f3a"));
        // A parameter the job file declares `secret = true` is sealed though given plainly.
        let declared = dir.path().join("cluster/q0-secret.toml");
        std::fs::write(
            &declared,
            std::fs::read_to_string(&q0).unwrap().replace(
                "input = { description = ",
                "input = { secret = true, description = ",
            ),
        )
        .unwrap();
        let plainly = dir.path().join("cluster/secret-7c1e.jsonl");
        std::fs::copy(common::input(), &plainly).unwrap();
        let out = eddy(
            &cluster,
            Some(&client),
            &[
                "submit",
                declared.to_str().unwrap(),
                "--param",
                &format!(
                    "output={}/",
                    dir.path().join("cluster/declared-out").display()
                ),
                "--param",
                &format!("input={}", plainly.display()),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for id in 1..=3 {
            let node_dir = dir.path().join(format!("cluster/c{id}"));
            let found = files_holding(&node_dir, b"secret-9f3a");
            assert!(
                found.is_empty(),
                "c{id} keeps the secret in plaintext: {found:?}"
            );
            let found = files_holding(&node_dir, b"secret-7c1e");
            assert!(
                found.is_empty(),
                "c{id} keeps the declared secret in plaintext: {found:?}"
            );
        }

        // SIGHUP: a broken directory is not taken (the node keeps its certificates and
        // serves on); a good one is.
        let c1 = certs.join("coordinator-1");
        let key = std::fs::read(c1.join("node.key")).unwrap();
        std::fs::write(c1.join("node.key"), b"broken").unwrap();
        cluster.hangup(Node::Coordinator(1));
        let log = cluster.log(Node::Coordinator(1)).unwrap().to_path_buf();
        wait_for_log(&log, "certificates not reloaded").await;
        std::fs::write(c1.join("node.key"), key).unwrap();
        cluster.hangup(Node::Coordinator(1));
        wait_for_log(&log, "certificates reloaded").await;
        let out = eddy(
            &cluster,
            Some(&client),
            &["list", "--coordinators", &coordinator],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The audit log names who did what with which result, and survives the leader.
        let audit = |cluster: &Cluster| {
            let out = eddy(cluster, Some(&client), &["audit", "--since", "1h"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let before = audit(&cluster);
        for expected in [
            "\tbootstrap\tcreate-token\tadmin\tok",
            "\tadmin\tcreate-token\tdash\tok",
            "\tadmin\trevoke-token\tdash\tok",
            "\tadmin\tsubmit\t",
            "PermissionDenied: the input of source `events`: `/etc/passwd` is outside",
        ] {
            assert!(before.contains(expected), "`{expected}` not in:\n{before}");
        }
        let list = eddy(&cluster, Some(&client), &["list"]);
        let leader: u64 = String::from_utf8_lossy(&list.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("leader: ")?.trim().parse().ok())
            .unwrap();
        let mut cluster = cluster;
        cluster.kill(Node::Coordinator(leader));
        let after = audit(&cluster);
        assert!(after.starts_with(&before), "{before}\n---\n{after}");
        cluster.restart(Node::Coordinator(leader)).unwrap();
    });
}

async fn wait_for_log(log: &Path, text: &str) {
    let started = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "`{text}` never appeared in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The files under `dir` that hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_coordinator_serves_clients_on_their_own_port_apart_from_raft() {
    let dir = tempfile::tempdir().unwrap();
    let eddy = env!("CARGO_BIN_EXE_eddy");
    let certs = dir.path().join("certs");
    let out = std::process::Command::new(eddy)
        .args(["certs", "init", "--workers", "0"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success());
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (node, clients) = (port(), port());
    let mut coordinator = std::process::Command::new(eddy)
        .args(["coordinator", "--id", "1", "--listen", &node])
        .args(["--client-listen", &clients, "--peers", &format!("1={node}")])
        .arg("--tls-dir")
        .arg(certs.join("coordinator-1"))
        .arg("--data-dir")
        .arg(dir.path().join("c1"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A client with the client certificate, or (`anonymous`) with the CA only.
    let run = |addr: &str, token: Option<&str>, anonymous: bool, args: &[&str]| {
        let mut cmd = std::process::Command::new(eddy);
        cmd.args(args)
            .args(["--timeout", "5s"])
            .env("EDDY_COORDINATORS", addr)
            .env_remove("EDDY_TLS_DIR")
            .env_remove("EDDY_CA")
            .env_remove("EDDY_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        match anonymous {
            false => cmd.env("EDDY_TLS_DIR", certs.join("client")),
            true => cmd.env("EDDY_CA", certs.join("client").join("ca.pem")),
        };
        if let Some(t) = token {
            cmd.env("EDDY_TOKEN", t);
        }
        common::wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(30))
    };
    let cli = |addr: &str, token: Option<&str>, args: &[&str]| run(addr, token, false, args);
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).to_string();
    // The client port answers once the node has elected itself.
    let started = std::time::Instant::now();
    let token = loop {
        let out = cli(&clients, None, &["token", "bootstrap"]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = cli(&clients, Some(&token), &["list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Raft port has no client API, and says where to go.
    let out = cli(&node, Some(&token), &["list"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("does not serve the client API") && e.contains("--client-listen"),
        "{e}"
    );

    // Without a certificate, with the CA and a token: the client port answers; no token, a
    // bootstrap, or the Raft port (whose handshake wants a certificate) do not.
    let out = run(&clients, Some(&token), true, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&clients, None, true, &["list"]);
    assert!(
        !out.status.success() && stderr(&out).contains("a token is required"),
        "{}",
        stderr(&out)
    );
    let out = run(&clients, None, true, &["token", "bootstrap"]);
    assert!(
        !out.status.success() && stderr(&out).contains("client certificate"),
        "{}",
        stderr(&out)
    );
    let out = run(&node, Some(&token), true, &["list"]);
    assert!(
        !out.status.success(),
        "the Raft port took a client without a certificate"
    );
    let _ = coordinator.kill();
    let _ = coordinator.wait();
}
