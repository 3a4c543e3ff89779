//! Renewal proofs: a JWT a device signs with the key of the certificate it holds, the
//! certificate itself in the JWS `x5c` header. Works behind TLS-terminating proxies, and
//! for a certificate that has expired (whether that is allowed is the caller's call).
//!
//! Claims: `sub` = the device id, `aud` = [`RENEW_AUDIENCE`], `iat`, `exp` (at most
//! [`PROOF_LIFETIME`] after `iat`) and `jti`, which the store accepts once; and
//! `csr_key`, the base64url (unpadded) SHA-256 of the public key in the CSR the proof is
//! for (the SubjectPublicKeyInfo's BIT STRING contents). With it, whoever sees a proof
//! in flight (a TLS-terminating proxy, a log) cannot spend it on a CSR of their own.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ca::{DevicePublicKey, Issuers, KeyType, PresentedCertificate};
use crate::clock::DEVICE_CLOCK_SKEW_SECS;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::store::{PROOF_LIFETIME, ProofUse};

pub const RENEW_AUDIENCE: &str = "provisiond:renew";
/// Longest `jti` accepted.
const MAX_JTI_LEN: usize = 128;

#[derive(Debug, Serialize, Deserialize)]
pub struct ProofClaims {
    pub sub: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    /// What binds the proof to one CSR (see the module's documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr_key: Option<String>,
}

/// A proof that verified: the certificate it presents, its single use, and the CSR key
/// it is bound to, if any.
#[derive(Debug)]
pub struct Proof {
    pub certificate: PresentedCertificate,
    pub single_use: ProofUse,
    csr_key: Option<String>,
}

impl Proof {
    /// Whether this proof may buy a certificate for `key`: a bound proof only for the
    /// key it names; an unbound one only while `required` is off (`false` answered for
    /// the caller to count it).
    ///
    /// Errors: 401 `renewal_proof_invalid`.
    pub fn allows(&self, key: &DevicePublicKey, required: bool) -> Result<bool, ApiError> {
        match &self.csr_key {
            Some(named) if *named == csr_key_of(key) => Ok(true),
            Some(_) => Err(invalid(
                "the proof is bound to another CSR key (csr_key); sign one for this CSR",
            )),
            None if required => Err(invalid(
                "the proof must name the CSR's key (csr_key claim): renewal.require_bound_proof is on",
            )),
            None => Ok(false),
        }
    }
}

/// The `csr_key` claim for a CSR whose public key is `key`.
pub fn csr_key_of(key: &DevicePublicKey) -> String {
    csr_key_of_raw(key.raw_bytes())
}

/// The `csr_key` claim for a public key as a SubjectPublicKeyInfo's BIT STRING holds it.
pub fn csr_key_of_raw(raw: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::crypto::sha256(raw))
}
fn invalid(why: impl Into<String>) -> ApiError {
    ApiError::RenewalProofInvalid(why.into())
}

/// The JWS algorithms accepted for each key type.
fn algorithm_fits(algorithm: Algorithm, key: KeyType) -> bool {
    matches!(
        (algorithm, key),
        (Algorithm::ES256, KeyType::EcdsaP256)
            | (Algorithm::ES384, KeyType::EcdsaP384)
            | (Algorithm::EdDSA, KeyType::Ed25519)
            | (Algorithm::RS256 | Algorithm::PS256, KeyType::Rsa(_))
    )
}

/// Checks a renewal proof for `device` at `now`: the certificate in `x5c` is one of our issuers' (whose
/// it is, the registry says), and the JWT is signed by its key with the claims above. Whether it
/// may buy a certificate for a CSR is [`Proof::allows`].
///
/// Errors: 401 `renewal_proof_invalid`, saying which check failed.
pub fn verify(
    token: &str,
    issuers: &Issuers,
    device: &DeviceId,
    now: u64,
) -> Result<Proof, ApiError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| invalid(format!("the proof is not a JWS: {e}")))?;
    let chain = header
        .x5c_der()
        .map_err(|_| invalid("x5c is not standard base64 DER"))?
        .unwrap_or_default();
    let leaf = chain
        .first()
        .ok_or_else(|| invalid("the proof carries no certificate (JWS header x5c)"))?;
    let certificate = issuers.check_presented(leaf).map_err(invalid)?;
    if !algorithm_fits(header.alg, certificate.key_type) {
        return Err(invalid(format!(
            "alg {:?} does not fit a {} key (ES256, ES384, EdDSA, RS256 or PS256)",
            header.alg, certificate.key_type
        )));
    }
    let key = match certificate.key_type {
        KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
            DecodingKey::from_ec_der(&certificate.public_key)
        }
        KeyType::Ed25519 => DecodingKey::from_ed_der(&certificate.public_key),
        KeyType::Rsa(_) => DecodingKey::from_rsa_der(&certificate.public_key),
    };
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[RENEW_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    // A device's clock may be minutes off either way (`exp` and `nbf` get the leeway).
    validation.leeway = DEVICE_CLOCK_SKEW_SECS;
    let claims = jsonwebtoken::decode::<ProofClaims>(token, &key, &validation)
        .map_err(|e| invalid(format!("the proof does not verify: {e}")))?
        .claims;
    if claims.sub != device.as_str() {
        return Err(invalid("sub is not the device_id"));
    }
    if claims.exp.saturating_sub(claims.iat) > PROOF_LIFETIME.as_secs() {
        return Err(invalid("exp may be at most 300 s after iat"));
    }
    if claims.iat > now + DEVICE_CLOCK_SKEW_SECS {
        return Err(invalid(format!(
            "iat is {} s ahead of the server's clock (at most {DEVICE_CLOCK_SKEW_SECS} s): \
             set the device's clock",
            claims.iat - now
        )));
    }
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
        return Err(invalid("jti must have 1..=128 characters"));
    }
    Ok(Proof {
        certificate,
        single_use: ProofUse {
            id: proof_id(device, &claims.jti),
            issued_at: claims.iat,
        },
        csr_key: claims.csr_key,
    })
}

/// The proof's id in the store: its `jti`, hashed with the device id.
fn proof_id(device: &DeviceId, jti: &str) -> u64 {
    let digest = crate::crypto::sha256(format!("{device}\0{jti}").as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The device side: a proof for the certificate `cert_der`, signed with its key
/// `key_pem` (PKCS#8), valid for a minute from `now`; bound to a CSR when `csr_key` is
/// given (`crate::device::csr_key`).
pub fn sign(
    device: &str,
    cert_der: &[u8],
    key_pem: &str,
    csr_key: Option<String>,
    now: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let pem = key_pem.as_bytes();
    let algorithm = rcgen::KeyPair::from_pem(key_pem)
        .map(|key| key.algorithm())
        .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
    let (algorithm, key) = if algorithm == &rcgen::PKCS_ECDSA_P256_SHA256 {
        (Algorithm::ES256, EncodingKey::from_ec_pem(pem)?)
    } else if algorithm == &rcgen::PKCS_ECDSA_P384_SHA384 {
        (Algorithm::ES384, EncodingKey::from_ec_pem(pem)?)
    } else if algorithm == &rcgen::PKCS_ED25519 {
        (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem)?)
    } else {
        (Algorithm::PS256, EncodingKey::from_rsa_pem(pem)?)
    };
    let mut header = Header::new(algorithm);
    header.x5c = Some(vec![STANDARD.encode(cert_der)]);
    let mut jti = [0u8; 16];
    crate::crypto::fill_random(&mut jti);
    let claims = ProofClaims {
        sub: device.to_owned(),
        aud: RENEW_AUDIENCE.to_owned(),
        iat: now,
        exp: now + 60,
        jti: hex::encode(jti),
        csr_key,
    };
    jsonwebtoken::encode(&header, &claims, &key)
}
