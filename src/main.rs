use std::process::ExitCode;

use clap::Parser;
use provisiond::ca::CertificateAuthority;
use provisiond::cli::{CaCommand, Cli, Command, ServeArgs};
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provisiond: {e:#}");
            ExitCode::FAILURE
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
