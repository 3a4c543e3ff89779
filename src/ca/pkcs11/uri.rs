//! PKCS#11 URIs (RFC 7512): which token, which key, and optionally which module.

use std::fmt;
use std::path::PathBuf;

/// A parsed `pkcs11:` URI naming one private key.
///
/// Path attributes (§2.3) select the token (`token`, `serial`, `model`, `manufacturer`,
/// `slot-id`) and the key (`object`, its CKA_LABEL, and/or `id`, its CKA_ID); `type`,
/// when present, must be `private`. Query attributes: `module-path` (the module, when
/// `ca.pkcs11_module` is not set) and `pin-source` (a file holding the PIN). `pin-value`
/// is refused: a PIN in a configuration value ends up in shell histories and logs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub manufacturer: Option<String>,
    pub slot_id: Option<u64>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub module_path: Option<PathBuf>,
    pub pin_source: Option<PathBuf>,
}

impl Pkcs11Uri {
    /// Whether `text` is meant as a PKCS#11 URI rather than a file path.
    pub fn is_uri(text: &str) -> bool {
        text.get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
    }

    /// Parses `text`. Errors say which attribute is wrong, in words.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !Self::is_uri(text) {
            return Err("a PKCS#11 URI starts with `pkcs11:`".into());
        }
        let rest = &text[7..];
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri::default();
        let mut seen = Vec::new();
        for attribute in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = split_attribute(attribute)?;
            if seen.contains(&name) {
                return Err(format!("`{name}` is given twice"));
            }
            seen.push(name);
            match name {
                "token" => uri.token = Some(text_value(name, value)?),
                "serial" => uri.serial = Some(text_value(name, value)?),
                "model" => uri.model = Some(text_value(name, value)?),
                "manufacturer" => uri.manufacturer = Some(text_value(name, value)?),
                "object" => uri.object = Some(text_value(name, value)?),
                "id" => uri.id = Some(percent_decode(value)?),
                "slot-id" => {
                    uri.slot_id = Some(
                        text_value(name, value)?
                            .parse()
                            .map_err(|_| "`slot-id` must be a decimal number".to_string())?,
                    )
                }
                "type" => {
                    if text_value(name, value)? != "private" {
                        return Err(
                            "`type` must be `private`: the CA signs with a private key".into()
                        );
                    }
                }
                // Informational attributes that select nothing we need.
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {}
                other => return Err(format!("unknown attribute `{other}` (RFC 7512 §2.3)")),
            }
        }
        let mut seen_query = Vec::new();
        for attribute in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (name, value) = split_attribute(attribute)?;
            if seen_query.contains(&name) {
                return Err(format!("`{name}` is given twice"));
            }
            seen_query.push(name);
            match name {
                "module-path" => uri.module_path = Some(PathBuf::from(text_value(name, value)?)),
                "pin-source" => {
                    let source = text_value(name, value)?;
                    let path = source.strip_prefix("file:").unwrap_or(&source);
                    uri.pin_source = Some(PathBuf::from(path));
                }
                "pin-value" => {
                    return Err("`pin-value` is refused: give the PIN in a file \
                         (ca.pkcs11_pin_file, CA_PKCS11_PIN_FILE) or in CA_PKCS11_PIN"
                        .into());
                }
                "module-name" => {
                    return Err("`module-name` is not supported: give the module's path \
                         (ca.pkcs11_module, CA_PKCS11_MODULE, or `module-path`)"
                        .into());
                }
                other => return Err(format!("unknown query attribute `{other}` (RFC 7512 §2.3)")),
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err("name the key with `object=<label>` and/or `id=<%-encoded id>`".into());
        }
        Ok(uri)
    }
}

/// The URI again, without any query attribute: safe to log.
impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut text = |name: &str, value: &Option<String>| {
            if let Some(value) = value {
                parts.push(format!("{name}={}", percent_encode(value.as_bytes())));
            }
        };
        text("token", &self.token);
        text("manufacturer", &self.manufacturer);
        text("model", &self.model);
        text("serial", &self.serial);
        text("object", &self.object);
        if let Some(slot) = self.slot_id {
            parts.push(format!("slot-id={slot}"));
        }
        if let Some(id) = &self.id {
            parts.push(format!("id={}", percent_encode_all(id)));
        }
        write!(f, "pkcs11:{}", parts.join(";"))
    }
}

fn split_attribute(attribute: &str) -> Result<(&str, &str), String> {
    attribute
        .split_once('=')
        .ok_or_else(|| format!("`{attribute}` is not of the form name=value"))
}

fn text_value(name: &str, value: &str) -> Result<String, String> {
    String::from_utf8(percent_decode(value)?)
        .map_err(|_| format!("`{name}` is not UTF-8 once %-decoded"))
}

fn percent_decode(value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{value}` has a % not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_encode_all(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rfc_examples_and_ours() {
        let uri = Pkcs11Uri::parse("pkcs11:token=provisiond;object=issuing-ca").unwrap();
        assert_eq!(uri.token.as_deref(), Some("provisiond"));
        assert_eq!(uri.object.as_deref(), Some("issuing-ca"));

        let uri = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;\
             model=1.0;object=my-certificate;type=private;id=%69%95%3E%5C%F4%BD%EC%91;\
             serial=?pin-source=file:/etc/token&module-path=/usr/lib/libsofthsm2.so",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(uri.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(
            uri.id.as_deref(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        assert_eq!(uri.serial.as_deref(), Some(""));
        assert_eq!(uri.pin_source, Some(PathBuf::from("/etc/token")));
        assert_eq!(
            uri.module_path,
            Some(PathBuf::from("/usr/lib/libsofthsm2.so"))
        );
        assert!(Pkcs11Uri::is_uri("PKCS11:object=a"));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for (text, says) in [
            ("pkcs11:token=a", "name the key"),
            ("pkcs11:object=a?pin-value=1234", "pin-value"),
            ("pkcs11:object=a;object=b", "twice"),
            ("pkcs11:object=a;type=cert", "private"),
            ("pkcs11:object=a;colour=red", "unknown attribute"),
            ("pkcs11:object=a%2", "two hex digits"),
            ("pkcs11:object=a%+1", "two hex digits"),
            ("pkcs11:object=a?module-path=/a&module-path=/b", "twice"),
            ("pkcs11:object=a;slot-id=x", "decimal"),
            ("pkcs11:object", "name=value"),
            ("/etc/ca.key", "starts with"),
        ] {
            let error = Pkcs11Uri::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn prints_without_query_attributes() {
        let uri =
            Pkcs11Uri::parse("pkcs11:token=my%20token;object=ca;id=%01%02?pin-source=/p").unwrap();
        assert_eq!(
            uri.to_string(),
            "pkcs11:token=my%20token;object=ca;id=%01%02"
        );
        assert_eq!(Pkcs11Uri::parse(&uri.to_string()).unwrap().token, uri.token);
    }
}
