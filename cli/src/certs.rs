//! `eddy certs`: the cluster's CA and certificates (docs/security.md).

use clap::{Args, Subcommand};
use eddy_security::certs::{self, NodeSpec};
use eddy_security::Role;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Make a new cluster CA in DIR/ca and a certificate directory for each of three
    /// coordinators (DIR/coordinator-N), the workers (DIR/worker-N) and a client (DIR/client),
    /// valid for localhost, 127.0.0.1 and the names and addresses given.
    Init(InitArgs),
    /// Issue one more certificate with the CA in DIR (a new worker, a renewal): DIR/NAME.
    Issue(IssueArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Where the CA and the certificate directories go.
    pub dir: PathBuf,
    /// Worker certificates to make.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub workers: u32,
    /// One more DNS name every node certificate is valid for (repeat).
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// One more address every node certificate is valid for (repeat).
    #[arg(long, value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
}

#[derive(Args)]
pub struct IssueArgs {
    /// The directory `eddy certs init` made (its `ca/` is used).
    pub dir: PathBuf,
    /// The node's name: its certificate's common name and directory (e.g. worker-3).
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// Its role (repeat for several; default: from the name, coordinator-*, worker-*, client*).
    #[arg(long, value_name = "ROLE", value_parser = parse_role)]
    pub role: Vec<Role>,
    /// A DNS name it is reached at (repeat).
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// An address it is reached at (repeat).
    #[arg(long, value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).map_err(|e| e.to_string())
}

pub fn certs(command: CertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertsCommand::Init(a) => {
            let nodes = certs::default_nodes(a.workers, &a.dns, &a.ip)?;
            let made = certs::init(&a.dir, &nodes)?;
            for d in &made {
                println!("{}", d.display());
            }
            eprintln!(
                "CA in {} (keep ca.key off the cluster's hosts); start each node with --tls-dir DIR/NAME and clients with EDDY_TLS_DIR={}",
                a.dir.join("ca").display(),
                a.dir.join("client").display()
            );
        }
        CertsCommand::Issue(a) => {
            let mut dns = a.dns;
            let mut ip = a.ip;
            if dns.is_empty() && ip.is_empty() {
                dns.push("localhost".into());
                ip.push(IpAddr::from([127, 0, 0, 1]));
            }
            let spec = NodeSpec::named(&a.node, a.role, dns, ip)?;
            println!("{}", certs::issue(&a.dir, &spec)?.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
