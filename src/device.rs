//! The device side: a key made locally (it never leaves the device), its CSR, and the
//! check that what the server sent back is a certificate for that key from the CA.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SignatureAlgorithm};
use x509_parser::pem::Pem;

pub use crate::domain::KeyKind;

impl KeyKind {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
            KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    fn rsa_size(self) -> Option<rcgen::RsaKeySize> {
        match self {
            KeyKind::Rsa2048 => Some(rcgen::RsaKeySize::_2048),
            KeyKind::Rsa3072 => Some(rcgen::RsaKeySize::_3072),
            KeyKind::Rsa4096 => Some(rcgen::RsaKeySize::_4096),
            _ => None,
        }
    }
}

pub struct DeviceKey(KeyPair);

impl DeviceKey {
    /// A new key. Its PKCS#8 form is version 1 for every kind: OpenSSL 3.0, GnuTLS and
    /// Python's `ssl` refuse the version 2 that rcgen writes for Ed25519, and a device
    /// whose key file its MQTT client cannot load cannot connect.
    pub fn generate(kind: KeyKind) -> Result<Self, rcgen::Error> {
        if kind == KeyKind::Ed25519 {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| rcgen::Error::KeyGenerationUnavailable)?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
            return KeyPair::from_pkcs8_der_and_sign_algo(&der, kind.algorithm()).map(Self);
        }
        match kind.rsa_size() {
            Some(size) => KeyPair::generate_rsa_for(kind.algorithm(), size).map(Self),
            None => KeyPair::generate_for(kind.algorithm()).map(Self),
        }
    }

    /// A key read back from its PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, rcgen::Error> {
        KeyPair::from_pem(pem).map(Self)
    }

    /// A PKCS#10 request for this key; with a common name when given.
    pub fn csr_pem(&self, common_name: Option<&str>) -> Result<String, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.serialize_request(&self.0)?.pem()
    }

    /// The private key, PKCS#8 (version 1) PEM.
    pub fn private_key_pem(&self) -> String {
        self.0.serialize_pem()
    }

    /// The public key as a certificate's subjectPublicKey carries it.
    pub fn public_key_raw(&self) -> &[u8] {
        self.0.public_key_raw()
    }
}

/// Whether the certificate `cert_pem` carries `key`'s public key.
pub fn carries(cert_pem: &str, key: &DeviceKey) -> bool {
    x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .ok()
        .and_then(|(_, pem)| {
            let cert = pem.parse_x509().ok()?;
            Some(cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
        })
        .unwrap_or(false)
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the certificate does not parse: {0}")]
    Unreadable(String),
    #[error("the certificate is for {found:?}, not {expected:?}")]
    WrongSubject { expected: String, found: String },
    #[error("the certificate is not for this device's key")]
    WrongKey,
    #[error("the certificate is not signed by the CA")]
    NotSignedByCa,
    /// Signed by the CA's key, but naming another issuer: OpenSSL, GnuTLS and brokers
    /// build the chain by name and refuse it.
    #[error(
        "the certificate names its issuer {issuer:?}, but the CA's subject is {ca:?}: \
         verifiers that build the chain by name (OpenSSL, Mosquitto) refuse it"
    )]
    WrongIssuerName { issuer: String, ca: String },
    #[error("the CRL is not installed: {0}")]
    CrlRefused(String),
}

/// The renewal proof's `csr_key` claim for the CSR `csr_pem`: what binds a proof to it.
pub fn csr_key(csr_pem: &str) -> Result<String, VerifyError> {
    Ok(crate::auth::renewal::csr_key_of_raw(&csr_public_key(
        csr_pem,
    )?))
}

/// The public key a PEM CSR asks a certificate for, as the certificate would carry it.
pub fn csr_public_key(csr_pem: &str) -> Result<Vec<u8>, VerifyError> {
    use x509_parser::prelude::FromDer;
    let unreadable = |e: &dyn fmt::Display| VerifyError::Unreadable(format!("the CSR: {e}"));
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|e| unreadable(&e))?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return Err(unreadable(&format!(
            "a PEM {:?} block, not a CERTIFICATE REQUEST",
            pem.label
        )));
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| unreadable(&e))?;
    Ok(csr
        .certification_request_info
        .subject_pki
        .subject_public_key
        .data
        .to_vec())
}

/// Checks that `cert_pem` names `device_id`, carries `public_key` (as
/// [`DeviceKey::public_key_raw`] or [`csr_public_key`] give it), and chains to a
/// certificate of `ca_pem` ([`chains_to`]). Not its validity
/// period against this machine's clock: the server just issued it by its own, the broker
/// judges it by its own, and the token is spent either way (see [`clock_warning`]).
pub fn verify_issued(
    cert_pem: &str,
    ca_pem: &str,
    public_key: &[u8],
    device_id: &str,
) -> Result<(), VerifyError> {
    let unreadable = |e: &dyn fmt::Display| VerifyError::Unreadable(e.to_string());
    let (_, leaf_pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| unreadable(&e))?;
    let leaf = leaf_pem.parse_x509().map_err(|e| unreadable(&e))?;
    let found = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| crate::ca::directory_string(cn).ok())
        .unwrap_or_default();
    // A group's profile may write more than the id (`{device_id}.gw`), never less.
    if !found.contains(device_id) {
        return Err(VerifyError::WrongSubject {
            expected: device_id.to_owned(),
            found,
        });
    }
    if leaf.public_key().subject_public_key.data.as_ref() != public_key {
        return Err(VerifyError::WrongKey);
    }
    chains_to(cert_pem, ca_pem)
}

/// Checks the path from the first certificate of `cert_pem` to an anchor (RFC 5280
/// §6.1, signatures and names, not validity periods): any certificate of `ca_pem` may
/// be the anchor; the certificates after the first in `cert_pem` are the intermediates a
/// two-tier CA sends, each used only if it is a CA. A certificate that is itself one of
/// the anchors (a self-signed CA) chains to itself.
pub fn chains_to(cert_pem: &str, ca_pem: &str) -> Result<(), VerifyError> {
    let unreadable = |e: &dyn fmt::Display| VerifyError::Unreadable(e.to_string());
    let intermediates_pem = pems(cert_pem)?;
    let leaf = intermediates_pem
        .first()
        .ok_or_else(|| VerifyError::Unreadable("no certificate".into()))?
        .parse_x509()
        .map_err(|e| unreadable(&e))?;
    let intermediates = intermediates_pem
        .iter()
        .skip(1)
        .map(|pem| pem.parse_x509().map_err(|e| unreadable(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    let anchors_pem = pems(ca_pem)?;
    let anchors = anchors_pem
        .iter()
        .map(|pem| pem.parse_x509().map_err(|e| unreadable(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    if anchors.is_empty() {
        return Err(VerifyError::Unreadable("no CA certificate".into()));
    }
    let mut current = &leaf;
    for _ in 0..=intermediates.len() {
        if let Some(anchor) = anchors
            .iter()
            .find(|a| current.verify_signature(Some(a.public_key())).is_ok())
        {
            if current.issuer().as_raw() != anchor.subject().as_raw() {
                return Err(VerifyError::WrongIssuerName {
                    issuer: current.issuer().to_string(),
                    ca: anchor.subject().to_string(),
                });
            }
            return Ok(());
        }
        current = intermediates
            .iter()
            .find(|i| {
                i.is_ca()
                    && current.issuer().as_raw() == i.subject().as_raw()
                    && current.verify_signature(Some(i.public_key())).is_ok()
            })
            .ok_or(VerifyError::NotSignedByCa)?;
    }
    Err(VerifyError::NotSignedByCa)
}

/// Every PEM block of `text`.
fn pems(text: &str) -> Result<Vec<Pem>, VerifyError> {
    Pem::iter_from_buffer(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| VerifyError::Unreadable(e.to_string()))
}

/// What to tell the operator when this machine's clock disagrees with the validity of a
/// certificate the server has just issued: its period, this clock, and how far it is
/// from the server's (`server_time`, RFC 3339, from the answer). `None` when the
/// certificate is valid by this clock.
pub fn clock_warning(cert_pem: &str, server_time: Option<&str>) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let validity = cert.validity();
    let now = time::OffsetDateTime::now_utc();
    if validity.not_before.to_datetime() <= now && now <= validity.not_after.to_datetime() {
        return None;
    }
    let server = server_time
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|server| {
            format!(
                "; the server's clock read {server} ({} s from this one)",
                (server - now).whole_seconds()
            )
        })
        .unwrap_or_default();
    Some(format!(
        "the certificate is valid from {} to {}, but this device's clock reads {now}{server}. \
         It was kept: a broker judges validity by its own clock. Set this device's clock \
         (NTP) before it connects",
        validity.not_before, validity.not_after
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_kind_is_written_as_pkcs8_version_1() {
        for kind in [
            KeyKind::P256,
            KeyKind::P384,
            KeyKind::Ed25519,
            KeyKind::Rsa2048,
            KeyKind::Rsa3072,
        ] {
            let key = DeviceKey::generate(kind).unwrap();
            let der = pem::parse(key.private_key_pem()).unwrap().into_contents();
            // SEQUENCE { INTEGER version, ... }: the version is the first INTEGER.
            let version_at = if der[1] & 0x80 == 0 {
                2
            } else {
                2 + (der[1] & 0x7f) as usize
            };
            assert_eq!(
                &der[version_at..version_at + 3],
                &[0x02, 0x01, 0x00],
                "{kind}"
            );
            // And it still makes a CSR that verifies with the key.
            assert!(key.csr_pem(Some("d")).is_ok(), "{kind}");
        }
    }
}
