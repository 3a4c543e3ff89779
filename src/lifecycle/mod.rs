//! The one issuing path and the one revocation path of DESIGN §6, below every front door.
//!
//! A door (the JSON API today; EST, CMP and MQTT next) authenticates the caller in its
//! own way and checks the CSR, then calls [`Lifecycle::enroll`] or [`Lifecycle::renew`]:
//! sign, consume the single-use credential and record the certificate in one atomic
//! store step, then audit and count. Revoking goes through [`Lifecycle::revoke`] and
//! [`Lifecycle::refresh_crl`]. The door turns the [`Certified`] answer, or the
//! [`ApiError`] code, back into its own encoding; no door signs, records or revokes on
//! its own.

mod issue;
mod revoke;

use std::sync::Arc;

use crate::activity::Activity;
use crate::audit::Audit;
use crate::ca::Issuers;
use crate::crl::CrlPublisher;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{FallbackStore, StoreError};

pub use issue::{Certified, Renewing, Vetted};
pub use revoke::Listing;

/// What issuing and revoking touch. Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Lifecycle {
    pub store: Arc<FallbackStore>,
    pub issuers: Arc<Issuers>,
    pub crl: Arc<CrlPublisher>,
    pub metrics: Arc<Metrics>,
    pub audit: Arc<Audit>,
    pub activity: Arc<Activity>,
    /// `renewal.revoke_previous`: a renewal supersedes the certificate it replaces.
    pub revoke_previous: bool,
}

/// A store that cannot answer, as a client is told: 503, with the time to wait when the
/// store knows it (Redis being checked for lost writes).
pub fn storage_error(e: StoreError) -> ApiError {
    tracing::warn!(error = %e, "token store unavailable");
    match e {
        StoreError::Unsure { retry_after } => ApiError::StorageRecovering(retry_after),
        StoreError::ReplicasMissing(why) => ApiError::StorageDegraded(why),
        _ => ApiError::StorageUnavailable,
    }
}
