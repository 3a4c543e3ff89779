//! OCSP (RFC 6960): reading a request's CertIDs and nonce, and writing the signed basic
//! response. Which certificate is good, revoked or unknown is the caller's to say (the
//! registry); this module knows only the encoding and the CA's key.
//!
//! CertIDs may be hashed with SHA-1 (what most clients send, `openssl ocsp` included) or
//! SHA-256; a CertID for another issuer is answered `unknown`. The response is signed
//! by the issuing CA itself (RFC 6960 §4.2.2.2), its responder ID the SHA-1 of its key
//! (`byKey`), the nonce echoed when the request has one (§4.4.1).

use time::OffsetDateTime;
use x509_parser::asn1_rs::{Any, Class, FromDer, Tag};
use yasna::models::{GeneralizedTime, ObjectIdentifier};
use yasna::{DERWriter, Tag as YTag};

use super::CertificateAuthority;
use crate::registry::Revocation;

/// Requests per OCSP request that are answered; more is `malformedRequest`.
pub const MAX_REQUESTS: usize = 16;

// OID contents (DER, without tag and length), compared as bytes.
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const NONCE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];

/// A request that could not be read: answered `malformedRequest` (RFC 6960 §2.3).
#[derive(Debug)]
pub struct Malformed;

/// One certificate asked about.
#[derive(Debug, Clone)]
pub struct CertId {
    /// The CertID as sent (DER), repeated as is in the answer.
    der: Vec<u8>,
    sha256: bool,
    name_hash: Vec<u8>,
    key_hash: Vec<u8>,
    /// The serial as a 16-byte registry serial, when it fits.
    pub serial: Option<[u8; 16]>,
}

/// What a request asks.
#[derive(Debug)]
pub struct OcspRequest {
    pub certs: Vec<CertId>,
    /// The nonce extension, whole (DER), to echo.
    nonce: Option<Vec<u8>>,
}

impl OcspRequest {
    /// What names the answer when it may be answered again (no nonce): the CertIDs'
    /// DER, in order. `None` with a nonce, whose answer is this request's alone.
    pub fn reuse_key(&self) -> Option<Vec<u8>> {
        self.nonce.is_none().then(|| {
            self.certs
                .iter()
                .flat_map(|id| id.der.iter().copied())
                .collect()
        })
    }
}

/// A certificate's status, as the registry says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    Revoked(Revocation),
    Unknown,
}

/// The elements in `data`, each with its whole encoding (`Any::as_bytes` is only the
/// contents).
fn items(mut data: &[u8]) -> Result<Vec<(Any<'_>, &[u8])>, Malformed> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (rest, any) = Any::from_der(data).map_err(|_| Malformed)?;
        out.push((any, &data[..data.len() - rest.len()]));
        data = rest;
    }
    Ok(out)
}

fn one(data: &[u8]) -> Result<Any<'_>, Malformed> {
    match Any::from_der(data) {
        Ok(([], any)) => Ok(any),
        _ => Err(Malformed),
    }
}

fn expect(any: &Any<'_>, tag: Tag) -> Result<(), Malformed> {
    if any.header.class() == Class::Universal && any.header.tag() == tag {
        Ok(())
    } else {
        Err(Malformed)
    }
}

fn context(any: &Any<'_>, number: u32) -> bool {
    any.header.class() == Class::ContextSpecific && any.header.tag() == Tag(number)
}

/// Reads an `OCSPRequest` (DER).
pub fn parse_request(der: &[u8]) -> Result<OcspRequest, Malformed> {
    let request = one(der)?;
    expect(&request, Tag::Sequence)?;
    // tbsRequest, then an optional signature (not checked: anyone may ask).
    let parts = items(request.data)?;
    let (tbs, _) = parts.first().ok_or(Malformed)?;
    expect(tbs, Tag::Sequence)?;
    let mut certs = Vec::new();
    let mut nonce = None;
    let mut list_seen = false;
    for (field, _) in items(tbs.data)? {
        if context(&field, 0) || context(&field, 1) {
            continue; // version, requestorName
        }
        if context(&field, 2) {
            nonce = find_nonce(one(field.data)?.data)?;
            continue;
        }
        expect(&field, Tag::Sequence)?;
        if list_seen {
            return Err(Malformed);
        }
        list_seen = true;
        for (single, _) in items(field.data)? {
            expect(&single, Tag::Sequence)?;
            let inner = items(single.data)?;
            let (id, raw) = inner.first().ok_or(Malformed)?;
            certs.push(cert_id(id, raw)?);
        }
    }
    if certs.is_empty() || certs.len() > MAX_REQUESTS {
        return Err(Malformed);
    }
    Ok(OcspRequest { certs, nonce })
}

fn cert_id(any: &Any<'_>, raw: &[u8]) -> Result<CertId, Malformed> {
    expect(any, Tag::Sequence)?;
    let fields: Vec<Any<'_>> = items(any.data)?.into_iter().map(|(a, _)| a).collect();
    let [algorithm, name_hash, key_hash, serial] = fields.as_slice() else {
        return Err(Malformed);
    };
    expect(algorithm, Tag::Sequence)?;
    let oid = items(algorithm.data)?;
    let (oid, _) = oid.first().ok_or(Malformed)?;
    expect(oid, Tag::Oid)?;
    expect(name_hash, Tag::OctetString)?;
    expect(key_hash, Tag::OctetString)?;
    expect(serial, Tag::Integer)?;
    let sha256 = match oid.data {
        SHA1 => false,
        SHA256 => true,
        // Another hash: no issuer of ours matches it, so `unknown`.
        _ => return Ok(unmatched(raw)),
    };
    let digits = serial.data;
    let significant = &digits[digits.iter().take_while(|b| **b == 0).count()..];
    let serial =
        (significant.len() <= 16 && digits.first().is_some_and(|b| b & 0x80 == 0)).then(|| {
            let mut out = [0u8; 16];
            out[16 - significant.len()..].copy_from_slice(significant);
            out
        });
    Ok(CertId {
        der: raw.to_vec(),
        sha256,
        name_hash: name_hash.data.to_vec(),
        key_hash: key_hash.data.to_vec(),
        serial,
    })
}

fn unmatched(raw: &[u8]) -> CertId {
    CertId {
        der: raw.to_vec(),
        sha256: false,
        name_hash: Vec::new(),
        key_hash: Vec::new(),
        serial: None,
    }
}

/// The nonce extension among `Extensions`, whole.
fn find_nonce(extensions: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
    for (extension, raw) in items(extensions)? {
        expect(&extension, Tag::Sequence)?;
        let fields = items(extension.data)?;
        let (oid, _) = fields.first().ok_or(Malformed)?;
        expect(oid, Tag::Oid)?;
        if oid.data == NONCE {
            // RFC 8954 §2.1: 1 to 32 octets (an OCTET STRING, itself usually wrapping one).
            let (value, _) = fields.last().ok_or(Malformed)?;
            expect(value, Tag::OctetString)?;
            let inner = match one(value.data) {
                Ok(inner) if inner.header.tag() == Tag::OctetString => inner.data,
                _ => value.data,
            };
            if !(1..=32).contains(&inner.len()) {
                return Err(Malformed);
            }
            return Ok(Some(raw.to_vec()));
        }
    }
    Ok(None)
}

/// What identifies the CA in CertIDs and as a responder: hashes of its subject (DER)
/// and of its public key (the BIT STRING's bytes).
pub struct IssuerHashes {
    name_sha1: [u8; 20],
    key_sha1: [u8; 20],
    name_sha256: [u8; 32],
    key_sha256: [u8; 32],
}

impl IssuerHashes {
    pub fn of(subject_der: &[u8], public_key: &[u8]) -> Self {
        Self {
            name_sha1: crate::crypto::sha1(subject_der),
            key_sha1: crate::crypto::sha1(public_key),
            name_sha256: crate::crypto::sha256(subject_der),
            key_sha256: crate::crypto::sha256(public_key),
        }
    }

    /// Whether `id` names this CA as the issuer.
    pub fn issued(&self, id: &CertId) -> bool {
        if id.name_hash.is_empty() {
            return false;
        }
        if id.sha256 {
            id.name_hash == self.name_sha256 && id.key_hash == self.key_sha256
        } else {
            id.name_hash == self.name_sha1 && id.key_hash == self.key_sha1
        }
    }
}

impl CertificateAuthority {
    /// The `OCSPResponse` (DER, status `successful`) for `request`, one `SingleResponse`
    /// per CertID with `statuses` in the same order, valid from `this_update` to
    /// `next_update`, signed by the CA's key.
    pub fn ocsp_response(
        &self,
        request: &OcspRequest,
        statuses: &[CertStatus],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, rcgen::Error> {
        let at = |t: OffsetDateTime| {
            GeneralizedTime::from_datetime(t.replace_nanosecond(0).expect("0 ns is valid"))
        };
        let (this_update, next_update) = (at(this_update), at(next_update));
        let produced = at(OffsetDateTime::now_utc());
        // A delegated responder while its certificate is valid (RFC 6960 §4.2.2.2),
        // else the CA itself.
        let delegated = self.ocsp_signer.as_ref().filter(|s| s.valid_now());
        let key_hash =
            crate::crypto::sha1(delegated.map_or(self.public_key_bits(), |s| &s.key_bits));
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                // responderID: byKey [2] EXPLICIT KeyHash.
                w.next()
                    .write_tagged(YTag::context(2), |w| w.write_bytes(&key_hash));
                w.next().write_generalized_time(&produced);
                w.next().write_sequence_of(|w| {
                    for (id, status) in request.certs.iter().zip(statuses) {
                        w.next().write_sequence(|w| {
                            w.next().write_der(&id.der);
                            write_status(w.next(), *status, &at);
                            w.next().write_generalized_time(&this_update);
                            w.next().write_tagged(YTag::context(0), |w| {
                                w.write_generalized_time(&next_update)
                            });
                        });
                    }
                });
                if let Some(nonce) = &request.nonce {
                    w.next().write_tagged(YTag::context(1), |w| {
                        w.write_sequence(|w| w.next().write_der(nonce))
                    });
                }
            })
        });
        let key: &dyn rcgen::SigningKey = match delegated {
            Some(signer) => &signer.key,
            None => self.signing_key(),
        };
        let algorithm = signature_algorithm(key.algorithm())
            .ok_or(rcgen::Error::UnsupportedSignatureAlgorithm)?;
        let signature = key.sign(&tbs)?;
        let basic = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&tbs);
                write_signature_algorithm(w.next(), algorithm);
                w.next().write_bitvec_bytes(&signature, signature.len() * 8);
                // certs [0] EXPLICIT: the responder's certificate, for the client to
                // check against the CA, and with a two-tier CA the intermediates, for a
                // client that trusts the root alone.
                if let Some(signer) = delegated {
                    w.next().write_tagged(YTag::context(0), |w| {
                        w.write_sequence(|w| {
                            w.next().write_der(&signer.cert_der);
                            for der in self.chain.delivered_der.intermediates.iter() {
                                w.next().write_der(der);
                            }
                        })
                    });
                }
            })
        });
        Ok(yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_enum(0); // successful
                w.next().write_tagged(YTag::context(0), |w| {
                    w.write_sequence(|w| {
                        // id-pkix-ocsp-basic
                        w.next().write_oid(&ObjectIdentifier::from_slice(&[
                            1, 3, 6, 1, 5, 5, 7, 48, 1, 1,
                        ]));
                        w.next().write_bytes(&basic);
                    })
                });
            })
        }))
    }
}

fn write_status(w: DERWriter, status: CertStatus, at: &dyn Fn(OffsetDateTime) -> GeneralizedTime) {
    match status {
        CertStatus::Good => w.write_tagged_implicit(YTag::context(0), |w| w.write_null()),
        CertStatus::Unknown => w.write_tagged_implicit(YTag::context(2), |w| w.write_null()),
        CertStatus::Revoked(revocation) => {
            let when = OffsetDateTime::from_unix_timestamp(revocation.at as i64)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            w.write_tagged_implicit(YTag::context(1), |w| {
                w.write_sequence(|w| {
                    w.next().write_generalized_time(&at(when));
                    // As in the CRL: `unspecified` is said by saying nothing (the CA/B
                    // Forum's profile forbids it in OCSP).
                    if revocation.reason != crate::registry::Reason::Unspecified {
                        w.next().write_tagged(YTag::context(0), |w| {
                            w.write_enum(i64::from(revocation.reason.code()))
                        });
                    }
                })
            })
        }
    }
}

/// The AlgorithmIdentifier of the CA key's signatures (RFC 5758, 8410, 4055); `None`
/// for a key whose signatures have no identifier here.
fn signature_algorithm(algorithm: &rcgen::SignatureAlgorithm) -> Option<(&'static [u64], bool)> {
    Some(if algorithm == &rcgen::PKCS_ECDSA_P256_SHA256 {
        (&[1, 2, 840, 10045, 4, 3, 2], false)
    } else if algorithm == &rcgen::PKCS_ECDSA_P384_SHA384 {
        (&[1, 2, 840, 10045, 4, 3, 3], false)
    } else if algorithm == &rcgen::PKCS_ECDSA_P521_SHA512 {
        (&[1, 2, 840, 10045, 4, 3, 4], false)
    } else if algorithm == &rcgen::PKCS_ED25519 {
        (&[1, 3, 101, 112], false)
    } else if algorithm == &rcgen::PKCS_RSA_SHA256 {
        (&[1, 2, 840, 113549, 1, 1, 11], true)
    } else {
        return None;
    })
}

fn write_signature_algorithm(w: DERWriter, (oid, null): (&[u64], bool)) {
    w.write_sequence(|w| {
        w.next().write_oid(&ObjectIdentifier::from_slice(oid));
        if null {
            w.next().write_null();
        }
    });
}

/// A response with no answer in it: `malformedRequest` (1) or `internalError` (2).
pub fn ocsp_refusal(status: i64) -> Vec<u8> {
    yasna::construct_der(|w| w.write_sequence(|w| w.next().write_enum(status)))
}
