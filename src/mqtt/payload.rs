//! The JSON of the provisioning topics, as AWS IoT names its fields. Decoding is what a
//! client controls, so it is its own function, fuzzed (`fuzz/fuzz_targets/mqtt_payload.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::topics::Request;

/// The largest request payload taken: a 16 KiB CSR PEM in JSON, with room to spare.
pub const MAX_PAYLOAD: usize = 32 * 1024;

/// A request's payload, decoded for its topic.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    /// `{"certificateSigningRequest": "<PEM>"}`.
    CreateFromCsr { csr: String },
    /// `{}` (any object: AWS defines no fields).
    CreateKeys,
    /// `{"certificateOwnershipToken": "...", "parameters": {"Name": "value"}}`.
    Register {
        ownership_token: String,
        parameters: BTreeMap<String, String>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateFromCsrBody {
    certificate_signing_request: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterBody {
    certificate_ownership_token: String,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
}

/// Decodes `bytes` as the payload of `request`.
///
/// Errors: the words for `/rejected`'s `InvalidPayload` (not JSON, not an object, a
/// required field missing or not a string, larger than [`MAX_PAYLOAD`]).
pub fn decode(request: &Request, bytes: &[u8]) -> Result<Payload, String> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(format!("the payload is larger than {MAX_PAYLOAD} bytes"));
    }
    let shown = |e: serde_json::Error| format!("the payload is not the JSON this topic takes: {e}");
    match request {
        Request::CreateFromCsr => {
            let body: CreateFromCsrBody = serde_json::from_slice(bytes).map_err(shown)?;
            Ok(Payload::CreateFromCsr {
                csr: body.certificate_signing_request,
            })
        }
        Request::CreateKeys => {
            // An empty payload is an empty request; anything else must be an object.
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
                    .map_err(shown)?;
            }
            Ok(Payload::CreateKeys)
        }
        Request::Register(_) => {
            let body: RegisterBody = serde_json::from_slice(bytes).map_err(shown)?;
            Ok(Payload::Register {
                ownership_token: body.certificate_ownership_token,
                parameters: body.parameters,
            })
        }
    }
}

/// `/accepted` of CreateCertificateFromCsr and CreateKeysAndCertificate.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateCreated {
    /// SHA-256 of the certificate's DER, lower-case hex (AWS's certificate id is one too).
    pub certificate_id: String,
    /// The device certificate, then the intermediates up to the root, PEM.
    pub certificate_pem: String,
    pub certificate_ownership_token: String,
    /// CreateKeysAndCertificate only: the device's new key, PKCS#8 PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

/// `/accepted` of RegisterThing.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingRegistered<'a> {
    pub thing_name: &'a str,
    pub device_configuration: &'a BTreeMap<String, String>,
}

/// Every `/rejected`: an HTTP-like status, a stable code and words.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    pub status_code: u16,
    pub error_code: &'static str,
    pub error_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_topic_takes_its_own_fields() {
        let register = Request::Register("g".into());
        assert_eq!(
            decode(
                &register,
                br#"{"certificateOwnershipToken":"t","parameters":{"SerialNumber":"1"}}"#
            ),
            Ok(Payload::Register {
                ownership_token: "t".into(),
                parameters: BTreeMap::from([("SerialNumber".into(), "1".into())]),
            })
        );
        assert!(decode(&register, br#"{"parameters":{}}"#).is_err());
        assert!(
            decode(
                &register,
                br#"{"certificateOwnershipToken":"t","parameters":{"a":1}}"#
            )
            .is_err()
        );
        assert!(decode(&Request::CreateFromCsr, b"{}").is_err());
        assert!(decode(&Request::CreateFromCsr, b"\xff").is_err());
        assert_eq!(decode(&Request::CreateKeys, b""), Ok(Payload::CreateKeys));
        assert!(decode(&Request::CreateKeys, b"[1]").is_err());
        assert!(decode(&Request::CreateKeys, &vec![b' '; MAX_PAYLOAD + 1]).is_err());
    }
}
