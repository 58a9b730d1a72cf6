//! Calling "the leader" of the coordinator group from a list of coordinator addresses, as the
//! CLI and workers do. A coordinator that is not the leader answers `UNAVAILABLE` with the
//! leader's address in the [`LEADER_HEADER`] metadata when it knows it; the caller follows it.
//! Retries are bounded by a deadline, so an unreachable cluster is an error, never a hang.

use crate::net;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Response metadata naming the leader's address.
pub const LEADER_HEADER: &str = "x-eddy-leader";

/// The status a follower answers with: retry at `leader`.
pub fn not_leader(leader: Option<String>) -> Status {
    let mut status = Status::unavailable(match &leader {
        Some(addr) => format!("not the leader; the leader is at {addr}"),
        None => "not the leader, and no leader is elected yet".to_string(),
    });
    if let Some(addr) = leader.and_then(|a| a.parse().ok()) {
        status.metadata_mut().insert(LEADER_HEADER, addr);
    }
    status
}

/// Coordinator addresses and the one that answered as leader last.
pub struct Coordinators {
    addrs: Vec<String>,
    leader: Mutex<Option<String>>,
    /// Per call attempt.
    pub call_timeout: Duration,
}

impl Coordinators {
    /// `addrs`: every coordinator's HOST:PORT (any subset works; the leader is found).
    pub fn new(addrs: Vec<String>) -> Coordinators {
        Coordinators {
            addrs,
            leader: Mutex::new(None),
            call_timeout: Duration::from_secs(3),
        }
    }

    /// The addresses given.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Calls `call` on the leader, following redirects and trying every address, until it
    /// succeeds, fails with an error that is not about leadership or reachability, or
    /// `deadline` passes (then the last error).
    pub async fn call<T, F, Fut>(&self, deadline: Duration, call: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let until = Instant::now() + deadline;
        let mut last = Status::unavailable("no coordinator address given");
        loop {
            let mut order: Vec<String> = Vec::new();
            if let Some(l) = self
                .leader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                order.push(l);
            }
            order.extend(self.addrs.iter().cloned());
            let mut i = 0;
            while i < order.len() {
                let addr = order[i].clone();
                i += 1;
                let channel = match net::channel(&addr, self.call_timeout) {
                    Ok(c) => c,
                    Err(e) => return Err(Status::invalid_argument(e.to_string())),
                };
                match call(channel).await {
                    Ok(v) => {
                        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
                        return Ok(v);
                    }
                    Err(status) if retryable(&status) => {
                        if let Some(l) = status
                            .metadata()
                            .get(LEADER_HEADER)
                            .and_then(|v| v.to_str().ok())
                        {
                            if l != addr && !order[i..].iter().any(|o| o == l) {
                                order.insert(i, l.to_string());
                            }
                        }
                        last = if status.code() == Code::Unavailable
                            && status.message().contains("not the leader")
                        {
                            status
                        } else {
                            Status::unavailable(format!("{addr}: {}", status.message()))
                        };
                    }
                    Err(status) => return Err(status),
                }
                if Instant::now() >= until {
                    return Err(last);
                }
            }
            *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if Instant::now() >= until {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}
