//! The timed concurrent loop every request scenario shares: N tasks each send one request after
//! another until the duration is over, then stop by themselves.
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::builder::TypedValueParser as _;

use crate::report::{Recorder, Report};

/// How much load, for how long.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Concurrent virtual users (tasks), each with one request in flight.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    pub concurrency: usize,
    /// How long to send requests (e.g. 10s, 500ms, 2m, 40S); no request starts after it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// A request that takes longer is abandoned and counted as the error `timeout`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// Which request a task is about to send.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// The task's number, `0..concurrency`.
    pub task: usize,
    /// The request's number within its task, from 0.
    pub n: u64,
}

/// Why a request failed, as counted in the report (e.g. `Unavailable`, `SERVICE_BUSY`, `timeout`).
#[derive(Debug)]
pub struct Failure(pub String);

impl Failure {
    pub fn new(kind: impl Into<String>) -> Self {
        Self(kind.into())
    }
}

pub type Outcome = Result<(), Failure>;

/// What a timed run measured.
pub struct Run {
    pub recorder: Recorder,
    pub elapsed: Duration,
}

impl Run {
    /// The run's report, with the load it was under.
    pub fn report(&self, scenario: &str, target: &str, load: &LoadArgs) -> Report {
        let mut report = Report::new(scenario, target, &self.recorder, self.elapsed);
        report.concurrency = Some(load.concurrency);
        report.duration_s = Some(load.duration.as_secs_f64());
        report
    }
}

/// Runs `request` from `load.concurrency` tasks until `load.duration` has passed. Each call is
/// timed; a call still running after `load.request_timeout` is dropped and counted as `timeout`,
/// so the run ends at most that long after the duration.
///
/// # Errors
/// A task panicked.
pub async fn drive<F, Fut>(load: &LoadArgs, request: F) -> anyhow::Result<Run>
where
    F: Fn(Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let request = Arc::new(request);
    let start = Instant::now();
    let deadline = start + load.duration;
    let timeout = load.request_timeout;
    let tasks: Vec<_> = (0..load.concurrency)
        .map(|task| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut recorder = Recorder::default();
                let mut n = 0;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let outcome = tokio::time::timeout(timeout, request(Slot { task, n })).await;
                    let latency = sent.elapsed();
                    match outcome {
                        Ok(Ok(())) => recorder.ok(latency),
                        Ok(Err(Failure(kind))) => recorder.failed(&kind, latency),
                        Err(_) => recorder.failed("timeout", latency),
                    }
                    n += 1;
                }
                recorder
            })
        })
        .collect();
    let mut recorder = Recorder::default();
    for task in tasks {
        recorder.merge(&task.await.context("a load task panicked")?);
    }
    Ok(Run {
        recorder,
        elapsed: start.elapsed(),
    })
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `40S` (siege's spelling) or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 10s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!("unknown duration unit `{other}` (use ms, s, m or h)"));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// A short random tag that keeps this run's synthetic readers and books apart from earlier runs'.
pub fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn durations_parse_in_the_usual_spellings() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("40S"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[tokio::test]
    async fn the_loop_stops_by_itself_and_counts_every_request() {
        let load = LoadArgs {
            concurrency: 4,
            duration: Duration::from_millis(200),
            request_timeout: Duration::from_millis(50),
        };
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let run = drive(&load, move |slot| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                match slot.n % 3 {
                    0 => Ok(()),
                    1 => Err(Failure::new("refused")),
                    _ => {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        Ok(())
                    }
                }
            }
        })
        .await
        .expect("no task panics");
        assert!(run.elapsed < Duration::from_millis(400));
        let report = run.report("t", "x", &load);
        assert_eq!(report.requests, calls.load(Ordering::Relaxed));
        assert!(report.errors_by_kind["timeout"] > 0);
        assert!(report.errors_by_kind["refused"] > 0);
    }
}
