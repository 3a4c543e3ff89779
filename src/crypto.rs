//! The few primitives the server needs directly, all from aws-lc-rs: the same backend
//! that signs certificates (rcgen), verifies CSRs (x509-parser) and signs tokens
//! (jsonwebtoken), so there is one crypto library in the binary.

pub fn fill_random(buf: &mut [u8]) {
    aws_lc_rs::rand::fill(buf).expect("the system random source is available");
}

/// SHA-1, for OCSP CertIDs and responder ids only (RFC 6960 names it; collisions do
/// not matter for a lookup key).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    digest.as_ref().try_into().expect("SHA-1 is 20 bytes")
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// HMAC-SHA256 of the parts, in order, with `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let mut context = aws_lc_rs::hmac::Context::with_key(&key);
    for part in parts {
        context.update(part);
    }
    context
        .sign()
        .as_ref()
        .try_into()
        .expect("HMAC-SHA256 is 32 bytes")
}

/// A fresh random secret, base64url, for generated JWT secrets and enrollment keys.
pub fn random_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
