//! The timed concurrent loop every request scenario shares: N tasks each send one request after
//! another until the duration is over, then stop by themselves.
//!
//! Without `--rate` the load is closed: each task sends its next request as soon as the last one
//! is answered, which measures the most the system does (its latency is then mostly queueing).
//! With `--rate R` the load is open: requests are due at R per second in all, spread over the
//! tasks, and each latency counts from when the request was due, not from when a busy task got
//! round to sending it (so a stall is not hidden by the requests it held back, as wrk2 does).
//!
//! With `--warm-up D` the same load runs for D first, unrecorded: a service that has just started
//! still opens its database connections and prepares its statements, which is not what a
//! sustained rate costs.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

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
    /// How long to send the same load first without recording it (e.g. 3s).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warm_up: Duration,
    /// A request that takes longer is abandoned and counted as the error `timeout`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Requests per second in all (open load); without it each task sends as fast as it is
    /// answered (closed load).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
}

/// Which request a task is about to send.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// The task's number, `0..concurrency`.
    pub task: usize,
    /// The request's number within its task, from 0.
    pub n: u64,
    /// Sent during the warm-up: not recorded (and not worth probing).
    pub warm_up: bool,
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
        report.rate = load.rate;
        report.duration_s = Some(load.duration.as_secs_f64());
        report.warm_up_s = Some(load.warm_up.as_secs_f64()).filter(|s| *s > 0.0);
        report
    }
}

/// Runs `request` from `load.concurrency` tasks until `load.warm_up` and then `load.duration`
/// have passed, as fast as they are answered or at `load.rate`. Each call sent after the warm-up
/// is timed and recorded; a call still running after `load.request_timeout` is dropped and
/// counted as `timeout`, so the run ends at most that long after the duration.
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
    let measured_from = start + load.warm_up;
    let deadline = measured_from + load.duration;
    let timeout = load.request_timeout;
    let schedule = load.rate.map(|rate| Schedule::new(start, rate, load.concurrency));
    let tasks: Vec<_> = (0..load.concurrency)
        .map(|task| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut recorder = Recorder::default();
                let mut n = 0;
                loop {
                    let sent = match schedule {
                        Some(schedule) => {
                            let due = schedule.due(task, n);
                            tokio::time::sleep_until(due).await;
                            due
                        }
                        None => Instant::now(),
                    };
                    if sent >= deadline {
                        break;
                    }
                    let warm_up = sent < measured_from;
                    let outcome = tokio::time::timeout(timeout, request(Slot { task, n, warm_up })).await;
                    let latency = sent.elapsed();
                    match outcome {
                        _ if warm_up => {}
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
        elapsed: measured_from.elapsed(),
    })
}

/// When each request of an open load is due.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    /// Between two requests of one task.
    period: Duration,
    /// Between two tasks' requests.
    stagger: Duration,
}

impl Schedule {
    fn new(start: Instant, rate: f64, tasks: usize) -> Self {
        let stagger = Duration::from_secs_f64(1.0 / rate);
        Self {
            start,
            period: stagger * u32::try_from(tasks).unwrap_or(u32::MAX),
            stagger,
        }
    }

    fn due(&self, task: usize, n: u64) -> Instant {
        let task = u32::try_from(task).unwrap_or(u32::MAX);
        self.start + self.stagger * task + self.period.mul_f64(n as f64)
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.1 => Ok(rate),
        _ => Err(format!("`{text}` is not a rate of at least 0.1 requests per second")),
    }
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

    #[tokio::test(start_paused = true)]
    async fn the_loop_stops_by_itself_and_counts_every_request() {
        let load = LoadArgs {
            concurrency: 4,
            duration: Duration::from_millis(200),
            request_timeout: Duration::from_millis(50),
            rate: None,
            warm_up: Duration::ZERO,
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
        assert!(run.elapsed < Duration::from_millis(400), "{:?}", run.elapsed);
        let report = run.report("t", "x", &load);
        assert_eq!(report.requests, calls.load(Ordering::Relaxed));
        assert!(report.errors_by_kind["timeout"] > 0);
        assert!(report.errors_by_kind["refused"] > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_load_sends_at_its_rate_and_counts_from_when_a_request_was_due() {
        let load = LoadArgs {
            concurrency: 2,
            duration: Duration::from_millis(500),
            request_timeout: Duration::from_secs(1),
            rate: Some(40.0),
            warm_up: Duration::ZERO,
        };
        let run = drive(&load, move |slot| async move {
            // The first request of task 0 stalls for 300 ms; the five requests it holds back
            // are late by up to 250 ms, which their latency must show.
            if slot.task == 0 && slot.n == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(())
        })
        .await
        .expect("no task panics");
        let report = run.report("t", "x", &load);
        // 40/s for 0.5 s, whatever the stall: 20 requests, 10 per task.
        assert_eq!(report.requests, 20);
        let latency = report.latency.expect("requests succeeded");
        assert!(latency.max_us >= 290_000, "the stall is measured: {}", latency.max_us);
        assert!(
            latency.p90_us >= 100_000,
            "the held-back requests were late: {}",
            latency.p90_us
        );
        assert!(latency.p50_us < 100_000, "task 1 was never late: {}", latency.p50_us);
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_sent_during_the_warm_up_is_not_recorded() {
        let load = LoadArgs {
            concurrency: 2,
            duration: Duration::from_millis(500),
            request_timeout: Duration::from_secs(1),
            rate: Some(40.0),
            warm_up: Duration::from_millis(250),
        };
        let warm_ups = Arc::new(AtomicU64::new(0));
        let counter = warm_ups.clone();
        let run = drive(&load, move |slot| {
            if slot.warm_up {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            async move {
                // Failing while warming up, as a cold service may: none of it may count.
                if slot.warm_up {
                    return Err(Failure::new("cold"));
                }
                Ok(())
            }
        })
        .await
        .expect("no task panics");
        let report = run.report("t", "x", &load);
        // 40/s: 10 requests in the warm-up, 20 in the 0.5 s after it, and only those counted.
        assert_eq!(warm_ups.load(Ordering::Relaxed), 10);
        assert_eq!(report.requests, 20);
        assert_eq!((report.ok, report.errors), (20, 0), "{:?}", report.errors_by_kind);
        assert_eq!(report.warm_up_s, Some(0.25));
    }

    #[test]
    fn rates_must_be_positive_numbers() {
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("NaN").is_err());
    }
}
