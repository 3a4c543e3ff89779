//! Certificates created over MQTT and not registered yet: at most
//! [`MAX_PER_CLAIM`] per claim at once, and each revoked when its hour passes without a
//! RegisterThing.
//!
//! Kept in this instance's memory: the SDK registers on the connection that created, so
//! the instance that issued a certificate is the one that sees it registered. The sweep
//! also reads the token store, which every instance shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::Data;

use crate::api::AppState;
use crate::audit::Actor;
use crate::clock::unix_now;
use crate::domain::{DeviceId, Jti};
use crate::registry::{Reason, Revocation};
use crate::store::TokenStore;

/// Certificates one claim may have created and not registered at once (in one instance):
/// a factory line registers each device seconds after creating it, and a claim that
/// leaked cannot fill the registry and the CRL with certificates no device finished.
pub const MAX_PER_CLAIM: usize = 100;

#[derive(Default)]
struct Table {
    /// Certificate serial → the claim that created it.
    claim_of: HashMap<[u8; 16], [u8; 16]>,
    per_claim: HashMap<[u8; 16], usize>,
}

/// The unregistered certificates of this instance.
#[derive(Default, Clone)]
pub struct Unregistered(Arc<Mutex<Table>>);

impl Unregistered {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `claim` may create one more certificate now.
    pub fn room_for(&self, claim: &[u8; 16]) -> bool {
        self.table().per_claim.get(claim).copied().unwrap_or(0) < MAX_PER_CLAIM
    }

    /// `serial`, created with `claim` for `device`, waits for its registration; revoked
    /// by `state` after `within` unless it came.
    pub fn wait(
        &self,
        state: Data<AppState>,
        claim: [u8; 16],
        device: DeviceId,
        serial: [u8; 16],
        within: Duration,
    ) {
        self.add(claim, serial);
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(within).await;
            if !this.take(&serial) {
                // Registered here.
                return;
            }
            // Not registered here. Its ownership token still pending: never registered.
            // Another token pending instead (the device onboarded again meanwhile): not
            // registered here either, and not by that token. None: used, by a
            // registration on another instance.
            match state.store.pending(&device).await {
                Ok(Some((pending, facts))) => {
                    let jti = Jti::from_bytes(serial);
                    if pending == jti {
                        let _ = state.store.consume(&device, &jti, facts.epoch, None).await;
                    }
                    revoke(&state, &device, serial).await;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, device_id = %device, "mqtt: the sweep of an unregistered certificate could not read the store")
                }
            }
        });
    }

    fn add(&self, claim: [u8; 16], serial: [u8; 16]) {
        let mut table = self.table();
        if table.claim_of.insert(serial, claim).is_none() {
            *table.per_claim.entry(claim).or_default() += 1;
        }
    }

    /// Takes `serial` off the waiting list (its registration came, or its sweep): `true`
    /// when it was still waiting.
    pub fn take(&self, serial: &[u8; 16]) -> bool {
        let mut table = self.table();
        let Some(claim) = table.claim_of.remove(serial) else {
            return false;
        };
        if let Some(count) = table.per_claim.get_mut(&claim) {
            *count -= 1;
            if *count == 0 {
                table.per_claim.remove(&claim);
            }
        }
        true
    }
}

/// Revokes `device`'s certificate `serial`, which no device finished provisioning with
/// (cessationOfOperation), and publishes the CRL.
pub async fn revoke(state: &AppState, device: &DeviceId, serial: [u8; 16]) {
    let revocation = Revocation {
        at: unix_now(),
        reason: Reason::CessationOfOperation,
    };
    match state
        .lifecycle
        .revoke(&serial, revocation, &Actor::default())
        .await
    {
        Ok(_) => {
            tracing::info!(device_id = %device, serial = %hex::encode_upper(serial), "mqtt: an unregistered certificate revoked");
            state.lifecycle.refresh_crl().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, device_id = %device, "mqtt: an unregistered certificate could not be revoked")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_has_room_until_its_certificates_are_registered() {
        let waiting = Unregistered::default();
        let (claim, other) = ([1; 16], [2; 16]);
        for n in 0..MAX_PER_CLAIM {
            assert!(waiting.room_for(&claim));
            waiting.add(claim, [n as u8 + 10; 16]);
        }
        assert!(!waiting.room_for(&claim));
        assert!(waiting.room_for(&other), "each claim has its own room");
        // Registered: room again, and its sweep finds it gone.
        assert!(waiting.take(&[10; 16]));
        assert!(waiting.room_for(&claim));
        assert!(!waiting.take(&[10; 16]));
        // A serial added twice counts once.
        waiting.add(claim, [11; 16]);
        assert!(waiting.room_for(&claim));
        assert!(!waiting.take(&[255; 16]));
    }
}
