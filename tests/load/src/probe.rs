//! Lag probes: for a sample of the requests, a separate task polls until the request's
//! asynchronous effect is visible (a loan ACTIVE, a dashboard count up) and records how long it
//! took after the reply.
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::task::TaskTracker;

use crate::driver::parse_duration;
use crate::report::{LagRecorder, LagReport};

/// Which requests are probed and how.
#[derive(clap::Args, Clone, Debug)]
pub struct ProbeArgs {
    /// Probe one request in this many (0: no probes). Probes poll the system they measure: one in
    /// 20 at 2 ms made a tenth of borrow-svc's load and doubled the lag it reported.
    #[arg(long, default_value_t = 50)]
    pub probe_every: u64,
    /// Pause between two polls of a probe. Where the effect carries its own time (a loan's
    /// activation), the lag is read from it and the interval only sets how soon a probe learns
    /// it; elsewhere a lag is seen up to this much late.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub probe_interval: Duration,
    /// A probe that has not seen the effect after this long counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub probe_timeout: Duration,
}

/// What one poll saw.
pub enum Poll {
    /// The effect is visible.
    Reached,
    /// The effect is visible and says when it happened: this long after the reply.
    ReachedAfter(Duration),
    /// Not yet.
    Pending,
    /// It never will be (e.g. the loan was canceled): the outcome, counted apart.
    Ended(String),
    /// The poll failed; keep polling (the last such error is reported with a timeout).
    Failed(String),
}

impl Poll {
    /// The effect is visible; `happened_at`, when the system says, is when it took effect (the
    /// service's clock: the bench runs on one machine), so the lag does not depend on how often
    /// the probe polls. A time before the reply counts as no lag.
    pub fn reached_at(happened_at: Option<SystemTime>, replied_at: SystemTime) -> Self {
        match happened_at {
            Some(at) => Poll::ReachedAfter(at.duration_since(replied_at).unwrap_or_default()),
            None => Poll::Reached,
        }
    }
}

/// The probes of one run.
pub struct Probes {
    args: ProbeArgs,
    seen: AtomicU64,
    tracker: TaskTracker,
    lag: Arc<Mutex<LagRecorder>>,
}

impl Probes {
    pub fn new(args: ProbeArgs) -> Arc<Self> {
        Arc::new(Self {
            args,
            seen: AtomicU64::new(0),
            tracker: TaskTracker::new(),
            lag: Arc::default(),
        })
    }

    /// True for one call in `probe_every` (counted over every caller).
    pub fn sample(&self) -> bool {
        let every = self.args.probe_every;
        every != 0 && self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(every)
    }

    /// Polls with `poll` from now on, measuring the lag from `replied`.
    pub fn spawn<F, Fut>(&self, replied: Instant, mut poll: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Poll> + Send + 'static,
    {
        let (interval, limit) = (self.args.probe_interval, self.args.probe_timeout);
        let lag = self.lag.clone();
        self.tracker.spawn(async move {
            let mut last_error = None;
            loop {
                let left = limit.saturating_sub(replied.elapsed());
                let seen = tokio::time::timeout(left, poll()).await;
                let recorder = || lag.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                match seen {
                    Ok(Poll::Reached) => return recorder().reached(replied.elapsed()),
                    Ok(Poll::ReachedAfter(lag)) => return recorder().reached(lag),
                    Ok(Poll::Ended(outcome)) => return recorder().ended(outcome),
                    Ok(Poll::Pending) => {}
                    Ok(Poll::Failed(kind)) => last_error = Some(kind),
                    Err(_) => {}
                }
                if replied.elapsed() >= limit {
                    return recorder().timed_out(last_error);
                }
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// Waits for the running probes (each ends within `probe_timeout`) and summarizes them.
    pub async fn finish(&self, name: &str) -> LagReport {
        self.tracker.close();
        self.tracker.wait().await;
        let lag = self.lag.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        lag.summary(name, self.args.probe_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(every: u64) -> ProbeArgs {
        ProbeArgs {
            probe_every: every,
            probe_interval: Duration::from_millis(1),
            probe_timeout: Duration::from_millis(100),
        }
    }

    #[test]
    fn one_in_n_is_sampled() {
        let probes = Probes::new(args(20));
        let sampled = (0..100).filter(|_| probes.sample()).count();
        assert_eq!(sampled, 5);
        let none = Probes::new(args(0));
        assert!(!(0..100).any(|_| none.sample()));
    }

    #[tokio::test]
    async fn probes_reach_time_out_or_end() {
        let probes = Probes::new(args(1));
        let mut polls = 0;
        probes.spawn(Instant::now(), move || {
            polls += 1;
            async move { if polls >= 3 { Poll::Reached } else { Poll::Pending } }
        });
        probes.spawn(Instant::now(), || async { Poll::ReachedAfter(Duration::from_secs(7)) });
        probes.spawn(Instant::now(), || async { Poll::Failed("Unavailable".into()) });
        probes.spawn(Instant::now(), || async { Poll::Ended("CANCELED".into()) });
        let report = probes.finish("lag").await;
        assert_eq!(report.samples, 4);
        assert_eq!(report.reached, 2);
        // The lag an effect reports is taken as it is, not the time the probe took to see it.
        let latency = report.latency.expect("lags recorded");
        assert!(latency.max_us >= 7_000_000, "{latency:?}");
        assert_eq!(report.timeouts, 1);
        assert_eq!(report.outcomes["CANCELED"], 1);
        assert_eq!(report.outcomes["last poll error: Unavailable"], 1);
    }
}
