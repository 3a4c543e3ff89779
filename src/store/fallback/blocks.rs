//! Blocks kept beside the CA while Redis holds them ([`BlocksFile`]), and put back when
//! Redis lost them: when this instance first reaches Redis, and after each loss of writes
//! the health check finds (a new epoch).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::FallbackStore;
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::registry::{Reason, Revocation};
use crate::store::blocks_file::{BlocksFile, Standing};
use crate::store::{CertificateRegistry, RedisStore, StoreError, TokenStore};

/// No epoch restored yet.
pub(super) const NEVER: u64 = u64::MAX;

impl FallbackStore {
    /// Keeps the blocks Redis holds in `file` too (with Redis on; with Redis off the
    /// registry's own file keeps them).
    pub fn with_blocks_file(mut self, file: BlocksFile) -> Self {
        if self.redis.is_some() {
            self.blocks = Some(Arc::new(file));
        }
        self
    }

    /// Writes the device's change to the blocks file, synced, off the request's thread.
    /// Best effort: Redis holds the change already, and a revocation must not stop
    /// half-way because a backup copy could not be written; a failure is logged as an
    /// error, for the operator to mend the file.
    pub(super) async fn file_block(&self, device: &DeviceId, standing: Standing) {
        let Some(file) = self.blocks.clone() else {
            return;
        };
        let device = device.clone();
        let shown = device.clone();
        let written = tokio::task::spawn_blocking(move || file.note(&device, standing)).await;
        if let Err(e) = written.map_err(std::io::Error::other).and_then(|w| w) {
            tracing::error!(
                device_id = %shown,
                file = crate::store::BLOCKS_FILE,
                error = %e,
                "the blocks file beside the CA could not be written: redis holds this \
                 change, but would not get it back from the file should it lose it"
            );
        }
    }

    /// Puts back every block of the file that Redis lost, once per epoch, and revokes
    /// the certificates such a device got while its block was missing (as blocking
    /// would have).
    pub(super) async fn restore_blocks(&self, redis: &RedisStore) -> Result<(), StoreError> {
        let Some(file) = self.blocks.clone() else {
            return Ok(());
        };
        let epoch = redis.epoch();
        if self.blocks_restored.load(Ordering::SeqCst) == epoch {
            return Ok(());
        }
        let read = tokio::task::spawn_blocking(move || file.blocked())
            .await
            .map_err(std::io::Error::other)
            .and_then(|read| read);
        let blocked = match read {
            Ok(blocked) => blocked,
            // Said once per epoch, and tried again at every reconcile; the rest of the
            // reconcile (outage records, stale tokens) must not wait for the file.
            Err(e) => {
                if self.blocks_unreadable.swap(epoch, Ordering::SeqCst) != epoch {
                    tracing::error!(
                        file = crate::store::BLOCKS_FILE,
                        error = %e,
                        "the blocks file beside the CA cannot be read: blocks redis lost \
                         are not put back until it is mended"
                    );
                }
                return Ok(());
            }
        };
        for (device, block) in blocked {
            let (stands, restored) = redis.restore_block(&device, block).await?;
            if !stands {
                continue;
            }
            if restored {
                tracing::warn!(
                    target: "audit",
                    event = "device_blocked",
                    device_id = %device,
                    reason = block.reason.as_str(),
                    "redis had lost this block: it is back, from the blocks file beside the CA"
                );
            }
            // Also when the block stood already: a pass cut off after putting it back
            // left these for this one.
            let now = unix_now();
            for record in redis.certificates_of(&device).await? {
                // A block that stood in Redis: only what was issued in a later second. One
                // of the block's own second is the revoke-and-block's, which is revoking
                // it with its own reason as this pass runs (times are whole seconds), and
                // this pass must not race it to `privilegeWithdrawn`. A block Redis had
                // lost: from its second on, as ever.
                let after_block = if restored {
                    record.issued_at >= block.at
                } else {
                    record.issued_at > block.at
                };
                if record.status(now) != "valid" || !after_block {
                    continue;
                }
                let withdrawn = Revocation {
                    at: now,
                    reason: Reason::PrivilegeWithdrawn,
                };
                redis.revoke(&record.serial, withdrawn).await?;
                tracing::warn!(
                    target: "audit",
                    event = "certificate_revoked",
                    device_id = %device,
                    serial = %record.serial_hex(),
                    reason = "privilegeWithdrawn",
                    "a certificate issued while redis had lost the device's block is revoked"
                );
            }
        }
        self.blocks_restored.store(epoch, Ordering::SeqCst);
        Ok(())
    }
}
