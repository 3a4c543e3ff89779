//! Reading a device's CSR and deciding whether we will sign it.
//!
//! Checks run cheapest first and never touch the token: parse (400 `invalid_csr`), key
//! type (422: a key we refuse is refused before its signature is even looked at), proof
//! of possession (400 `csr_signature_invalid`), then the rest of the policy (422).

use std::fmt;

use rcgen::{PublicKeyData, SignatureAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::der_parser::asn1_rs::BitString;
use x509_parser::der_parser::oid::Oid;
use x509_parser::error::X509Error;
use x509_parser::extensions::ParsedExtension;
use x509_parser::objects::{oid_registry, oid2sn};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ECDSA_WITH_SHA512, OID_SIG_ED25519,
};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name};

use super::name::directory_string;
use crate::domain::DeviceId;
use crate::error::ApiError;

/// Largest CSR accepted, as PEM text.
pub const MAX_CSR_PEM_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa(usize),
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::EcdsaP256 => f.write_str("ecdsa-p256"),
            KeyType::EcdsaP384 => f.write_str("ecdsa-p384"),
            KeyType::Ed25519 => f.write_str("ed25519"),
            KeyType::Rsa(bits) => write!(f, "rsa-{bits}"),
        }
    }
}

impl KeyType {
    /// How rcgen writes this key into the certificate's SubjectPublicKeyInfo.
    fn spki_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// Which device keys we certify.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub allow_ecdsa: bool,
    pub allow_ed25519: bool,
    pub allow_rsa: bool,
    pub rsa_min_bits: usize,
    pub rsa_max_bits: usize,
    /// A group's own list (`key_types`), which replaces the flags above; RSA by its exact
    /// size.
    pub only: Option<Vec<KeyType>>,
}

impl KeyPolicy {
    /// The policy `[ca]` sets (`allow_*`, `rsa_*_bits`), with no list of its own.
    pub fn from_settings(ca: &crate::config::CaSettings) -> Self {
        Self {
            allow_ecdsa: ca.allow_ecdsa,
            allow_ed25519: ca.allow_ed25519,
            allow_rsa: ca.allow_rsa,
            rsa_min_bits: ca.rsa_min_bits,
            rsa_max_bits: ca.rsa_max_bits,
            only: None,
        }
    }

    pub(super) fn check(&self, key: KeyType) -> Result<(), ApiError> {
        if let Some(only) = &self.only {
            return if only.contains(&key) {
                Ok(())
            } else {
                let names: Vec<String> = only.iter().map(KeyType::to_string).collect();
                Err(ApiError::CsrPolicy(format!(
                    "key type {key} is not accepted for this device's group; it takes {}",
                    names.join(", ")
                )))
            };
        }
        let allowed = match key {
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => self.allow_ecdsa,
            KeyType::Ed25519 => self.allow_ed25519,
            KeyType::Rsa(bits) => {
                if self.allow_rsa && !(self.rsa_min_bits..=self.rsa_max_bits).contains(&bits) {
                    return Err(ApiError::CsrPolicy(format!(
                        "RSA keys must have {}..={} bits; this one has {bits}",
                        self.rsa_min_bits, self.rsa_max_bits
                    )));
                }
                self.allow_rsa
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::CsrPolicy(format!(
                "key type {key} is not accepted"
            )))
        }
    }
}

/// The device's public key, as the certificate will carry it.
#[derive(Debug, Clone)]
pub struct DevicePublicKey {
    raw: Vec<u8>,
    key_type: KeyType,
}

impl DevicePublicKey {
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The key as the SubjectPublicKeyInfo's BIT STRING holds it.
    pub fn raw_bytes(&self) -> &[u8] {
        &self.raw
    }
}

impl DevicePublicKey {
    pub(super) fn of(spki: &SubjectPublicKeyInfo<'_>, key_type: KeyType) -> Self {
        Self {
            raw: spki.subject_public_key.data.to_vec(),
            key_type,
        }
    }
}

impl PublicKeyData for DevicePublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.key_type.spki_algorithm()
    }
}

/// Parses `pem` and checks it against the policy for `device`.
pub fn check_csr(
    pem: &str,
    device: &DeviceId,
    policy: &KeyPolicy,
) -> Result<DevicePublicKey, ApiError> {
    if pem.len() > MAX_CSR_PEM_BYTES {
        return Err(ApiError::InvalidCsr(format!(
            "CSR is larger than {MAX_CSR_PEM_BYTES} bytes"
        )));
    }
    let (rest, pem) = parse_x509_pem(pem.trim_start().as_bytes())
        .map_err(|_| ApiError::InvalidCsr("CSR is not PEM".into()))?;
    if !matches!(
        pem.label.as_str(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(ApiError::InvalidCsr(format!(
            "expected a CERTIFICATE REQUEST PEM block, found {}",
            pem.label
        )));
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidCsr(
            "unexpected data after the CSR's PEM block".into(),
        ));
    }
    let csr = match X509CertificationRequest::from_der(&pem.contents) {
        Ok(([], csr)) => csr,
        _ => {
            return Err(ApiError::InvalidCsr(
                "CSR is not a valid PKCS#10 request".into(),
            ));
        }
    };
    let info = &csr.certification_request_info;

    let key_type = key_type(&info.subject_pki)?;
    policy.check(key_type)?;

    verify_possession(
        &info.subject_pki,
        &csr.signature_algorithm,
        &csr.signature_value,
        info.raw,
        key_type,
    )?;
    check_subject(&info.subject, device)?;
    if let Some(mut extensions) = csr.requested_extensions()
        && extensions.any(|ext| matches!(ext, ParsedExtension::BasicConstraints(bc) if bc.ca))
    {
        return Err(ApiError::CsrPolicy(
            "CSR asks for a CA certificate (basicConstraints CA:TRUE)".into(),
        ));
    }

    Ok(DevicePublicKey::of(&info.subject_pki, key_type))
}

/// The first subject common name of the PEM CSR `pem`, when it parses and has one: the
/// device id a CSR proposes where the door has no other (MQTT's CreateCertificateFromCsr).
/// The CSR's own checks come after, in [`check_csr`].
pub fn csr_common_name(pem: &str) -> Option<String> {
    if pem.len() > MAX_CSR_PEM_BYTES {
        return None;
    }
    let (_, pem) = parse_x509_pem(pem.trim_start().as_bytes()).ok()?;
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents).ok()?;
    let cn = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .next()?;
    directory_string(cn).ok()
}

/// Every common name of a request's subject must be the device id (none is fine: the
/// profile writes the name).
pub(super) fn check_subject(subject: &X509Name<'_>, device: &DeviceId) -> Result<(), ApiError> {
    for cn in subject.iter_common_name() {
        match directory_string(cn) {
            Ok(cn) if cn == device.as_str() => {}
            Ok(cn) => {
                return Err(ApiError::CsrPolicy(format!(
                    "subject CN {cn:?} does not match device_id {device:?}",
                    device = device.as_str()
                )));
            }
            Err(why) => {
                return Err(ApiError::CsrPolicy(format!("subject CN is {why}")));
            }
        }
    }
    Ok(())
}

/// Proof of possession: `signed` (a CSR's info, a CRMF CertRequest) signed by the key of
/// `spki`, with any standard hash for the key's type (RFC 5758 §3.2: ECDSA with SHA-256,
/// -384 or -512; RSA PKCS#1 v1.5 and PSS with SHA-256, -384 or -512; Ed25519).
/// x509-parser knows all but ECDSA with SHA-512, which Python's `cryptography` and
/// `openssl req -sha512` make: verified here.
pub(super) fn verify_possession(
    spki: &SubjectPublicKeyInfo<'_>,
    algorithm_id: &AlgorithmIdentifier<'_>,
    signature: &BitString<'_>,
    signed: &[u8],
    key_type: KeyType,
) -> Result<(), ApiError> {
    let algorithm = &algorithm_id.algorithm;
    let unsupported =
        match x509_parser::verify::verify_signature(spki, algorithm_id, signature, signed) {
            Ok(()) => return Ok(()),
            Err(X509Error::SignatureUnsupportedAlgorithm) => true,
            Err(_) => false,
        };
    if !unsupported {
        return Err(ApiError::CsrSignatureInvalid);
    }
    let sha512 = match key_type {
        _ if *algorithm != OID_SIG_ECDSA_WITH_SHA512 => None,
        KeyType::EcdsaP256 => Some(&aws_lc_rs::signature::ECDSA_P256_SHA512_ASN1),
        KeyType::EcdsaP384 => Some(&aws_lc_rs::signature::ECDSA_P384_SHA512_ASN1),
        _ => None,
    };
    let Some(verification) = sha512 else {
        let name = algorithm_name(algorithm);
        return Err(ApiError::CsrPolicy(format!(
            "CSR signature algorithm {name} ({algorithm}) is not accepted for {key_type} keys: \
             sign with SHA-256, SHA-384 or SHA-512"
        )));
    };
    aws_lc_rs::signature::UnparsedPublicKey::new(verification, &spki.subject_public_key.data)
        .verify(signed, &signature.data)
        .map_err(|_| ApiError::CsrSignatureInvalid)
}

/// A signature algorithm in words: the weak ones a refusal names that the OID registry
/// lacks, then the registry's short name.
fn algorithm_name(algorithm: &Oid<'_>) -> String {
    let known = match algorithm.to_id_string().as_str() {
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.2.840.10040.4.3" => "dsa-with-SHA1",
        _ => oid2sn(algorithm, oid_registry()).unwrap_or("an unknown algorithm"),
    };
    known.to_owned()
}

pub(super) fn key_type(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyType, ApiError> {
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyType::EcdsaP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyType::EcdsaP384),
            Some(c) => Err(ApiError::CsrPolicy(format!(
                "elliptic curve {} is not accepted; use P-256 or P-384",
                curve_name(&c.to_id_string())
            ))),
            None => Err(ApiError::CsrPolicy("EC key without a named curve".into())),
        };
    }
    if *algorithm == OID_SIG_ED25519 {
        return Ok(KeyType::Ed25519);
    }
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        return match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                Ok(KeyType::Rsa(modulus_bits(rsa.modulus)))
            }
            _ => Err(ApiError::InvalidCsr("RSA public key does not parse".into())),
        };
    }
    Err(ApiError::CsrPolicy(format!(
        "key algorithm {algorithm} is not accepted"
    )))
}

fn curve_name(oid: &str) -> String {
    match oid {
        "1.3.132.0.10" => "secp256k1 (1.3.132.0.10)".into(),
        "1.3.132.0.35" => "P-521 (1.3.132.0.35)".into(),
        other => other.into(),
    }
}

fn modulus_bits(modulus: &[u8]) -> usize {
    let significant = modulus
        .iter()
        .position(|&b| b != 0)
        .map_or(&[][..], |i| &modulus[i..]);
    match significant.first() {
        Some(first) => significant.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_ignores_the_sign_byte() {
        let mut m = vec![0u8];
        m.extend([0x80; 256]);
        assert_eq!(modulus_bits(&m), 2048);
        assert_eq!(modulus_bits(&[0x01, 0xff]), 9);
        assert_eq!(modulus_bits(&[]), 0);
    }
}
