use std::process::ExitCode;

use clap::Parser;
use provisiond::ca::CertificateAuthority;
use provisiond::cli::{CaCommand, Cli, CliError, Command, ServeArgs, bench, bulk, enroll};
use provisiond::config::{Overrides, Settings};
use provisiond::startup::Application;
use provisiond::telemetry;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Ca(CaCommand::Init { config, force })) => {
            ca_init(config.config.as_deref(), force)
        }
        Some(Command::Enroll(args)) => return fleet(enroll(&args).await),
        Some(Command::Bulk(args)) => return fleet(bulk(&args).await),
        Some(Command::Bench(args)) => return fleet(bench(&args).await),
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
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}

fn ca_init(config: Option<&std::path::Path>, force: bool) -> anyhow::Result<()> {
    let settings = Settings::load(config, &Overrides::default())?;
    let dir = &settings.ca.dir;
    if CertificateAuthority::init(dir, &settings.ca.common_name, force)? {
        println!("CA written to {}", dir.display());
        Ok(())
    } else {
        anyhow::bail!(
            "a CA already exists in {}; pass --force to replace it",
            dir.display()
        )
    }
}

async fn enroll(args: &enroll::EnrollArgs) -> Result<u8, CliError> {
    let enrolled = enroll::run(args).await?;
    println!("key:         {}", enrolled.key.display());
    println!("certificate: {}", enrolled.certificate.display());
    println!("CA:          {}", enrolled.ca.display());
    println!(
        "serial {} expires {}",
        enrolled.serial_number, enrolled.expires_at
    );
    Ok(provisiond::cli::exit::OK)
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
    Ok(provisiond::cli::exit::OK)
}
