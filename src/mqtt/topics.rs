//! The provisioning topics, by AWS IoT's names (JSON only), and the filters a client may
//! subscribe to. Nothing else exists on this listener.

const CREATE_FROM_CSR: &str = "$aws/certificates/create-from-csr/json";
const CREATE: &str = "$aws/certificates/create/json";
const TEMPLATES: &str = "$aws/provisioning-templates/";
const PROVISION: &str = "/provision/json";

/// A request topic a client may publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `$aws/certificates/create-from-csr/json`: CreateCertificateFromCsr.
    CreateFromCsr,
    /// `$aws/certificates/create/json`: CreateKeysAndCertificate.
    CreateKeys,
    /// `$aws/provisioning-templates/<template>/provision/json`: RegisterThing.
    Register(String),
}

impl Request {
    /// The request `topic` names, if it is one.
    pub fn parse(topic: &str) -> Option<Self> {
        match topic {
            CREATE_FROM_CSR => Some(Self::CreateFromCsr),
            CREATE => Some(Self::CreateKeys),
            _ => {
                let template = topic.strip_prefix(TEMPLATES)?.strip_suffix(PROVISION)?;
                is_template_name(template).then(|| Self::Register(template.to_owned()))
            }
        }
    }

    /// AWS's name of the operation, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreateFromCsr => "CreateCertificateFromCsr",
            Self::CreateKeys => "CreateKeysAndCertificate",
            Self::Register(_) => "RegisterThing",
        }
    }

    /// Where the answer goes: the request topic with `/accepted` or `/rejected`.
    pub fn answer_topic(&self, accepted: bool) -> String {
        let suffix = if accepted { "/accepted" } else { "/rejected" };
        match self {
            Self::CreateFromCsr => format!("{CREATE_FROM_CSR}{suffix}"),
            Self::CreateKeys => format!("{CREATE}{suffix}"),
            Self::Register(template) => format!("{TEMPLATES}{template}{PROVISION}{suffix}"),
        }
    }
}

/// Whether a client may subscribe to `filter`: an answer topic of a request, or the
/// request's `+` for both answers. No other wildcard, no shared subscription.
pub fn may_subscribe(filter: &str) -> bool {
    let Some((request, last)) = filter.rsplit_once('/') else {
        return false;
    };
    matches!(last, "accepted" | "rejected" | "+") && Request::parse(request).is_some()
}

/// Whether the subscription `filter` (one [`may_subscribe`] took) receives `topic`.
pub fn matches(filter: &str, topic: &str) -> bool {
    match filter.strip_suffix('+') {
        Some(prefix) => topic
            .strip_prefix(prefix)
            .is_some_and(|last| !last.is_empty() && !last.contains('/')),
        None => filter == topic,
    }
}

/// A template name as AWS allows one (`[A-Za-z0-9_-]`, 1 to 36) — here an enrollment
/// group's name, which is stricter and fits.
fn is_template_name(name: &str) -> bool {
    (1..=36).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_provisioning_topics_exist() {
        assert_eq!(
            Request::parse(CREATE_FROM_CSR),
            Some(Request::CreateFromCsr)
        );
        assert_eq!(
            Request::parse("$aws/provisioning-templates/sensors/provision/json"),
            Some(Request::Register("sensors".into()))
        );
        for topic in [
            "$aws/certificates/create-from-csr/cbor",
            "$aws/provisioning-templates//provision/json",
            "$aws/provisioning-templates/a/b/provision/json",
            "$aws/provisioning-templates/+/provision/json",
            "devices/telemetry",
            "#",
        ] {
            assert_eq!(Request::parse(topic), None, "{topic}");
        }
        assert!(may_subscribe("$aws/certificates/create/json/accepted"));
        assert!(may_subscribe(
            "$aws/provisioning-templates/s/provision/json/+"
        ));
        for filter in [
            "#",
            "$aws/#",
            "$aws/certificates/create/json/#",
            "$aws/certificates/create/json",
            "$share/g/$aws/certificates/create/json/accepted",
            "$aws/provisioning-templates/+/provision/json/accepted",
        ] {
            assert!(!may_subscribe(filter), "{filter}");
        }
        let any = "$aws/certificates/create/json/+";
        assert!(matches(any, "$aws/certificates/create/json/rejected"));
        assert!(!matches(
            any,
            "$aws/certificates/create-from-csr/json/rejected"
        ));
        assert!(!matches(
            "$aws/certificates/create/json/accepted",
            "$aws/certificates/create/json/rejected"
        ));
    }
}
