//! What a bench run measured: latencies and errors per endpoint, and the report.

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Scenario;
use crate::cli::exit;

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub ok: u64,
    /// Successful requests per second over the whole run.
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub server: String,
    pub concurrency: u16,
    pub elapsed_seconds: f64,
    /// Per endpoint (`onboarding`, `sign-csr`, `cfssl-sign`) and for the whole `flow`.
    pub results: BTreeMap<&'static str, Stats>,
    /// CPU of the processes given with `--cpu-of`, per successful unit of the scenario.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu: BTreeMap<String, crate::cli::cpu::CpuUse>,
}

impl Report {
    /// 0 when every request succeeded; 1 when some failed; when none succeeded, 3 if the
    /// server refused them (4xx) and 4 if it could not serve or be reached.
    pub fn exit_code(&self) -> u8 {
        let failed = self.results.values().any(|s| !s.errors.is_empty());
        if !failed {
            return exit::OK;
        }
        if self.results.values().any(|s| s.ok > 0) {
            return exit::FAILED;
        }
        let unavailable = |code: &str| {
            matches!(
                code,
                "network_error" | "storage_unavailable" | "rate_limited" | "internal_error"
            ) || code.starts_with("http_5")
        };
        if self
            .results
            .values()
            .flat_map(|s| s.errors.keys())
            .all(|code| unavailable(code))
        {
            exit::UNAVAILABLE
        } else {
            exit::REFUSED
        }
    }
}

/// Latencies and errors of one endpoint, kept per worker and merged at the end.
pub(super) struct Recorder {
    latencies: Histogram<u64>,
    pub(super) ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub(super) fn new() -> Self {
        Self {
            latencies: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    pub(super) fn record<T>(&mut self, started: Instant, outcome: &Result<T, String>) {
        let micros = started.elapsed().as_micros().clamp(1, 60_000_000) as u64;
        self.latencies.saturating_record(micros);
        match outcome {
            Ok(_) => self.ok += 1,
            Err(code) => *self.errors.entry(code.clone()).or_default() += 1,
        }
    }

    pub(super) fn merge(&mut self, other: &Recorder) {
        self.latencies.add(&other.latencies).expect("same bounds");
        self.ok += other.ok;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }

    pub(super) fn stats(&self, elapsed: f64) -> Stats {
        let ms = |q: f64| self.latencies.value_at_quantile(q) as f64 / 1000.0;
        Stats {
            requests: self.latencies.len(),
            ok: self.ok,
            per_second: self.ok as f64 / elapsed.max(1e-9),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: self.latencies.max() as f64 / 1000.0,
            errors: self.errors.clone(),
        }
    }
}

#[derive(Default)]
pub(super) struct Recorders(pub(super) BTreeMap<&'static str, Recorder>);

impl Recorders {
    pub(super) fn get(&mut self, name: &'static str) -> &mut Recorder {
        self.0.entry(name).or_insert_with(Recorder::new)
    }
}

pub fn print_table(report: &Report) {
    println!(
        "{:?} against {} at concurrency {}, {:.1} s",
        report.scenario, report.server, report.concurrency, report.elapsed_seconds
    );
    println!(
        "{:<12} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8}  errors",
        "", "ok", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, s) in &report.results {
        let errors = if s.errors.is_empty() {
            "-".to_owned()
        } else {
            s.errors
                .iter()
                .map(|(code, n)| format!("{code}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{name:<12} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {errors}",
            s.ok, s.per_second, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
        );
    }
    for (name, used) in &report.cpu {
        println!(
            "CPU of {name}: {:.1} µs per {} ({:.2} s in all)",
            used.us_per_request,
            report.scenario.unit(),
            used.seconds
        );
    }
}
