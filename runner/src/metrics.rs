//! Metrics a run pushes to a Prometheus Pushgateway (`--metrics URL`), the way Prometheus
//! documents for batch jobs, which do not live long enough to be scraped: grouped by job (the
//! pipeline's name) and shard index, pushed every interval while the run goes and once at the
//! end, whether it succeeded, failed or was stopped. Every push is a `POST`, which replaces the
//! metrics of the names it carries and keeps the group's others: so a failed run's push, which
//! carries `runner_last_failure_timestamp_seconds`, leaves the last success's gauge in place.
//!
//! | metric | type | labels |
//! |--------|------|--------|
//! | `runner_rows_in_total`, `runner_rows_out_total` | counter | `step`, `role` |
//! | `runner_rows_rejected_total` | counter | `step` |
//! | `runner_batches_total`, `runner_busy_seconds_total` | counter (at the end) | `step`, `role` |
//! | `runner_bytes_read_total` | counter | |
//! | `runner_redis_round_trips_total`, `runner_redis_retries_total` | counter | |
//! | `runner_run_duration_seconds` | gauge | |
//! | `runner_last_success_timestamp_seconds`, `runner_last_failure_timestamp_seconds` | gauge (at the end) | |
//!
//! While the run goes, only what is known then is pushed: the source's rows out, the sink's
//! rows out (acknowledged), every step's rejected rows, the bytes read, the Redis round trips
//! and retries. A push that fails is a
//! warning (once a run), never a failed run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{CounterVec, Encoder, Gauge, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::format::redact_url;
use crate::report::RunReport;
use crate::step::{Progress, Shard};

/// What one step has done, as far as it is known.
#[derive(Debug, Clone, Default)]
pub struct StepSample {
    pub name: String,
    pub role: String,
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    pub rejected: u64,
    /// At the end: batches the step handled (calls, for a plugin), and its busy time.
    pub batches: Option<u64>,
    pub busy_seconds: Option<f64>,
}

/// One push's values.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub steps: Vec<StepSample>,
    pub bytes_read: u64,
    /// Round trips to the sink's store (Redis) and retries of them.
    pub round_trips: u64,
    pub retries: u64,
    pub duration: Duration,
    /// At the end: whether the run succeeded.
    pub ended_ok: Option<bool>,
}

impl Sample {
    /// The values of a run that has ended, from its report.
    pub fn of_report(report: &RunReport, progress: &Progress) -> Sample {
        let steps = report
            .steps
            .iter()
            .map(|step| StepSample {
                name: step.name.clone(),
                role: step.role.to_string(),
                rows_in: Some(step.counts.rows_in),
                rows_out: Some(step.counts.rows_out),
                rejected: step.counts.rejected,
                batches: Some(step.counts.batches),
                busy_seconds: Some(step.counts.busy.as_secs_f64()),
            })
            .collect();
        let (round_trips, retries) = progress.round_trips();
        let (bytes_read, ended_ok) = (progress.bytes().0, Some(report.error.is_none()));
        Sample { steps, bytes_read, round_trips, retries, duration: report.elapsed, ended_ok }
    }

    /// The Prometheus text format of these values.
    fn encode(&self) -> Result<Vec<u8>, prometheus::Error> {
        let registry = Registry::new();
        let by_step = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["step", "role"]);
        let rows_in = by_step("runner_rows_in_total", "Rows a step took in.")?;
        let rows_out =
            by_step("runner_rows_out_total", "Rows a step passed on (a sink: rows its store acknowledged).")?;
        let batches = by_step("runner_batches_total", "Batches a step handled (a plugin step: its calls).")?;
        let rejected = IntCounterVec::new(
            Opts::new("runner_rows_rejected_total", "Rows a step's error policy rejected."),
            &["step"],
        )?;
        let busy = CounterVec::new(
            Opts::new("runner_busy_seconds_total", "Time inside a step's own calls, summed over its workers."),
            &["step", "role"],
        )?;
        let bytes = IntCounter::new("runner_bytes_read_total", "Bytes the source read.")?;
        let round_trips =
            IntCounter::new("runner_redis_round_trips_total", "Round trips to the Redis sink that settled.")?;
        let retries = IntCounter::new("runner_redis_retries_total", "Round trips to the Redis sink sent again.")?;
        let duration = Gauge::new("runner_run_duration_seconds", "How long the run has gone, or went.")?;
        for step in &self.steps {
            let labels = [step.name.as_str(), step.role.as_str()];
            if let Some(n) = step.rows_in {
                rows_in.with_label_values(&labels).inc_by(n);
            }
            if let Some(n) = step.rows_out {
                rows_out.with_label_values(&labels).inc_by(n);
            }
            if let Some(n) = step.batches {
                batches.with_label_values(&labels).inc_by(n);
            }
            if let Some(seconds) = step.busy_seconds {
                busy.with_label_values(&labels).inc_by(seconds);
            }
            rejected.with_label_values(&[step.name.as_str()]).inc_by(step.rejected);
        }
        bytes.inc_by(self.bytes_read);
        round_trips.inc_by(self.round_trips);
        retries.inc_by(self.retries);
        duration.set(self.duration.as_secs_f64());
        registry.register(Box::new(rows_in))?;
        registry.register(Box::new(rows_out))?;
        registry.register(Box::new(rejected))?;
        registry.register(Box::new(bytes))?;
        registry.register(Box::new(round_trips))?;
        registry.register(Box::new(retries))?;
        registry.register(Box::new(duration))?;
        if self.steps.iter().any(|s| s.batches.is_some()) {
            registry.register(Box::new(batches))?;
            registry.register(Box::new(busy))?;
        }
        if let Some(ok) = self.ended_ok {
            let (name, help) = match ok {
                true => ("runner_last_success_timestamp_seconds", "When the last run of this job and shard succeeded."),
                false => ("runner_last_failure_timestamp_seconds", "When the last run of this job and shard failed."),
            };
            let at = Gauge::new(name, help)?;
            at.set(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
            registry.register(Box::new(at))?;
        }
        let mut body = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut body)?;
        Ok(body)
    }
}

/// Where a run pushes its metrics, and how often while it goes.
#[derive(Clone)]
pub struct Metrics {
    pub pusher: std::sync::Arc<Pusher>,
    pub every: Duration,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metrics({}, every {:?})", self.pusher.shown, self.every)
    }
}

impl Metrics {
    /// Pushes `sample()` every interval until [`Periodic::stop`].
    pub fn start(&self, sample: impl Fn() -> Sample + Send + 'static) -> Periodic {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (pusher, every) = (self.pusher.clone(), self.every);
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = interval.tick() => pusher.push(&sample()).await,
                    _ = stopped.changed() => break,
                }
            }
        });
        Periodic { stop, task }
    }
}

/// The pushes while a run goes.
pub struct Periodic {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Periodic {
    /// Stops the pushes, once a push under way has ended: the run's last push comes after.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Pushes a run's metrics to one Pushgateway group.
pub struct Pusher {
    client: reqwest::Client,
    /// `BASE/metrics/job/JOB/shard/I`.
    url: String,
    /// The gateway's URL without credentials, for messages.
    shown: String,
    warned: std::sync::atomic::AtomicBool,
}

/// How long a push may take before it is given up (and warned of).
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl Pusher {
    /// A pusher to the gateway at `base` (`http://host:9091`), for `job` and `shard`.
    pub fn new(base: &str, job: &str, shard: Shard) -> Result<Pusher, String> {
        let shown = redact_url(base);
        let parsed = url::Url::parse(base).map_err(|e| format!("`--metrics {shown}`: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("`--metrics {shown}`: a Pushgateway URL is http:// or https://"));
        }
        let client = reqwest::Client::builder()
            .timeout(PUSH_TIMEOUT)
            .build()
            .map_err(|e| format!("`--metrics {shown}`: cannot make an HTTP client: {e}"))?;
        let url = format!("{}/metrics/job/{}/shard/{}", base.trim_end_matches('/'), segment(job), shard.index);
        Ok(Pusher { client, url, shown, warned: Default::default() })
    }

    /// Pushes `sample`; a failure is logged as a warning, the first time only.
    pub async fn push(&self, sample: &Sample) {
        if let Err(e) = self.try_push(sample).await {
            if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "pushing metrics to {}: {e} (the run goes on; later failures are not reported)",
                    self.shown
                );
            } else {
                tracing::debug!("pushing metrics to {}: {e}", self.shown);
            }
        }
    }

    async fn try_push(&self, sample: &Sample) -> Result<(), String> {
        let body = sample.encode().map_err(|e| e.to_string())?;
        let response = self
            .client
            .post(&self.url)
            .header("Content-Type", TextEncoder::new().format_type())
            .body(body)
            .send()
            .await
            .map_err(|e| if e.is_timeout() { "no answer within 5 s".to_string() } else { without_url(&e) })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(format!("{status}: {}", crate::format::cut(text.trim())));
        }
        Ok(())
    }
}

/// A reqwest error's text without the URL it carries (it may hold credentials).
fn without_url(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    let mut text = String::from(if e.is_connect() { "cannot connect" } else { "request failed" });
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

/// A grouping label's value as a path segment: percent-encoded but for letters, digits and
/// `-_.`.
fn segment(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_the_prometheus_text_format() {
        let step = StepSample {
            name: "sink".into(),
            role: "sink".into(),
            rows_out: Some(7),
            rejected: 1,
            ..StepSample::default()
        };
        let sample = Sample {
            steps: vec![step],
            bytes_read: 10,
            duration: Duration::from_secs(2),
            ended_ok: Some(false),
            ..Sample::default()
        };
        let text = String::from_utf8(sample.encode().unwrap()).unwrap();
        assert!(text.contains("# TYPE runner_rows_out_total counter"), "{text}");
        assert!(text.contains("runner_rows_out_total{role=\"sink\",step=\"sink\"} 7"), "{text}");
        assert!(text.contains("runner_rows_rejected_total{step=\"sink\"} 1"), "{text}");
        assert!(text.contains("runner_last_failure_timestamp_seconds "), "{text}");
        assert!(!text.contains("runner_last_success"), "a failure leaves the success gauge alone: {text}");
        assert_eq!(segment("iris scores/v2"), "iris%20scores%2Fv2");
    }
}
