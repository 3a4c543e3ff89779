//! Command-line interface: `serve` (the default) and `ca init`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(name = "provisiond", version, about = "IoT device provisioning server")]
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
    Ca(CaCommand),
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Configuration file [default: ./config.toml when present]
    #[arg(long, env = "CONFIG", global = true)]
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

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new CA (ECDSA P-256, 10 years) in the certs directory.
    Init {
        #[command(flatten)]
        config: ConfigArg,
        /// Replace an existing CA. Certificates it issued will no longer verify.
        #[arg(long)]
        force: bool,
    },
}
