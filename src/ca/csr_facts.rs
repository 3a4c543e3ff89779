//! What a CSR asks for, in words, for the pre-issuance hook: its subject and the names
//! it requests (subjectAltName DNS names and URIs). Read from a CSR `check_csr` accepted.

use serde::Serialize;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use super::name::directory_string;

#[derive(Debug, Clone, Default, Serialize)]
pub struct CsrFacts {
    /// The subject as RFC 4514 writes it (`CN=edge-7,O=Acme`: the last RDN first,
    /// `,+"\;<>` in values escaped), so that splitting it on unescaped commas is safe.
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
            subject: rfc4514(&csr.certification_request_info.subject),
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

pub(super) fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type().to_id_string();
                    // RFC 4514 §3's short names; any other type as its dotted OID.
                    let key = match oid.as_str() {
                        "2.5.4.3" => "CN",
                        "2.5.4.7" => "L",
                        "2.5.4.8" => "ST",
                        "2.5.4.10" => "O",
                        "2.5.4.11" => "OU",
                        "2.5.4.6" => "C",
                        "2.5.4.9" => "STREET",
                        "0.9.2342.19200300.100.1.25" => "DC",
                        "0.9.2342.19200300.100.1.1" => "UID",
                        other => other,
                    };
                    let value = match directory_string(attribute) {
                        Ok(text) => escaped(&text),
                        // Not a string: its DER, as RFC 4514 §2.4 writes it.
                        Err(_) => format!("#{}", hex::encode(attribute.attr_value().data)),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// A value escaped as RFC 4514 §2.4 asks.
fn escaped(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn values_are_escaped_so_a_comma_cannot_start_another_attribute() {
        assert_eq!(escaped("x, CN=admin"), "x\\, CN=admin");
        assert_eq!(escaped("#1 "), "\\#1\\ ");
        assert_eq!(escaped("a+b\"c\""), "a\\+b\\\"c\\\"");
        assert_eq!(escaped("edge-7"), "edge-7");
    }
}
