use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use provisiond::auth::derived;
use provisiond::cli::{
    Cli, CliError, Command, ServeArgs, bench, bulk, ca, claim, crl, enroll, exit, renew,
};
use provisiond::config::{Overrides, Settings};
use provisiond::domain::DeviceId;
use provisiond::startup::Application;
use provisiond::telemetry;

/// mimalloc: the request path allocates many small, short-lived buffers (headers, JSON,
/// DER, log lines) across worker threads, which glibc's malloc serves more slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(command) => {
            telemetry::init(telemetry::format_from_env());
            match command {
                Command::Ca(command) => ca::run(command),
                Command::Claim(command) => claim::run(command),
                Command::DeriveKey {
                    config,
                    device_id,
                    group_secret_file,
                } => derive_key(
                    config.config.as_deref(),
                    &device_id,
                    group_secret_file.as_deref(),
                ),
                Command::Enroll(args) => return fleet(enroll(&args).await),
                Command::Renew(args) => return fleet(renew::run(&args).await),
                Command::Bulk(args) => return fleet(bulk(&args).await),
                Command::Bench(args) => return fleet(bench(&args).await),
                Command::Crl(args) => return fleet(crl::run(&args).await),
                Command::Serve(_) => unreachable!("handled above"),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provisiond: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn fleet(result: Result<u8, CliError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("provisiond: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.config.as_deref(), &args.overrides())?;
    telemetry::init(settings.log.format);
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}

/// With `--group-secret-file`, the secret is read the way the server reads
/// `onboarding.group_secret_file` (private to its owner, trimmed), and no configuration
/// is needed.
fn derive_key(
    config: Option<&Path>,
    device_id: &str,
    group_secret_file: Option<&Path>,
) -> anyhow::Result<()> {
    let device = DeviceId::parse_new(device_id).map_err(|e| anyhow::anyhow!("--device-id: {e}"))?;
    let secret = match group_secret_file {
        Some(path) => Settings::read_secret(None, Some(path), "--group-secret-file")?,
        None => {
            let settings = Settings::load(config, &Overrides::default())?;
            Settings::read_secret(
                settings.onboarding.group_secret.as_ref(),
                settings.onboarding.group_secret_file.as_deref(),
                "onboarding.group_secret",
            )?
        }
    }
    .ok_or_else(|| {
        anyhow::anyhow!(
            "no group secret: set ONBOARDING_GROUP_SECRET or onboarding.group_secret_file"
        )
    })?;
    let key = derived::device_key(secret.expose().as_bytes(), device.as_str());
    println!("{}", derived::encode_key(&key));
    Ok(())
}

async fn enroll(args: &enroll::EnrollArgs) -> Result<u8, CliError> {
    let enrolled = enroll::run(args).await?;
    if let Some(key) = &enrolled.key {
        println!("key:         {}", key.display());
    }
    println!("certificate: {}", enrolled.certificate.display());
    println!("CA:          {}", enrolled.ca.display());
    println!(
        "serial {} expires {}",
        enrolled.serial_number, enrolled.expires_at
    );
    Ok(exit::OK)
}

async fn bulk(args: &bulk::BulkArgs) -> Result<u8, CliError> {
    let summary = bulk::run(args).await?;
    bulk::print_summary(&summary, &args.out);
    Ok(summary.exit_code())
}

async fn bench(args: &bench::BenchArgs) -> Result<u8, CliError> {
    let report = bench::run(args).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("the report serializes")
        );
    } else {
        bench::print_table(&report);
    }
    Ok(report.exit_code())
}
