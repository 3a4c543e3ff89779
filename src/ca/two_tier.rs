//! A two-tier PKI: a root kept offline signs the issuing CA the server runs with (an
//! intermediate), which can be replaced without re-provisioning every device.
//!
//! `ca init-root` makes the root (`root.crt`, and `root.key` unless the key is in a
//! token); `ca intermediate-csr` asks for the issuing CA from the server's own key;
//! `ca sign-intermediate`, where the root is, answers it; `ca import-intermediate` puts
//! it in `ca.crt` (the intermediate, then the root) once it is proven to fit the key and
//! the root.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use super::pkcs11::{Curve, TokenKey};
use super::{BACKDATE, CaKey, KeySource, files, key, random_serial};
use crate::fsutil;

pub const ROOT_CERT_FILE: &str = "root.crt";
pub const ROOT_KEY_FILE: &str = "root.key";

/// `provisiond ca init-root`: a self-signed root (P-256, `days`, pathLen 1,
/// keyCertSign + cRLSign) in `dir`, its key in `dir/root.key` or made in a token.
/// An existing root is never replaced. Answers the certificate's path.
pub fn init_root(
    dir: &Path,
    common_name: &str,
    days: u32,
    token: Option<super::pkcs11::TokenLocation>,
) -> anyhow::Result<PathBuf> {
    let (cert_file, key_file) = (dir.join(ROOT_CERT_FILE), dir.join(ROOT_KEY_FILE));
    if cert_file.exists() || key_file.exists() {
        bail!(
            "a root already exists in {}: a root is made once, and kept",
            dir.display()
        );
    }
    fsutil::create_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = match token {
        Some(location) => {
            let point = super::pkcs11::generate_key(&location, Curve::P256)?;
            CaKey::Token(TokenKey::open(location, point, 1)?.into())
        }
        None => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            fsutil::write_new(&key_file, key.serialize_pem().as_bytes(), 0o600)?;
            CaKey::File(key.into())
        }
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(days.into());
    params.serial_number = Some(random_serial().0);
    let cert = params.self_signed(&key)?;
    fsutil::write_new(&cert_file, cert.pem().as_bytes(), 0o644)?;
    Ok(cert_file)
}

/// `provisiond ca intermediate-csr`: a CSR (PEM) for the issuing CA, signed by the
/// server's key as `ca.key` says. The subject is the current CA certificate's, so that
/// certificates it issued keep verifying under the intermediate; without one,
/// `CN=<ca.common_name>`. A file key that does not exist yet is made (P-256, 0600).
pub fn intermediate_csr(settings: &crate::config::CaSettings) -> anyhow::Result<String> {
    let cert_file = files::cert_path(&settings.dir);
    let current = cert_file
        .exists()
        .then(|| files::load_certificate(&cert_file))
        .transpose()?;
    let key = match KeySource::of(settings)? {
        KeySource::File(path) if !path.exists() => {
            if current.is_some() {
                bail!(
                    "{} exists but its key {} does not",
                    cert_file.display(),
                    path.display()
                );
            }
            fsutil::create_private_dir(&settings.dir)?;
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            fsutil::write_new(&path, key.serialize_pem().as_bytes(), 0o600)?;
            CaKey::File(key.into())
        }
        KeySource::File(path) => {
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            fsutil::check_private(&path)?;
            CaKey::File(KeyPair::from_pem(&pem)?.into())
        }
        KeySource::Token(location) => {
            let public = current
                .as_ref()
                .map(|c| c.public_key.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "a key in a token is found by its certificate: make it with `ca init \
                     --pkcs11-uri` first"
                    )
                })?;
            CaKey::Token(TokenKey::open(*location, public, 1)?.into())
        }
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = match &current {
        Some(current) => subject_of(&current.cert_der)?,
        None => name(&settings.common_name),
    };
    Ok(params.serialize_request(&key)?.pem()?)
}

/// `provisiond ca sign-intermediate`: the root in `root_dir` (its key there or in
/// `token`) signs `csr_pem` as an issuing CA: pathLen 0, keyCertSign + cRLSign, valid
/// `days` (cut at the root's notAfter), permitted DNS subtrees when given (RFC 5280
/// §4.2.1.10). Answers the intermediate followed by the root, ready for
/// `import-intermediate`.
pub fn sign_intermediate(
    root_dir: &Path,
    token: Option<super::pkcs11::TokenLocation>,
    csr_pem: &str,
    days: u32,
    permitted_dns: &[String],
) -> anyhow::Result<String> {
    let cert_file = root_dir.join(ROOT_CERT_FILE);
    let root = files::load_certificate(&cert_file)?;
    let key = match token {
        Some(location) => {
            let token = TokenKey::open(location, root.public_key.clone(), 1)?;
            key::prove_token_key(&token, &root.public_key)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cert_file.display()))?;
            CaKey::Token(token.into())
        }
        None => CaKey::File(
            files::load_key_file(&root_dir.join(ROOT_KEY_FILE), &root, &cert_file)?.into(),
        ),
    };
    let issuer = Issuer::from_ca_cert_der(&root.cert_der.clone().into(), key)?;
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| anyhow::anyhow!("the CSR is not usable: {e}"))?;
    let subject = std::mem::take(&mut csr.params.distinguished_name);
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = (now + time::Duration::days(days.into())).min(root.not_after);
    params.serial_number = Some(random_serial().0);
    if !permitted_dns.is_empty() {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted_dns
                .iter()
                .map(|d| GeneralSubtree::DnsName(d.clone()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
    }
    csr.params = params;
    let cert = csr.signed_by(&issuer)?;
    Ok(format!("{}{}", cert.pem(), root.chain.full_pem))
}

/// `provisiond ca import-intermediate`: `chain_pem` (the intermediate, then the root,
/// or the intermediate alone with `root_pem`) becomes `ca.crt`, once checked: the
/// intermediate holds the server's key, is a CA that may sign certificates and CRLs,
/// the root signed it, and the CA loads as the server would load it. An intermediate
/// under another subject than the current CA's is refused unless `force`: the
/// certificates issued before would no longer chain. The replaced `ca.crt` is kept as
/// `ca.crt.previous`; the staged file is removed whatever happens.
pub fn import_intermediate(
    settings: &crate::config::CaSettings,
    chain_pem: &str,
    root_pem: Option<&str>,
    force: bool,
) -> anyhow::Result<()> {
    let mut ders = pem_certificates(chain_pem)?;
    if let Some(root) = root_pem {
        ders.extend(pem_certificates(root)?);
    }
    let last = ders.last().expect("pem_certificates answers one or more");
    let (_, last) = x509_parser::certificate::X509Certificate::from_der(last)
        .map_err(|e| anyhow::anyhow!("a certificate does not parse: {e}"))?;
    if ders.len() < 2 || !super::chain::is_self_signed(&last) {
        bail!(
            "the chain must end with the self-signed root: give it after the intermediate, or with --root"
        );
    }
    let current = files::cert_path(&settings.dir);
    if current.exists() && !force {
        let now = files::load_certificate(&current)?;
        let (old, new) = (subject_of_der(&now.cert_der)?, subject_of_der(&ders[0])?);
        if old != new {
            bail!(
                "the intermediate's subject is not the current CA's ({}): the certificates \
                 it issued would no longer chain; pass --force to replace it anyway",
                now.subject
            );
        }
    }
    let staged = Staged(current.with_extension("crt.new"));
    let text: String = ders.iter().map(|der| super::certificate_pem(der)).collect();
    fsutil::replace(&staged.0, text.as_bytes(), 0o644)?;
    check_staged(settings, &staged.0)?;
    if current.exists() {
        std::fs::copy(&current, current.with_extension("crt.previous"))?;
    }
    std::fs::rename(&staged.0, &current)?;
    Ok(())
}

/// A staged file, removed when dropped unless renamed away.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The raw subject of a certificate.
fn subject_of_der(der: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| anyhow::anyhow!("a certificate does not parse: {e}"))?;
    Ok(cert.subject().as_raw().to_vec())
}

/// The staged `ca.crt` loads as the server would load it, with the server's key (the
/// issuer-name probe included).
fn check_staged(settings: &crate::config::CaSettings, staged: &Path) -> anyhow::Result<()> {
    let certificate = files::load_certificate(staged)?;
    let key = match KeySource::of(settings)? {
        KeySource::File(path) => {
            CaKey::File(files::load_key_file(&path, &certificate, staged)?.into())
        }
        KeySource::Token(location) => {
            let token = TokenKey::open(*location, certificate.public_key.clone(), 1)?;
            key::prove_token_key(&token, &certificate.public_key)
                .map_err(|e| anyhow::anyhow!("the intermediate: {e}"))?;
            CaKey::Token(token.into())
        }
    };
    super::CertificateAuthority::new(settings, certificate, key)?;
    Ok(())
}

fn pem_certificates(text: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let ders: Vec<Vec<u8>> = pem::parse_many(text)?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect();
    if ders.is_empty() {
        bail!("no PEM certificate in it");
    }
    Ok(ders)
}

/// The subject of `cert_der` as rcgen writes names, each value in its own string type,
/// so that the CSR's subject is the certificate's byte for byte. A name rcgen cannot
/// write (a repeated attribute, a multi-valued RDN) is refused.
fn subject_of(cert_der: &[u8]) -> anyhow::Result<DistinguishedName> {
    use rcgen::DnValue;
    use x509_parser::der_parser::asn1_rs::Tag;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| anyhow::anyhow!("the CA certificate does not parse: {e}"))?;
    let mut name = DistinguishedName::new();
    let mut seen = Vec::new();
    for rdn in cert.subject().iter() {
        let [attribute] = rdn.iter().collect::<Vec<_>>()[..] else {
            bail!("the CA's subject has a multi-valued RDN: write the CSR with openssl req");
        };
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or_else(|| anyhow::anyhow!("an attribute type too large"))?
            .collect();
        if seen.contains(&oid) {
            bail!("the CA's subject repeats an attribute: write the CSR with openssl req");
        }
        seen.push(oid.clone());
        let value = attribute.attr_value();
        let text = String::from_utf8(value.data.to_vec());
        let value = match (value.header.tag(), text) {
            (Tag::PrintableString, Ok(text)) => DnValue::PrintableString(
                text.try_into()
                    .map_err(|_| anyhow::anyhow!("a PrintableString"))?,
            ),
            (Tag::Utf8String, Ok(text)) => DnValue::Utf8String(text),
            (Tag::Ia5String, Ok(text)) => DnValue::Ia5String(
                text.try_into()
                    .map_err(|_| anyhow::anyhow!("an IA5String"))?,
            ),
            _ => bail!(
                "the CA's subject has a value rcgen cannot copy: write the CSR with openssl req"
            ),
        };
        name.push(DnType::from_oid(&oid), value);
    }
    Ok(name)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}
