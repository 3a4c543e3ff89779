//! `provisiond ca ...`: the certificate authority's own commands.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::ConfigArg;
use crate::ca::{CertificateAuthority, KeySource};
use crate::config::{Overrides, Settings};
use crate::fsutil;

const INIT_HELP: &str = "\
A key in a PKCS#11 token (an HSM) instead of a file: give --pkcs11-uri and the module;
the key is made inside the token and never leaves it, and the CA certificate is written
to the certs directory. Then serve with CA_KEY set to the same URI, CA_PKCS11_MODULE and
CA_PKCS11_PIN_FILE (or CA_PKCS11_PIN).

To try it with SoftHSM2 (apt install softhsm2):
  mkdir -p ~/softhsm/tokens
  echo \"directories.tokendir = $HOME/softhsm/tokens\" > ~/softhsm/softhsm2.conf
  export SOFTHSM2_CONF=~/softhsm/softhsm2.conf
  softhsm2-util --init-token --free --label provisiond --pin 1234 --so-pin 123456
  CA_PKCS11_PIN=1234 provisiond ca init \\
      --pkcs11-uri 'pkcs11:token=provisiond;object=issuing-ca' \\
      --pkcs11-module /usr/lib/softhsm/libsofthsm2.so";

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new CA (ECDSA P-256, 10 years) in the certs directory, its key in a file
    /// or, with --pkcs11-uri, inside a PKCS#11 token.
    #[command(after_help = INIT_HELP)]
    Init {
        #[command(flatten)]
        config: ConfigArg,
        /// Replace an existing CA. Certificates it issued will no longer verify.
        #[arg(long)]
        force: bool,
        /// Make the key in this token (RFC 7512 URI, e.g.
        /// `pkcs11:token=provisiond;object=issuing-ca`) instead of a file [overrides
        /// CA_KEY]
        #[arg(long, value_name = "URI")]
        pkcs11_uri: Option<String>,
        /// The PKCS#11 module (shared library) [overrides CA_PKCS11_MODULE]
        #[arg(long, value_name = "PATH")]
        pkcs11_module: Option<PathBuf>,
        /// A file holding the token's user PIN [overrides CA_PKCS11_PIN_FILE]
        #[arg(long, value_name = "FILE")]
        pkcs11_pin_file: Option<PathBuf>,
    },
    /// Issue a TLS server certificate from the local CA (for server.tls).
    ServerCert {
        #[command(flatten)]
        config: ConfigArg,
        /// DNS name(s) the server answers to (the first is also the CN)
        #[arg(long = "dns", required_unless_present = "ip")]
        dns: Vec<String>,
        /// IP address(es) the server answers to
        #[arg(long = "ip")]
        ip: Vec<IpAddr>,
        /// Days of validity
        #[arg(long, default_value_t = 397)]
        days: u32,
        /// Where to write the certificate chain [default: <certs>/server.crt]
        #[arg(long)]
        cert_out: Option<PathBuf>,
        /// Where to write the key [default: <certs>/server.key]
        #[arg(long)]
        key_out: Option<PathBuf>,
    },
}

pub fn run(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init {
            config,
            force,
            pkcs11_uri,
            pkcs11_module,
            pkcs11_pin_file,
        } => {
            let mut settings = Settings::load(config.config.as_deref(), &Overrides::default())?;
            if pkcs11_uri.is_some() {
                settings.ca.key = pkcs11_uri;
            }
            if pkcs11_module.is_some() {
                settings.ca.pkcs11_module = pkcs11_module;
            }
            if pkcs11_pin_file.is_some() {
                settings.ca.pkcs11_pin_file = pkcs11_pin_file;
            }
            init(&settings, force)
        }
        CaCommand::ServerCert {
            config,
            dns,
            ip,
            days,
            cert_out,
            key_out,
        } => server_cert(config.config.as_deref(), &dns, &ip, days, cert_out, key_out),
    }
}

fn init(settings: &Settings, force: bool) -> anyhow::Result<()> {
    let dir = &settings.ca.dir;
    match KeySource::of(&settings.ca)? {
        KeySource::Token(location) => {
            let uri = location.uri.to_string();
            CertificateAuthority::init_in_token(dir, &settings.ca.common_name, *location, force)?;
            println!("CA certificate written to {}", dir.join("ca.crt").display());
            println!("CA key made inside the token: {uri}");
            println!(
                "serve with CA_KEY='{uri}' CA_PKCS11_MODULE=... CA_PKCS11_PIN_FILE=... \
                 (or [ca] key, pkcs11_module, pkcs11_pin_file)"
            );
            Ok(())
        }
        KeySource::File(path) if path != crate::ca::files::key_path(dir) => anyhow::bail!(
            "ca.key names the file {}: `ca init` writes its key into the certs directory \
             ({}); unset ca.key, or give --pkcs11-uri",
            path.display(),
            dir.display()
        ),
        KeySource::File(_) => {
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
    }
}

fn server_cert(
    config: Option<&Path>,
    dns: &[String],
    ips: &[IpAddr],
    days: u32,
    cert_out: Option<PathBuf>,
    key_out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let settings = Settings::load(config, &Overrides::default())?;
    let ca = CertificateAuthority::load_or_init(&settings.ca, 1)?;
    let (chain, key) = ca.issue_server_certificate(dns, ips, days)?;
    let cert_out = cert_out.unwrap_or_else(|| settings.ca.dir.join("server.crt"));
    let key_out = key_out.unwrap_or_else(|| settings.ca.dir.join("server.key"));
    fsutil::replace(&key_out, key.as_bytes(), 0o600)?;
    fsutil::replace(&cert_out, chain.as_bytes(), 0o644)?;
    println!("certificate: {}", cert_out.display());
    println!("key:         {}", key_out.display());
    println!(
        "serve with TLS_CERT_FILE={} TLS_KEY_FILE={} (or [server.tls] cert/key)",
        cert_out.display(),
        key_out.display()
    );
    Ok(())
}
