//! A key made by the server for a device too small to make its own (EST `serverkeygen`,
//! RFC 7030 §4.4): the first type the device's group takes of P-256 and Ed25519, and a
//! CSR of it for the device, so that the certificate goes through the one issuing path.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use super::csr::{KeyPolicy, KeyType};
use crate::domain::DeviceId;
use crate::error::ApiError;

/// A new key of a type `policy` takes, and a PEM CSR of it whose subject is `device`.
///
/// Errors: 422 `csr_policy_violation` when the group takes neither P-256 nor Ed25519
/// (RSA keys are not made here: too slow to make per request).
pub fn server_key(device: &DeviceId, policy: &KeyPolicy) -> Result<(KeyPair, String), ApiError> {
    let algorithm = [
        (KeyType::EcdsaP256, &rcgen::PKCS_ECDSA_P256_SHA256),
        (KeyType::Ed25519, &rcgen::PKCS_ED25519),
    ]
    .into_iter()
    .find(|(key_type, _)| policy.check(*key_type).is_ok())
    .map(|(_, algorithm)| algorithm)
    .ok_or_else(|| {
        ApiError::CsrPolicy(
            "the server makes P-256 or Ed25519 keys, and this device's group takes neither".into(),
        )
    })?;
    let key = KeyPair::generate_for(algorithm)
        .map_err(|e| anyhow::anyhow!("making a device key: {e}"))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, device.as_str());
    params.distinguished_name = name;
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| anyhow::anyhow!("a CSR of the server's key: {e}"))?;
    Ok((key, csr))
}
