//! The cluster's certificates: a CA and one certificate per node or client, each in a
//! directory of its own that is copied to the host that uses it.
//!
//! ```text
//! DIR/ca/ca.pem, DIR/ca/ca.key          the CA (keep the key off the cluster's hosts)
//! DIR/NAME/ca.pem, node.pem, node.key   what node NAME is started with (--tls-dir DIR/NAME)
//! DIR/ca/secrets.key                    the key of secret job parameters (copied to coordinators)
//! ```
//!
//! Keys are ECDSA P-256, written readable by their owner only. Node certificates are valid
//! for both ends of a connection (server and client authentication), for the DNS names and
//! addresses given, and carry their roles ([`Role::uri`]).

use crate::{Role, SecurityError};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// How long a CA certificate is valid.
const CA_VALIDITY: Duration = Duration::days(10 * 365);
/// How long a node certificate is valid (renew with `eddy certs issue` and SIGHUP).
const NODE_VALIDITY: Duration = Duration::days(2 * 365);

/// A certificate to issue.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The common name and the directory name (`coordinator-1`, `worker-3`, `client`).
    pub name: String,
    pub roles: Vec<Role>,
    /// Names and addresses the node is reached at (a server certificate must match them).
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl NodeSpec {
    /// A node named `name` whose roles follow from its name (`coordinator-*`, `worker-*`,
    /// `client*`), unless `roles` names them.
    pub fn named(
        name: &str,
        roles: Vec<Role>,
        dns: Vec<String>,
        ips: Vec<IpAddr>,
    ) -> Result<NodeSpec, SecurityError> {
        check_name(name)?;
        let roles = if roles.is_empty() {
            let guessed = Role::ALL
                .into_iter()
                .find(|r| name.starts_with(r.name()))
                .ok_or_else(|| {
                    SecurityError::Invalid(format!(
                        "cannot tell the role of `{name}` from its name: give --role coordinator, worker or client"
                    ))
                })?;
            vec![guessed]
        } else {
            roles
        };
        Ok(NodeSpec {
            name: name.to_string(),
            roles,
            dns,
            ips,
        })
    }
}

/// Names become directory names: letters, digits, `-`, `_` and `.` only.
fn check_name(name: &str) -> Result<(), SecurityError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SecurityError::Invalid(format!(
            "`{name}` is not a usable node name (letters, digits, `-`, `_`, `.`; at most 64)"
        )))
    }
}

/// The certificates `eddy certs init` makes by default: three coordinators, `workers`
/// workers and a client, each valid for `dns` and `ips` (plus localhost and 127.0.0.1).
pub fn default_nodes(
    workers: u32,
    dns: &[String],
    ips: &[IpAddr],
) -> Result<Vec<NodeSpec>, SecurityError> {
    let mut dns_all = vec!["localhost".to_string()];
    dns_all.extend(dns.iter().cloned());
    let mut ips_all: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    ips_all.extend(ips.iter().copied());
    let mut names: Vec<String> = (1..=3).map(|i| format!("coordinator-{i}")).collect();
    names.extend((1..=workers).map(|i| format!("worker-{i}")));
    names.push("client".into());
    names
        .iter()
        .map(|n| NodeSpec::named(n, Vec::new(), dns_all.clone(), ips_all.clone()))
        .collect()
}

/// Makes a new CA in `dir/ca` and a certificate for each of `nodes`. Refuses to overwrite a
/// CA that exists (every certificate issued by it would stop working).
pub fn init(dir: &Path, nodes: &[NodeSpec]) -> Result<Vec<PathBuf>, SecurityError> {
    let ca_dir = dir.join("ca");
    if ca_dir.join("ca.pem").exists() {
        return Err(SecurityError::Invalid(format!(
            "{} already holds a CA; issue more certificates with `eddy certs issue {}`",
            ca_dir.display(),
            dir.display()
        )));
    }
    let key = KeyPair::generate()?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Eddy cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    create_dir(&ca_dir)?;
    write_file(&ca_dir.join("ca.pem"), cert.pem().as_bytes(), false)?;
    write_file(&ca_dir.join("ca.key"), key.serialize_pem().as_bytes(), true)?;
    // The cluster's key for secret job parameters; every coordinator gets a copy.
    let secrets = crate::secrets::SecretKey::generate()?;
    write_file(
        &ca_dir.join("secrets.key"),
        secrets.encode().as_bytes(),
        true,
    )?;
    nodes.iter().map(|n| issue(dir, n)).collect()
}

/// Issues a certificate for `node` with the CA in `dir/ca`; returns the node's directory.
pub fn issue(dir: &Path, node: &NodeSpec) -> Result<PathBuf, SecurityError> {
    check_name(&node.name)?;
    if node.roles.is_empty() {
        return Err(SecurityError::Invalid(format!(
            "`{}` has no role",
            node.name
        )));
    }
    let ca_dir = dir.join("ca");
    let ca_pem = read(&ca_dir.join("ca.pem"))?;
    let ca_key_path = ca_dir.join("ca.key");
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?).map_err(|e| SecurityError::BadFile {
        path: ca_key_path.clone(),
        what: "CA key",
        reason: e.to_string(),
    })?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, &ca_key).map_err(|e| SecurityError::BadFile {
            path: ca_dir.join("ca.pem"),
            what: "CA certificate",
            reason: e.to_string(),
        })?;
    let key = KeyPair::generate()?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, node.name.as_str());
    for d in &node.dns {
        let name = Ia5String::try_from(d.as_str())
            .map_err(|_| SecurityError::Invalid(format!("`{d}` is not a DNS name (--dns)")))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &node.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    for role in &node.roles {
        params
            .subject_alt_names
            .push(SanType::URI(Ia5String::try_from(role.uri())?));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::hours(1);
    params.not_after = now + NODE_VALIDITY;
    let cert = params.signed_by(&key, &issuer)?;
    let out = dir.join(&node.name);
    create_dir(&out)?;
    write_file(&out.join("ca.pem"), ca_pem.as_bytes(), false)?;
    // The key first: a directory with a certificate but no key is not mistaken for usable.
    write_file(&out.join("node.key"), key.serialize_pem().as_bytes(), true)?;
    write_file(&out.join("node.pem"), cert.pem().as_bytes(), false)?;
    let secrets = ca_dir.join("secrets.key");
    if node.roles.contains(&Role::Coordinator) && secrets.exists() {
        write_file(&out.join("secrets.key"), read(&secrets)?.as_bytes(), true)?;
    }
    Ok(out)
}

fn create_dir(dir: &Path) -> Result<(), SecurityError> {
    std::fs::create_dir_all(dir).map_err(|source| SecurityError::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, SecurityError> {
    std::fs::read_to_string(path).map_err(|source| SecurityError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file whole (a key readable by its owner only), replacing any older one: a reader
/// sees the old file or the new one, never half of it.
pub fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), SecurityError> {
    let io = |source| SecurityError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
