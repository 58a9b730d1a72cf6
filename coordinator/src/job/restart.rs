//! When a failed attempt is restarted, and when the job is failed instead (Flink's
//! exponential-delay and failure-rate restart strategies, decided by the failure's domain).
//!
//! - A user error (a bad job, a missing table) fails the job at once, with its message:
//!   restarting would repeat it.
//! - A transient failure (a dependency down, a lost worker, a partition) is restarted after a
//!   delay that doubles from `initial` up to `max`, with jitter, for as long as it takes: a
//!   PostgreSQL restart of a few seconds, or of an hour, never fails the job.
//! - An internal failure (a bug, corrupt data) is restarted the same way, but more than
//!   `max_failures` of them within `window` fail the job.
//!
//! A completed checkpoint is progress: the delay starts over from `initial`.

use eddy_runtime::error::FaultDomain;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The restart strategy of every job.
#[derive(Clone, Debug)]
pub struct RestartPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Each delay is this much longer than the one before.
    pub multiplier: f64,
    /// Each delay varies by up to this fraction, so jobs that failed together do not restart
    /// in lockstep.
    pub jitter: f64,
    /// Internal failures tolerated within `window`.
    pub max_failures: u32,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(3),
            multiplier: 2.0,
            jitter: 0.2,
            max_failures: 10,
            window: Duration::from_secs(600),
        }
    }
}

/// What to do about a failure.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    RestartAfter(Duration),
    /// Fail the job, with this addition to the failure's message.
    Fail(String),
}

/// A job's restart history (leader-local: a new leader starts afresh).
#[derive(Debug, Default)]
pub struct RestartState {
    /// The next delay; `None` before the first failure or after progress.
    delay: Option<Duration>,
    internal: VecDeque<Instant>,
    /// Seeds the jitter.
    draws: u64,
}

impl RestartState {
    /// Decides about a failure of `domain` now.
    pub fn on_failure(&mut self, domain: FaultDomain, policy: &RestartPolicy) -> Decision {
        self.on_failure_at(domain, policy, Instant::now())
    }

    fn on_failure_at(
        &mut self,
        domain: FaultDomain,
        policy: &RestartPolicy,
        now: Instant,
    ) -> Decision {
        match domain {
            FaultDomain::User => {
                return Decision::Fail("a mistake in the job: not restarted".into())
            }
            FaultDomain::Internal => {
                while self
                    .internal
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > policy.window)
                {
                    self.internal.pop_front();
                }
                self.internal.push_back(now);
                if self.internal.len() as u32 > policy.max_failures {
                    return Decision::Fail(format!(
                        "gave up after {} failures within {} s",
                        self.internal.len(),
                        policy.window.as_secs()
                    ));
                }
            }
            FaultDomain::Transient => {}
        }
        let delay = match self.delay {
            None => policy.initial,
            Some(d) => d.mul_f64(policy.multiplier).min(policy.max),
        };
        self.delay = Some(delay);
        Decision::RestartAfter(self.jittered(delay, policy.jitter))
    }

    /// The job made progress (a checkpoint completed): the next delay is short again.
    pub fn on_progress(&mut self) {
        self.delay = None;
    }

    fn jittered(&mut self, delay: Duration, jitter: f64) -> Duration {
        // splitmix64 over a counter and the clock: no RNG crate for one number.
        self.draws = self.draws.wrapping_add(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        let mut z = self
            .draws
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(nanos);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        delay.mul_f64(1.0 + jitter * (2.0 * unit - 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            multiplier: 2.0,
            jitter: 0.0,
            max_failures: 3,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn user_errors_fail_at_once_and_transient_ones_back_off_forever() {
        let p = policy();
        let mut r = RestartState::default();
        assert!(matches!(
            r.on_failure(FaultDomain::User, &p),
            Decision::Fail(_)
        ));
        let delays: Vec<Decision> = (0..8)
            .map(|_| r.on_failure(FaultDomain::Transient, &p))
            .collect();
        let ms = |d: &Decision| match d {
            Decision::RestartAfter(d) => d.as_millis(),
            Decision::Fail(_) => 0,
        };
        assert_eq!(
            delays.iter().map(ms).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1000, 1000, 1000, 1000]
        );
        r.on_progress();
        assert_eq!(ms(&r.on_failure(FaultDomain::Transient, &p)), 100);
    }

    #[test]
    fn internal_failures_are_limited_within_the_window() {
        let p = policy();
        let mut r = RestartState::default();
        let t0 = Instant::now();
        for i in 0..3 {
            let d = r.on_failure_at(FaultDomain::Internal, &p, t0 + Duration::from_secs(i));
            assert!(matches!(d, Decision::RestartAfter(_)), "{i}: {d:?}");
        }
        let d = r.on_failure_at(FaultDomain::Internal, &p, t0 + Duration::from_secs(3));
        assert!(matches!(d, Decision::Fail(m) if m.contains("4 failures")));
        // Outside the window the old ones no longer count.
        let d = r.on_failure_at(FaultDomain::Internal, &p, t0 + Duration::from_secs(200));
        assert!(matches!(d, Decision::RestartAfter(_)), "{d:?}");
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = RestartPolicy {
            jitter: 0.2,
            ..policy()
        };
        let mut r = RestartState::default();
        for _ in 0..100 {
            r.on_progress();
            match r.on_failure(FaultDomain::Transient, &p) {
                Decision::RestartAfter(d) => {
                    assert!(
                        d >= Duration::from_millis(80) && d <= Duration::from_millis(120),
                        "{d:?}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
