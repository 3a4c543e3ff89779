//! A device certificate presented back to us, for renewal: ours, and for whom.

use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

use super::CertificateAuthority;
use super::csr::{KeyType, key_type};

/// [`CertificateAuthority::check_presented`]'s refusal of a certificate another CA's
/// name issued.
pub(super) const NOT_THIS_CA: &str = "the certificate was not issued by this CA";

/// What a presented certificate must be for.
#[derive(Clone, Copy)]
enum Purpose {
    /// A device's: clientAuth.
    Device,
    /// A claim's: the claim purpose alone.
    Claim,
    /// A claim whose signature was verified already.
    VerifiedClaim,
}

/// A certificate this CA issued, as presented by a device.
#[derive(Debug, Clone)]
pub struct PresentedCertificate {
    pub serial: [u8; 16],
    /// The subject's common name: the device id.
    pub common_name: String,
    /// Unix seconds.
    pub not_before: u64,
    /// Unix seconds.
    pub not_after: u64,
    pub key_type: KeyType,
    /// The public key as the SubjectPublicKeyInfo's bit string holds it (an EC point,
    /// an Ed25519 key, or a PKCS#1 RSA public key): what a JWS verifier takes.
    pub public_key: Vec<u8>,
    /// SHA-256 of the DER: the registry's record of it holds the same, and a
    /// certificate with a recorded serial but another fingerprint is not the recorded one.
    pub fingerprint_sha256: [u8; 32],
}

impl CertificateAuthority {
    /// Whether this CA signed the certificate `der`: the issuer name is its subject and
    /// the signature verifies with its key.
    pub fn signed(&self, der: &[u8]) -> bool {
        let (Ok((_, cert)), Ok((_, ca))) = (
            X509Certificate::from_der(der),
            X509Certificate::from_der(&self.cert_der),
        ) else {
            return false;
        };
        cert.issuer().as_raw() == ca.subject().as_raw()
            && cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// Checks that `der` is a device certificate this CA signed (its validity dates are
    /// the caller's to judge) and reads what renewal needs from it.
    pub fn check_presented(&self, der: &[u8]) -> Result<PresentedCertificate, &'static str> {
        self.check_leaf(der, Purpose::Device)
    }

    /// As [`CertificateAuthority::check_presented`], for a claim certificate
    /// ([`super::claim`]): its extended key usage is the claim purpose alone.
    pub fn check_claim(&self, der: &[u8]) -> Result<PresentedCertificate, &'static str> {
        self.check_leaf(der, Purpose::Claim)
    }

    /// As [`CertificateAuthority::check_claim`] without verifying the signature again:
    /// for a claim a TLS client verifier has just verified (the MQTT listener's, which
    /// resumes no session), one ECDSA verification per connection fewer.
    pub fn read_verified_claim(&self, der: &[u8]) -> Result<PresentedCertificate, &'static str> {
        self.check_leaf(der, Purpose::VerifiedClaim)
    }

    fn check_leaf(
        &self,
        der: &[u8],
        purpose: Purpose,
    ) -> Result<PresentedCertificate, &'static str> {
        let cert = match X509Certificate::from_der(der) {
            Ok(([], cert)) => cert,
            _ => return Err("the certificate does not parse"),
        };
        let ca = match X509Certificate::from_der(&self.cert_der) {
            Ok((_, ca)) => ca,
            Err(_) => return Err("the CA certificate does not parse"),
        };
        if cert.issuer().as_raw() != ca.subject().as_raw() {
            return Err(NOT_THIS_CA);
        }
        if !matches!(purpose, Purpose::VerifiedClaim) {
            cert.verify_signature(Some(ca.public_key()))
                .map_err(|_| "the certificate's signature does not verify with the CA's key")?;
        }
        if cert.is_ca() {
            return Err("a CA certificate cannot renew");
        }
        // Device certificates say clientAuth (a gateway group's say serverAuth too); the
        // API's own certificate (`ca server-cert`) says serverAuth alone and must never
        // renew as a device.
        match (purpose, cert.extended_key_usage()) {
            (Purpose::Device, Ok(Some(eku))) if eku.value.client_auth && !eku.value.any => {}
            (Purpose::Device, _) => {
                return Err(
                    "the certificate is not a device certificate (its extended key usage is not clientAuth)",
                );
            }
            (Purpose::Claim | Purpose::VerifiedClaim, Ok(Some(eku)))
                if eku.value.other.len() == 1
                    && eku.value.other[0].as_bytes() == super::claim::CLAIM_EKU
                    && !(eku.value.any
                        || eku.value.client_auth
                        || eku.value.server_auth
                        || eku.value.code_signing
                        || eku.value.email_protection
                        || eku.value.time_stamping
                        || eku.value.ocsp_signing) => {}
            (Purpose::Claim | Purpose::VerifiedClaim, _) => {
                return Err(
                    "the certificate is not a claim certificate (its extended key usage is not the claim purpose alone)",
                );
            }
        }
        let raw = cert.raw_serial();
        let significant = &raw[raw.iter().take_while(|b| **b == 0).count()..];
        if significant.len() > 16 {
            return Err("the certificate's serial is not one of ours");
        }
        let mut serial = [0u8; 16];
        serial[16 - significant.len()..].copy_from_slice(significant);
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| super::name::directory_string(cn).ok())
            .ok_or("the certificate names no device")?;
        let spki: &SubjectPublicKeyInfo<'_> = cert.public_key();
        let key_type = key_type(spki).map_err(|_| "the certificate's key type is not accepted")?;
        Ok(PresentedCertificate {
            serial,
            common_name,
            not_before: cert.validity().not_before.timestamp().max(0) as u64,
            not_after: cert.validity().not_after.timestamp().max(0) as u64,
            key_type,
            public_key: spki.subject_public_key.data.to_vec(),
            fingerprint_sha256: crate::crypto::sha256(der),
        })
    }
}
