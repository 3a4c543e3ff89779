//! `provisiond bench`: what one server can carry, at a fixed concurrency.
//!
//! Keys and CSRs are made before the clock starts (and, for `sign-csr`, the tokens too),
//! so the client's own crypto is not measured. Each flow uses a fresh device id. The
//! CSRs carry no CN (the server names the certificate after the device), so a pool of
//! them serves any number of devices.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{CliError, ServerArgs};
use crate::client::{ApiClient, ClientError};
use crate::device::{DeviceKey, KeyKind};

/// Distinct keys and CSRs prepared; flows beyond this reuse them with new device ids.
const CSR_POOL: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Onboarding then sign-csr, each device fresh.
    Flow,
    /// Onboarding only.
    Onboarding,
    /// sign-csr only, with tokens taken before the clock starts.
    SignCsr,
    /// cfssl's /api/v1/cfssl/sign at --server, for comparison.
    Cfssl,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Flows to run (without --duration), and tokens to prepare for sign-csr
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// Requests in flight at once
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Run for this many seconds instead of a fixed number of devices
    #[arg(long)]
    pub duration: Option<f64>,
    #[arg(long, value_enum, default_value_t = Scenario::Flow)]
    pub scenario: Scenario,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

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
}

/// Latencies and errors of one endpoint, kept per worker and merged at the end.
struct Recorder {
    latencies: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    fn new() -> Self {
        Self {
            latencies: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    fn record<T>(&mut self, started: Instant, outcome: &Result<T, ClientError>) {
        let micros = started.elapsed().as_micros().clamp(1, 60_000_000) as u64;
        self.latencies.saturating_record(micros);
        match outcome {
            Ok(_) => self.ok += 1,
            Err(e) => *self.errors.entry(e.code().to_owned()).or_default() += 1,
        }
    }

    fn merge(&mut self, other: &Recorder) {
        self.latencies.add(&other.latencies).expect("same bounds");
        self.ok += other.ok;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }

    fn stats(&self, elapsed: f64) -> Stats {
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
struct Recorders(BTreeMap<&'static str, Recorder>);

impl Recorders {
    fn get(&mut self, name: &'static str) -> &mut Recorder {
        self.0.entry(name).or_insert_with(Recorder::new)
    }
}

/// Everything prepared before the clock starts.
struct Plan {
    client: ApiClient,
    enrollment_key: Option<String>,
    scenario: Scenario,
    csrs: Vec<String>,
    run_id: String,
    /// Pre-taken tokens, for `sign-csr`.
    tokens: Vec<(String, String)>,
    limit: usize,
    deadline: Option<Instant>,
    next: AtomicUsize,
}

impl Plan {
    fn device(&self, n: usize) -> String {
        format!("bench-{}-{n}", self.run_id)
    }

    /// One unit of work (a flow, or one request), recorded; `false` when there is no more.
    async fn step(&self, recorders: &mut Recorders) -> bool {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if n >= self.limit || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        let csr = &self.csrs[n % self.csrs.len()];
        match self.scenario {
            Scenario::Onboarding => {
                self.onboard(&self.device(n), recorders).await;
            }
            Scenario::SignCsr => {
                let (device, token) = &self.tokens[n];
                let started = Instant::now();
                let outcome = self.client.sign_csr(token, device, csr).await;
                recorders.get("sign-csr").record(started, &outcome);
            }
            Scenario::Flow => {
                let device = self.device(n);
                let started = Instant::now();
                let outcome = match self.onboard(&device, recorders).await {
                    Some(token) => {
                        let signing = Instant::now();
                        let outcome = self.client.sign_csr(&token, &device, csr).await;
                        recorders.get("sign-csr").record(signing, &outcome);
                        outcome.map(drop)
                    }
                    None => Err(ClientError::Refused {
                        status: reqwest::StatusCode::UNAUTHORIZED,
                        code: "onboarding_failed".into(),
                        message: String::new(),
                    }),
                };
                recorders.get("flow").record(started, &outcome);
            }
            Scenario::Cfssl => {
                let started = Instant::now();
                let outcome = self.client.cfssl_sign(csr).await;
                recorders.get("cfssl-sign").record(started, &outcome);
            }
        }
        true
    }

    async fn onboard(&self, device: &str, recorders: &mut Recorders) -> Option<String> {
        let started = Instant::now();
        let outcome = self
            .client
            .onboard(device, self.enrollment_key.as_deref())
            .await;
        recorders.get("onboarding").record(started, &outcome);
        outcome.ok().map(|o| o.provisioning_token)
    }
}

pub async fn run(args: &BenchArgs) -> Result<Report, CliError> {
    let client = ApiClient::new(&args.server.server, args.concurrency.into())
        .map_err(|e| CliError::Failed(e.into()))?;
    let pool = args.devices.clamp(1, CSR_POOL);
    let csrs = tokio::task::spawn_blocking(move || {
        (0..pool)
            .map(|_| DeviceKey::generate(KeyKind::P256)?.csr_pem(None))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .expect("CSR generation does not panic")
    .map_err(|e| CliError::Failed(e.into()))?;
    let mut run_id = [0u8; 4];
    crate::crypto::fill_random(&mut run_id);

    let mut plan = Plan {
        client,
        enrollment_key: args.server.enrollment_key.clone(),
        scenario: args.scenario,
        csrs,
        run_id: hex::encode(run_id),
        tokens: Vec::new(),
        limit: if args.duration.is_some() && args.scenario != Scenario::SignCsr {
            usize::MAX
        } else {
            args.devices
        },
        deadline: None,
        next: AtomicUsize::new(0),
    };
    if args.scenario == Scenario::SignCsr {
        plan.tokens = take_tokens(&plan, args.devices, args.concurrency.into()).await?;
    }
    plan.deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s));

    let plan = Arc::new(plan);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let plan = plan.clone();
        workers.spawn(async move {
            let mut recorders = Recorders::default();
            while plan.step(&mut recorders).await {}
            recorders
        });
    }
    let mut total = Recorders::default();
    while let Some(recorders) = workers.join_next().await {
        for (name, recorder) in recorders.expect("bench workers do not panic").0 {
            total.get(name).merge(&recorder);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Report {
        scenario: args.scenario,
        server: args.server.server.clone(),
        concurrency: args.concurrency,
        elapsed_seconds: elapsed,
        results: total
            .0
            .iter()
            .map(|(name, r)| (*name, r.stats(elapsed)))
            .collect(),
    })
}

/// Onboards `count` devices before the clock starts, for the sign-csr scenario.
async fn take_tokens(
    plan: &Plan,
    count: usize,
    concurrency: usize,
) -> Result<Vec<(String, String)>, CliError> {
    let devices: Arc<Vec<String>> = Arc::new((0..count).map(|n| plan.device(n)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, key) = (plan.client.clone(), plan.enrollment_key.clone());
        let (devices, next) = (devices.clone(), next.clone());
        workers.spawn(async move {
            let mut taken = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(device) = devices.get(n) else {
                    return Ok::<_, ClientError>(taken);
                };
                let token = client
                    .onboard(device, key.as_deref())
                    .await?
                    .provisioning_token;
                taken.push((n, token));
            }
        });
    }
    let mut tokens = vec![(String::new(), String::new()); count];
    while let Some(taken) = workers.join_next().await {
        for (n, token) in taken.expect("token takers do not panic")? {
            tokens[n] = (devices[n].clone(), token);
        }
    }
    Ok(tokens)
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
}
