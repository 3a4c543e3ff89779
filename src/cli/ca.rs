//! `provisiond ca ...`: the certificate authority's own commands.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::ConfigArg;
use crate::ca::pkcs11::TokenLocation;
use crate::ca::{CertificateAuthority, Issuers, KeySource, token_location, two_tier};
use crate::config::{Overrides, Settings};
use crate::fsutil;
use crate::secret::Secret;

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

/// Where a key in a PKCS#11 token is.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The key in this token (RFC 7512 URI, e.g.
    /// `pkcs11:token=provisiond;object=issuing-ca`) instead of a file
    #[arg(long, value_name = "URI")]
    pub pkcs11_uri: Option<String>,
    /// The PKCS#11 module (shared library)
    #[arg(long, value_name = "PATH", env = "CA_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,
    /// A file holding the token's user PIN
    #[arg(long, value_name = "FILE", env = "CA_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// The token's user PIN (better: --pkcs11-pin-file)
    #[arg(
        long = "pkcs11-pin",
        value_name = "PIN",
        env = "CA_PKCS11_PIN",
        hide_env_values = true,
        hide = true
    )]
    pub pkcs11_pin: Option<Secret>,
}

impl TokenArgs {
    /// The token these flags (and their environment variables) name, if any.
    fn location(&self) -> anyhow::Result<Option<TokenLocation>> {
        let Some(uri) = &self.pkcs11_uri else {
            return Ok(None);
        };
        token_location(
            uri,
            self.pkcs11_module.as_deref(),
            self.pkcs11_pin_file.as_deref(),
            self.pkcs11_pin.as_ref(),
        )
        .map(Some)
    }

    /// Puts these flags over the configuration's `[ca]` key settings.
    fn apply(self, ca: &mut crate::config::CaSettings) {
        if self.pkcs11_uri.is_some() {
            ca.key = self.pkcs11_uri;
        }
        if self.pkcs11_module.is_some() {
            ca.pkcs11_module = self.pkcs11_module;
        }
        if self.pkcs11_pin_file.is_some() {
            ca.pkcs11_pin_file = self.pkcs11_pin_file;
        }
    }
}

const TWO_TIER_HELP: &str = "\
A two-tier PKI: a root kept offline, an issuing CA (intermediate) the server runs with.
  # Where the root is kept (offline):
  provisiond ca init-root --out /secure/root
  # On the server (its key: ca.key, a file or a PKCS#11 URI):
  provisiond ca intermediate-csr --out issuing.csr
  # Back where the root is:
  provisiond ca sign-intermediate --root /secure/root --csr issuing.csr --days 1825 \\
      --out issuing-chain.pem
  # On the server, then restart it:
  provisiond ca import-intermediate --cert issuing-chain.pem
Devices then get their certificate followed by the intermediate, and the root as
ca_certificate; a broker's cafile holds the root alone. A one-tier CA moved this way
keeps its key and subject, so the certificates it issued keep verifying.";

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
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Make a root CA for a two-tier PKI (P-256, pathLen 1): root.crt, and root.key
    /// unless the key is made in a token. Meant to be kept offline.
    #[command(after_help = TWO_TIER_HELP)]
    InitRoot {
        /// Where to write the root (created, private)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The root's common name
        #[arg(long, default_value = "provisiond root CA")]
        common_name: String,
        /// Days of validity
        #[arg(long, default_value_t = 7300, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Ask for the issuing CA: a CSR from the server's key (ca.key: file or token),
    /// under the current CA certificate's subject. A file key is made when there is none.
    #[command(after_help = TWO_TIER_HELP)]
    IntermediateCsr {
        #[command(flatten)]
        config: ConfigArg,
        /// Where to write the CSR [default: standard output]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Sign an issuing CA's CSR with the root (run where the root is): pathLen 0,
    /// keyCertSign + cRLSign. Writes the intermediate followed by the root.
    #[command(after_help = TWO_TIER_HELP)]
    SignIntermediate {
        /// The root's directory (root.crt, and root.key unless --pkcs11-uri)
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// The CSR (from `ca intermediate-csr`)
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// Days of validity (cut at the root's notAfter)
        #[arg(long, default_value_t = 1825, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Limit the names the intermediate may certify to these DNS subtrees (name
        /// constraints, RFC 5280 §4.2.1.10); repeatable
        #[arg(long = "permit-dns", value_name = "DOMAIN")]
        permit_dns: Vec<String>,
        /// Where to write the chain
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Put a signed intermediate in ca.crt (then the root), once checked against the
    /// server's key and the root; the old ca.crt is kept as ca.crt.previous. Restart
    /// the server to use it.
    #[command(after_help = TWO_TIER_HELP)]
    ImportIntermediate {
        #[command(flatten)]
        config: ConfigArg,
        /// The intermediate, followed by the root (as `ca sign-intermediate` writes it)
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// The root, when --cert holds the intermediate alone
        #[arg(long, value_name = "FILE")]
        root: Option<PathBuf>,
        /// Accept an intermediate under another subject than the current CA's (the
        /// certificates issued before then no longer chain)
        #[arg(long)]
        force: bool,
    },
    /// Make a delegated OCSP responder: a key and a certificate from the CA for OCSP
    /// signing only (ocsp.key, ocsp.crt beside ca.crt), so that /ocsp signs without the
    /// CA key (or its token). Replaces an older one; restart the server to use it. With
    /// [[issuers]], from the first, and it answers for that issuer.
    OcspSigner {
        #[command(flatten)]
        config: ConfigArg,
        /// Days of validity (make a new one before then: past it, /ocsp signs with the
        /// CA key again)
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
        days: u32,
    },
    /// Issue a TLS server certificate from the local CA (for server.tls; with [[issuers]],
    /// from the first).
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
            token,
        } => {
            let mut settings = Settings::load(config.config.as_deref(), &Overrides::default())?;
            token.apply(&mut settings.ca);
            init(&settings, force)
        }
        CaCommand::InitRoot {
            out,
            common_name,
            days,
            token,
        } => {
            let cert = two_tier::init_root(&out, &common_name, days, token.location()?)?;
            println!("root CA written to {}", cert.display());
            println!(
                "keep it offline; sign the issuing CA with `provisiond ca sign-intermediate --root {}`",
                out.display()
            );
            Ok(())
        }
        CaCommand::IntermediateCsr { config, out } => {
            let settings = Settings::load(config.config.as_deref(), &Overrides::default())?;
            let csr = two_tier::intermediate_csr(&settings.ca)?;
            match out {
                Some(path) => {
                    fsutil::replace(&path, csr.as_bytes(), 0o644)?;
                    eprintln!(
                        "CSR written to {}: sign it where the root is (`ca sign-intermediate`)",
                        path.display()
                    );
                }
                None => print!("{csr}"),
            }
            Ok(())
        }
        CaCommand::SignIntermediate {
            root,
            csr,
            days,
            permit_dns,
            out,
            token,
        } => {
            let csr = std::fs::read_to_string(&csr)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", csr.display()))?;
            let chain =
                two_tier::sign_intermediate(&root, token.location()?, &csr, days, &permit_dns)?;
            fsutil::replace(&out, chain.as_bytes(), 0o644)?;
            println!("intermediate (then the root) written to {}", out.display());
            println!(
                "bring it to the server: `provisiond ca import-intermediate --cert {}`",
                out.display()
            );
            Ok(())
        }
        CaCommand::ImportIntermediate {
            config,
            cert,
            root,
            force,
        } => {
            let settings = Settings::load(config.config.as_deref(), &Overrides::default())?;
            let read = |path: &Path| {
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
            };
            let root = root.as_deref().map(read).transpose()?;
            two_tier::import_intermediate(&settings.ca, &read(&cert)?, root.as_deref(), force)?;
            println!(
                "{} now holds the intermediate and the root; restart the server to use it. \
                 Brokers trust the root (GET /api/v1/ca serves the chain); devices get their \
                 certificate followed by the intermediate",
                settings.ca.dir.join("ca.crt").display()
            );
            Ok(())
        }
        CaCommand::OcspSigner { config, days } => {
            let settings = Settings::load(config.config.as_deref(), &Overrides::default())?;
            let ca = Issuers::load_first_signing(&settings.ca, &settings.issuers)?;
            ca.make_ocsp_signer(&settings.ca.dir, days)?;
            println!(
                "OCSP responder written to {} and {}; restart the server to use it",
                settings.ca.dir.join("ocsp.crt").display(),
                settings.ca.dir.join("ocsp.key").display()
            );
            Ok(())
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
    let ca = Issuers::load_first_signing(&settings.ca, &settings.issuers)?;
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
