//! What a certificate says beyond its key and validity: the subject, the names in its
//! subjectAltName and its extended key usages. A group's profile fills one in per device
//! ([`crate::groups`]); the CA writes it as it is.

/// The most names of each kind a certificate carries (a group's and a hook's).
pub const MAX_NAMES: usize = 16;

/// Names a pre-issuance hook gave instead of a group's, already checked.
#[derive(Debug, Clone, Default)]
pub struct NameOverrides {
    pub san_dns: Option<Vec<String>>,
    pub san_uris: Option<Vec<String>>,
}

/// A subject attribute a profile may set (RFC 5280 §4.1.2.6, Appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectAttribute {
    CommonName,
    Organization,
    OrganizationalUnit,
    Country,
}

impl SubjectAttribute {
    fn dn_type(self) -> rcgen::DnType {
        match self {
            Self::CommonName => rcgen::DnType::CommonName,
            Self::Organization => rcgen::DnType::OrganizationName,
            Self::OrganizationalUnit => rcgen::DnType::OrganizationalUnitName,
            Self::Country => rcgen::DnType::CountryName,
        }
    }
}

/// A certificate's content for one device, checked: DNS names are names, URIs parse,
/// a country is two letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertProfile {
    /// In the order written, country first when there is one (as X.500 names go).
    pub subject: Vec<(SubjectAttribute, String)>,
    pub san_dns: Vec<String>,
    pub san_uris: Vec<String>,
    pub client_auth: bool,
    pub server_auth: bool,
}

impl CertProfile {
    /// `CN=<device id>`, no names, clientAuth: what every certificate was before groups.
    pub fn device(device_id: &str) -> Self {
        Self {
            subject: vec![(SubjectAttribute::CommonName, device_id.to_owned())],
            san_dns: Vec::new(),
            san_uris: Vec::new(),
            client_auth: true,
            server_auth: false,
        }
    }

    pub(super) fn write_into(
        &self,
        params: &mut rcgen::CertificateParams,
    ) -> Result<(), rcgen::Error> {
        let mut name = rcgen::DistinguishedName::new();
        for (attribute, value) in &self.subject {
            let value = match attribute {
                // X.520 makes countryName a PrintableString.
                SubjectAttribute::Country => {
                    rcgen::DnValue::PrintableString(value.as_str().try_into()?)
                }
                _ => rcgen::DnValue::Utf8String(value.clone()),
            };
            name.push(attribute.dn_type(), value);
        }
        params.distinguished_name = name;
        for dns in &self.san_dns {
            params
                .subject_alt_names
                .push(rcgen::SanType::DnsName(dns.as_str().try_into()?));
        }
        for uri in &self.san_uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.as_str().try_into()?));
        }
        params.extended_key_usages = [
            (self.client_auth, rcgen::ExtendedKeyUsagePurpose::ClientAuth),
            (self.server_auth, rcgen::ExtendedKeyUsagePurpose::ServerAuth),
        ]
        .into_iter()
        .filter_map(|(on, purpose)| on.then_some(purpose))
        .collect();
        Ok(())
    }
}

/// Whether `name` is a DNS host name a certificate may carry (RFC 1123 labels of letters,
/// digits and inner hyphens, 63 bytes each, 253 in all; no wildcard).
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `uri` is an absolute URI with a scheme (RFC 3986 §4.3), as a SAN needs.
pub fn is_uri(uri: &str) -> bool {
    uri.is_ascii()
        && !uri
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        && url::Url::parse(uri).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_and_uris_are_checked() {
        assert!(is_dns_name("gw-1.example.com"));
        assert!(is_dns_name("localhost"));
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a-.b",
            "*.example.com",
            "under_score.x",
            "a b",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert!(is_uri("spiffe://acme/sensor/s-1"));
        assert!(is_uri("urn:device:s-1"));
        assert!(!is_uri("no scheme"));
        assert!(!is_uri("/relative"));
        assert!(!is_uri("https://exa mple.com"));
    }
}
