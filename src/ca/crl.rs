//! Certificate revocation lists, signed by the issuing CA.

use rcgen::{CertificateRevocationListParams, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;

pub use rcgen::RevocationReason;

use super::CertificateAuthority;

/// One revoked certificate, as a CRL lists it.
#[derive(Debug, Clone)]
pub struct RevokedEntry {
    /// The serial's bytes, big-endian, as issued.
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
    pub reason: RevocationReason,
}

/// A CRL as served: DER, and PEM for brokers that read files (Mosquitto's `crlfile`).
#[derive(Debug, Clone)]
pub struct SignedCrl {
    pub der: Vec<u8>,
    pub pem: String,
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub entries: usize,
}

impl CertificateAuthority {
    /// Signs a CRL listing `entries`, with the authority key identifier of the CA's
    /// certificate so that verifiers find the issuer by key as well as by name.
    pub fn sign_crl(
        &self,
        number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
        entries: &[RevokedEntry],
    ) -> Result<SignedCrl, rcgen::Error> {
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: entries
                .iter()
                .map(|e| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&e.serial),
                    revocation_time: e.revoked_at,
                    // RFC 5280 5.3.1: the reason code is omitted rather than `unspecified`.
                    reason_code: (e.reason != RevocationReason::Unspecified).then_some(e.reason),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: self.key_identifier.clone(),
        };
        let crl = params.signed_by(&self.issuer)?;
        let der = self.exact_der(crl.der(), true)?.into_owned();
        Ok(SignedCrl {
            pem: pem::encode_config(
                &pem::Pem::new("X509 CRL", der.clone()),
                pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
            ),
            der,
            number,
            this_update,
            next_update,
            entries: entries.len(),
        })
    }
}
