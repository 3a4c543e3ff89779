//! `[onboarding]`: how a device proves it may enroll, and which device ids may.

use std::path::PathBuf;

use serde::Deserialize;

use super::values::KeyList;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnboardingMode {
    Open,
    #[default]
    Key,
    /// Per-device keys derived from a group secret; devices sign each request.
    Derived,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnboardingSettings {
    pub mode: OnboardingMode,
    /// Plain keys, or `sha256:<hex>` digests of keys.
    pub enrollment_keys: KeyList,
    pub enrollment_keys_file: Option<PathBuf>,
    /// The secret device keys are derived from (`derived` mode), at least 32 bytes.
    pub group_secret: Option<Secret>,
    pub group_secret_file: Option<PathBuf>,
    /// How far a device's clock may be from ours (`derived` mode); by default the one
    /// window every device-made time gets ([`crate::clock::DEVICE_CLOCK_SKEW_SECS`]).
    pub clock_skew_seconds: u64,
    /// Only device ids matching this regular expression (whole id) may onboard.
    pub device_id_pattern: Option<String>,
    /// Only device ids listed in this file (one per line) may onboard.
    pub device_allowlist_file: Option<PathBuf>,
}

impl Default for OnboardingSettings {
    fn default() -> Self {
        Self {
            mode: OnboardingMode::Key,
            enrollment_keys: KeyList::default(),
            enrollment_keys_file: None,
            group_secret: None,
            group_secret_file: None,
            clock_skew_seconds: crate::clock::DEVICE_CLOCK_SKEW_SECS,
            device_id_pattern: None,
            device_allowlist_file: None,
        }
    }
}
