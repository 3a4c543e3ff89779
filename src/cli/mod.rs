//! Command-line interface: the server (`serve`, the default), the CA (`ca ...`), and
//! the fleet side (`enroll`, `renew`, `bulk`, `bench`, `crl`).

pub mod bench;
pub mod bulk;
pub mod ca;
pub mod claim;
pub mod cpu;
pub mod crl;
mod duration;
pub mod enroll;
mod files;
mod material;
pub mod renew;
mod retry;
mod server_args;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use server_args::{EnrollmentKeyArgs, ServerArgs, unauthorized_hint};

use crate::client::ClientError;
use crate::config::Overrides;
use crate::device::VerifyError;

#[derive(Debug, Parser)]
#[command(
    name = "provisiond",
    version,
    about = "IoT device provisioning server and fleet client"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serve options, for when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the provisioning server (the default).
    Serve(ServeArgs),
    /// Manage the certificate authority.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Claim certificates for provisioning over MQTT (AWS IoT fleet provisioning).
    #[command(subcommand)]
    Claim(claim::ClaimCommand),
    /// Enroll one device: make its key, get its certificate, write both.
    Enroll(enroll::EnrollArgs),
    /// Renew a device's certificate (same key, or a new one with --rekey).
    Renew(renew::RenewArgs),
    /// Enroll many devices at once, resumably.
    Bulk(bulk::BulkArgs),
    /// Measure a server: the full flow at a fixed concurrency.
    Bench(bench::BenchArgs),
    /// Keep a broker's CRL file current: fetch, check against the CA, write, reload.
    Crl(crl::CrlArgs),
    /// Print a device's key for the factory line (`derived` onboarding).
    DeriveKey {
        #[command(flatten)]
        config: ConfigArg,
        /// The device's id
        #[arg(long)]
        device_id: String,
        /// The group secret's file (private to its owner), instead of the one the
        /// configuration names (onboarding.group_secret_file, ONBOARDING_GROUP_SECRET_FILE)
        #[arg(long, value_name = "FILE")]
        group_secret_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Configuration file [default: ./config.toml when present]
    #[arg(long, env = "CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Address to listen on (overrides HOST and server.host)
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on (overrides PORT and server.port)
    #[arg(long)]
    pub port: Option<u16>,
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// Exit codes of the fleet commands (also listed in their `--help`).
pub mod exit {
    pub const OK: u8 = 0;
    /// Some devices failed (bulk), some requests failed (bench), or an unexpected error.
    pub const FAILED: u8 = 1;
    /// The server refused a request (a 4xx: bad key, bad id, policy).
    pub const REFUSED: u8 = 3;
    /// The server could not serve (5xx, 429 after retries) or could not be reached.
    pub const UNAVAILABLE: u8 = 4;
    /// A local file problem: would overwrite without --force, cannot read or write.
    pub const LOCAL_IO: u8 = 5;
    /// The certificate returned does not verify against the CA and the key.
    pub const NOT_VERIFIED: u8 = 6;
    /// Stopped by Ctrl-C.
    pub const INTERRUPTED: u8 = 130;
}

pub const EXIT_CODES_HELP: &str = "Exit codes:
  0    done (renew: also not due yet)
  1    some devices failed (bulk), some requests failed (bench), or an unexpected error
  2    bad command line (also a --server without http:// or https://)
  3    the server refused a request (its error code and message are printed);
       bulk: its first answers were all 401 unauthorized; bench: every request
       was refused
  4    the server could not serve, or could not be reached; bench: no request
       was served
  5    a local file problem (existing files without --force, cannot read or write,
       a key file open to others, a CSV without a device_id header)
  6    the returned certificate does not verify against the CA and the key
  130  interrupted (Ctrl-C)";

/// A failed fleet command, carrying its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("server refused: {0}")]
    Refused(ClientError),
    /// A refusal, with what to do about it.
    #[error("{0}")]
    RefusedHint(String),
    #[error("server unavailable: {0}")]
    Unavailable(ClientError),
    #[error("{0:#}")]
    LocalIo(anyhow::Error),
    #[error("certificate check failed: {0}")]
    NotVerified(#[from] VerifyError),
    #[error("{0:#}")]
    Failed(anyhow::Error),
    #[error("interrupted")]
    Interrupted,
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Refused { .. } => CliError::Refused(e),
            _ => CliError::Unavailable(e),
        }
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) | CliError::RefusedHint(_) => exit::REFUSED,
            CliError::Unavailable(_) => exit::UNAVAILABLE,
            CliError::LocalIo(_) => exit::LOCAL_IO,
            CliError::NotVerified(_) => exit::NOT_VERIFIED,
            CliError::Failed(_) => exit::FAILED,
            CliError::Interrupted => exit::INTERRUPTED,
        }
    }
}
