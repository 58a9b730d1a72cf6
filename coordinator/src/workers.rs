//! Calls from the leader to workers: one cached channel per worker address (connections are
//! reused, not opened per call), every call bounded by its own timeout, and calls to several
//! workers made concurrently, so one paused or black-holed worker costs one timeout, not one
//! per worker in turn, and never stalls another job.

use eddy_proto::v1::worker_control_client::WorkerControlClient;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Status;

/// The leader's clients of the workers.
#[derive(Default)]
pub struct WorkerClients {
    channels: Mutex<HashMap<String, Channel>>,
}

/// The outcome of one call to one worker.
pub type Outcome<T> = (String, Result<T, Status>);

impl WorkerClients {
    fn client(&self, addr: &str) -> Result<WorkerControlClient<Channel>, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                // Per-call deadlines come from `call`; the channel's own is only a backstop.
                let c = eddy_proto::net::channel(addr, Duration::from_secs(120))
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(WorkerControlClient::new(channel)
            .max_encoding_message_size(eddy_proto::net::MAX_MESSAGE_BYTES)
            .max_decoding_message_size(eddy_proto::net::MAX_MESSAGE_BYTES))
    }

    /// Forgets the connection to a worker that was lost (a new one may reuse its address).
    pub fn forget(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr);
    }

    /// Calls one worker, within `timeout` (a timeout is DEADLINE_EXCEEDED).
    pub async fn call<T, F, Fut>(&self, addr: &str, timeout: Duration, call: F) -> Result<T, Status>
    where
        F: FnOnce(WorkerControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let client = self.client(addr)?;
        match tokio::time::timeout(timeout, call(client)).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// Calls every worker in `addrs` at once (`call` gets each one's address and client); the
    /// outcomes in the order of `addrs`.
    pub async fn call_all<T, F, Fut>(
        &self,
        addrs: impl IntoIterator<Item = String>,
        timeout: Duration,
        call: F,
    ) -> Vec<Outcome<T>>
    where
        T: Send + 'static,
        F: Fn(&str, WorkerControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>> + Send + 'static,
    {
        let mut tasks = Vec::new();
        for addr in addrs {
            let pending = self.client(&addr).map(|client| call(&addr, client));
            tasks.push((
                addr,
                tokio::spawn(async move {
                    match pending {
                        Ok(fut) => match tokio::time::timeout(timeout, fut).await {
                            Ok(result) => result.map(tonic::Response::into_inner),
                            Err(_) => Err(Status::deadline_exceeded(format!(
                                "no answer within {} ms",
                                timeout.as_millis()
                            ))),
                        },
                        Err(status) => Err(status),
                    }
                }),
            ));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for (addr, task) in tasks {
            let result = task
                .await
                .unwrap_or_else(|e| Err(Status::internal(e.to_string())));
            out.push((addr, result));
        }
        out
    }
}
