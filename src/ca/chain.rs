//! The CA chain as devices and brokers are given it (RFC 5280 §6): with a two-tier PKI,
//! a device presents its certificate followed by the intermediates, and a broker trusts
//! the root alone.

use std::sync::Arc;

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::certificate_pem;

/// `ca.crt`'s certificates, issuing CA first.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Every certificate, PEM: what `/api/v1/ca` serves.
    pub full_pem: String,
    /// The self-signed root ending a chain of two or more, PEM: the trust anchor
    /// devices are given as `ca_certificate`. `None` for a one-tier CA (or a chain that
    /// ends below its root), where the whole chain is the anchor, as before.
    pub root_pem: Option<String>,
    /// What follows a device certificate in what it presents: the chain without its
    /// root (empty without a root).
    pub intermediates_pem: String,
    /// The intermediates (issuing CA first) and the trust anchor, DER, shared with every
    /// certificate handed out: [`Chain::delivered`] for doors that send DER (EST, CMP)
    /// and for OCSP responses.
    pub delivered_der: DeliveredDer,
}

/// [`Chain::delivered`], DER.
#[derive(Debug, Clone, Default)]
pub struct DeliveredDer {
    /// The intermediates that follow the device certificate (empty for a one-tier CA).
    pub intermediates: Arc<[Vec<u8>]>,
    /// The trust anchor: the root, or the whole chain of a one-tier CA.
    pub anchors: Arc<[Vec<u8>]>,
}

impl Chain {
    /// Reads `ders` (issuing CA first). With a self-signed root at the end, each
    /// certificate must be signed by the next and name it as its issuer, and every one
    /// above the issuing CA must be a CA allowed to sign certificates and be within its
    /// validity: such a broken chain is refused here, not by every broker later. (The
    /// issuing CA's own checks are the caller's; a chain that ends below its root is
    /// taken as it is.) Errors say which certificate, in words.
    pub fn of(ders: &[Vec<u8>]) -> Result<Self, String> {
        let full_pem = ders.iter().map(|der| certificate_pem(der)).collect();
        let parsed = ders
            .iter()
            .map(|der| X509Certificate::from_der(der).map(|(_, cert)| cert))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a certificate in the chain does not parse: {e}"))?;
        let root = parsed
            .last()
            .filter(|last| parsed.len() >= 2 && is_self_signed(last));
        let Some(_) = root else {
            return Ok(Chain {
                full_pem,
                root_pem: None,
                intermediates_pem: String::new(),
                delivered_der: DeliveredDer {
                    intermediates: Arc::new([]),
                    anchors: ders.into(),
                },
            });
        };
        for (i, pair) in parsed.windows(2).enumerate() {
            let (child, parent) = (&pair[0], &pair[1]);
            if child.issuer().as_raw() != parent.subject().as_raw()
                || child.verify_signature(Some(parent.public_key())).is_err()
            {
                return Err(format!(
                    "certificate {} of the chain ({}) is not signed by the next one ({})",
                    i + 1,
                    child.subject(),
                    parent.subject()
                ));
            }
            let signs_certificates = match parent.key_usage() {
                Ok(Some(usage)) => usage.value.key_cert_sign(),
                Ok(None) => true,
                Err(_) => false,
            };
            if !parent.is_ca() || !signs_certificates {
                return Err(format!(
                    "certificate {} of the chain ({}) is not a CA that may sign certificates",
                    i + 2,
                    parent.subject()
                ));
            }
            if !parent.validity().is_valid() {
                return Err(format!(
                    "certificate {} of the chain ({}) is not valid now (valid from {} to {})",
                    i + 2,
                    parent.subject(),
                    parent.validity().not_before,
                    parent.validity().not_after
                ));
            }
        }
        let (root, below) = ders.split_last().expect("two or more");
        Ok(Chain {
            full_pem,
            root_pem: Some(certificate_pem(root)),
            intermediates_pem: below.iter().map(|der| certificate_pem(der)).collect(),
            delivered_der: DeliveredDer {
                intermediates: below.into(),
                anchors: Arc::new([root.clone()]),
            },
        })
    }

    /// What a device is given: its certificate followed by the intermediates, and the
    /// trust anchor.
    pub fn delivered(&self, leaf_pem: &str) -> (String, String) {
        match &self.root_pem {
            Some(root) => (
                format!("{leaf_pem}{}", self.intermediates_pem),
                root.clone(),
            ),
            None => (leaf_pem.to_owned(), self.full_pem.clone()),
        }
    }
}

/// Whether `cert` names itself as issuer and its signature verifies with its own key.
pub fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == cert.subject().as_raw() && cert.verify_signature(None).is_ok()
}
