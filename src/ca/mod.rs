//! The certificate authority: loading or creating it, checking CSRs, and issuing device
//! certificates. The only module that knows rcgen and x509-parser.

mod chain;
pub mod claim;
pub mod cmp_signer;
mod crl;
mod crmf;
mod csr;
mod csr_facts;
pub mod files;
mod issuer_name;
mod issuers;
mod key;
mod name;
mod ocsp;
pub mod ocsp_signer;
pub mod pkcs11;
mod presented;
mod profile;
mod server_key;
pub mod two_tier;

use std::path::Path;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;

pub use chain::DeliveredDer;
pub use crl::{RevocationReason, RevokedEntry, SignedCrl};
pub use crmf::{CertRequest, CheckedRequest, check_template};
pub use csr::{DevicePublicKey, KeyPolicy, KeyType, MAX_CSR_PEM_BYTES, check_csr, csr_common_name};
pub use csr_facts::CsrFacts;
pub use issuers::Issuers;
pub use key::{CaKey, KeySource, token_location};
pub use name::directory_string;
pub use ocsp::{
    CertId, CertStatus, IssuerHashes, MAX_REQUESTS as MAX_OCSP_REQUESTS, OcspRequest, ocsp_refusal,
    parse_request as parse_ocsp_request,
};
pub use presented::PresentedCertificate;
pub use profile::{CertProfile, MAX_NAMES, NameOverrides, SubjectAttribute, is_dns_name, is_uri};
pub use server_key::server_key;

use crate::config::CaSettings;

/// Back-dating of notBefore (and of a CRL's thisUpdate), for devices and brokers whose
/// clocks run a little behind.
pub const BACKDATE: Duration = Duration::from_secs(300);

pub struct CertificateAuthority {
    issuer: Issuer<'static, CaKey>,
    /// For a CA whose subject rcgen cannot write as it is (a repeated attribute, a
    /// multi-valued RDN): the subject's DER, to sign again under once the issuer name is
    /// replaced (see `issuer_name`).
    exact_issuer: Option<Vec<u8>>,
    /// The issuing CA's certificate, DER.
    cert_der: Vec<u8>,
    /// Its subject, DER.
    subject_der: Vec<u8>,
    chain: chain::Chain,
    not_after: OffsetDateTime,
    subject: String,
    policy: KeyPolicy,
    /// The CA's subject key identifier: what CRLs name as their authority key identifier.
    key_identifier: rcgen::KeyIdMethod,
    /// Written into issued certificates as their CRL distribution point.
    crl_url: Option<String>,
    /// Written into issued certificates as their OCSP responder (Authority Information
    /// Access, RFC 5280 §4.2.2.1), DER of the extension's value.
    ocsp_aia: Option<Vec<u8>>,
    /// The CA certificate's public key (the BIT STRING's bytes) and its hashes in
    /// CertIDs.
    key_bits: Vec<u8>,
    ocsp_issuer: IssuerHashes,
    /// A delegated OCSP responder (`ocsp.crt`, `ocsp.key`), when one was made.
    ocsp_signer: Option<ocsp_signer::OcspSigner>,
}

/// A certificate just issued.
pub struct IssuedCertificate {
    pub pem: String,
    /// The same certificate, DER.
    pub der: Vec<u8>,
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER (as `openssl x509 -fingerprint -sha256` shows it).
    pub fingerprint_sha256: [u8; 32],
}

impl CertificateAuthority {
    /// Loads the CA from `settings.dir` (`ca.crt`) and its key from a file or a token
    /// (`ca.key`), generating a file CA on first start when neither file is there, with
    /// the delegated OCSP responder beside it (`ocsp.crt`, `ocsp.key`) when there is one.
    /// `sessions` is how many token sessions to keep (one per worker).
    pub fn load_or_init(settings: &CaSettings, sessions: usize) -> anyhow::Result<Self> {
        let mut ca = Self::load_signing(settings, sessions)?;
        ca.ocsp_signer = ocsp_signer::OcspSigner::load(&settings.dir, &ca.cert_der)?;
        Ok(ca)
    }

    /// As [`CertificateAuthority::load_or_init`], without the OCSP responder: for the
    /// commands that sign with the CA (`ca ocsp-signer`, which replaces the responder,
    /// and `ca server-cert`), which a responder gone bad must not stop.
    pub fn load_signing(settings: &CaSettings, sessions: usize) -> anyhow::Result<Self> {
        match KeySource::of(settings)? {
            KeySource::File(path) if path == files::key_path(&settings.dir) => {
                let (certificate, key) = files::load_or_init(&settings.dir, &settings.common_name)?;
                Self::new(settings, certificate, CaKey::File(key.into()))
            }
            source => Self::load_at(
                settings,
                source,
                &files::cert_path(&settings.dir),
                None,
                sessions,
            ),
        }
    }

    /// The CA certificate in `cert_file` (and `chain_file`, more of its chain) with its
    /// key from `source`, proved to belong together; never generated.
    pub(crate) fn load_at(
        settings: &CaSettings,
        source: KeySource,
        cert_file: &Path,
        chain_file: Option<&Path>,
        sessions: usize,
    ) -> anyhow::Result<Self> {
        let (certificate, key) = match source {
            KeySource::File(path) => {
                let certificate = files::load_certificate_chained(cert_file, chain_file)?;
                let key = files::load_key_file(&path, &certificate, cert_file)?;
                (certificate, CaKey::File(key.into()))
            }
            KeySource::Token(location) => {
                if !cert_file.exists() {
                    anyhow::bail!(
                        "the CA key is in a token but {} does not exist: make both with \
                         `provisiond ca init --pkcs11-uri ...`, or put the key's CA \
                         certificate there",
                        cert_file.display()
                    );
                }
                let certificate = files::load_certificate_chained(cert_file, chain_file)?;
                let token =
                    pkcs11::TokenKey::open(*location, certificate.public_key.clone(), sessions)?;
                key::prove_token_key(&token, &certificate.public_key).map_err(|e| {
                    anyhow::anyhow!("{} and {}: {e}", token.uri(), cert_file.display())
                })?;
                tracing::info!(key = %token.uri(), "the CA key is in a PKCS#11 token");
                (certificate, CaKey::Token(token.into()))
            }
        };
        Self::new(settings, certificate, key)
    }

    /// The CA `certificate` signing with `key` (already known to belong together).
    pub fn new(
        settings: &CaSettings,
        certificate: files::CaCertificate,
        key: CaKey,
    ) -> anyhow::Result<Self> {
        let subject_der = {
            use x509_parser::prelude::FromDer;
            let (_, cert) =
                x509_parser::certificate::X509Certificate::from_der(&certificate.cert_der)?;
            cert.subject().as_raw().to_vec()
        };
        let issuer =
            match Issuer::from_ca_cert_der(&certificate.cert_der.clone().into(), key.clone()) {
                Ok(issuer) => issuer,
                // rcgen reads no multi-valued RDN: any name will do, the exact one replaces it.
                Err(_) => {
                    let mut params = CertificateParams::default();
                    params.distinguished_name = DistinguishedName::new();
                    params
                        .distinguished_name
                        .push(DnType::CommonName, "issuer name replaced when signing");
                    params.key_usages =
                        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                    // The authority key identifier must be the CA's own subject key
                    // identifier, which verifiers match before the name.
                    if let Some(id) = &certificate.key_identifier {
                        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(id.clone());
                    }
                    Issuer::new(params, key)
                }
            };
        let mut ca = Self {
            exact_issuer: None,
            key_identifier: certificate
                .key_identifier
                .map_or(rcgen::KeyIdMethod::Sha256, rcgen::KeyIdMethod::PreSpecified),
            crl_url: settings.crl_url.clone(),
            ocsp_aia: settings.ocsp_url.as_deref().map(authority_info_access),
            ocsp_issuer: IssuerHashes::of(&subject_der, &certificate.public_key),
            subject_der,
            ocsp_signer: None,
            key_bits: certificate.public_key,
            issuer,
            cert_der: certificate.cert_der,
            chain: certificate.chain,
            not_after: certificate.not_after,
            subject: certificate.subject,
            policy: KeyPolicy::from_settings(settings),
        };
        ca.check_issuer_name()?;
        Ok(ca)
    }

    /// The issuer name written into certificates and CRLs must be the CA certificate's
    /// subject byte for byte: OpenSSL, GnuTLS and brokers build the chain by name, and a
    /// valid signature under another name is refused by every one of them. rcgen rebuilds
    /// the name from its parts, which loses a repeated attribute (`DC=example, DC=com`):
    /// for such a CA the exact name is put back and signed again (`issuer_name`), and a
    /// probe certificate proves it before the server starts.
    fn check_issuer_name(&mut self) -> anyhow::Result<()> {
        use x509_parser::prelude::FromDer;
        let (_, ca) = x509_parser::certificate::X509Certificate::from_der(&self.cert_der)?;
        let subject = ca.subject().as_raw().to_vec();
        let probe_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let probe = CertificateParams::default().signed_by(&probe_key, &self.issuer)?;
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(probe.der())?;
        if parsed.issuer().as_raw() == subject.as_slice() {
            return Ok(());
        }
        tracing::info!(
            subject = %ca.subject(),
            "the CA's subject has a shape rcgen does not write (a repeated attribute or a \
             multi-valued RDN): it is copied into what it signs as it is, at one more \
             signature each"
        );
        self.exact_issuer = Some(subject.clone());
        let exact = self.exact_der(probe.der(), false)?;
        let (_, exact) = x509_parser::certificate::X509Certificate::from_der(&exact)?;
        if exact.issuer().as_raw() != subject.as_slice()
            || exact.verify_signature(Some(ca.public_key())).is_err()
        {
            anyhow::bail!(
                "the CA certificate's subject ({}) cannot be copied byte for byte into the \
                 certificates it would sign: verifiers would refuse them",
                ca.subject()
            );
        }
        Ok(())
    }

    /// What rcgen signed, under the CA's exact subject when rcgen could not write it.
    fn exact_der<'a>(
        &self,
        der: &'a [u8],
        crl: bool,
    ) -> Result<std::borrow::Cow<'a, [u8]>, rcgen::Error> {
        match &self.exact_issuer {
            None => Ok(std::borrow::Cow::Borrowed(der)),
            Some(subject) => issuer_name::with_issuer(der, subject, self.issuer.key(), crl)
                .map(std::borrow::Cow::Owned),
        }
    }

    /// `provisiond ca init`: writes a new CA into `dir`.
    pub fn init(dir: &Path, common_name: &str, force: bool) -> anyhow::Result<bool> {
        let made = files::generate(dir, common_name, force)?;
        if made && force {
            ocsp_signer::remove(dir)?;
        }
        Ok(made)
    }

    /// `provisiond ca init --pkcs11-uri`: a new P-256 key made inside the token
    /// `location` names, and its CA certificate (as [`files::generated_ca_params`]) written
    /// into `dir`. With `force`, an existing CA in `dir` is replaced (its key file
    /// removed); without, it is refused before the token is touched.
    pub fn init_in_token(
        dir: &Path,
        common_name: &str,
        location: pkcs11::TokenLocation,
        force: bool,
    ) -> anyhow::Result<()> {
        let (cert_file, key_file) = (files::cert_path(dir), files::key_path(dir));
        if !force && (cert_file.exists() || key_file.exists()) {
            anyhow::bail!(
                "a CA already exists in {}; pass --force to replace it",
                dir.display()
            );
        }
        crate::fsutil::create_private_dir(dir)?;
        let point = pkcs11::generate_key(&location, pkcs11::Curve::P256)?;
        let token = pkcs11::TokenKey::open(location, point, 1)?;
        let cert =
            files::generated_ca_params(common_name).self_signed(&CaKey::Token(token.into()))?;
        crate::fsutil::replace(&cert_file, cert.pem().as_bytes(), 0o644)?;
        if key_file.exists() {
            std::fs::remove_file(&key_file)?;
        }
        ocsp_signer::remove(dir)?;
        Ok(())
    }

    /// The issuing CA's certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The issuing CA's subject, DER (a `Name`, RFC 5280 §4.1.2.6).
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// Every certificate of `ca.crt`, issuing CA first: what `/api/v1/ca` serves.
    pub fn chain_pem(&self) -> &str {
        &self.chain.full_pem
    }

    /// What a device is given for `leaf_pem`: (`certificate`, `ca_certificate`). With a
    /// root ending the chain, the leaf followed by the intermediates, and the root; with
    /// a one-tier CA, the leaf, and the CA.
    pub fn delivered(&self, leaf_pem: &str) -> (String, String) {
        self.chain.delivered(leaf_pem)
    }

    /// [`CertificateAuthority::delivered`]'s chain, DER: the intermediates that follow
    /// a device certificate, and the trust anchor.
    pub fn delivered_der(&self) -> chain::DeliveredDer {
        self.chain.delivered_der.clone()
    }

    /// The CA certificate's notAfter: no certificate it signs outlives it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    /// When the delegated OCSP responder's certificate expires, if there is one in use:
    /// no response it signed may be served after.
    pub fn ocsp_signer_not_after(&self) -> Option<OffsetDateTime> {
        self.ocsp_signer
            .as_ref()
            .filter(|s| s.valid_now())
            .map(|s| s.not_after)
    }

    /// What CertIDs name this CA by (OCSP).
    pub fn ocsp_issuer(&self) -> &IssuerHashes {
        &self.ocsp_issuer
    }

    /// The CA certificate's public key, as its SubjectPublicKeyInfo's BIT STRING holds it.
    fn public_key_bits(&self) -> &[u8] {
        &self.key_bits
    }

    /// The CA's private key, for what rcgen does not sign itself (OCSP responses).
    fn signing_key(&self) -> &CaKey {
        self.issuer.key()
    }

    /// Signs a certificate around `key`, with `serial` (positive, 128 bits), written as
    /// `profile` says and valid for `validity` (cut at the CA's own notAfter). Nothing in
    /// it is copied from the request: subject, names, CA:FALSE and usages are decided by
    /// the server.
    pub fn issue(
        &self,
        key: &DevicePublicKey,
        serial: &[u8; 16],
        profile: &CertProfile,
        validity: time::Duration,
    ) -> Result<IssuedCertificate, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        // Whole seconds, as the certificate carries it (and as sign-csr answers it).
        let not_after = (now + validity)
            .min(self.not_after)
            .replace_nanosecond(0)
            .expect("0 ns is valid");
        let (serial, serial_hex) = (SerialNumber::from_slice(serial), hex::encode_upper(serial));

        let mut params = CertificateParams::default();
        profile.write_into(&mut params)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = match key.key_type() {
            KeyType::Rsa(_) => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            _ => vec![KeyUsagePurpose::DigitalSignature],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = not_after;
        params.serial_number = Some(serial);
        if let Some(url) = &self.crl_url {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        if let Some(aia) = &self.ocsp_aia {
            params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                aia.clone(),
            )];
        }

        let cert = params.signed_by(key, &self.issuer)?;
        let der = self.exact_der(cert.der(), false)?;
        Ok(IssuedCertificate {
            pem: certificate_pem(&der),
            serial_hex,
            not_after,
            fingerprint_sha256: crate::crypto::sha256(&der),
            der: der.into_owned(),
        })
    }
}

impl CertificateAuthority {
    /// A TLS server certificate for the API itself, from this CA: a new P-256 key,
    /// serverAuth, the names given as SANs. Answers (chain PEM, leaf first; key PEM).
    pub fn issue_server_certificate(
        &self,
        dns: &[String],
        ips: &[std::net::IpAddr],
        days: u32,
    ) -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        // The names are in the subjectAltName, where TLS clients look (RFC 6125); the CN
        // repeats the first that fits its 64 characters (RFC 5280 ub-common-name), or is
        // left out.
        let cn = dns
            .iter()
            .find(|n| n.len() <= 64)
            .cloned()
            .or_else(|| ips.first().map(|ip| ip.to_string()));
        if let Some(cn) = cn {
            name.push(DnType::CommonName, cn);
        }
        params.distinguished_name = name;
        for host in dns {
            params
                .subject_alt_names
                .push(rcgen::SanType::DnsName(host.clone().try_into()?));
        }
        for ip in ips {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = (now + time::Duration::days(days.into())).min(self.not_after);
        params.serial_number = Some(random_serial().0);
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = self.exact_der(cert.der(), false)?;
        Ok((
            format!("{}{}", certificate_pem(&der), self.chain.full_pem),
            key.serialize_pem(),
        ))
    }
}

/// `AuthorityInfoAccessSyntax` with one OCSP access description for `url` (RFC 5280
/// §4.2.2.1): `id-ad-ocsp`, a uniformResourceIdentifier.
fn authority_info_access(url: &str) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(&[
                        1, 3, 6, 1, 5, 5, 7, 48, 1,
                    ]));
                w.next()
                    .write_tagged_implicit(yasna::Tag::context(6), |w| w.write_ia5_string(url));
            })
        })
    })
}

/// A certificate's DER as PEM, with LF line endings (as rcgen writes it).
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A random positive 128-bit serial: the top bit is set so that every serial has
/// exactly 128 bits (127 of them random), and DER keeps it positive with a zero byte.
fn random_serial() -> (SerialNumber, String) {
    let mut bytes = [0u8; 16];
    crate::crypto::fill_random(&mut bytes);
    bytes[0] |= 0x80;
    (SerialNumber::from_slice(&bytes), hex::encode_upper(bytes))
}
