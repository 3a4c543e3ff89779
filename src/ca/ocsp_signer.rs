//! A delegated OCSP responder certificate (RFC 6960 §4.2.2.2): a key of its own, in a
//! file, certified by the CA for `id-kp-OCSPSigning` only, so that answering OCSP needs
//! neither the CA key nor, when that key is in a token, a token operation per response.
//! `provisiond ca ocsp-signer` makes one (`ocsp.crt`, `ocsp.key` beside `ca.crt`); the
//! server uses it while it is valid and signs with the CA key otherwise.

use std::path::Path;

use anyhow::{Context, bail};
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use super::{BACKDATE, CertificateAuthority, certificate_pem, random_serial};
use crate::fsutil;

pub const OCSP_CERT_FILE: &str = "ocsp.crt";
pub const OCSP_KEY_FILE: &str = "ocsp.key";

/// Removes a responder from `dir`: a CA replaced (`ca init --force`) makes it another
/// CA's, which would stop the next start.
pub fn remove(dir: &Path) -> std::io::Result<()> {
    for file in [OCSP_CERT_FILE, OCSP_KEY_FILE] {
        match std::fs::remove_file(dir.join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// id-kp-OCSPSigning (RFC 5280 §4.2.1.12).
const OCSP_SIGNING: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 9];

pub struct OcspSigner {
    pub key: KeyPair,
    pub cert_der: Vec<u8>,
    /// Its public key, as the SubjectPublicKeyInfo's BIT STRING holds it.
    pub key_bits: Vec<u8>,
    pub not_after: OffsetDateTime,
}

impl OcspSigner {
    /// Whether it may sign a response now.
    pub fn valid_now(&self) -> bool {
        OffsetDateTime::now_utc() < self.not_after
    }

    /// `dir/ocsp.crt` and `dir/ocsp.key` when both are there, checked against the CA
    /// `ca_cert_der`: issued by it, for OCSP signing, the key its own. Neither file, or
    /// an expired certificate (with a warning): `None`. Errors name the file and what is
    /// wrong; `provisiond ca ocsp-signer` replaces a bad pair.
    pub fn load(dir: &Path, ca_cert_der: &[u8]) -> anyhow::Result<Option<Self>> {
        let (cert_file, key_file) = (dir.join(OCSP_CERT_FILE), dir.join(OCSP_KEY_FILE));
        match (cert_file.exists(), key_file.exists()) {
            (false, false) => return Ok(None),
            (true, true) => {}
            _ => bail!(
                "{} and {} go together: restore the other, or remove both to sign OCSP \
                 responses with the CA key",
                cert_file.display(),
                key_file.display()
            ),
        }
        fsutil::check_private(&key_file)?;
        let key = KeyPair::from_pem(
            &std::fs::read_to_string(&key_file)
                .with_context(|| format!("cannot read {}", key_file.display()))?,
        )
        .with_context(|| format!("{} is not a usable private key", key_file.display()))?;
        let pem = std::fs::read(&cert_file)
            .with_context(|| format!("cannot read {}", cert_file.display()))?;
        let cert_der = pem::parse(&pem)
            .with_context(|| format!("{} is not PEM", cert_file.display()))?
            .into_contents();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&cert_der)
            .map_err(|e| anyhow::anyhow!("{} does not parse: {e}", cert_file.display()))?;
        let fail = |what: &str| anyhow::anyhow!("{}: {what}", cert_file.display());
        let (_, ca) = x509_parser::certificate::X509Certificate::from_der(ca_cert_der)
            .map_err(|e| anyhow::anyhow!("the CA certificate does not parse: {e}"))?;
        let issued_by_ca = cert.issuer().as_raw() == ca.subject().as_raw()
            && cert.verify_signature(Some(ca.public_key())).is_ok();
        if !issued_by_ca {
            bail!(fail(
                "not issued by this CA (replace it: provisiond ca ocsp-signer, or remove \
                 ocsp.crt and ocsp.key)"
            ));
        }
        let ocsp_signing = cert
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|eku| eku.value.ocsp_signing);
        if !ocsp_signing {
            bail!(fail("lacks the OCSPSigning extended key usage"));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            bail!(fail("does not belong with its key"));
        }
        let not_after = cert.validity().not_after.to_datetime();
        if not_after <= OffsetDateTime::now_utc() {
            // Not a reason to stop serving: responses are signed by the CA meanwhile.
            tracing::warn!(
                cert = %cert_file.display(),
                %not_after,
                "the delegated OCSP responder has expired: OCSP responses are signed by \
                 the CA until a new one is made (provisiond ca ocsp-signer) and the server \
                 restarted"
            );
            return Ok(None);
        }
        Ok(Some(OcspSigner {
            key_bits: cert.public_key().subject_public_key.data.to_vec(),
            key,
            cert_der,
            not_after,
        }))
    }
}

impl CertificateAuthority {
    /// `provisiond ca ocsp-signer`: a new P-256 key and its certificate from this CA,
    /// valid `days` (cut at the CA's notAfter): CA:FALSE, digitalSignature,
    /// OCSPSigning only, and id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1: clients do not
    /// ask about the responder itself). Written to `dir/ocsp.crt` and `dir/ocsp.key`
    /// (0600), replacing an older pair.
    pub fn make_ocsp_signer(&self, dir: &Path, days: u32) -> anyhow::Result<()> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "provisiond OCSP responder");
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(OCSP_SIGNING.to_vec())];
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5],
            vec![0x05, 0x00],
        )];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = (now + time::Duration::days(days.into())).min(self.not_after());
        params.serial_number = Some(random_serial().0);
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = self.exact_der(cert.der(), false)?;
        fsutil::replace(
            &dir.join(OCSP_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        fsutil::replace(
            &dir.join(OCSP_CERT_FILE),
            certificate_pem(&der).as_bytes(),
            0o644,
        )?;
        Ok(())
    }
}
