//! The fleet listing in memory (Redis off): every device of the source, in id order,
//! the cursor being the last id listed.

use std::collections::BTreeMap;

use super::MemoryStore;
use crate::domain::DeviceId;
use crate::registry::CertificateRecord;
use crate::store::{FleetBatch, FleetSource};

impl MemoryStore {
    /// Devices whose id starts with `prefix` from `source`, after `cursor`, at most
    /// `wanted` of them.
    pub fn fleet_batch(
        &self,
        source: FleetSource,
        prefix: &str,
        cursor: Option<&str>,
        wanted: usize,
    ) -> FleetBatch {
        let mut found: BTreeMap<DeviceId, Vec<CertificateRecord>> = BTreeMap::new();
        let after = |device: &DeviceId| {
            device.as_str().starts_with(prefix) && cursor.is_none_or(|c| device.as_str() > c)
        };
        match source {
            FleetSource::Registry => {
                for record in self.certs().by_serial.values() {
                    if after(&record.device_id) {
                        let held = found.entry(record.device_id.clone()).or_default();
                        held.push(record.clone());
                    }
                }
            }
            FleetSource::Blocked => {
                for device in self.certs().blocked.keys().filter(|d| after(d)) {
                    found.insert(device.clone(), Vec::new());
                }
            }
            FleetSource::Pending => {
                let now = self.now_ms();
                for shard in self.shards.iter() {
                    let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                    for (device, entry) in &shard.tokens {
                        if entry.expires_ms > now && after(device) {
                            found.insert(device.clone(), Vec::new());
                        }
                    }
                }
            }
        }
        let more = found.len() > wanted;
        let devices: Vec<_> = found.into_iter().take(wanted).collect();
        let next = more
            .then(|| devices.last().map(|(d, _)| d.to_string()))
            .flatten();
        FleetBatch { devices, next }
    }
}
