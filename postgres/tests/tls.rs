//! TLS to a real PostgreSQL server that refuses plain connections: `sslmode=verify-full` with
//! the server's CA connects (and the server sees TLS), a server certificate the client does not
//! trust is refused for good (no retrying), and a plain connection is refused by the server.

use eddy_postgres::testing::PgServer;

#[test]
fn the_warehouse_is_reached_over_verified_tls_only() {
    let server = PgServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes = eddy_security::certs::default_nodes(0, &[], &[]).unwrap();
    eddy_security::certs::init(dir.path(), &nodes).unwrap();
    let node = dir.path().join("coordinator-1");
    server
        .require_tls(&node.join("node.pem"), &node.join("node.key"))
        .unwrap();
    let ca = dir.path().join("ca").join("ca.pem");
    let url = server.url();

    // Plain: the server refuses it (pg_hba.conf), and says why.
    let started = std::time::Instant::now();
    let plain = loop {
        match eddy_postgres::connect(&url) {
            // The reload of pg_hba.conf may take a moment.
            Ok(_) if started.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Ok(_) => panic!("a plain connection was taken"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        plain.contains("no encryption") || plain.contains("pg_hba"),
        "{plain}"
    );

    // TLS with the public roots only: the cluster CA's certificate is not trusted, and
    // that is no transient failure.
    let Err(e) = eddy_postgres::connect(&format!("{url}?sslmode=require")) else {
        panic!("a certificate from an unknown CA was trusted");
    };
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");

    // Verified TLS: connects, and the server's side of the connection is TLS.
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let mut client = eddy_postgres::connect(&verified).unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0));
    // The key-value form says the same.
    let kv = format!(
        "host=127.0.0.1 port={} user=eddy dbname=postgres sslmode=verify-full sslrootcert={}",
        url.rsplit(':').next().unwrap().split('/').next().unwrap(),
        ca.display()
    );
    assert!(eddy_postgres::connect(&kv).is_ok());
}
