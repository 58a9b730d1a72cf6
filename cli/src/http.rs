//! A small HTTP/1.1 client (hyper), for `eddy gen --to http://...`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client as Hyper};
use hyper_util::rt::TokioExecutor;

/// Longer than the ingest API's own 15 s limit for storing a batch, so its 503 arrives first.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A pooled client: connections are kept alive between requests.
#[derive(Clone)]
pub(crate) struct Client {
    inner: Hyper<HttpConnector, Full<Bytes>>,
}

impl Client {
    pub(crate) fn new() -> Client {
        Client {
            inner: Hyper::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// POSTs `body`; the status and the body of the answer, or an error if that takes longer
    /// than [`TIMEOUT`] (a server that takes the connection and never answers).
    pub(crate) async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, String)> {
        let request = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            let response = self.inner.request(request).await?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("no answer from {url} within {} s", TIMEOUT.as_secs()))?
    }
}
