//! A small HTTP/1.1 client (hyper, rustls for HTTPS), for `eddy gen --to http(s)://...`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client as Hyper};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Longer than the ingest API's own 15 s limit for storing a batch, so its 503 arrives first.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A pooled client: connections are kept alive between requests.
#[derive(Clone)]
pub(crate) struct Client {
    inner: Hyper<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `Authorization: Bearer ...` on every request.
    bearer: Option<hyper::header::HeaderValue>,
}

/// What a server answered.
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// `Retry-After` in seconds, if the server sent one.
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: String,
}

impl Client {
    /// `ca`: the PEM certificates an HTTPS server must chain to (default: the Mozilla roots);
    /// `key`: an API key sent as a bearer token.
    pub(crate) fn new(ca: Option<&std::path::Path>, key: Option<&str>) -> anyhow::Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read --ca {}: {e}", path.display()))?;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                    roots.add(cert.map_err(|e| {
                        anyhow::anyhow!("--ca {} is not PEM certificates: {e}", path.display())
                    })?)?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let bearer = key
            .map(|k| hyper::header::HeaderValue::from_str(&format!("Bearer {}", k.trim())))
            .transpose()
            .map_err(|_| anyhow::anyhow!("the API key is not valid header text"))?;
        Ok(Client {
            inner: Hyper::builder(TokioExecutor::new()).build(connector),
            bearer,
        })
    }

    /// POSTs `body`; the answer, or an error if that takes longer than [`TIMEOUT`] (a server
    /// that takes the connection and never answers).
    pub(crate) async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        let mut request = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))?;
        if let Some(bearer) = &self.bearer {
            request
                .headers_mut()
                .insert(hyper::header::AUTHORIZATION, bearer.clone());
        }
        let exchange = async {
            let response = match self.inner.request(request).await {
                Ok(r) => r,
                Err(e) if eddy_security::tls::is_tls_failure(&e) => {
                    // `{:#}`: the error with its causes, as anyhow prints them.
                    return Err(anyhow::Error::new(TlsRefused(format!(
                        "{url}: {:#}",
                        anyhow::Error::new(e)
                    ))));
                }
                Err(e) => return Err(e.into()),
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs);
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(Answer {
                status,
                retry_after,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("no answer from {url} within {} s", TIMEOUT.as_secs()))?
    }
}

/// The server's certificate was not accepted (or the TLS handshake failed otherwise): sending
/// again cannot help.
#[derive(Debug, thiserror::Error)]
#[error("TLS with {0} failed (give the server's CA with --ca?)")]
pub(crate) struct TlsRefused(String);
