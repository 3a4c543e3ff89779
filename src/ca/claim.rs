//! Claim certificates: one key and certificate flashed into a production batch, good only
//! for asking the MQTT listener for a device certificate (AWS IoT fleet provisioning's
//! "provisioning claim").
//!
//! A claim says so in its extended key usage, which holds [`CLAIM_EKU`] and nothing
//! else: no clientAuth, so that a broker trusting the same CA (OpenSSL's `sslclient`
//! purpose check, rustls' and webpki's client verifiers) refuses it as a device
//! certificate, and no device certificate carries it, so that a device certificate is
//! refused at the listener.

use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
use time::OffsetDateTime;

use super::{BACKDATE, CertificateAuthority, certificate_pem};
use crate::registry::slots;

/// The DER body of the claim purpose's OID, `2.25.174265532407375427389714235605046208404`:
/// an OID made from a UUID (ITU-T X.667 §6.3), which needs no registration and which no
/// other purpose shares.
pub const CLAIM_EKU: [u8; 20] = [
    0x69, 0x82, 0x86, 0x9a, 0xa9, 0x86, 0xc9, 0xc9, 0xe2, 0xb4, 0xe3, 0xb0, 0xdc, 0xf1, 0xef, 0xa0,
    0x9c, 0xac, 0xcf, 0x14,
];

/// What a claim's subject common name starts with: it is `claim:<group>`, which is also
/// the id its record is kept under in the registry (and no device's).
pub const CLAIM_PREFIX: &str = "claim:";

/// The subject common name of `group`'s claims.
pub fn claim_name(group: &str) -> String {
    format!("{CLAIM_PREFIX}{group}")
}

/// A claim certificate just made, with its key.
pub struct IssuedClaim {
    /// The claim certificate followed by the issuer's chain, PEM.
    pub chain_pem: String,
    /// PKCS#8 PEM of a new P-256 key.
    pub key_pem: String,
    /// Upper-case hex.
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
}

impl CertificateAuthority {
    /// A claim for `group`, valid `days` (cut at the CA's notAfter): a new P-256 key,
    /// subject `CN=claim:<group>`, extended key usage [`CLAIM_EKU`] alone, and this CA's
    /// CRL distribution point and OCSP address, so that a revoked claim is seen where
    /// device certificates are. The serial falls in the registry slot of its name, as a
    /// device certificate's does in its device's.
    pub fn issue_claim(&self, group: &str, days: u32) -> Result<IssuedClaim, rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let name = claim_name(group);
        let serial = slots::serial_in(slots::slot_of(&name));
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, name);
        params.distinguished_name = subject;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        let not_after = (now + time::Duration::days(days.into()))
            .min(self.not_after)
            .replace_nanosecond(0)
            .expect("0 ns is valid");
        params.not_after = not_after;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        if let Some(url) = &self.crl_url {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        // ExtendedKeyUsage ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId (RFC 5280
        // §4.2.1.12), written by hand: rcgen's OIDs take arcs of 64 bits.
        let mut eku = vec![0x30, CLAIM_EKU.len() as u8 + 2, 0x06, CLAIM_EKU.len() as u8];
        eku.extend_from_slice(&CLAIM_EKU);
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 37],
            eku,
        )];
        if let Some(aia) = &self.ocsp_aia {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                    aia.clone(),
                ));
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = self.exact_der(cert.der(), false)?;
        Ok(IssuedClaim {
            chain_pem: format!("{}{}", certificate_pem(&der), self.chain.full_pem),
            key_pem: key.serialize_pem(),
            serial_hex: hex::encode_upper(serial),
            not_after,
        })
    }
}
