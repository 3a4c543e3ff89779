//! The fleet listing on Redis: SCAN over the certificate buckets (or the pending and
//! blocked keys) of each primary, a batch at a time, never KEYS. A bucket holds every
//! record of the devices in its slot, so a device's certificates come whole.

use std::collections::BTreeMap;

use super::super::fleet::{FleetBatch, FleetSource, device_pattern};
use super::keys::device_in;
use super::{RedisStore, SCAN_BATCH};
use crate::domain::DeviceId;
use crate::registry::CertificateRecord;
use crate::store::StoreError;

/// SCAN calls one batch may make: a sparse keyspace answers a short (or empty) batch
/// with a cursor rather than keep Redis busy.
const SCANS_PER_BATCH: usize = 10;

impl RedisStore {
    /// Devices whose id starts with `prefix` from `source`, from `cursor` on, about
    /// `wanted` of them (whole buckets: a few more is possible); `None` when the cursor
    /// is none of ours.
    pub async fn fleet_batch(
        &self,
        source: FleetSource,
        prefix: &str,
        cursor: Option<&str>,
        wanted: usize,
    ) -> Result<Option<FleetBatch>, StoreError> {
        let Some(mut conns) = self.scan_connections().await else {
            return Err(StoreError::Unreachable("redis is unreachable".into()));
        };
        // Where the last batch stopped: a node, a SCAN cursor on it, and how many keys of
        // that cursor's reply were listed already (a batch stops at `wanted` devices,
        // inside a reply; the reply comes again for the same cursor while the keyspace
        // holds still, so a listing during changes may repeat or miss a device).
        let (mut node, mut at, mut skip) = match cursor {
            None => (0, 0, 0),
            Some(text) => match parse_cursor(text) {
                Some((node, at, skip)) if node < conns.len() => (node, at, skip),
                _ => return Ok(None),
            },
        };
        let escaped = self.keys.scan_pattern();
        let escaped = escaped.trim_end_matches('*');
        let pattern = match source {
            FleetSource::Registry => format!("{escaped}certs:*"),
            FleetSource::Pending => device_pattern(escaped, "device", prefix),
            FleetSource::Blocked => device_pattern(escaped, "blocked", prefix),
        };
        let kind_prefix = match source {
            FleetSource::Blocked => self.keys.blocked_prefix(),
            _ => self.keys.device_prefix(),
        };
        let mut found: BTreeMap<DeviceId, Vec<CertificateRecord>> = BTreeMap::new();
        let mut scans = 0;
        while node < conns.len() && found.len() < wanted && scans < SCANS_PER_BATCH {
            let conn = &mut conns[node];
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(at)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query_async(conn)
                .await
                .map_err(|e| self.fail(e))?;
            scans += 1;
            let mut listed = keys.len();
            for (i, key) in keys.iter().enumerate().skip(skip) {
                match source {
                    FleetSource::Registry => {
                        for record in self.bucket(conn, key).await? {
                            if record.device_id.as_str().starts_with(prefix) {
                                found
                                    .entry(record.device_id.clone())
                                    .or_default()
                                    .push(record);
                            }
                        }
                    }
                    FleetSource::Pending | FleetSource::Blocked => {
                        if let Some(device) = device_in(key, &kind_prefix) {
                            found.entry(device).or_default();
                        }
                    }
                }
                if found.len() >= wanted {
                    listed = i + 1;
                    break;
                }
            }
            if listed < keys.len() {
                skip = listed;
                break;
            }
            skip = 0;
            if next == 0 {
                (node, at) = (node + 1, 0);
            } else {
                at = next;
            }
        }
        let next = (node < conns.len()).then(|| format!("{node}-{at}-{skip}"));
        Ok(Some(FleetBatch {
            devices: found.into_iter().collect(),
            next,
        }))
    }
}

/// `<node>-<SCAN cursor>-<keys of its reply listed already>`.
fn parse_cursor(text: &str) -> Option<(usize, u64, usize)> {
    let mut parts = text.split('-');
    let cursor = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        assert_eq!(parse_cursor("2-1234-7"), Some((2, 1234, 7)));
        assert_eq!(parse_cursor("2-1234"), None);
        assert_eq!(parse_cursor("x-1-0"), None);
        assert_eq!(parse_cursor("1-2-3-4"), None);
    }
}
