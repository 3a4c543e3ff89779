//! CMP messages on the wire (RFC 4210 §5.1, as profiled by RFC 9483): the envelope read
//! with its header and body kept as received (the protection covers their DER exactly),
//! and answers built from the `cmpv2` and `crmf` crates' types. The body is read by tag
//! here, not through `cmpv2::body::PkiBody`, whose `error` content cannot be built
//! outside the crate.

use cmpv2::header::{PkiHeader, Pvno};
use cmpv2::status::{PkiFailureInfoValues, PkiStatus, PkiStatusInfo};
use der::asn1::{AnyRef, BitString, GeneralizedTime, ObjectIdentifier, OctetString, Utf8StringRef};
use der::{Decode, Encode, EncodeValue, Sequence, Tag, TagNumber, Tagged};
use x509_cert::ext::pkix::name::GeneralName;

/// The largest CMP message taken, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// id-it-implicitConfirm (RFC 4210 §5.1.1.1).
pub const IMPLICIT_CONFIRM: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.4.13");

/// The envelope: `PKIMessage ::= SEQUENCE { header, body, [0] protection, [1] extraCerts }`.
#[derive(Sequence)]
struct Envelope<'a> {
    header: AnyRef<'a>,
    body: AnyRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    protection: Option<BitString>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    extra_certs: Option<Vec<AnyRef<'a>>>,
}

/// The kinds of body this server reads (RFC 4210 §5.1.2's tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ir,
    Cr,
    P10cr,
    Kur,
    Rr,
    CertConf,
    GenM,
    /// Any other: refused with `badRequest`.
    Other(u8),
}

impl Kind {
    fn of(tag: u8) -> Self {
        match tag {
            0 => Self::Ir,
            2 => Self::Cr,
            4 => Self::P10cr,
            7 => Self::Kur,
            11 => Self::Rr,
            21 => Self::GenM,
            24 => Self::CertConf,
            other => Self::Other(other),
        }
    }

    /// The answer's body tag for a request kind.
    pub fn answer_tag(self) -> u8 {
        match self {
            Self::Ir => 1,
            Self::Cr | Self::P10cr => 3,
            Self::Kur => 8,
            Self::Rr => 12,
            Self::GenM => 22,
            Self::CertConf | Self::Other(_) => 19,
        }
    }

    /// The name RFC 4210 gives it, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ir => "ir",
            Self::Cr => "cr",
            Self::P10cr => "p10cr",
            Self::Kur => "kur",
            Self::Rr => "rr",
            Self::CertConf => "certConf",
            Self::GenM => "genm",
            Self::Other(_) => "other",
        }
    }
}

/// A request as received.
pub struct Request<'a> {
    pub header: PkiHeader<'a>,
    pub kind: Kind,
    /// The body's content (inside its explicit tag).
    pub content: &'a [u8],
    /// `ProtectedPart ::= SEQUENCE { header, body }`, DER, from the bytes received.
    pub protected_part: Vec<u8>,
    pub protection: Option<BitString>,
    /// The extraCerts, DER, in order (RFC 9483 §3.3: the protection certificate first).
    pub extra_certs: Vec<&'a [u8]>,
}

/// Why a message could not be read: answered with `fail`, to its header when that
/// read (its transaction and nonce), else with a header of our own.
#[derive(Debug)]
pub struct Unreadable<'a> {
    pub why: String,
    pub fail: PkiFailureInfoValues,
    pub header: Option<Box<PkiHeader<'a>>>,
}

impl Unreadable<'_> {
    fn format(why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            fail: PkiFailureInfoValues::BadDataFormat,
            header: None,
        }
    }
}

/// Reads a DER `PKIMessage`.
///
/// Errors: [`Unreadable`] for anything that is not one (RFC 4210 pvno 2 only).
pub fn parse(bytes: &[u8]) -> Result<Request<'_>, Unreadable<'_>> {
    let envelope = Envelope::from_der(bytes)
        .map_err(|e| Unreadable::format(format!("not a DER PKIMessage: {e}")))?;
    let header_tlv = any_tlv(bytes, &envelope.header)?;
    let header = PkiHeader::from_der(header_tlv).map_err(|e| {
        // `cmpv2` reads pvno 1 and 2 only: a cmp2021 (3) client is told so.
        let pvno = AnyRef::from_der(header_tlv)
            .ok()
            .and_then(|h| der::SliceReader::new(h.value()).ok())
            .and_then(|mut r| der::Reader::decode::<AnyRef<'_>>(&mut r).ok())
            .map(|p| p.value().to_vec());
        match pvno.as_deref() {
            Some([3]) => Unreadable {
                why: "pvno 3 (cmp2021) is not spoken here: send pvno 2 (cmp2000)".into(),
                fail: PkiFailureInfoValues::UnsupportedVersion,
                header: None,
            },
            _ => Unreadable::format(format!("the header does not parse: {e}")),
        }
    })?;
    if header.pvno != Pvno::Cmp2000 {
        return Err(Unreadable {
            why: "pvno must be 2 (cmp2000)".into(),
            fail: PkiFailureInfoValues::UnsupportedVersion,
            header: Some(Box::new(header)),
        });
    }
    let tag = match envelope.body.tag() {
        Tag::ContextSpecific {
            constructed: true,
            number,
        } => number.value(),
        _ => {
            return Err(Unreadable {
                header: Some(Box::new(header)),
                ..Unreadable::format("the body is not a tagged PKIBody")
            });
        }
    };
    let mut protected_part = Vec::with_capacity(bytes.len());
    SequenceOfTwo(&envelope.header, &envelope.body)
        .encode_to_vec(&mut protected_part)
        .map_err(|e| Unreadable::format(e.to_string()))?;
    Ok(Request {
        header,
        kind: Kind::of(tag),
        content: envelope.body.value(),
        protected_part,
        protection: envelope.protection,
        extra_certs: envelope
            .extra_certs
            .unwrap_or_default()
            .iter()
            .map(|cert| any_tlv(bytes, cert))
            .collect::<Result<_, _>>()?,
    })
}

/// The bytes of `any`'s whole TLV within `bytes`, which holds it.
fn any_tlv<'a>(bytes: &'a [u8], any: &AnyRef<'_>) -> Result<&'a [u8], Unreadable<'a>> {
    let value = any.value();
    let start = (value.as_ptr() as usize)
        .checked_sub(bytes.as_ptr() as usize)
        .filter(|start| *start + value.len() <= bytes.len())
        .ok_or_else(|| Unreadable::format("an element outside the message"))?;
    let header_len = usize::try_from(
        any.header()
            .and_then(|h| h.encoded_len())
            .map_err(|e| Unreadable::format(e.to_string()))?,
    )
    .map_err(|e| Unreadable::format(e.to_string()))?;
    let begin = start
        .checked_sub(header_len)
        .ok_or_else(|| Unreadable::format("an element outside the message"))?;
    Ok(&bytes[begin..start + value.len()])
}

/// `SEQUENCE { a, b }` of two elements as they are.
struct SequenceOfTwo<'a, 'b>(&'b AnyRef<'a>, &'b AnyRef<'a>);

impl Encode for SequenceOfTwo<'_, '_> {
    fn encoded_len(&self) -> der::Result<der::Length> {
        let inner = (self.0.encoded_len()? + self.1.encoded_len()?)?;
        inner.for_tlv()
    }

    fn encode(&self, writer: &mut impl der::Writer) -> der::Result<()> {
        let inner = (self.0.encoded_len()? + self.1.encoded_len()?)?;
        der::Header::new(Tag::Sequence, inner)?.encode(writer)?;
        self.0.encode(writer)?;
        self.1.encode(writer)
    }
}

/// `[n] EXPLICIT content` (a PKIBody choice), DER.
pub fn body(tag: u8, content: &[u8]) -> Result<Vec<u8>, der::Error> {
    let any = AnyRef::new(
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::new(tag),
        },
        content,
    )?;
    any.to_der()
}

/// The answer's header: to the request's sender, its transaction and nonce, a fresh
/// nonce and the time (RFC 9483 §3.1), `general_info` as given.
pub fn reply_header<'a>(
    request: Option<&PkiHeader<'_>>,
    sender: GeneralName,
    sender_kid: Option<OctetString>,
    protection_alg: Option<x509_cert::spki::AlgorithmIdentifierOwned>,
    general_info: Option<Vec<cmpv2::r#gen::InfoTypeAndValue>>,
    free_text: Option<Vec<Utf8StringRef<'a>>>,
) -> Result<PkiHeader<'a>, der::Error> {
    let mut nonce = [0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| der::ErrorKind::Failed)?;
    let now = GeneralizedTime::from_system_time(std::time::SystemTime::now())?;
    let empty_name = || GeneralName::DirectoryName(x509_cert::name::Name::default());
    Ok(PkiHeader {
        pvno: Pvno::Cmp2000,
        sender,
        recipient: request.map_or_else(empty_name, |h| h.sender.clone()),
        message_time: Some(now),
        protection_alg,
        sender_kid,
        recip_kid: request.and_then(|h| h.sender_kid.clone()),
        trans_id: match request.and_then(|h| h.trans_id.clone()) {
            Some(id) => Some(id),
            None => {
                let mut id = [0u8; 16];
                aws_lc_rs::rand::fill(&mut id).map_err(|_| der::ErrorKind::Failed)?;
                Some(OctetString::new(id.to_vec())?)
            }
        },
        sender_nonce: Some(OctetString::new(nonce.to_vec())?),
        recip_nonce: request.and_then(|h| h.sender_nonce.clone()),
        free_text,
        general_info,
    })
}

/// `SEQUENCE { header, body }`, DER: what the protection covers.
pub fn protected_part(header_der: &[u8], body_der: &[u8]) -> Result<Vec<u8>, der::Error> {
    let (header, body) = (AnyRef::from_der(header_der)?, AnyRef::from_der(body_der)?);
    SequenceOfTwo(&header, &body).to_der()
}

/// The whole message, DER.
pub fn message(
    header_der: &[u8],
    body_der: &[u8],
    protection: Option<BitString>,
    extra_certs: &[Vec<u8>],
) -> Result<Vec<u8>, der::Error> {
    let certs = extra_certs
        .iter()
        .map(|der| AnyRef::from_der(der))
        .collect::<Result<Vec<_>, _>>()?;
    Envelope {
        header: AnyRef::from_der(header_der)?,
        body: AnyRef::from_der(body_der)?,
        protection,
        extra_certs: (!certs.is_empty()).then_some(certs),
    }
    .to_der()
}

/// `PKIStatusInfo` with no failure (an acceptance).
pub fn accepted<'a>() -> PkiStatusInfo<'a> {
    PkiStatusInfo {
        status: PkiStatus::Accepted,
        status_string: None,
        fail_info: None,
    }
}

/// `PKIStatusInfo` of a rejection, with its failure bit written here: the `der` crate
/// writes a `FlagSet` with its bits in another order than RFC 4210 §5.2.3's named bits.
#[derive(Sequence)]
pub struct Rejection<'a> {
    status: PkiStatus,
    status_string: Option<Vec<Utf8StringRef<'a>>>,
    fail_info: Option<BitString>,
}

impl<'a> Rejection<'a> {
    pub fn new(fail: PkiFailureInfoValues, text: &'a str) -> Result<Self, der::Error> {
        let bit = fail as usize;
        let mut bytes = vec![0u8; bit / 8 + 1];
        bytes[bit / 8] = 0x80 >> (bit % 8);
        Ok(Self {
            status: PkiStatus::Rejection,
            status_string: Some(vec![Utf8StringRef::new(text)?]),
            fail_info: Some(BitString::new((7 - bit % 8) as u8, bytes)?),
        })
    }
}

/// `ErrorMsgContent ::= SEQUENCE { pKIStatusInfo, errorCode INTEGER OPTIONAL,
/// errorDetails PKIFreeText OPTIONAL }` (RFC 4210 §5.3.21); `cmpv2`'s own type cannot be
/// built outside the crate.
#[derive(Sequence)]
pub struct ErrorContent<'a> {
    pub status: Rejection<'a>,
}

/// A `CertRepMessage` (RFC 4210 §5.3.4) of one response that grants a certificate: the
/// shape of `ip`, `cp` and `kup`. The certificates are written as they were issued, each
/// DER whole, rather than decoded into structures to be encoded back.
#[derive(Sequence)]
pub struct Granted<'a> {
    /// `caPubs`: the trust anchors, sent with `ip` (RFC 9483 §4.1.1).
    #[asn1(
        context_specific = "1",
        tag_mode = "EXPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub ca_pubs: Option<Vec<AnyRef<'a>>>,
    pub response: [GrantedResponse<'a>; 1],
}

/// A `CertResponse` with `certifiedKeyPair` holding the certificate (`certOrEncCert`'s
/// `certificate [0]`) and no `rspInfo`.
#[derive(Sequence)]
pub struct GrantedResponse<'a> {
    pub cert_req_id: der::asn1::Int,
    pub status: PkiStatusInfo<'a>,
    pub certified_key_pair: CertifiedCertificate<'a>,
}

/// `CertifiedKeyPair` of a certificate alone (RFC 4210 §5.3.4).
#[derive(Sequence)]
pub struct CertifiedCertificate<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", constructed = "true")]
    pub certificate: AnyRef<'a>,
}

#[cfg(test)]
mod tests {
    use cmpv2::certified_key_pair::{CertOrEncCert, CertifiedKeyPair};
    use cmpv2::response::{CertRepMessage, CertResponse};

    use super::*;

    /// [`Granted`] writes what `cmpv2`'s typed `CertRepMessage` writes for the same
    /// certificates, byte for byte, with and without `caPubs`.
    #[test]
    fn granted_is_the_typed_cert_rep_message() {
        let certificate = |name: &str| {
            rcgen::generate_simple_self_signed(vec![name.to_owned()])
                .unwrap()
                .cert
                .der()
                .to_vec()
        };
        let (leaf, anchor) = (certificate("leaf"), certificate("anchor"));
        let typed = |der: &[u8]| x509_cert::Certificate::from_der(der).unwrap();
        for with_anchor in [false, true] {
            let id = der::asn1::Int::new(&[7]).unwrap();
            let ours = Granted {
                ca_pubs: with_anchor.then(|| vec![AnyRef::from_der(&anchor).unwrap()]),
                response: [GrantedResponse {
                    cert_req_id: id.clone(),
                    status: accepted(),
                    certified_key_pair: CertifiedCertificate {
                        certificate: AnyRef::from_der(&leaf).unwrap(),
                    },
                }],
            }
            .to_der()
            .unwrap();
            let theirs = CertRepMessage {
                ca_pubs: with_anchor.then(|| vec![typed(&anchor)]),
                response: vec![CertResponse {
                    cert_req_id: id,
                    status: accepted(),
                    certified_key_pair: Some(CertifiedKeyPair {
                        cert_or_enc_cert: CertOrEncCert::Certificate(Box::new(typed(&leaf))),
                        priv_key: None,
                        publication_info: None,
                    }),
                    rsp_info: None,
                }],
            }
            .to_der()
            .unwrap();
            assert_eq!(ours, theirs, "caPubs: {with_anchor}");
        }
    }
}
