//! Listing the fleet page by page, for operators (`GET /api/v1/devices`): where the
//! devices are found, and the opaque cursor that continues a listing.

use crate::domain::DeviceId;
use crate::registry::CertificateRecord;

/// Where a listing finds its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetSource {
    /// Devices with certificate records, each with all of them.
    Registry,
    /// Devices with a pending token (whether or not they have certificates).
    Pending,
    /// Blocked devices.
    Blocked,
}

/// One batch of devices: each with its records when the source is the registry (else
/// none yet), and the cursor that continues the listing (`None`: it is complete).
pub struct FleetBatch {
    pub devices: Vec<(DeviceId, Vec<CertificateRecord>)>,
    pub next: Option<String>,
}

/// The SCAN pattern of a source's keys under `prefix` (glob characters in the key
/// prefix escaped; a device id has none).
pub(super) fn device_pattern(escaped_key_prefix: &str, kind: &str, id_prefix: &str) -> String {
    format!("{escaped_key_prefix}{kind}:{{{id_prefix}*")
}
