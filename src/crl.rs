//! Publishing the CRL: which one is current, and when to sign the next.
//!
//! Time is cut into slots of half the CRL's validity. A CRL's thisUpdate is the start of
//! its slot, its nextUpdate one validity later, and its number the thisUpdate in unix
//! seconds: every instance computes the same CRL for the same slot without talking to
//! the others, a new one is signed at each slot boundary (half the validity, so brokers
//! always hold a CRL with at least half its life left), and the number only grows.
//! OpenSSL-based brokers refuse every client once a CRL's nextUpdate has passed, which
//! is why the refresh comes this early.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::ca::{CertificateAuthority, SignedCrl};
use crate::metrics::Metrics;

/// How often the publisher looks whether a new slot has begun.
const CHECK_EVERY: Duration = Duration::from_secs(30);

pub struct CrlPublisher {
    ca: Arc<CertificateAuthority>,
    validity: Duration,
    current: RwLock<Arc<SignedCrl>>,
    metrics: Arc<Metrics>,
}

impl CrlPublisher {
    /// Signs the CRL of the current slot (empty: nothing is revoked yet).
    pub fn new(
        ca: Arc<CertificateAuthority>,
        validity: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, rcgen::Error> {
        let first = sign(&ca, validity, OffsetDateTime::now_utc())?;
        let publisher = Arc::new(Self {
            ca,
            validity,
            current: RwLock::new(Arc::new(first)),
            metrics,
        });
        publisher.observe();
        Ok(publisher)
    }

    pub fn current(&self) -> Arc<SignedCrl> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Seconds until the current CRL is replaced, for caches.
    pub fn seconds_until_refresh(&self) -> u64 {
        let (slot_start, _) = slot(self.validity, OffsetDateTime::now_utc());
        let next = slot_start + half(self.validity);
        (next - OffsetDateTime::now_utc()).whole_seconds().max(0) as u64
    }

    /// Signs the next CRL when a new slot has begun; `true` when it did.
    pub fn refresh(&self) -> Result<bool, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        if slot(self.validity, now).0 == self.current().this_update {
            return Ok(false);
        }
        let next = sign(&self.ca, self.validity, now)?;
        tracing::info!(
            number = next.number,
            next_update = %next.next_update,
            entries = next.entries,
            "signed a new CRL"
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.observe();
        Ok(true)
    }

    fn observe(&self) {
        let crl = self.current();
        self.metrics.crl_entries.set(crl.entries as i64);
        self.metrics
            .crl_next_update
            .set(crl.next_update.unix_timestamp());
    }

    /// Refreshes until the publisher is dropped.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let publisher: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                let Some(publisher) = publisher.upgrade() else {
                    return;
                };
                if let Err(e) = publisher.refresh() {
                    tracing::error!(error = %e, "signing the CRL failed; the current one stays");
                }
            }
        })
    }
}

fn half(validity: Duration) -> time::Duration {
    time::Duration::seconds((validity.as_secs() / 2).max(1) as i64)
}

/// The slot `now` falls in: its start and the CRL number it gives.
fn slot(validity: Duration, now: OffsetDateTime) -> (OffsetDateTime, u64) {
    let length = half(validity).whole_seconds();
    let start = now.unix_timestamp().div_euclid(length) * length;
    let start_time = OffsetDateTime::from_unix_timestamp(start).expect("a time after 1970");
    (start_time, start as u64)
}

fn sign(
    ca: &CertificateAuthority,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<SignedCrl, rcgen::Error> {
    let (this_update, number) = slot(validity, now);
    let next_update = this_update + time::Duration::seconds(validity.as_secs() as i64);
    ca.sign_crl(number, this_update, next_update, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_half_the_validity_and_numbers_grow_with_them() {
        let validity = Duration::from_secs(24 * 3600);
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let (start, number) = slot(validity, t);
        assert_eq!(start.unix_timestamp() % (12 * 3600), 0);
        assert!(start <= t && t - start < time::Duration::hours(12));
        assert_eq!(number, start.unix_timestamp() as u64);
        let (later, next) = slot(validity, t + time::Duration::hours(12));
        assert_eq!(later - start, time::Duration::hours(12));
        assert!(next > number);
        // Anyone signing within the slot signs the same number and thisUpdate.
        for offset in [1, 60, 11 * 3600] {
            let inside = start + time::Duration::seconds(offset);
            assert_eq!(slot(validity, inside), (start, number));
        }
    }
}
