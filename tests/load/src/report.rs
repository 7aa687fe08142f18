//! Measurements and their presentation: latency histograms (microsecond precision), error counts
//! by kind, lag distributions, and the report printed as readable text or one JSON object.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency a histogram tracks (longer values are clamped to it): 10 minutes in µs.
const MAX_TRACKED_US: u64 = 600_000_000;

fn histogram() -> Histogram<u64> {
    // Three significant digits between 1 µs and 10 minutes: a few hundred KiB per histogram.
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What one task (or a whole run, once merged) measured.
pub struct Recorder {
    ok: Histogram<u64>,
    failed: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            ok: histogram(),
            failed: histogram(),
            errors: BTreeMap::new(),
        }
    }
}

impl Recorder {
    pub fn ok(&mut self, latency: Duration) {
        self.ok.saturating_record(micros(latency));
    }

    pub fn failed(&mut self, kind: &str, latency: Duration) {
        self.failed.saturating_record(micros(latency));
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Counts an error that has no latency (e.g. an event never delivered).
    pub fn error_without_latency(&mut self, kind: &str, count: u64) {
        if count > 0 {
            *self.errors.entry(kind.to_owned()).or_default() += count;
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding never fails.
        let _ = self.ok.add(&other.ok);
        let _ = self.failed.add(&other.failed);
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
    }

    pub fn ok_count(&self) -> u64 {
        self.ok.len()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: h.mean().round() as u64,
        })
    }

    fn text(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  max {}  mean {}  (n={})",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us),
            ms(self.mean_us),
            self.count
        )
    }
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// A lag measured by pollers: how long after an event an effect became visible.
#[derive(Default)]
pub struct LagRecorder {
    reached: Option<Histogram<u64>>,
    samples: u64,
    timeouts: u64,
    outcomes: BTreeMap<String, u64>,
}

impl LagRecorder {
    pub fn reached(&mut self, lag: Duration) {
        self.samples += 1;
        self.reached
            .get_or_insert_with(histogram)
            .saturating_record(micros(lag));
    }

    pub fn timed_out(&mut self, last_error: Option<String>) {
        self.samples += 1;
        self.timeouts += 1;
        if let Some(kind) = last_error {
            *self.outcomes.entry(format!("last poll error: {kind}")).or_default() += 1;
        }
    }

    /// The effect can no longer appear (e.g. the loan was canceled).
    pub fn ended(&mut self, outcome: String) {
        self.samples += 1;
        *self.outcomes.entry(outcome).or_default() += 1;
    }

    pub fn summary(&self, name: &str, limit: Duration) -> LagReport {
        LagReport {
            name: name.to_owned(),
            samples: self.samples,
            reached: self.reached.as_ref().map_or(0, Histogram::len),
            timeouts: self.timeouts,
            limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            outcomes: self.outcomes.clone(),
            latency: self.reached.as_ref().and_then(Latency::of),
        }
    }
}

/// A lag distribution as reported.
#[derive(Clone, Debug, Serialize)]
pub struct LagReport {
    pub name: String,
    /// Probes started.
    pub samples: u64,
    /// Probes that saw the effect.
    pub reached: u64,
    /// Probes that gave up after `limit_ms`.
    pub timeouts: u64,
    pub limit_ms: u64,
    /// Probes that ended otherwise, by how.
    pub outcomes: BTreeMap<String, u64>,
    /// The lag of the probes that saw the effect.
    pub latency: Option<Latency>,
}

/// Everything one subcommand measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Requests per second sent (an open load); none when each task sent as fast as answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Sent first and not recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_up_s: Option<f64>,
    pub elapsed_s: f64,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Completed requests (ok or not) per second of elapsed time.
    pub throughput_rps: f64,
    pub ok_rps: f64,
    /// Latency of the successful requests.
    pub latency: Option<Latency>,
    /// Latency of the failed ones (a fast refusal must not flatter the percentiles above).
    pub error_latency: Option<Latency>,
    pub lags: Vec<LagReport>,
    /// Scenario-specific figures (phase durations, rates).
    pub figures: BTreeMap<String, f64>,
}

impl Report {
    pub fn new(scenario: &str, target: &str, recorder: &Recorder, elapsed: Duration) -> Self {
        let ok = recorder.ok_count();
        let errors = recorder.error_count();
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        Self {
            scenario: scenario.to_owned(),
            target: target.to_owned(),
            concurrency: None,
            rate: None,
            duration_s: None,
            warm_up_s: None,
            elapsed_s: elapsed.as_secs_f64(),
            requests: ok + errors,
            ok,
            errors,
            errors_by_kind: recorder.errors.clone(),
            throughput_rps: (ok + errors) as f64 / secs,
            ok_rps: ok as f64 / secs,
            latency: Latency::of(&recorder.ok),
            error_latency: Latency::of(&recorder.failed),
            lags: Vec::new(),
            figures: BTreeMap::new(),
        }
    }

    /// The report as one JSON object, or as readable text.
    pub fn render(&self, json: bool) -> anyhow::Result<String> {
        if json {
            return Ok(serde_json::to_string(self)?);
        }
        let mut out = String::new();
        let mut head = format!("== {}  target {}", self.scenario, self.target);
        if let Some(c) = self.concurrency {
            let _ = write!(head, "  concurrency {c}");
        }
        if let Some(rate) = self.rate {
            let _ = write!(head, "  rate {rate}/s");
        }
        if let Some(d) = self.duration_s {
            let _ = write!(head, "  duration {d:.1}s");
        }
        if let Some(w) = self.warm_up_s {
            let _ = write!(head, " after a warm-up of {w:.1}s");
        }
        let _ = writeln!(out, "{head}  elapsed {:.2}s", self.elapsed_s);
        let _ = writeln!(
            out,
            "requests    {}  (ok {}, errors {})",
            self.requests, self.ok, self.errors
        );
        let _ = writeln!(
            out,
            "throughput  {:.1} req/s  (ok {:.1} req/s)",
            self.throughput_rps, self.ok_rps
        );
        match &self.latency {
            Some(l) => {
                let _ = writeln!(out, "latency ok  {}", l.text());
            }
            None => {
                let _ = writeln!(out, "latency ok  (no successful request)");
            }
        }
        if let Some(l) = &self.error_latency {
            let _ = writeln!(out, "latency err {}", l.text());
        }
        for (kind, count) in &self.errors_by_kind {
            let _ = writeln!(out, "error       {kind}: {count}");
        }
        for lag in &self.lags {
            let _ = writeln!(
                out,
                "lag {}: samples {}, reached {}, timeouts {} (limit {} ms)",
                lag.name, lag.samples, lag.reached, lag.timeouts, lag.limit_ms
            );
            if let Some(l) = &lag.latency {
                let _ = writeln!(out, "    {}", l.text());
            }
            for (outcome, count) in &lag.outcomes {
                let _ = writeln!(out, "    {outcome}: {count}");
            }
        }
        for (name, value) in &self.figures {
            if value.fract() == 0.0 && value.abs() < 1e15 {
                let _ = writeln!(out, "{name:<22} {value:.0}");
            } else {
                let _ = writeln!(out, "{name:<22} {value:.3}");
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_recorders_add_up() {
        let mut a = Recorder::default();
        a.ok(Duration::from_micros(100));
        a.failed("timeout", Duration::from_secs(5));
        let mut b = Recorder::default();
        b.ok(Duration::from_micros(300));
        b.failed("timeout", Duration::from_secs(5));
        b.failed("Unavailable", Duration::from_millis(1));
        a.merge(&b);
        let report = Report::new("t", "x", &a, Duration::from_secs(2));
        assert_eq!(report.requests, 5);
        assert_eq!(report.ok, 2);
        assert_eq!(report.errors_by_kind["timeout"], 2);
        assert!((report.throughput_rps - 2.5).abs() < 1e-9);
        let latency = report.latency.expect("two successes");
        assert_eq!(latency.max_us, 300);
    }

    #[test]
    fn the_json_report_is_one_object() {
        let report = Report::new("t", "x", &Recorder::default(), Duration::from_secs(1));
        let text = report.render(true).expect("serializes");
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert!(value.is_object());
        assert_eq!(value["requests"], 0);
    }
}
