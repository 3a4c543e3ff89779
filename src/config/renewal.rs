//! `[renewal]`: how long after expiry a certificate may still be renewed, and what happens
//! to the one it replaces.

use std::time::Duration;

use serde::Deserialize;

/// `POST /api/v1/renew`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenewalSettings {
    /// How many days after its notAfter a certificate may still renew; 0: only before.
    pub after_expiry_days: u32,
    /// Revoke the certificate a renewal replaces (reason `superseded`); on by default, so
    /// that a device holds one valid certificate, not one per renewal.
    pub revoke_previous: bool,
    /// Refuse renewal proofs (JWTs) that do not name the CSR's key (`csr_key`): on once
    /// every device's renewal client sends it (`provisiond renew` does from this version;
    /// `provisiond_renewal_unbound_proofs_total` counts those still accepted).
    pub require_bound_proof: bool,
}

impl Default for RenewalSettings {
    fn default() -> Self {
        Self {
            after_expiry_days: 0,
            revoke_previous: true,
            require_bound_proof: false,
        }
    }
}

impl RenewalSettings {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(u64::from(self.after_expiry_days) * 86_400)
    }
}
