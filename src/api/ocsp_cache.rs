//! Signed OCSP responses kept for requests without a nonce (RFC 5019 §2.2: a responder
//! may answer from responses it produced before). The statuses are read from the
//! registry for every request and compared with those a kept response says, so a
//! revocation is answered `revoked` at once; what is saved is the signature, which for a
//! CA key in a token is a token operation. A kept response is used for half its
//! validity (as the CRL is re-signed at half its life), and never past the delegated
//! responder certificate that signed it.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;

use crate::ca::CertStatus;

/// Responses kept per instance; when full, the oldest half is dropped.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct OcspCache {
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
}

struct Entry {
    statuses: Vec<CertStatus>,
    der: Vec<u8>,
    signed_at: OffsetDateTime,
    use_until: OffsetDateTime,
}

impl OcspCache {
    /// The response kept for the CertIDs `key` when it says `statuses` and may still be
    /// used at `now`.
    pub fn get(&self, key: &[u8], statuses: &[CertStatus], now: OffsetDateTime) -> Option<Vec<u8>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|e| e.statuses == statuses && now < e.use_until)
            .map(|e| e.der.clone())
    }

    /// Keeps `der`, signed at `signed_at` and usable until `use_until`, for `key`.
    pub fn put(
        &self,
        key: Vec<u8>,
        statuses: Vec<CertStatus>,
        der: Vec<u8>,
        (signed_at, use_until): (OffsetDateTime, OffsetDateTime),
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            let mut ages: Vec<OffsetDateTime> = entries.values().map(|e| e.signed_at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            entries.retain(|_, e| e.signed_at > cut);
        }
        entries.insert(
            key,
            Entry {
                statuses,
                der,
                signed_at,
                use_until,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_response_is_used_only_for_the_same_statuses_and_in_time() {
        let cache = OcspCache::default();
        let now = OffsetDateTime::now_utc();
        let until = now + time::Duration::hours(1);
        cache.put(
            b"id".to_vec(),
            vec![CertStatus::Good],
            b"der".to_vec(),
            (now, until),
        );
        assert_eq!(
            cache.get(b"id", &[CertStatus::Good], now).as_deref(),
            Some(&b"der"[..])
        );
        assert_eq!(cache.get(b"id", &[CertStatus::Unknown], now), None);
        assert_eq!(cache.get(b"other", &[CertStatus::Good], now), None);
        assert_eq!(cache.get(b"id", &[CertStatus::Good], until), None);
    }

    #[test]
    fn stays_within_its_capacity() {
        let cache = OcspCache::default();
        let now = OffsetDateTime::now_utc();
        for i in 0..CAPACITY + 10 {
            let at = now + time::Duration::seconds(i as i64);
            cache.put(
                i.to_be_bytes().to_vec(),
                vec![],
                vec![],
                (at, at + time::Duration::hours(1)),
            );
        }
        let kept = cache.entries.lock().unwrap().len();
        assert!(kept <= CAPACITY && kept > CAPACITY / 4, "{kept}");
        // The newest is kept.
        let newest = (CAPACITY + 9).to_be_bytes();
        assert!(cache.get(&newest, &[], now).is_some());
    }
}
