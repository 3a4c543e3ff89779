//! EST's encodings (RFC 7030 §4): a PKCS#10 request arrives base64 (with or without line
//! breaks), certificates leave as a certs-only CMS SignedData (RFC 5652 §5; the `cms`
//! crate builds it), base64 with `Content-Transfer-Encoding: base64`, which Bouncy
//! Castle needs to read it as base64 and strongSwan ignores.

use actix_web::HttpResponse;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::{Decode, Encode};

use crate::ca::MAX_CSR_PEM_BYTES;
use crate::error::ApiError;

/// The CSR of an EST request body, as PEM for [`crate::ca::check_csr`]: base64 of the
/// DER (RFC 7030 §4.2.1), whitespace and line breaks anywhere; a PEM body is taken too.
///
/// Errors: 400 `invalid_csr`.
pub fn csr_pem(body: &[u8]) -> Result<String, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::InvalidCsr("the body is not base64 text".into()))?;
    if text.trim_start().starts_with("-----BEGIN") {
        return Ok(text.to_owned());
    }
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(ApiError::InvalidCsr(
            "the body is empty: send the PKCS#10 request, base64 (application/pkcs10)".into(),
        ));
    }
    if compact.len() > MAX_CSR_PEM_BYTES {
        return Err(ApiError::InvalidCsr(format!(
            "the request is larger than {MAX_CSR_PEM_BYTES} bytes"
        )));
    }
    let der = STANDARD
        .decode(compact.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(&compact))
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.trim_end_matches('='))
        })
        .map_err(|_| ApiError::InvalidCsr("the body is not base64 (application/pkcs10)".into()))?;
    Ok(pem::encode_config(
        &pem::Pem::new("CERTIFICATE REQUEST", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ))
}

/// A certs-only SignedData of `ders` (RFC 7030 §4.1.3, §4.2.3), DER.
///
/// Errors: a certificate that does not parse (ours never fail to).
pub fn certs_only(ders: &[Vec<u8>]) -> Result<Vec<u8>, ApiError> {
    let certificates = ders
        .iter()
        .map(|der| x509_cert::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("a certificate for EST does not parse: {e}"))?;
    let info = cms::content_info::ContentInfo::try_from(certificates)
        .map_err(|e| anyhow::anyhow!("building the certs-only SignedData: {e}"))?;
    Ok(info
        .to_der()
        .map_err(|e| anyhow::anyhow!("encoding the certs-only SignedData: {e}"))?)
}

/// 200 with a certs-only SignedData, base64 on one line: strongSwan's `pki` decodes the
/// body without skipping line breaks (RFC 2045's 76-character lines garble it).
pub fn pkcs7_answer(der: &[u8]) -> HttpResponse {
    let body = STANDARD.encode(der);
    HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            "application/pkcs7-mime; smime-type=certs-only",
        ))
        .insert_header(("Content-Transfer-Encoding", "base64"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(body)
}

/// 200 with `serverkeygen`'s two parts (RFC 7030 §4.4.2): the private key, PKCS#8
/// (`application/pkcs8`, inside TLS as the RFC allows without a key to encrypt to),
/// and the certificate, certs-only; each part base64 with its own
/// `Content-Transfer-Encoding` (Bouncy Castle reads it there, not on the whole).
pub fn server_key_answer(pkcs8_der: &[u8], certs_only_der: &[u8]) -> HttpResponse {
    // No base64 line starts with `--`: the boundary cannot occur in a part.
    const BOUNDARY: &str = "provisiond-est-part";
    let body = format!(
        "--{BOUNDARY}\r\nContent-Type: application/pkcs8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --{BOUNDARY}\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--{BOUNDARY}--\r\n",
        STANDARD.encode(pkcs8_der),
        STANDARD.encode(certs_only_der),
    );
    HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            format!("multipart/mixed; boundary={BOUNDARY}"),
        ))
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(body)
}

/// The DER of every certificate in `pem_text`, in order.
pub fn pem_ders(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_reads_with_or_without_line_breaks_and_junk_is_refused() {
        let der = b"\x30\x03\x02\x01\x00";
        let b64 = STANDARD.encode(der);
        for body in [b64.clone(), format!("{}\r\n{}\r\n", &b64[..3], &b64[3..])] {
            let pem = csr_pem(body.as_bytes()).unwrap();
            assert_eq!(pem::parse(pem).unwrap().contents(), der);
        }
        for junk in [&b""[..], b"  \r\n", b"***", b"\xff\xfe"] {
            assert!(matches!(csr_pem(junk), Err(ApiError::InvalidCsr(_))));
        }
    }
}
