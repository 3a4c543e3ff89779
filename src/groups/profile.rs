//! A group's certificate profile as configured: templates with `{device_id}` and
//! `{group}`, filled in for each device and checked before anything is signed.

use crate::ca::{CertProfile, MAX_NAMES, NameOverrides, SubjectAttribute, is_dns_name, is_uri};
use crate::config::{ExtendedKeyUsage, GroupSettings};
use crate::domain::DeviceId;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct ProfileTemplate {
    subject: Vec<(SubjectAttribute, String)>,
    san_dns: Vec<String>,
    san_uris: Vec<String>,
    eku: Vec<ExtendedKeyUsage>,
}

impl ProfileTemplate {
    /// `CN={device_id}`, clientAuth: the certificate of a server without groups.
    pub fn device() -> Self {
        Self {
            subject: vec![(SubjectAttribute::CommonName, "{device_id}".into())],
            san_dns: Vec::new(),
            san_uris: Vec::new(),
            eku: vec![ExtendedKeyUsage::ClientAuth],
        }
    }

    /// The group's templates, each tried on a sample id so that a mistake stops start-up
    /// (or a reload) rather than a device.
    pub fn from_settings(group: &GroupSettings) -> Result<Self, String> {
        let s = &group.subject;
        let mut subject = Vec::new();
        for (attribute, value) in [
            (SubjectAttribute::Country, &s.country),
            (SubjectAttribute::Organization, &s.organization),
            (SubjectAttribute::OrganizationalUnit, &s.organizational_unit),
        ] {
            if let Some(value) = value {
                subject.push((attribute, value.clone()));
            }
        }
        let common_name = s
            .common_name
            .clone()
            .unwrap_or_else(|| "{device_id}".into());
        // Brokers map the common name to a user (`use_identity_as_username`): one that
        // did not hold the id would give every device of the group the same identity.
        if !common_name.contains("{device_id}") {
            return Err(format!(
                "subject.common_name `{common_name}` must hold {{device_id}}"
            ));
        }
        subject.push((SubjectAttribute::CommonName, common_name));
        let eku = group
            .extended_key_usage
            .clone()
            .unwrap_or_else(|| vec![ExtendedKeyUsage::ClientAuth]);
        if eku.is_empty() {
            return Err("extended_key_usage needs clientAuth, serverAuth or both".into());
        }
        if group.san_dns.len() > MAX_NAMES || group.san_uris.len() > MAX_NAMES {
            return Err(format!(
                "at most {MAX_NAMES} san_dns and {MAX_NAMES} san_uris"
            ));
        }
        let template = Self {
            subject,
            san_dns: group.san_dns.clone(),
            san_uris: group.san_uris.clone(),
            eku,
        };
        for text in template
            .subject
            .iter()
            .map(|(_, v)| v)
            .chain(&template.san_dns)
            .chain(&template.san_uris)
        {
            let rest = text.replace("{device_id}", "").replace("{group}", "");
            if rest.contains(['{', '}']) {
                return Err(format!(
                    "`{text}`: the only placeholders are {{device_id}} and {{group}}"
                ));
            }
        }
        // A name a device fills in itself must stay under the operator's domain: the id
        // is one label (checked per device), followed by at least two fixed ones.
        for template in &template.san_dns {
            if template.contains("{device_id}") {
                let suffix = template.rsplit('}').next().unwrap_or_default();
                let labels = suffix.strip_prefix('.').map_or(0, |s| s.split('.').count());
                if labels < 2 {
                    return Err(format!(
                        "`{template}`: a DNS name with {{device_id}} must end in fixed labels \
                         of the operator's domain (`{{device_id}}.sensors.example.com`), so that \
                         no device can name a host of its choosing"
                    ));
                }
            }
        }
        let sample = DeviceId::parse("device-1").expect("a valid id");
        template
            .render(&sample, &group.name, &NameOverrides::default())
            .map_err(|e| format!("for a device `device-1`: {e}"))?;
        Ok(template)
    }

    /// The certificate's content for `device` of `group`.
    ///
    /// Errors: 422 `csr_policy_violation` when a filled-in value is not what its field
    /// takes (a DNS name from an id with `_`, a common name over 64 characters).
    pub fn render(
        &self,
        device: &DeviceId,
        group: &str,
        overrides: &NameOverrides,
    ) -> Result<CertProfile, ApiError> {
        let fill = |t: &str| {
            t.replace("{device_id}", device.as_str())
                .replace("{group}", group)
        };
        let refuse = |what: String| {
            ApiError::CsrPolicy(format!("the group's certificate profile makes {what}"))
        };
        let mut subject = Vec::with_capacity(self.subject.len());
        for (attribute, template) in &self.subject {
            let value = fill(template);
            let fits = match attribute {
                // Ids up to 128 characters taken before the 64 limit keep renewing.
                SubjectAttribute::CommonName if value == device.as_str() => true,
                SubjectAttribute::Country => {
                    value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase())
                }
                // RFC 5280 Appendix A: ub-common-name and the others are 64.
                _ => !value.is_empty() && value.chars().count() <= 64,
            };
            if !fits {
                return Err(refuse(format!(
                    "{attribute:?} `{value}`, which is not {}",
                    match attribute {
                        SubjectAttribute::Country => "two upper-case letters",
                        _ => "1 to 64 characters",
                    }
                )));
            }
            subject.push((*attribute, value));
        }
        let san_dns = match &overrides.san_dns {
            Some(names) => names.clone(),
            None => {
                if device.as_str().contains('.')
                    && self.san_dns.iter().any(|t| t.contains("{device_id}"))
                {
                    return Err(refuse(format!(
                        "a DNS name from the id `{device}`, whose dots would add labels of its own"
                    )));
                }
                self.san_dns.iter().map(|t| fill(t)).collect()
            }
        };
        if let Some(bad) = san_dns.iter().find(|n| !is_dns_name(n)) {
            return Err(refuse(format!(
                "the DNS name `{bad}`, which is not a host name"
            )));
        }
        let san_uris = match &overrides.san_uris {
            Some(uris) => uris.clone(),
            None => self.san_uris.iter().map(|t| fill(t)).collect(),
        };
        if let Some(bad) = san_uris.iter().find(|u| !is_uri(u)) {
            return Err(refuse(format!(
                "the URI `{bad}`, which is not an absolute URI"
            )));
        }
        Ok(CertProfile {
            subject,
            san_dns,
            san_uris,
            client_auth: self.eku.contains(&ExtendedKeyUsage::ClientAuth),
            server_auth: self.eku.contains(&ExtendedKeyUsage::ServerAuth),
        })
    }

    /// As `GET /api/v1/groups` shows it: the templates, not filled in.
    pub fn describe(&self) -> serde_json::Value {
        let subject: serde_json::Map<String, serde_json::Value> = self
            .subject
            .iter()
            .map(|(attribute, template)| {
                let key = match attribute {
                    SubjectAttribute::CommonName => "common_name",
                    SubjectAttribute::Organization => "organization",
                    SubjectAttribute::OrganizationalUnit => "organizational_unit",
                    SubjectAttribute::Country => "country",
                };
                (key.to_owned(), template.clone().into())
            })
            .collect();
        serde_json::json!({
            "subject": subject,
            "san_dns": self.san_dns,
            "san_uris": self.san_uris,
            "extended_key_usage": self.eku.iter().map(|e| e.name()).collect::<Vec<_>>(),
        })
    }
}
