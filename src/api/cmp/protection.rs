//! CMP message protection (RFC 4210 §5.1.3, RFC 9481 §6): the password-based MAC of
//! RFC 4211 §4.4 (`id-PasswordBasedMac`) for first enrollment, and signatures for
//! messages from a device that holds a certificate and for this server's answers.

use aws_lc_rs::{digest, hmac};
use crmf::pop::PbmParameter;
use der::asn1::{BitString, ObjectIdentifier};
use der::{Decode, Encode};
use subtle::ConstantTimeEq;
use x509_cert::spki::AlgorithmIdentifierOwned;

/// id-PasswordBasedMac (RFC 4211 §4.4).
pub const PASSWORD_BASED_MAC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113533.7.66.13");

/// The most PBM iterations taken: OpenSSL asks 500; each costs a hash on our side.
pub const MAX_ITERATIONS: u64 = 10_000;

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
/// hmac-sha1 (RFC 2202 via IPsec's OID, which OpenSSL's CMP uses by default).
const HMAC_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.8.1.2");
const HMAC_WITH_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.7");
const HMAC_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.9");
const HMAC_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.10");
const HMAC_WITH_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.11");
/// ecdsa-with-SHA256 (RFC 5758 §3.2): how this server signs its answers.
pub const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// A PBM request's parameters, checked.
pub struct Pbm {
    owf: &'static digest::Algorithm,
    mac: hmac::Algorithm,
    parameters: PbmParameter,
}

impl Pbm {
    /// The parameters of a `protectionAlg`; `None` when it is not PBM.
    ///
    /// Errors: a text for `badAlg` (an unknown hash, too many iterations).
    pub fn of(alg: &AlgorithmIdentifierOwned) -> Result<Option<Self>, &'static str> {
        if alg.oid != PASSWORD_BASED_MAC {
            return Ok(None);
        }
        let parameters = alg
            .parameters
            .as_ref()
            .and_then(|p| p.to_der().ok())
            .and_then(|der| PbmParameter::from_der(&der).ok())
            .ok_or("PBM parameters do not parse")?;
        let owf = match parameters.owf.oid {
            o if o == SHA256 => &digest::SHA256,
            o if o == SHA384 => &digest::SHA384,
            o if o == SHA512 => &digest::SHA512,
            o if o == SHA1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            _ => return Err("PBM one-way function not supported: use SHA-256"),
        };
        let mac = match parameters.mac.oid {
            o if o == HMAC_SHA1 || o == HMAC_WITH_SHA1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            o if o == HMAC_WITH_SHA256 => hmac::HMAC_SHA256,
            o if o == HMAC_WITH_SHA384 => hmac::HMAC_SHA384,
            o if o == HMAC_WITH_SHA512 => hmac::HMAC_SHA512,
            _ => return Err("PBM MAC algorithm not supported: use HMAC-SHA256 or HMAC-SHA1"),
        };
        if !(1..=MAX_ITERATIONS).contains(&parameters.iteration_count) {
            return Err("PBM iterationCount must be 1 to 10000");
        }
        if parameters.salt.as_bytes().len() > 64 {
            return Err("PBM salt longer than 64 bytes");
        }
        Ok(Some(Self {
            owf,
            mac,
            parameters,
        }))
    }

    /// RFC 4211 §4.4's key: the salt appended to the secret, hashed iterationCount
    /// times.
    fn key(&self, secret: &[u8]) -> hmac::Key {
        let mut key = digest::digest(
            self.owf,
            &[secret, self.parameters.salt.as_bytes()].concat(),
        );
        for _ in 1..self.parameters.iteration_count {
            key = digest::digest(self.owf, key.as_ref());
        }
        hmac::Key::new(self.mac, key.as_ref())
    }

    /// Whether `protection` is the MAC of `data` under `secret`; if so, how the answer
    /// is protected: the same parameters and so the same key, made once (the salt is the
    /// client's, which RFC 4210 leaves to the sender).
    pub fn check(
        &self,
        secret: &[u8],
        data: &[u8],
        protection: &BitString,
        algorithm: &AlgorithmIdentifierOwned,
    ) -> Option<Box<AnswerMac>> {
        let key = self.key(secret);
        let tag = hmac::sign(&key, data);
        let verified =
            protection.unused_bits() == 0 && bool::from(tag.as_ref().ct_eq(protection.raw_bytes()));
        verified.then(|| {
            Box::new(AnswerMac {
                algorithm: algorithm.clone(),
                key,
            })
        })
    }
}

/// How an answer is MAC-protected: its `protectionAlg` and the key.
#[derive(Clone)]
pub struct AnswerMac {
    pub algorithm: AlgorithmIdentifierOwned,
    key: hmac::Key,
}

impl AnswerMac {
    pub fn protect(&self, data: &[u8]) -> Result<BitString, der::Error> {
        BitString::from_bytes(hmac::sign(&self.key, data).as_ref())
    }
}

/// Whether `protection` is a signature of `data` by the key of the certificate
/// `cert_der`, with `alg` (any the CSR checks take).
pub fn signature_verifies(
    cert_der: &[u8],
    alg: &AlgorithmIdentifierOwned,
    data: &[u8],
    protection: &BitString,
) -> bool {
    use x509_parser::prelude::FromDer;
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(cert_der) else {
        return false;
    };
    let Ok(alg_der) = alg.to_der() else {
        return false;
    };
    let Ok((_, alg)) = x509_parser::x509::AlgorithmIdentifier::from_der(&alg_der) else {
        return false;
    };
    let signature = x509_parser::der_parser::asn1_rs::BitString::new(
        protection.unused_bits(),
        protection.raw_bytes(),
    );
    x509_parser::verify::verify_signature(cert.public_key(), &alg, &signature, data).is_ok()
}
