//! The CA on disk: `ca.crt` (the issuing CA first, then any chain up to a root) and,
//! unless the key is in a token, `ca.key` (PEM: PKCS#8, SEC1 or PKCS#1; mode 0600).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;
use x509_parser::extensions::ParsedExtension;
use x509_parser::pem::Pem;

use super::random_serial;
use crate::fsutil;

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
const GENERATED_CA_DAYS: i64 = 3650;

/// A CA certificate read from disk, checked for use.
pub struct CaCertificate {
    /// DER of the issuing CA certificate.
    pub cert_der: Vec<u8>,
    /// The chain, and what of it devices present and trust.
    pub chain: super::chain::Chain,
    pub not_after: OffsetDateTime,
    pub subject: String,
    /// The CA certificate's subject key identifier, which its CRLs must name.
    pub key_identifier: Option<Vec<u8>>,
    /// The public key, as the SubjectPublicKeyInfo's BIT STRING holds it.
    pub public_key: Vec<u8>,
}

pub fn cert_path(dir: &Path) -> PathBuf {
    dir.join(CA_CERT_FILE)
}

pub fn key_path(dir: &Path) -> PathBuf {
    dir.join(CA_KEY_FILE)
}

/// Loads the CA in `dir`, generating one first when neither file is there.
pub fn load_or_init(dir: &Path, common_name: &str) -> anyhow::Result<(CaCertificate, KeyPair)> {
    let (cert, key) = (cert_path(dir), key_path(dir));
    match (cert.exists(), key.exists()) {
        (true, true) => {}
        (false, false) => {
            if generate(dir, common_name, false)? {
                // Loud: a mistyped CERTS_DIR silently makes a second CA that no device or
                // broker trusts.
                let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
                tracing::warn!(
                    certs_dir = %dir.display(),
                    cert = %cert.display(),
                    key = %key.display(),
                    "no CA in the certs directory: generated a new one. If a CA exists \
                     elsewhere, stop and point CERTS_DIR (ca.dir) at it"
                );
            }
        }
        (true, false) => bail!(
            "{} exists but {} does not: restore the key, or move both away to generate a new CA",
            cert.display(),
            key.display()
        ),
        (false, true) => bail!(
            "{} exists but {} does not: restore the certificate, import the signed intermediate (`provisiond ca import-intermediate`, after `ca intermediate-csr`), or move both away to generate a new CA",
            key.display(),
            cert.display()
        ),
    }
    let certificate = load_certificate(&cert)?;
    let key = load_key_file(&key, &certificate, &cert)?;
    Ok((certificate, key))
}

/// What a generated CA certificate says: `common_name`, ten years, pathLen 0,
/// keyCertSign + cRLSign.
pub fn generated_ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(300);
    params.not_after = now + time::Duration::days(GENERATED_CA_DAYS);
    params.serial_number = Some(random_serial().0);
    params
}

/// Generates a CA into `dir`: ECDSA P-256 (see [`generated_ca_params`]).
/// Without `force`, an existing CA is kept and `Ok(false)` returned.
pub fn generate(dir: &Path, common_name: &str, force: bool) -> anyhow::Result<bool> {
    fsutil::create_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = generated_ca_params(common_name).self_signed(&key)?;

    let (cert_file, key_file) = (cert_path(dir), key_path(dir));
    if force {
        fsutil::replace(&key_file, key.serialize_pem().as_bytes(), 0o600)?;
        fsutil::replace(&cert_file, cert.pem().as_bytes(), 0o644)?;
        return Ok(true);
    }
    // The key decides the race between instances generating at once: the loser waits
    // for the winner's certificate instead of writing its own.
    if !fsutil::write_new(&key_file, key.serialize_pem().as_bytes(), 0o600)? {
        wait_for(&cert_file)?;
        return Ok(false);
    }
    fsutil::write_new(&cert_file, cert.pem().as_bytes(), 0o644)?;
    Ok(true)
}

fn wait_for(path: &Path) -> anyhow::Result<()> {
    for _ in 0..50 {
        if path.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{} did not appear", path.display())
}

/// Reads a PEM key file and checks that it belongs to `certificate` (read from
/// `cert_file`).
pub fn load_key_file(
    key_file: &Path,
    certificate: &CaCertificate,
    cert_file: &Path,
) -> anyhow::Result<KeyPair> {
    fsutil::check_private(key_file)?;
    let key_pem = fs::read_to_string(key_file)
        .with_context(|| format!("cannot read {}", key_file.display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} is not a usable private key", key_file.display()))?;
    if certificate.public_key != key.public_key_raw() {
        bail!(
            "{} and {} do not belong together: the key does not match the certificate",
            key_file.display(),
            cert_file.display()
        );
    }
    Ok(key)
}

/// Reads and checks the CA certificate file `cert_file` (the issuing CA first, then
/// any chain).
pub fn load_certificate(cert_file: &Path) -> anyhow::Result<CaCertificate> {
    load_certificate_chained(cert_file, None)
}

/// As [`load_certificate`], with more of the chain from `chain_file` after what
/// `cert_file` holds.
pub fn load_certificate_chained(
    cert_file: &Path,
    chain_file: Option<&Path>,
) -> anyhow::Result<CaCertificate> {
    let mut chain_text =
        fs::read(cert_file).with_context(|| format!("cannot read {}", cert_file.display()))?;
    if let Some(more) = chain_file {
        chain_text.push(b'\n');
        chain_text
            .extend(fs::read(more).with_context(|| format!("cannot read {}", more.display()))?);
    }
    let mut chain = Vec::new();
    for pem in Pem::iter_from_buffer(&chain_text) {
        let pem = pem.with_context(|| format!("{} is not PEM", cert_file.display()))?;
        if pem.label == "CERTIFICATE" {
            chain.push(pem);
        }
    }
    let Some(issuing) = chain.first() else {
        bail!("{} holds no certificate", cert_file.display());
    };
    let cert = issuing
        .parse_x509()
        .with_context(|| format!("{} does not parse", cert_file.display()))?;
    if !cert.is_ca() {
        bail!(
            "{} is not a CA certificate (basicConstraints CA:TRUE is missing)",
            cert_file.display()
        );
    }
    // RFC 5280 §4.2.1.3: without keyUsage every usage is allowed; with it, signing
    // certificates and CRLs must both be there, or verifiers refuse what is signed.
    match cert.key_usage() {
        Ok(Some(usage)) if !usage.value.key_cert_sign() => bail!(
            "{} lacks the keyCertSign key usage: the certificates it signs would be refused",
            cert_file.display()
        ),
        Ok(Some(usage)) if !usage.value.crl_sign() => bail!(
            "{} lacks the cRLSign key usage: brokers would refuse its CRLs (use a CA \
             certificate with keyUsage keyCertSign, cRLSign)",
            cert_file.display()
        ),
        Ok(_) => {}
        Err(e) => bail!("{}: its keyUsage does not parse: {e}", cert_file.display()),
    }
    let not_after = cert.validity().not_after.to_datetime();
    let now = OffsetDateTime::now_utc();
    if not_after <= now {
        bail!("the CA certificate {} has expired", cert_file.display());
    }
    let not_before = cert.validity().not_before.to_datetime();
    if not_before > now + super::BACKDATE {
        bail!(
            "the CA certificate {} is not valid until {not_before} (is this clock right?)",
            cert_file.display()
        );
    }
    if not_after - now < time::Duration::days(30) {
        tracing::warn!(%not_after, "the CA certificate expires within 30 days");
    }
    let ders: Vec<Vec<u8>> = chain.iter().map(|pem| pem.contents.clone()).collect();
    let chain = super::chain::Chain::of(&ders)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert_file.display()))?;
    let key_identifier = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    Ok(CaCertificate {
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        key_identifier,
        subject: cert.subject().to_string(),
        not_after,
        cert_der: ders[0].clone(),
        chain,
    })
}
