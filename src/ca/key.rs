//! The CA's signing key: a PEM file, or a key inside a PKCS#11 token. What rcgen signs
//! with (certificates, CRLs) and what OCSP responses are signed with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};

use super::files;
use super::pkcs11::{Curve, Pkcs11Uri, TokenKey, TokenLocation};
use crate::config::{CaSettings, Settings};
use crate::secret::Secret;

/// Where the CA key is, as `ca.key` (`CA_KEY`) says: unset, the certs directory's
/// `ca.key`; a path, that PEM file; a `pkcs11:` URI (RFC 7512), a key in a token, with
/// the module from `ca.pkcs11_module` (or the URI's `module-path`) and the user PIN from
/// `ca.pkcs11_pin_file` (or the URI's `pin-source`) or `ca.pkcs11_pin`.
pub enum KeySource {
    File(PathBuf),
    Token(Box<TokenLocation>),
}

impl KeySource {
    /// Errors name the setting to fix.
    pub fn of(settings: &CaSettings) -> anyhow::Result<Self> {
        let Some(text) = &settings.key else {
            return Ok(KeySource::File(files::key_path(&settings.dir)));
        };
        if !Pkcs11Uri::is_uri(text) {
            return Ok(KeySource::File(PathBuf::from(text)));
        }
        token_location(
            text,
            settings.pkcs11_module.as_deref(),
            settings.pkcs11_pin_file.as_deref(),
            settings.pkcs11_pin.as_ref(),
        )
        .map(|location| KeySource::Token(Box::new(location)))
    }
}

/// A token key's location from its URI `text`, the module (else the URI's
/// `module-path`) and the PIN from `pin_file` (else the URI's `pin-source`) or `pin`.
/// Errors name the setting to fix.
pub fn token_location(
    text: &str,
    module: Option<&Path>,
    pin_file: Option<&Path>,
    pin: Option<&Secret>,
) -> anyhow::Result<TokenLocation> {
    let uri = Pkcs11Uri::parse(text).map_err(|e| anyhow::anyhow!("ca.key: {e}"))?;
    let module = module
        .map(Path::to_path_buf)
        .or_else(|| uri.module_path.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "ca.pkcs11_module: a key in a token needs the PKCS#11 module's path \
                 (CA_PKCS11_MODULE; SoftHSM2's is /usr/lib/softhsm/libsofthsm2.so)"
            )
        })?;
    let (pin_file, pin_key) = match pin_file {
        Some(file) => (Some(file), "ca.pkcs11_pin_file"),
        None => (uri.pin_source.as_deref(), "ca.key (its pin-source)"),
    };
    let pin = Settings::read_secret(pin, pin_file, pin_key)?.ok_or_else(|| {
        anyhow::anyhow!(
            "ca.pkcs11_pin_file: a key in a token needs the user PIN, in a file private to \
             its owner (CA_PKCS11_PIN_FILE) or in CA_PKCS11_PIN"
        )
    })?;
    Ok(TokenLocation { module, uri, pin })
}

/// Proves that the token's key is the one whose public point is `public_key`: a
/// signature by the token, verified here. Errors say which.
pub fn prove_token_key(token: &TokenKey, public_key: &[u8]) -> Result<(), String> {
    let probe = b"provisiond: does this key belong to this certificate?";
    let signature = token
        .sign(probe)
        .map_err(|_| "the token's key did not sign a probe".to_string())?;
    let algorithm = match token.curve() {
        Curve::P256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        Curve::P384 => &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1,
    };
    aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, public_key)
        .verify(probe, &signature)
        .map_err(|_| "the token's key does not match the certificate".to_string())
}

#[derive(Clone)]
pub enum CaKey {
    File(Arc<KeyPair>),
    Token(Arc<TokenKey>),
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::File(key) => key.der_bytes(),
            CaKey::Token(key) => key.public_point(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            CaKey::File(key) => key.algorithm(),
            CaKey::Token(key) => key.curve().algorithm(),
        }
    }
}

impl SigningKey for CaKey {
    /// Errors: [`rcgen::Error::RemoteKeyError`] when the token cannot sign now.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::File(key) => key.sign(msg),
            CaKey::Token(key) => key.sign(msg),
        }
    }
}
