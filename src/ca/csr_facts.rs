//! What a CSR asks for, in words, for the pre-issuance hook: its subject and the names
//! it requests (subjectAltName DNS names and URIs). Read from a CSR `check_csr` accepted.

use serde::Serialize;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::FromDer;

#[derive(Debug, Clone, Default, Serialize)]
pub struct CsrFacts {
    /// The subject, RFC 4514 (`CN=edge-7,O=Acme`).
    pub subject: String,
    pub san_dns: Vec<String>,
    pub san_uris: Vec<String>,
}

impl CsrFacts {
    /// The facts of a PEM CSR; empty when it does not parse (it was checked before).
    pub fn of(pem: &str) -> Self {
        let Ok((_, pem)) = parse_x509_pem(pem.trim_start().as_bytes()) else {
            return Self::default();
        };
        let Ok((_, csr)) = X509CertificationRequest::from_der(&pem.contents) else {
            return Self::default();
        };
        let mut facts = Self {
            subject: csr.certification_request_info.subject.to_string(),
            ..Self::default()
        };
        for extension in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = extension {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(dns) => facts.san_dns.push((*dns).to_owned()),
                        GeneralName::URI(uri) => facts.san_uris.push((*uri).to_owned()),
                        _ => {}
                    }
                }
            }
        }
        facts
    }
}
