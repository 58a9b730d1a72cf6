//! TLS to PostgreSQL, as a connection string asks for it.
//!
//! `sslmode=require`, `verify-ca` or `verify-full` connect only over TLS, and Eddy always
//! verifies the server's certificate and name: against `sslrootcert=FILE` (PEM) if given,
//! else against the public web's roots. That is stricter than libpq's `require`, which
//! encrypts without checking whom it talks to. Without `sslmode`, or with `disable`, `allow`
//! or `prefer`, the connection is plain, as before. rustls with the ring provider and
//! `tokio-postgres-rustls`, so no OpenSSL is linked.

use crate::{redact, PgError};
use std::path::PathBuf;

/// How to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Plain,
    /// TLS, the server's certificate chaining to `root` (PEM), or to the web's roots.
    Verified {
        root: Option<PathBuf>,
    },
}

/// Splits the TLS options off a connection string (URL or `key=value` pairs): the string
/// without `sslmode` and `sslrootcert`, which the PostgreSQL client does not know in all
/// their forms, and the mode they ask for.
pub fn options(url: &str) -> Result<(String, Mode), PgError> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> bool {
        match key {
            "sslmode" => mode = Some(value.to_string()),
            "sslrootcert" => root = Some(PathBuf::from(value)),
            _ => return false,
        }
        true
    };
    let rest = if let Some((main, query)) = url.split_once('?').filter(|_| url.contains("://")) {
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(k, &percent_decode(v)) {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            main.to_string()
        } else {
            format!("{main}?{}", kept.join("&"))
        }
    } else if url.contains("://") {
        url.to_string()
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(k, v.trim_matches('\'')) {
                kept.push(pair);
            }
        }
        kept.join(" ")
    };
    let mode = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => Mode::Plain,
        Some("require" | "verify-ca" | "verify-full") => Mode::Verified { root: root.take() },
        Some(other) => {
            return Err(PgError::Config(format!(
                "sslmode `{other}` in {}: use disable, prefer, require, verify-ca or verify-full",
                redact(url)
            )))
        }
    };
    if mode == Mode::Plain && root.is_some() {
        return Err(PgError::Config(format!(
            "sslrootcert without sslmode=require (or verify-full) in {}: the connection would not use TLS",
            redact(url)
        )));
    }
    Ok((rest, mode))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The TLS connector of `mode` (a plain connection never uses it).
pub fn connector(mode: &Mode) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    let mut roots = rustls::RootCertStore::empty();
    match mode {
        Mode::Plain => {}
        Mode::Verified { root: Some(path) } => {
            use rustls::pki_types::pem::PemObject;
            let bad = |reason: String| {
                PgError::Config(format!("sslrootcert `{}`: {reason}", path.display()))
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
        }
        Mode::Verified { root: None } => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The client's configuration of `url`, TLS options applied, and its connector (for the
/// blocking client: `postgres::Config::from`).
pub fn config(
    url: &str,
) -> Result<
    (
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    ),
    PgError,
> {
    let (rest, mode) = options(url)?;
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| PgError::Config(format!("{}: {e}", redact(url))))?;
    config.ssl_mode(match mode {
        Mode::Plain => tokio_postgres::config::SslMode::Disable,
        Mode::Verified { .. } => tokio_postgres::config::SslMode::Require,
    });
    Ok((config, connector(&mode)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_come_off_urls_and_key_value_strings() {
        let root = Some(PathBuf::from("/etc/ca dir/ca.pem"));
        assert_eq!(
            options("postgresql://u:p@h/db?sslmode=verify-full&sslrootcert=/etc/ca%20dir/ca.pem&application_name=x")
                .unwrap(),
            (
                "postgresql://u:p@h/db?application_name=x".to_string(),
                Mode::Verified { root: root.clone() }
            )
        );
        assert_eq!(
            options("postgresql://h/db?sslmode=require").unwrap(),
            (
                "postgresql://h/db".to_string(),
                Mode::Verified { root: None }
            )
        );
        assert_eq!(
            options("host=h sslmode=require sslrootcert='/ca.pem' user=u").unwrap(),
            (
                "host=h user=u".to_string(),
                Mode::Verified {
                    root: Some("/ca.pem".into())
                }
            )
        );
        assert_eq!(
            options("postgresql://h/db").unwrap(),
            ("postgresql://h/db".to_string(), Mode::Plain)
        );
        assert_eq!(options("host=h sslmode=prefer").unwrap().1, Mode::Plain);
        let e = options("postgresql://u:secret@h/db?sslmode=sometimes").unwrap_err();
        assert!(
            e.to_string().contains("sometimes") && !e.to_string().contains("secret"),
            "{e}"
        );
        assert!(options("postgresql://h/db?sslrootcert=/ca.pem").is_err());
    }
}
