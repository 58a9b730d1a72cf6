//! Restarting: an attempt failed and was stopped; the next one is placed when the backoff is
//! over. A late report of the failed attempt that shows it was the job's own mistake (its peer
//! reported the lost connection first) fails the job instead.

use super::placing::Placing;
use super::{refuse_savepoint, Driver, Phase};
use crate::job::{Failure, JobEvent};
use eddy_runtime::error::FaultDomain;
use std::time::Instant;

/// Waiting out the backoff after a failure.
pub(super) struct Restarting {
    pub until: Instant,
    pub failed_attempt: u64,
    pub failure: Failure,
}

impl Restarting {
    pub async fn tick(self, _driver: &mut Driver) -> Phase {
        if Instant::now() < self.until {
            return Phase::Restarting(self);
        }
        Phase::Placing(Placing {
            reason: self.failure.message,
        })
    }

    pub async fn on(self, event: JobEvent, driver: &mut Driver) -> Phase {
        let Some(event) = refuse_savepoint(event, "the job is restarting") else {
            return Phase::Restarting(self);
        };
        match event {
            JobEvent::PartEnded {
                attempt, report, ..
            } if attempt == self.failed_attempt
                && report.failed
                && !report.cancelled
                && report.fault_domain() == FaultDomain::User =>
            {
                driver.fail_job(report.error).await
            }
            JobEvent::Cancel(reply) => {
                let result = driver.cancel(None).await;
                let done = result.is_ok();
                let _ = reply.send(result);
                if done {
                    Phase::Done
                } else {
                    Phase::Restarting(self)
                }
            }
            _ => Phase::Restarting(self),
        }
    }
}
