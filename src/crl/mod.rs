//! Publishing the CRL: which one is current, and when to sign the next.
//!
//! Time is cut into slots of half the CRL's validity. A CRL's thisUpdate is the start of
//! its slot or the moment of the latest revocation, whichever is later, back-dated five
//! minutes for brokers whose clocks run behind; its nextUpdate one validity after that; its number that moment in unix milliseconds (revocations
//! get distinct moments from the store). So every instance signs the same CRL number
//! for the same revocations without talking to the others, a new CRL is signed at each
//! slot boundary (brokers always hold one with at least half its life left) and at each
//! revocation, and the number only grows. OpenSSL-based brokers refuse every client once
//! a CRL's nextUpdate has passed, which is why the refresh comes this early.
//!
//! A CRL is only ever built from the whole revoked list. While the store cannot give it
//! (Redis away), revocations are refused, so the list this instance last read is still
//! the whole list: at a new slot the CRL is re-signed from it, and brokers never see
//! one pass its nextUpdate. Before the first read, none is served. What a CRL listed
//! stays listed until its certificate expires, even when the store lost it: the
//! publisher keeps it, and so does [`ListedFile`] beside the CA, for instances started
//! after the loss. A number is never lower than one published before (the same file
//! keeps the highest): a restart that lost the list's revision continues above it.

mod listed;

pub use listed::{LISTED_FILE, ListedFile};

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::ca::{Issuers, RevocationReason, RevokedEntry, SignedCrl};
use crate::metrics::Metrics;
use crate::registry::{Reason, Revocation};
use crate::store::{CertificateRegistry, RevokedCertificate, RevokedList};

/// How often the publisher looks for revocations (made through other instances) and
/// for a new slot.
const CHECK_EVERY: Duration = Duration::from_secs(2);

pub struct CrlPublisher {
    issuers: Arc<Issuers>,
    registry: Arc<dyn CertificateRegistry>,
    validity: Duration,
    current: RwLock<Option<Arc<Published>>>,
    metrics: Arc<Metrics>,
    /// Every revocation listed so far whose certificate has not expired: the store's,
    /// and those it lost.
    listed: Mutex<Vec<RevokedCertificate>>,
    file: Option<ListedFile>,
    /// Why the last refresh failed, if it did: what `/api/v1/crl` says while it has none.
    failure: Mutex<Option<CrlFailure>>,
}

/// Why no CRL could be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlFailure {
    /// The revoked list cannot be read (Redis away): a CRL is only built from all of it.
    Storage(String),
    /// Anything else, in words: signing failed, or the CA cannot sign CRLs.
    Signing(String),
}

/// The CRLs signed from one read of the revoked list, one per issuer (in
/// [`Issuers`]' order, all with one number and one thisUpdate), and what they were made
/// from.
pub struct Published {
    crls: Vec<SignedCrl>,
    /// Which of them `/api/v1/crl` serves without `?issuer=` ([`Issuers::crl_default`]).
    default: usize,
    slot_start: OffsetDateTime,
    revision: u64,
    revoked: Vec<RevokedCertificate>,
}

impl Published {
    /// The CRL `/api/v1/crl` serves without `?issuer=`.
    pub fn crl(&self) -> &SignedCrl {
        &self.crls[self.default]
    }

    /// The highest number among them (one kept from before, while its issuer could
    /// not sign, is lower).
    pub fn number(&self) -> u64 {
        self.crls.iter().map(|c| c.number).max().unwrap_or(0)
    }

    /// The CRL of the issuer at `index` in [`Issuers`]' order.
    pub fn of_issuer(&self, index: usize) -> Option<&SignedCrl> {
        self.crls.get(index)
    }
}

impl CrlPublisher {
    /// Tries to sign the first CRL at once; [`CrlPublisher::spawn`] keeps trying. With
    /// `file`, it starts from what that file listed, and adds to it.
    pub async fn new(
        issuers: Arc<Issuers>,
        registry: Arc<dyn CertificateRegistry>,
        validity: Duration,
        metrics: Arc<Metrics>,
        file: Option<ListedFile>,
    ) -> Arc<Self> {
        let listed = file.as_ref().map(ListedFile::load).unwrap_or_default();
        let publisher = Arc::new(Self {
            issuers,
            registry,
            validity,
            current: RwLock::new(None),
            metrics,
            listed: Mutex::new(listed),
            file,
            failure: Mutex::new(None),
        });
        if let Err(e) = publisher.refresh().await {
            tracing::warn!(error = %e, "no CRL yet: the revoked list cannot be read; retrying");
        }
        publisher
    }

    /// nextUpdate - thisUpdate of what it signs (`ca.crl_validity_hours`); OCSP answers
    /// are valid as long.
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// The CRL to serve; `None` until one could be built from the whole revoked list.
    pub fn current(&self) -> Option<Arc<Published>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The revocation this instance's CRLs list for `serial`, if any: also one the store
    /// has lost, which the CRL keeps until the certificate expires.
    pub fn listed_revocation(&self, serial: &[u8; 16]) -> Option<Revocation> {
        let current = self.current();
        let in_current = current
            .iter()
            .flat_map(|p| p.revoked.iter())
            .find(|r| &r.serial == serial)
            .map(|r| r.revocation);
        in_current.or_else(|| {
            self.listed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|r| &r.serial == serial)
                .map(|r| r.revocation)
        })
    }

    /// Signs a new CRL when a slot has begun or something was revoked; `true` when it did.
    pub async fn refresh(self: &Arc<Self>) -> anyhow::Result<bool> {
        self.refresh_at(OffsetDateTime::now_utc()).await
    }

    /// Why the last refresh failed, when it did.
    pub fn failure(&self) -> Option<CrlFailure> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// [`CrlPublisher::refresh`] as at `now` (the tests' clock).
    pub async fn refresh_at(self: &Arc<Self>, now: OffsetDateTime) -> anyhow::Result<bool> {
        let result = self.try_refresh_at(now).await;
        let failure = result.as_ref().err().map(|e| {
            if e.downcast_ref::<crate::store::StoreError>().is_some() {
                CrlFailure::Storage(format!("{e:#}"))
            } else {
                CrlFailure::Signing(format!("{e:#}"))
            }
        });
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = failure;
        result
    }

    async fn try_refresh_at(self: &Arc<Self>, now: OffsetDateTime) -> anyhow::Result<bool> {
        let (slot_start, _) = slot(self.validity, now);
        let (revoked, held) = match self.read_list(slot_start).await {
            Ok(Some(list)) => (list, false),
            Ok(None) => return Ok(false),
            Err(e) => match self.current() {
                // This instance cannot revoke meanwhile; another one that still reaches
                // Redis may, so the CRL re-signed from the list held is numbered below
                // any this slot's read of the list gets (see `number`).
                Some(current) if current.slot_start != slot_start => {
                    tracing::warn!(error = %e, "the revoked list cannot be read; re-signing the CRL from the list last read");
                    let list = RevokedList {
                        revision: current.revision,
                        entries: current.revoked.clone(),
                    };
                    (list, true)
                }
                _ => return Err(e),
            },
        };
        // Signing a long list takes a while (100,000 entries: about 300 ms) and the files
        // beside the CA are synced: neither may hold up an async worker serving requests.
        let publisher = Arc::clone(self);
        tokio::task::spawn_blocking(move || publisher.publish(revoked, held, slot_start, now))
            .await?
    }

    /// Signs the CRL of `revoked` (read at `now`, or `held` from the last read) and makes
    /// it current, unless a newer one is already.
    fn publish(
        &self,
        mut revoked: RevokedList,
        held: bool,
        slot_start: OffsetDateTime,
        now: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        self.keep_listed(&mut revoked.entries, now.unix_timestamp().max(0) as u64);
        let revised = OffsetDateTime::from_unix_timestamp((revoked.revision / 1000) as i64)?;
        // Never in the future: a broker refuses a CRL that is not valid yet, and the
        // revision comes from another clock.
        let this_update = slot_start.max(revised).min(now);
        let number = self.number_above_published(number(slot_start, revoked.revision, held));
        let entries: Vec<RevokedEntry> = revoked
            .entries
            .iter()
            .map(|r| RevokedEntry {
                serial: r.serial.to_vec(),
                revoked_at: OffsetDateTime::from_unix_timestamp(r.revocation.at as i64)
                    .unwrap_or(this_update),
                reason: crl_reason(r.revocation.reason),
            })
            .collect();
        // Signed earlier by the margin certificates' notBefore has: a broker whose clock
        // runs a few seconds behind would take a CRL signed this second as not yet valid,
        // and refuse every device until its clock caught up. The life stays `validity`.
        let this_update = this_update - crate::ca::BACKDATE;
        let next_update = this_update + time::Duration::seconds(self.validity.as_secs() as i64);
        // Every issuer lists every revoked serial: the registry keeps no issuer per
        // certificate, and a serial (128 random bits) another CA signed never matches
        // one of this CA's, so the extra entries cost bytes, not correctness.
        let (crls, all_signed) = self.sign_each(number, (this_update, next_update), &entries)?;
        let default = self.issuers.crl_default();
        let crl = &crls[default];
        tracing::info!(
            number,
            next_update = %crate::timefmt::rfc3339(crl.next_update),
            entries = crl.entries,
            "signed a new CRL"
        );
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        // A refresh racing another (the timer and a revocation) never puts an older CRL
        // back.
        if current.as_ref().is_some_and(|c| c.number() > number) {
            return Ok(false);
        }
        self.metrics.crl_entries.set(crl.entries as i64);
        self.metrics
            .crl_next_update
            .set(crl.next_update.unix_timestamp());
        if let Some(file) = &self.file
            && let Err(e) = file.published(crl.number)
        {
            tracing::warn!(error = %e, "cannot keep the CRL number beside the CA");
        }
        *current = Some(Arc::new(Published {
            crls,
            default,
            slot_start,
            // An issuer that kept its last CRL is tried again at the next check: a
            // revision no read of the list has makes that read differ.
            revision: if all_signed { revoked.revision } else { 0 },
            revoked: revoked.entries,
        }));
        Ok(true)
    }

    /// Each issuer's CRL of `entries`, and whether every issuer signed. With several
    /// issuers, one that cannot sign now (its token away) keeps the CRL it signed last
    /// while the others go on; with one, or when none signs, the refresh fails.
    fn sign_each(
        &self,
        number: u64,
        (this_update, next_update): (OffsetDateTime, OffsetDateTime),
        entries: &[RevokedEntry],
    ) -> anyhow::Result<(Vec<SignedCrl>, bool)> {
        let previous = self.current();
        let mut crls = Vec::with_capacity(self.issuers.len());
        let mut signed = 0;
        for (index, (name, ca)) in self.issuers.iter().enumerate() {
            let last = previous.as_ref().and_then(|p| p.of_issuer(index));
            // Signed already with this number (the retry after another issuer could not
            // sign): the same list, the same CRL; a long one is not signed again every
            // check while a token is away.
            if let Some(last) = last.filter(|l| l.number == number) {
                signed += 1;
                crls.push(last.clone());
                continue;
            }
            match ca.sign_crl(number, this_update, next_update, entries) {
                Ok(crl) => {
                    signed += 1;
                    crls.push(crl);
                }
                Err(e) => match last {
                    Some(last) if self.issuers.len() > 1 => {
                        tracing::warn!(issuer = name, error = %e, "this issuer cannot sign its CRL now; its last one is served until it can");
                        crls.push(last.clone());
                    }
                    _ => return Err(anyhow::anyhow!("issuer `{name}` cannot sign its CRL: {e}")),
                },
            }
        }
        if signed == 0 {
            anyhow::bail!("no issuer could sign its CRL");
        }
        Ok((crls, signed == self.issuers.len()))
    }

    /// The whole revoked list, or `None` when the current CRL already shows it and the
    /// slot has not changed.
    async fn read_list(&self, slot_start: OffsetDateTime) -> anyhow::Result<Option<RevokedList>> {
        let revision = self.registry.revision().await?;
        if let Some(current) = self.current()
            && current.slot_start == slot_start
            && current.revision == revision
        {
            return Ok(None);
        }
        Ok(Some(self.registry.revoked().await?))
    }

    /// `computed`, unless a CRL was published with that number or a higher one (by this
    /// instance, or from this certs directory before a restart): then one above it. Two
    /// instances that read the same list still agree, since the file only holds numbers
    /// they computed.
    fn number_above_published(&self, computed: u64) -> u64 {
        let current = self.current().map_or(0, |c| c.number());
        let filed = self.file.as_ref().map_or(0, ListedFile::last_number);
        let published = current.max(filed);
        if computed >= published {
            computed
        } else {
            published + 1
        }
    }

    /// A revocation never leaves the CRL before its certificate expires, even if the
    /// store lost it (Redis restarted without persistence): what was listed before stays
    /// listed. Adds those to `entries`, and what is new in `entries` to the file.
    fn keep_listed(&self, entries: &mut Vec<RevokedCertificate>, now: u64) {
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        listed.retain(|r| r.not_after > now);
        // Sets of serials: with 100,000 entries a pairwise comparison is 10^10 steps.
        let in_store: HashSet<[u8; 16]> = entries.iter().map(|e| e.serial).collect();
        let already: HashSet<[u8; 16]> = listed.iter().map(|r| r.serial).collect();
        let lost: Vec<RevokedCertificate> = listed
            .iter()
            .filter(|r| !in_store.contains(&r.serial))
            .copied()
            .collect();
        if !lost.is_empty() {
            tracing::warn!(
                count = lost.len(),
                "the store no longer holds revocations listed before; they stay in the CRL"
            );
        }
        let new: Vec<RevokedCertificate> = entries
            .iter()
            .filter(|e| !already.contains(&e.serial))
            .copied()
            .collect();
        entries.extend(lost);
        if new.is_empty() {
            return;
        }
        listed.extend(new);
        if let Some(file) = &self.file
            && let Err(e) = file.add(&listed)
        {
            tracing::warn!(error = %e, "cannot keep the listed revocations beside the CA");
        }
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
                if let Err(e) = publisher.refresh().await {
                    tracing::warn!(error = %e, "the CRL could not be refreshed; the current one stays");
                }
            }
        })
    }
}

fn crl_reason(reason: Reason) -> RevocationReason {
    match reason {
        Reason::Unspecified => RevocationReason::Unspecified,
        Reason::KeyCompromise => RevocationReason::KeyCompromise,
        Reason::CaCompromise => RevocationReason::CaCompromise,
        Reason::AffiliationChanged => RevocationReason::AffiliationChanged,
        Reason::Superseded => RevocationReason::Superseded,
        Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
        Reason::CertificateHold => RevocationReason::CertificateHold,
        Reason::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
        Reason::AaCompromise => RevocationReason::AaCompromise,
    }
}

/// A CRL's number: the start of its slot or its list's revision (unix ms), whichever is
/// later, so that instances reading the same list in the same slot sign the same number.
/// A list `held` from before Redis went away is numbered one below the slot's start: an
/// instance that still reads Redis may have listed more since, and its CRL must be the
/// higher, or a broker holding the held one would take it for the same.
fn number(slot_start: OffsetDateTime, revision: u64, held: bool) -> u64 {
    let slot_ms = slot_start.unix_timestamp() as u64 * 1000;
    if held {
        slot_ms - 1
    } else {
        slot_ms.max(revision)
    }
}

fn half(validity: Duration) -> time::Duration {
    time::Duration::seconds((validity.as_secs() / 2).max(1) as i64)
}

/// The slot `now` falls in: its start, and that start in unix seconds.
fn slot(validity: Duration, now: OffsetDateTime) -> (OffsetDateTime, u64) {
    let length = half(validity).whole_seconds();
    let start = now.unix_timestamp().div_euclid(length) * length;
    let start_time = OffsetDateTime::from_unix_timestamp(start).expect("a time after 1970");
    (start_time, start as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_half_the_validity_and_instances_in_one_slot_agree() {
        let validity = Duration::from_secs(24 * 3600);
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let (start, number) = slot(validity, t);
        assert_eq!(start.unix_timestamp() % (12 * 3600), 0);
        assert!(start <= t && t - start < time::Duration::hours(12));
        assert_eq!(number, start.unix_timestamp() as u64);
        let (later, next) = slot(validity, t + time::Duration::hours(12));
        assert_eq!(later - start, time::Duration::hours(12));
        assert!(next > number);
        for offset in [1, 60, 11 * 3600] {
            let inside = start + time::Duration::seconds(offset);
            assert_eq!(slot(validity, inside), (start, number));
        }
    }

    #[test]
    fn a_list_held_through_an_outage_is_numbered_below_any_read_of_the_slot() {
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let slot_ms = 1_800_000_000_000;
        assert_eq!(number(start, 1_799_000_000_000, false), slot_ms);
        assert_eq!(number(start, slot_ms + 7, false), slot_ms + 7);
        // Whatever another instance lists this slot, its number is higher.
        assert_eq!(number(start, 1_799_000_000_000, true), slot_ms - 1);
        assert!(number(start, 0, true) < number(start, 0, false));
    }
}
