//! The certificate CMP answers are signed with (RFC 9483 §3.1): its own P-256 key,
//! certified by the first issuer for `digitalSignature` and `id-kp-cmcCA` only, made in
//! memory when CMP first needs it and again before it expires. OpenSSL's client refuses
//! an answer signed by a certificate without `digitalSignature`, which a CA certificate
//! usually lacks, and a CA key in a token would otherwise sign every answer.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::{BACKDATE, CertificateAuthority, random_serial};

/// id-kp-cmcCA (RFC 6402 §2.10), which RFC 9483 §3.1 names for a CA's CMP signer.
const CMC_CA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 27];

/// How long a signer is made for; it is replaced when half of that has passed.
pub const CMP_SIGNER_DAYS: i64 = 30;

pub struct CmpSigner {
    pub key: KeyPair,
    pub cert_der: Vec<u8>,
    /// Its subject, DER (the answers' `sender`).
    pub subject_der: Vec<u8>,
    /// Its subjectKeyIdentifier (the answers' `senderKID`).
    pub key_id: Vec<u8>,
    pub not_after: OffsetDateTime,
    made_at: OffsetDateTime,
}

impl CmpSigner {
    pub fn expired(&self) -> bool {
        OffsetDateTime::now_utc() >= self.not_after
    }

    /// Whether it should be replaced: half its life gone, or the CA's notAfter near.
    pub fn due(&self) -> bool {
        let now = OffsetDateTime::now_utc();
        now >= self.made_at + time::Duration::days(CMP_SIGNER_DAYS / 2) || now >= self.not_after
    }
}

impl CertificateAuthority {
    /// A new CMP signer from this CA (cut at its notAfter).
    pub fn make_cmp_signer(&self) -> anyhow::Result<CmpSigner> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "provisiond CMP");
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(CMC_CA.to_vec())];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = (now + time::Duration::days(CMP_SIGNER_DAYS)).min(self.not_after());
        params.serial_number = Some(random_serial().0);
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = self.exact_der(cert.der(), false)?.into_owned();
        let (subject_der, key_id) = {
            use x509_parser::prelude::FromDer;
            let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&der)?;
            let key_id = parsed
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                        Some(id.0.to_vec())
                    }
                    _ => None,
                })
                .ok_or_else(|| anyhow::anyhow!("the CMP signer has no subjectKeyIdentifier"))?;
            (parsed.subject().as_raw().to_vec(), key_id)
        };
        Ok(CmpSigner {
            key,
            cert_der: der,
            subject_der,
            key_id,
            not_after: params.not_after,
            made_at: now,
        })
    }
}
