//! Reading a CRMF certificate request (RFC 4211), as CMP's `ir`, `cr` and `kur` carry
//! it, with the checks [`super::check_csr`] makes of a PKCS#10 one: the key's type
//! against the policy, proof of possession (a signature by the template's key over the
//! DER of the `CertRequest`, §4.1, with no `poposkInput`: the template names the
//! subject and key, RFC 9483 §4.1.1), a subject whose common names are the device id,
//! and no CA certificate asked for.

use crmf::pop::ProofOfPossession;
use crmf::request::CertReqMsg;
use der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name};

use super::csr::{check_subject, key_type, verify_possession};
use super::csr_facts::rfc4514;
use super::{CsrFacts, DevicePublicKey, KeyPolicy};
use crate::domain::DeviceId;
use crate::error::ApiError;

const BASIC_CONSTRAINTS: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.19");
const SUBJECT_ALT_NAME: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.17");

fn bad(why: &str) -> ApiError {
    ApiError::InvalidCsr(format!("certificate request template: {why}"))
}

/// Checks `request` for `device` against `policy`: its key and what it asks for, in
/// words for the hook.
///
/// Errors: 400 `invalid_csr` (no key, a POPO that is not a signature, parts that do not
/// parse), 400 `csr_signature_invalid` (the POPO does not verify), 422
/// `csr_policy_violation` (key type, subject, CA asked for).
pub fn check_template(
    request: &CertReqMsg,
    device: &DeviceId,
    policy: &KeyPolicy,
) -> Result<(DevicePublicKey, CsrFacts), ApiError> {
    let template = &request.cert_req.cert_template;
    let spki_der = template
        .subject_public_key_info
        .as_ref()
        .ok_or_else(|| bad("no publicKey (this server does not make device keys over CMP)"))?
        .to_der()
        .map_err(|_| bad("publicKey does not encode"))?;
    let (_, spki) =
        SubjectPublicKeyInfo::from_der(&spki_der).map_err(|_| bad("publicKey does not parse"))?;
    let key_type = key_type(&spki)?;
    policy.check(key_type)?;

    let Some(ProofOfPossession::Signature(popo)) = &request.popo else {
        return Err(bad(
            "proof of possession must be a signature (RFC 9483 section 4.1.1)",
        ));
    };
    if popo.poposk_input.is_some() {
        return Err(bad(
            "poposkInput is not taken: the template names the subject and key",
        ));
    }
    let signed = request
        .cert_req
        .to_der()
        .map_err(|_| bad("certReq does not encode"))?;
    let algorithm_der = popo
        .alg_id
        .to_der()
        .map_err(|_| bad("POPO algorithm does not encode"))?;
    let (_, algorithm) = AlgorithmIdentifier::from_der(&algorithm_der)
        .map_err(|_| bad("POPO algorithm does not parse"))?;
    let signature = x509_parser::der_parser::asn1_rs::BitString::new(
        popo.signature.unused_bits(),
        popo.signature.raw_bytes(),
    );
    verify_possession(&spki, &algorithm, &signature, &signed, key_type)?;

    let mut facts = CsrFacts::default();
    if let Some(subject) = &template.subject {
        let subject_der = subject
            .to_der()
            .map_err(|_| bad("subject does not encode"))?;
        let (_, name) =
            X509Name::from_der(&subject_der).map_err(|_| bad("subject does not parse"))?;
        check_subject(&name, device)?;
        facts.subject = rfc4514(&name);
    }
    for extension in template.extensions.iter().flatten() {
        let value = extension.extn_value.as_bytes();
        if extension.extn_id == BASIC_CONSTRAINTS {
            let constraints = BasicConstraints::from_der(value)
                .map_err(|_| bad("basicConstraints does not parse"))?;
            if constraints.ca {
                return Err(ApiError::CsrPolicy(
                    "the request asks for a CA certificate (basicConstraints CA:TRUE)".into(),
                ));
            }
        } else if extension.extn_id == SUBJECT_ALT_NAME {
            let names = SubjectAltName::from_der(value)
                .map_err(|_| bad("subjectAltName does not parse"))?;
            for name in names.0 {
                match name {
                    GeneralName::DnsName(dns) => facts.san_dns.push(dns.to_string()),
                    GeneralName::UniformResourceIdentifier(uri) => {
                        facts.san_uris.push(uri.to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    Ok((DevicePublicKey::of(&spki, key_type), facts))
}

/// What a door asks to have certified: a PKCS#10 CSR (PEM: the JSON API, EST, CMP's
/// `p10cr`) or a CRMF request (CMP's `ir`, `cr`, `kur`).
pub enum CertRequest<'a> {
    Pkcs10(&'a str),
    Crmf(&'a CertReqMsg),
}

/// A request that passed its checks: the key to certify, and what it asks for.
pub struct CheckedRequest<'a> {
    pub key: DevicePublicKey,
    facts: Result<CsrFacts, &'a str>,
}

impl<'a> CertRequest<'a> {
    /// [`super::check_csr`] or [`check_template`], with their errors.
    pub fn check(
        &self,
        device: &DeviceId,
        policy: &KeyPolicy,
    ) -> Result<CheckedRequest<'a>, ApiError> {
        match *self {
            Self::Pkcs10(pem) => Ok(CheckedRequest {
                key: super::check_csr(pem, device, policy)?,
                facts: Err(pem),
            }),
            Self::Crmf(request) => {
                let (key, facts) = check_template(request, device, policy)?;
                Ok(CheckedRequest {
                    key,
                    facts: Ok(facts),
                })
            }
        }
    }
}

impl CheckedRequest<'_> {
    /// What it asks for, for the hook: read from a CSR only when asked.
    pub fn facts(&self) -> CsrFacts {
        match &self.facts {
            Ok(facts) => facts.clone(),
            Err(pem) => CsrFacts::of(pem),
        }
    }
}
