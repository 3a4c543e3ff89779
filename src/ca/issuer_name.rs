//! Signing under the CA certificate's subject, byte for byte.
//!
//! OpenSSL, GnuTLS and brokers build a chain by name: a certificate or CRL must name its
//! issuer exactly as the CA certificate names its subject. rcgen rebuilds the issuer name
//! from its parts, one value per attribute type and one attribute per RDN, so a CA whose
//! subject repeats an attribute (`DC=com, DC=example`, the usual Active Directory shape)
//! or has a multi-valued RDN would sign under another name. For such a CA, what rcgen
//! signed is taken apart (X.509's `SEQUENCE { tbs, signatureAlgorithm, signature }`),
//! its issuer field replaced by the CA's subject as encoded in its certificate, and the
//! new to-be-signed part signed again with the CA key. The same for CRLs, whose
//! `TBSCertList` carries the issuer in the same way. Costs one more signature per
//! certificate, for such CAs only.

use rcgen::SigningKey;
use x509_parser::prelude::FromDer;

/// `der` (a certificate, or a CRL with `crl`) with its issuer name replaced by
/// `issuer`, signed again with `key`.
pub fn with_issuer(
    der: &[u8],
    issuer: &[u8],
    key: &impl SigningKey,
    crl: bool,
) -> Result<Vec<u8>, rcgen::Error> {
    let (tbs, old_issuer): (&[u8], &[u8]) = if crl {
        let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        (
            subslice_of(der, parsed.tbs_cert_list.as_ref()),
            subslice_of(der, parsed.tbs_cert_list.issuer.as_raw()),
        )
    } else {
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        (
            subslice_of(der, parsed.tbs_certificate.as_ref()),
            subslice_of(der, parsed.tbs_certificate.issuer.as_raw()),
        )
    };
    let tbs_at = offset(der, tbs);
    let issuer_at = offset(tbs, old_issuer);
    let tbs_header = header_len(tbs).ok_or(rcgen::Error::CouldNotParseCertificate)?;
    let mut content = Vec::with_capacity(tbs.len() + issuer.len());
    content.extend_from_slice(&tbs[tbs_header..issuer_at]);
    content.extend_from_slice(issuer);
    content.extend_from_slice(&tbs[issuer_at + old_issuer.len()..]);
    let new_tbs = tlv(0x30, &content);

    let rest = &der[tbs_at + tbs.len()..];
    let algorithm_len = header_len(rest)
        .and_then(|h| body_len(rest).map(|b| h + b))
        .ok_or(rcgen::Error::CouldNotParseCertificate)?;
    let algorithm = &rest[..algorithm_len];
    let signature = key.sign(&new_tbs)?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(&signature);

    let mut outer = new_tbs;
    outer.extend_from_slice(algorithm);
    outer.extend_from_slice(&tlv(0x03, &bits));
    Ok(tlv(0x30, &outer))
}

/// `part`, which x509-parser borrowed from `whole`, as a slice of `whole`.
fn subslice_of<'a>(whole: &'a [u8], part: &[u8]) -> &'a [u8] {
    let at = offset(whole, part);
    &whole[at..at + part.len()]
}

fn offset(whole: &[u8], part: &[u8]) -> usize {
    let at = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(at + part.len() <= whole.len(), "a slice of the same DER");
    at
}

/// The length of a DER TLV's tag and length octets.
fn header_len(der: &[u8]) -> Option<usize> {
    let first = *der.get(1)?;
    Some(if first < 0x80 {
        2
    } else {
        2 + usize::from(first & 0x7f)
    })
}

/// The length of a DER TLV's value.
fn body_len(der: &[u8]) -> Option<usize> {
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some(usize::from(first));
    }
    let octets = usize::from(first & 0x7f);
    if octets == 0 || octets > 4 {
        return None;
    }
    der.get(2..2 + octets)?
        .iter()
        .try_fold(0usize, |n, b| Some(n << 8 | usize::from(*b)))
}

/// A DER TLV with a definite length.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_written_and_read_as_der_does() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536] {
            let value = vec![7u8; len];
            let encoded = tlv(0x30, &value);
            assert_eq!(
                header_len(&encoded).unwrap() + body_len(&encoded).unwrap(),
                encoded.len()
            );
            assert_eq!(body_len(&encoded), Some(len));
        }
    }
}
