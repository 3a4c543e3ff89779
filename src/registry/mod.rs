//! What the server issued: a record per certificate (serial, device, validity, key type,
//! fingerprint, revocation), kept beside the tokens in the same stores.
//!
//! A record is written by the same atomic step that consumes the token (see
//! [`crate::store::TokenStore::consume`]), so no certificate leaves the server
//! unrecorded and a request that fails before signing leaves no record.

pub mod slots;

use std::fmt;

use crate::domain::DeviceId;

/// The group of records written before groups, and of a configuration without them.
pub const DEFAULT_GROUP: &str = "default";

/// How long a record is kept after its certificate expired, at the least (seconds).
pub const RETENTION_AFTER_EXPIRY_SECS: u64 = 30 * 24 * 3600;

/// How long records are kept after expiry (seconds) when a certificate may still renew
/// `renewal_grace` after its notAfter: longer than renewal accepts it, by a day, since the
/// record is what says a certificate is revoked, and a certificate without one never
/// renews.
pub fn retention_after_expiry(renewal_grace: std::time::Duration) -> u64 {
    RETENTION_AFTER_EXPIRY_SECS.max(renewal_grace.as_secs() + 86_400)
}

/// RFC 5280 revocation reasons (section 5.3.1), by their ASN.1 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl Reason {
    const ALL: [(Reason, &'static str, u8); 9] = [
        (Reason::Unspecified, "unspecified", 0),
        (Reason::KeyCompromise, "keyCompromise", 1),
        (Reason::CaCompromise, "cACompromise", 2),
        (Reason::AffiliationChanged, "affiliationChanged", 3),
        (Reason::Superseded, "superseded", 4),
        (Reason::CessationOfOperation, "cessationOfOperation", 5),
        (Reason::CertificateHold, "certificateHold", 6),
        (Reason::PrivilegeWithdrawn, "privilegeWithdrawn", 9),
        (Reason::AaCompromise, "aACompromise", 10),
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(r, ..)| *r)
    }

    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::ALL.iter().map(|(_, n, _)| *n)
    }

    /// The CRLReason code.
    pub fn code(self) -> u8 {
        Self::ALL
            .iter()
            .find(|(r, ..)| *r == self)
            .expect("listed")
            .2
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(.., c)| *c == code)
            .map(|(r, ..)| *r)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(r, ..)| *r == self)
            .expect("listed")
            .1
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// Unix seconds.
    pub at: u64,
    pub reason: Reason,
}

/// An operator's block on a device: it may not onboard or renew until it is lifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Unix seconds.
    pub at: u64,
    pub reason: Reason,
}

impl Block {
    /// The stored form: `<unix s>:<reason code>`.
    pub fn pack(&self) -> String {
        format!("{}:{}", self.at, self.reason.code())
    }

    pub fn unpack(text: &str) -> Option<Self> {
        let (at, code) = text.split_once(':')?;
        Some(Self {
            at: at.parse().ok()?,
            reason: Reason::from_code(code.parse().ok()?)?,
        })
    }
}

/// A certificate the server issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub serial: [u8; 16],
    pub device_id: DeviceId,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds.
    pub not_after: u64,
    /// As the metrics name it (`ecdsa-p256`, `rsa-2048`, ...).
    pub key_type: &'static str,
    pub fingerprint_sha256: [u8; 32],
    pub revocation: Option<Revocation>,
    /// The enrollment group it was issued under, which its renewals keep.
    pub group: String,
}

/// Key types as records store them (by their index, one byte) and as the metrics label
/// them: RSA by the sizes fleets use, so that an odd modulus length adds nothing.
pub const KEY_TYPES: &[&str] = &[
    "ecdsa-p256",
    "ecdsa-p384",
    "ed25519",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
    "rsa-other",
];

impl CertificateRecord {
    pub fn serial_hex(&self) -> String {
        hex::encode_upper(self.serial)
    }

    /// `valid`, `revoked` or `expired` at `now` (unix seconds).
    pub fn status(&self, now: u64) -> &'static str {
        match self.revocation {
            Some(_) => "revoked",
            None if self.not_after <= now => "expired",
            None => "valid",
        }
    }

    /// When its store may forget it, with records kept `retention` seconds after expiry
    /// ([`retention_after_expiry`]).
    pub fn keep_until(&self, retention: u64) -> u64 {
        self.not_after + retention
    }

    /// The stored form: compact, since a fleet has millions of these.
    ///
    /// ```text
    /// u8 id length | id | u32 issued_at | u32 not_after | u8 key type | [32] fingerprint
    /// | u8 group length | group | u32 revoked_at (0: not revoked) | u8 reason code
    /// ```
    ///
    /// The group `default` has no group field (the form written before groups, read by
    /// every version); another group is its length and name. The revocation is the last five
    /// bytes, which the revoke script rewrites in place.
    pub fn pack(&self) -> Vec<u8> {
        let id = self.device_id.as_str().as_bytes();
        // `default` in the form written before groups, which older versions still read.
        let group = match self.group.as_str() {
            DEFAULT_GROUP => None,
            name => Some(&name.as_bytes()[..name.len().min(255)]),
        };
        let mut out = Vec::with_capacity(1 + id.len() + 47 + group.map_or(0, <[u8]>::len));
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&(self.issued_at as u32).to_be_bytes());
        out.extend_from_slice(&(self.not_after as u32).to_be_bytes());
        let key_type = KEY_TYPES
            .iter()
            .position(|k| *k == self.key_type)
            .unwrap_or(KEY_TYPES.len() - 1);
        out.push(key_type as u8);
        out.extend_from_slice(&self.fingerprint_sha256);
        if let Some(group) = group {
            out.push(group.len() as u8);
            out.extend_from_slice(group);
        }
        let (at, reason) = self
            .revocation
            .map_or((0, 0), |r| (r.at as u32, r.reason.code()));
        out.extend_from_slice(&at.to_be_bytes());
        out.push(reason);
        out
    }

    pub fn unpack(serial: [u8; 16], bytes: &[u8]) -> Option<Self> {
        let (&len, rest) = bytes.split_first()?;
        let len = usize::from(len);
        let device_id = DeviceId::parse(std::str::from_utf8(rest.get(..len)?).ok()?).ok()?;
        let rest = &rest[len..];
        let group = match rest.len() {
            46 => DEFAULT_GROUP.to_owned(),
            n if n >= 47 && n == 47 + usize::from(rest[41]) => {
                match std::str::from_utf8(&rest[42..n - 5]).ok()? {
                    "" => DEFAULT_GROUP.to_owned(),
                    name => name.to_owned(),
                }
            }
            _ => return None,
        };
        let tail = &rest[rest.len() - 5..];
        let u32_at =
            |b: &[u8], i: usize| u64::from(u32::from_be_bytes(b[i..i + 4].try_into().unwrap()));
        let revoked_at = u32_at(tail, 0);
        Some(Self {
            serial,
            device_id,
            issued_at: u32_at(rest, 0),
            not_after: u32_at(rest, 4),
            key_type: KEY_TYPES.get(usize::from(rest[8]))?,
            fingerprint_sha256: rest[9..41].try_into().ok()?,
            revocation: (revoked_at != 0).then(|| Revocation {
                at: revoked_at,
                reason: Reason::from_code(tail[4]).unwrap_or(Reason::Unspecified),
            }),
            group,
        })
    }
}

/// Parses an upper- or lower-case hex serial of 16 bytes.
pub fn parse_serial(text: &str) -> Option<[u8; 16]> {
    let mut serial = [0u8; 16];
    hex::decode_to_slice(text, &mut serial).ok()?;
    Some(serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CertificateRecord {
        CertificateRecord {
            serial: slots::serial_in(42),
            device_id: DeviceId::parse("device-001").unwrap(),
            issued_at: 1_800_000_000,
            not_after: 1_831_536_000,
            key_type: "ed25519",
            fingerprint_sha256: [7; 32],
            revocation: None,
            group: DEFAULT_GROUP.into(),
        }
    }

    #[test]
    fn records_pack_and_unpack() {
        let mut r = record();
        assert_eq!(
            CertificateRecord::unpack(r.serial, &r.pack()),
            Some(r.clone())
        );
        r.revocation = Some(Revocation {
            at: 1_800_000_100,
            reason: Reason::KeyCompromise,
        });
        let packed = r.pack();
        assert_eq!(
            packed.len(),
            1 + 10 + 46,
            "default: the form from before groups"
        );
        assert_eq!(
            CertificateRecord::unpack(r.serial, &packed),
            Some(r.clone())
        );
        assert_eq!(CertificateRecord::unpack([0; 16], &packed[1..]), None);
        // A record of a named group; and one packed before groups, read as `default`.
        r.group = "gateways".into();
        assert_eq!(
            CertificateRecord::unpack(r.serial, &r.pack()),
            Some(r.clone())
        );
        let mut old = r.pack();
        old.drain(1 + 10 + 41..1 + 10 + 42 + 8);
        let read = CertificateRecord::unpack(r.serial, &old).unwrap();
        assert_eq!(
            (read.group.as_str(), read.revocation),
            (DEFAULT_GROUP, r.revocation)
        );
    }

    #[test]
    fn blocks_pack_and_unpack() {
        let block = Block {
            at: 1_800_000_000,
            reason: Reason::KeyCompromise,
        };
        assert_eq!(Block::unpack(&block.pack()), Some(block));
        assert_eq!(Block::unpack("1800000000"), None);
        assert_eq!(Block::unpack("x:1"), None);
        assert_eq!(Block::unpack("1:7"), None);
    }

    #[test]
    fn reasons_go_by_their_rfc_5280_names_and_codes() {
        for name in Reason::names() {
            let reason = Reason::parse(name).unwrap();
            assert_eq!(reason.as_str(), name);
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(Reason::parse("KeyCompromise"), None);
        assert_eq!(Reason::KeyCompromise.code(), 1);
    }
}
