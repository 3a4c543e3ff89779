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

mod connection;
mod replay;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hyper::Method;
use serde::{Deserialize, Serialize};

use super::{CliError, ServerArgs};
use crate::client::{ApiClient, ClientError, Credential};
use crate::device::{DeviceKey, KeyKind};
use connection::{Connection, Target, Wire};
use report::Recorders;
pub use report::{Report, Stats, print_table};

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
    /// POST /ocsp (RFC 6960 A.1) with the DER requests of --ocsp-request, in turn; an
    /// answer counts when it is an OCSPResponse whose responseStatus is successful.
    Ocsp,
    /// POST /.well-known/cmp (RFC 6712) with the DER PKIMessages of --cmp-request, each
    /// once (an `ir` protected with a device's pending token is single use); an answer
    /// counts when it is an `ip`, `cp` or `kup` that grants every request.
    Cmp,
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
            Scenario::Ocsp => "ocsp",
            Scenario::Cmp => "cmp",
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
    /// A DER OCSP request (`openssl ocsp -reqout`) for `--scenario ocsp`; repeat it, and
    /// the requests are sent in turn
    #[arg(long = "ocsp-request", value_name = "FILE")]
    pub ocsp_requests: Vec<PathBuf>,
    /// A DER PKIMessage (`openssl cmp -reqout`) for `--scenario cmp`; repeat it. Each is
    /// sent once, so the run ends when they are used (or at --duration)
    #[arg(long = "cmp-request", value_name = "FILE")]
    pub cmp_requests: Vec<PathBuf>,
    /// Open a new connection for every request and close it after the answer (what a
    /// server that closes each connection, such as `openssl ocsp -port`, forces)
    #[arg(long)]
    pub connection_per_request: bool,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
    /// Report this process's CPU time over the measured window, per request
    /// (`--cpu-of server=PID --cpu-of redis=PID`; Linux /proc)
    #[arg(long = "cpu-of", value_name = "NAME=PID")]
    pub cpu_of: Vec<super::cpu::Watched>,
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
    /// DER bodies, for `ocsp` (in turn) and `cmp` (each once).
    bodies: Vec<Bytes>,
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
            Scenario::Ocsp | Scenario::Cmp => {
                // OCSP requests are sent in turn; a CMP message once (limit = their count).
                let (path, judge): (_, replay::Judge) = match self.scenario {
                    Scenario::Ocsp => ("/ocsp", replay::ocsp_successful),
                    _ => ("/.well-known/cmp", replay::cmp_issued),
                };
                let request = self.bodies[n % self.bodies.len()].clone();
                let started = Instant::now();
                let outcome = conn
                    .send(&self.target, Method::POST, path, None, request)
                    .await
                    .and_then(|body| judge(&body));
                recorders
                    .get(self.scenario.unit())
                    .record(started, &outcome);
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

pub async fn run(args: &BenchArgs) -> Result<Report, CliError> {
    let target = Target::parse(&args.server.server)?;
    let bodies = replay::read_bodies(args)?;
    // OCSP, CMP and /health send no CSR of ours.
    let pool = match args.scenario {
        Scenario::Ocsp | Scenario::Cmp | Scenario::Health => 0,
        _ => args.devices.clamp(1, CSR_POOL),
    };
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
        limit: match args.scenario {
            Scenario::Cmp => bodies.len(),
            Scenario::SignCsr => args.devices,
            _ if args.duration.is_some() => usize::MAX,
            _ => args.devices,
        },
        bodies,
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
    let wire = Wire {
        content_type: match args.scenario {
            Scenario::Ocsp => "application/ocsp-request",
            Scenario::Cmp => crate::api::cmp::CONTENT_TYPE,
            _ => "application/json",
        },
        connection_per_request: args.connection_per_request,
    };
    let mut connections = Vec::with_capacity(args.concurrency.into());
    for _ in 0..args.concurrency {
        let connection = Connection::connect(&plan.target, wire).await.map_err(|e| {
            CliError::Unavailable(ClientError::Unavailable {
                status: hyper::StatusCode::SERVICE_UNAVAILABLE,
                code: "network_error".into(),
                message: format!("cannot connect to {}: {e}", args.server.server),
                retry_after: None,
            })
        })?;
        connections.push(connection);
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
