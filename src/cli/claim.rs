//! `provisiond claim create`: a claim key and certificate for a production batch, which
//! the MQTT listener takes in place of a device certificate (AWS IoT fleet provisioning's
//! provisioning claim; see [`crate::ca::claim`]).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::ConfigArg;
use crate::ca::Issuers;
use crate::config::{Overrides, Settings};
use crate::fsutil;

#[derive(Debug, Subcommand)]
pub enum ClaimCommand {
    /// Make a claim key and certificate for a group, from the group's issuer, into
    /// DIR/claim.key, DIR/claim.crt and DIR/ca.crt. Revoke a claim by its serial (printed)
    /// like any certificate.
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The enrollment group whose devices the claim provisions
    #[arg(long)]
    group: String,
    /// Days of validity (cut at the issuer's own notAfter)
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// The directory to write into (made if missing)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace a claim already in DIR
    #[arg(long)]
    force: bool,
}

pub fn run(command: ClaimCommand) -> anyhow::Result<()> {
    match command {
        ClaimCommand::Create(args) => create(&args),
    }
}

fn create(args: &CreateArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.config.as_deref(), &Overrides::default())?;
    let groups = crate::groups::load(&settings)?;
    let group = groups.get(&args.group).ok_or_else(|| {
        let names: Vec<&str> = groups.iter().map(|g| &*g.name).collect();
        anyhow::anyhow!(
            "no group `{}` is configured (groups: {})",
            args.group,
            names.join(", ")
        )
    })?;
    let issuers = Issuers::load(&settings.ca, &settings.issuers, 1)?;
    let issuer = issuers.get(&group.issuer).ok_or_else(|| {
        anyhow::anyhow!(
            "group `{}` names issuer `{}`, which is not configured",
            group.name,
            group.issuer
        )
    })?;
    let key_out = args.out.join("claim.key");
    if key_out.exists() && !args.force {
        anyhow::bail!(
            "{} exists; pass --force to replace the claim in {}",
            key_out.display(),
            args.out.display()
        );
    }
    let claim = issuer.issue_claim(&group.name, args.days)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))?;
    write(&key_out, &claim.key_pem, 0o600)?;
    write(&args.out.join("claim.crt"), &claim.chain_pem, 0o644)?;
    write(&args.out.join("ca.crt"), issuer.chain_pem(), 0o644)?;
    println!(
        "claim:     {} (group {})",
        args.out.join("claim.crt").display(),
        group.name
    );
    println!("key:       {}", key_out.display());
    println!("serial:    {}", claim.serial_hex);
    println!("not after: {}", crate::timefmt::rfc3339(claim.not_after));
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    fsutil::replace(path, text.as_bytes(), mode)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
