//! `provisiond bench`: what one server can carry, at a fixed concurrency.
//!
//! Keys and CSRs are made before the clock starts (and, for `sign-csr`, the tokens too),
//! so the client's own crypto is not measured. Each flow uses a fresh device id. The
//! CSRs carry no CN (the server names the certificate after the device), so a pool of
//! them serves any number of devices.
//!
//! The load generator usually shares the machine with the server, so it is made as cheap
//! as a client can be: one keep-alive HTTP/1.1 connection per concurrency slot (no pool,
//! no locks), request bodies built from pre-escaped parts, and responses parsed only as
//! far as needed (the token; an error's code).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use super::{CliError, ServerArgs};
use crate::client::{ApiClient, ClientError, Credential};
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
    /// GET /health, as a monitoring system would.
    Health,
}

impl Scenario {
    /// The result a run is counted in.
    fn unit(self) -> &'static str {
        match self {
            Scenario::Flow => "flow",
            Scenario::Onboarding => "onboarding",
            Scenario::SignCsr => "sign-csr",
            Scenario::Cfssl => "cfssl-sign",
            Scenario::Health => "health",
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(after_help = super::EXIT_CODES_HELP)]
pub struct BenchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub enrollment: super::EnrollmentKeyArgs,
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
    /// Report this process's CPU time over the measured window, per request
    /// (`--cpu-of server=PID --cpu-of redis=PID`; Linux /proc)
    #[arg(long = "cpu-of", value_name = "NAME=PID")]
    pub cpu_of: Vec<super::cpu::Watched>,
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

impl Report {
    /// 0 when every request succeeded; 1 when some failed; when none succeeded, 3 if the
    /// server refused them (4xx) and 4 if it could not serve or be reached.
    pub fn exit_code(&self) -> u8 {
        let failed = self.results.values().any(|s| !s.errors.is_empty());
        if !failed {
            return super::exit::OK;
        }
        if self.results.values().any(|s| s.ok > 0) {
            return super::exit::FAILED;
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
            super::exit::UNAVAILABLE
        } else {
            super::exit::REFUSED
        }
    }
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
    pub cpu: BTreeMap<String, super::cpu::CpuUse>,
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

    fn record<T>(&mut self, started: Instant, outcome: &Result<T, String>) {
        let micros = started.elapsed().as_micros().clamp(1, 60_000_000) as u64;
        self.latencies.saturating_record(micros);
        match outcome {
            Ok(_) => self.ok += 1,
            Err(code) => *self.errors.entry(code.clone()).or_default() += 1,
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
    target: Target,
    enrollment_key: Option<String>,
    /// `,"group":"<name>"` for onboarding bodies with `--group`, else empty.
    group_field: String,
    scenario: Scenario,
    /// The pool's CSRs, each already a JSON string literal.
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

    fn sign_body(&self, device: &str, n: usize) -> Bytes {
        let csr = &self.csrs[n % self.csrs.len()];
        Bytes::from(format!(r#"{{"device_id":"{device}","csr":{csr}}}"#))
    }

    /// One unit of work (a flow, or one request), recorded; `false` when there is no more.
    async fn step(&self, conn: &mut Connection, recorders: &mut Recorders) -> bool {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if n >= self.limit || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match self.scenario {
            // The outcome is in the recorders already.
            Scenario::Onboarding => {
                let _ = self.onboard(conn, &self.device(n), recorders).await;
            }
            Scenario::SignCsr => {
                let (device, token) = &self.tokens[n];
                let _ = self.sign(conn, device, token, n, recorders).await;
            }
            Scenario::Flow => {
                let device = self.device(n);
                let started = Instant::now();
                let outcome = match self.onboard(conn, &device, recorders).await {
                    Ok(token) => self.sign(conn, &device, &token, n, recorders).await,
                    Err(_) => Err("onboarding_failed".to_owned()),
                };
                recorders.get("flow").record(started, &outcome);
            }
            Scenario::Cfssl => {
                let csr = &self.csrs[n % self.csrs.len()];
                let body = Bytes::from(format!(r#"{{"certificate_request":{csr}}}"#));
                let started = Instant::now();
                let outcome = conn
                    .send(&self.target, Method::POST, "/api/v1/cfssl/sign", None, body)
                    .await;
                recorders.get("cfssl-sign").record(started, &outcome);
            }
            Scenario::Health => {
                let started = Instant::now();
                let outcome = conn
                    .send(&self.target, Method::GET, "/health", None, Bytes::new())
                    .await;
                recorders.get("health").record(started, &outcome);
            }
        }
        true
    }

    async fn onboard(
        &self,
        conn: &mut Connection,
        device: &str,
        recorders: &mut Recorders,
    ) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Onboarded<'a> {
            #[serde(borrow)]
            provisioning_token: &'a str,
        }
        let body = Bytes::from(format!(r#"{{"device_id":"{device}"{}}}"#, self.group_field));
        let started = Instant::now();
        let outcome = conn
            .send(
                &self.target,
                Method::POST,
                "/api/v1/onboarding",
                self.enrollment_key.as_deref(),
                body,
            )
            .await
            .and_then(|body| {
                serde_json::from_slice::<Onboarded>(&body)
                    .map(|o| o.provisioning_token.to_owned())
                    .map_err(|_| "bad_response".to_owned())
            });
        recorders.get("onboarding").record(started, &outcome);
        outcome
    }

    async fn sign(
        &self,
        conn: &mut Connection,
        device: &str,
        token: &str,
        n: usize,
        recorders: &mut Recorders,
    ) -> Result<(), String> {
        let body = self.sign_body(device, n);
        let started = Instant::now();
        let outcome = conn
            .send(
                &self.target,
                Method::POST,
                "/api/v1/sign-csr",
                Some(token),
                body,
            )
            .await
            .map(drop);
        recorders.get("sign-csr").record(started, &outcome);
        outcome
    }
}

/// Where the requests go: a plain-HTTP `host:port`.
struct Target {
    authority: String,
}

impl Target {
    fn parse(server: &str) -> Result<Self, CliError> {
        let uri: Uri = server
            .parse()
            .map_err(|e| CliError::Failed(anyhow::anyhow!("--server {server}: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(CliError::Failed(anyhow::anyhow!(
                "bench drives plain http:// servers; --server is {server}"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| CliError::Failed(anyhow::anyhow!("--server {server} has no host")))?;
        Ok(Self {
            authority: authority.to_string(),
        })
    }
}

/// One keep-alive connection, reopened after a failure.
struct Connection {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    async fn open(target: &Target) -> std::io::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&target.authority).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// The response body on a 2xx, the error code otherwise.
    async fn send(
        &mut self,
        target: &Target,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let result = self.try_send(target, method, path, bearer, body).await;
        if matches!(&result, Err(code) if code == "network_error") {
            self.sender = None;
        }
        result
    }

    async fn try_send(
        &mut self,
        target: &Target,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let network = |_| "network_error".to_owned();
        if self.sender.is_none() {
            self.sender = Some(Self::open(target).await.map_err(network)?);
        }
        let sender = self.sender.as_mut().expect("just opened");
        sender
            .ready()
            .await
            .map_err(|_| "network_error".to_owned())?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &target.authority)
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .expect("the request is well formed");
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| "network_error".to_owned())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| "network_error".to_owned())?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("http_{}", status.as_u16()));
        Err(code)
    }
}

pub async fn run(args: &BenchArgs) -> Result<Report, CliError> {
    let target = Target::parse(&args.server.server)?;
    let pool = args.devices.clamp(1, CSR_POOL);
    let csrs = tokio::task::spawn_blocking(move || {
        (0..pool)
            .map(|_| {
                let pem = DeviceKey::generate(KeyKind::P256)?.csr_pem(None)?;
                Ok(serde_json::to_string(&pem).expect("a string serializes"))
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()
    })
    .await
    .expect("CSR generation does not panic")
    .map_err(|e| CliError::Failed(e.into()))?;
    let mut run_id = [0u8; 4];
    crate::crypto::fill_random(&mut run_id);

    let mut plan = Plan {
        target,
        enrollment_key: args.enrollment.key()?,
        group_field: args.enrollment.group_field(),
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
        let client = args.server.client(args.concurrency.into())?;
        let client = client.with_group(args.enrollment.group.clone());
        // Tokens are taken at a good clip whatever the concurrency under test.
        let takers = usize::from(args.concurrency).max(64);
        plan.tokens = take_tokens(&plan, &client, args.devices, takers).await?;
    }
    // Connections are opened before the clock starts too.
    let mut connections = Vec::with_capacity(args.concurrency.into());
    for _ in 0..args.concurrency {
        let sender = Connection::open(&plan.target).await.map_err(|e| {
            CliError::Unavailable(ClientError::Unavailable {
                status: hyper::StatusCode::SERVICE_UNAVAILABLE,
                code: "network_error".into(),
                message: format!("cannot connect to {}: {e}", args.server.server),
                retry_after: None,
            })
        })?;
        connections.push(Connection {
            sender: Some(sender),
        });
    }
    plan.deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s));

    let plan = Arc::new(plan);
    let cpu = super::cpu::Window::start(&args.cpu_of).map_err(|e| CliError::Failed(e.into()))?;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for mut conn in connections {
        let plan = plan.clone();
        workers.spawn(async move {
            let mut recorders = Recorders::default();
            while plan.step(&mut conn, &mut recorders).await {}
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
    let done = total.0.get(args.scenario.unit()).map_or(0, |r| r.ok);
    let cpu = cpu.end(done).map_err(|e| CliError::Failed(e.into()))?;
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
        cpu,
    })
}

/// Onboards `count` devices before the clock starts, for the sign-csr scenario.
async fn take_tokens(
    plan: &Plan,
    client: &ApiClient,
    count: usize,
    concurrency: usize,
) -> Result<Vec<(String, String)>, CliError> {
    let devices: Arc<Vec<String>> = Arc::new((0..count).map(|n| plan.device(n)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let credential = Credential::enrollment_key(plan.enrollment_key.clone());
        let (devices, next) = (devices.clone(), next.clone());
        workers.spawn(async move {
            let mut taken = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(device) = devices.get(n) else {
                    return Ok::<_, ClientError>(taken);
                };
                let token = client
                    .onboard(device, &credential)
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
    for (name, used) in &report.cpu {
        println!(
            "CPU of {name}: {:.1} µs per {} ({:.2} s in all)",
            used.us_per_request,
            report.scenario.unit(),
            used.seconds
        );
    }
}
