//! `provisiond crl`: keeps a broker's CRL file current. It fetches the CRL, checks it
//! against the CA, writes it (atomically) only when its CRL number is higher than the
//! installed one's (RFC 5280 §5.2.3: numbers only grow, so a lower one is a replay or a
//! rollback that would take revocations off the broker), and then runs a command,
//! typically the broker's reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::{CliError, EXIT_CODES_HELP, ServerArgs, exit};
use crate::client::ApiClient;
use crate::device::VerifyError;
use crate::fsutil;

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct CrlArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The CRL file to keep current (PEM, as Mosquitto's `crlfile` reads it)
    #[arg(long)]
    pub out: PathBuf,
    /// Write DER instead of PEM
    #[arg(long)]
    pub der: bool,
    /// Fetch again every SECONDS until interrupted (errors are printed, not fatal)
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<u64>,
    /// The CRL of this issuer (`[[issuers]]`' name; default: the server's default CRL)
    #[arg(long, value_name = "NAME")]
    pub issuer: Option<String>,
    /// Run this command (with `sh -c`) after a new CRL was written, e.g. a broker reload
    #[arg(long, value_name = "COMMAND")]
    pub exec: Option<String>,
}

/// What one fetch did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// A new CRL (this number) was written, and the command run.
    Written(u64),
    /// The file already holds this CRL number.
    Unchanged(u64),
}

/// The CRL's issuer: the first certificate of the CA chain (the issuing CA).
struct Issuer {
    der: Vec<u8>,
}

impl Issuer {
    fn parse(ca_pem: &str) -> Result<Self, CliError> {
        let pem = x509_parser::pem::Pem::iter_from_buffer(ca_pem.as_bytes())
            .next()
            .ok_or_else(|| refused("no CA certificate".into()))?
            .map_err(|e| refused(e.to_string()))?;
        X509Certificate::from_der(&pem.contents).map_err(|e| refused(e.to_string()))?;
        Ok(Self { der: pem.contents })
    }

    /// The certificate of `ca_pem` whose subject is the issuer `crl_der` names, if any:
    /// the one whose key verifies the CRL when several share the name (a new CA made
    /// with the old one's name, during a rollover).
    fn named_by(ca_pem: &str, crl_der: &[u8]) -> Option<Self> {
        let (_, crl) = CertificateRevocationList::from_der(crl_der).ok()?;
        let named: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(ca_pem.as_bytes())
            .filter_map(Result::ok)
            .filter(|pem| {
                X509Certificate::from_der(&pem.contents)
                    .is_ok_and(|(_, cert)| cert.subject() == crl.issuer())
            })
            .map(|pem| pem.contents)
            .collect();
        let signing = named.iter().find(|der| {
            X509Certificate::from_der(der)
                .is_ok_and(|(_, cert)| crl.verify_signature(cert.public_key()).is_ok())
        });
        signing
            .or(named.first())
            .map(|der| Self { der: der.clone() })
    }

    fn certificate(&self) -> X509Certificate<'_> {
        X509Certificate::from_der(&self.der)
            .expect("parsed before")
            .1
    }

    /// Whether `crl` names this issuer and carries its signature.
    fn signed(&self, crl: &CertificateRevocationList<'_>) -> Result<(), CliError> {
        let ca = self.certificate();
        if crl.issuer() != ca.subject() {
            return Err(refused("the CRL names another issuer than the CA".into()));
        }
        crl.verify_signature(ca.public_key())
            .map_err(|_| CliError::NotVerified(VerifyError::NotSignedByCa))
    }
}

fn refused(why: String) -> CliError {
    CliError::NotVerified(VerifyError::CrlRefused(why))
}

pub async fn run(args: &CrlArgs) -> Result<u8, CliError> {
    let client = args.server.client(1)?;
    loop {
        let outcome = fetch_once(args, &client).await;
        // A watcher's lines end up in a log: each says when it happened.
        let stamp = match args.watch {
            Some(_) => format!("{} ", crate::timefmt::rfc3339_now()),
            None => String::new(),
        };
        match (&outcome, args.watch) {
            (Ok(Fetched::Written(n)), _) => {
                println!("{stamp}CRL {n} written to {}", args.out.display())
            }
            (Ok(Fetched::Unchanged(n)), _) => println!("{stamp}CRL {n} unchanged"),
            (Err(e), Some(_)) => eprintln!("{stamp}provisiond: {e}"),
            (Err(_), None) => {}
        }
        let Some(every) = args.watch else {
            return outcome.map(|_| exit::OK);
        };
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(every.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(exit::INTERRUPTED),
        }
    }
}

/// Fetches, checks, and writes the CRL when its number is not the file's.
pub async fn fetch_once(args: &CrlArgs, client: &ApiClient) -> Result<Fetched, CliError> {
    let der = client.crl(args.issuer.as_deref()).await?;
    // The CRL's issuer among every issuer's certificates (by the name the CRL gives,
    // and its signature); one that names none of them is checked against the first, and
    // refused for it.
    let served_issuer = |served: &str| match Issuer::named_by(served, &der) {
        Some(issuer) => Ok(issuer),
        None => Issuer::parse(served),
    };
    let served = || client.ca_bundle();
    let issuer = match args.server.pinned_ca()? {
        None => served_issuer(&served().await?)?,
        // The pinned file names the CRL's issuer (the issuing CA, alone or with its
        // chain): nothing else is asked, so a CRL mirror that serves only the CRL will do.
        Some(pinned) => match Issuer::named_by(&pinned, &der) {
            Some(issuer) => issuer,
            // The root of a two-tier CA: the issuing CA is found among the served
            // certificates, taken only once it chains to the pinned root.
            None => {
                let served = served().await?;
                let issuer = served_issuer(&served)?;
                let path = format!("{}{served}", crate::ca::certificate_pem(&issuer.der));
                crate::device::chains_to(&path, &pinned).map_err(|e| {
                    refused(format!(
                        "the CA chain the server serves does not lead to the pinned CA ({e})"
                    ))
                })?;
                issuer
            }
        },
    };
    let number = check(&der, &issuer)?;
    match installed_number(&args.out, &issuer) {
        Some(installed) if installed == number => return Ok(Fetched::Unchanged(number)),
        Some(installed) if installed > number => {
            return Err(refused(format!(
                "the CRL served has number {number}, lower than the installed one's \
                 ({installed}): an old CRL, replayed or from a cache, would take \
                 revocations off the broker; {} is kept",
                args.out.display()
            )));
        }
        _ => {}
    }
    let contents = if args.der {
        der
    } else {
        pem::encode_config(
            &pem::Pem::new("X509 CRL", der),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
        .into_bytes()
    };
    fsutil::replace(&args.out, &contents, 0o644).map_err(|e| {
        CliError::LocalIo(anyhow::anyhow!("cannot write {}: {e}", args.out.display()))
    })?;
    if let Some(command) = &args.exec {
        let status = tokio::process::Command::new("sh")
            .args(["-c", command])
            .status()
            .await
            .map_err(|e| CliError::Failed(anyhow::anyhow!("--exec {command}: {e}")))?;
        if !status.success() {
            return Err(CliError::Failed(anyhow::anyhow!(
                "--exec {command} exited with {status}"
            )));
        }
    }
    Ok(Fetched::Written(number))
}

/// The CRL's number, once it is known to be signed by the issuing CA, to name it, and
/// to be current.
fn check(der: &[u8], issuer: &Issuer) -> Result<u64, CliError> {
    let (_, crl) = CertificateRevocationList::from_der(der)
        .map_err(|e| refused(format!("the CRL does not parse: {e}")))?;
    issuer.signed(&crl)?;
    if crl
        .next_update()
        .is_none_or(|next| next.timestamp() <= crate::clock::unix_now() as i64)
    {
        return Err(refused(
            "the CRL's nextUpdate has passed: a broker would refuse every client with it".into(),
        ));
    }
    number_of(&crl).ok_or_else(|| refused("the CRL has no usable CRL number".into()))
}

fn number_of(crl: &CertificateRevocationList<'_>) -> Option<u64> {
    crl.crl_number().and_then(|n| u64::try_from(n).ok())
}

/// The number of the CRL already in `path` (PEM or DER), if it holds one from `issuer`:
/// a CRL of another CA (one the broker trusted before) says nothing about this one's.
fn installed_number(path: &Path, issuer: &Issuer) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let der = match pem::parse(&bytes) {
        Ok(block) => block.into_contents(),
        Err(_) => bytes,
    };
    let (_, crl) = CertificateRevocationList::from_der(&der).ok()?;
    issuer.signed(&crl).ok()?;
    number_of(&crl)
}
