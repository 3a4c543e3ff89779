//! Which device ids may onboard at all: an optional pattern and an optional allowlist.

use std::collections::HashSet;

use regex::Regex;

use crate::config::{ConfigError, OnboardingSettings};
use crate::domain::DeviceId;
use crate::error::ApiError;

#[derive(Debug, Default)]
pub struct DevicePolicy {
    pattern: Option<Regex>,
    allowlist: Option<HashSet<String>>,
}

impl DevicePolicy {
    pub fn from_settings(settings: &OnboardingSettings) -> Result<Self, ConfigError> {
        let pattern = match &settings.device_id_pattern {
            Some(p) => Some(
                Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| ConfigError::key("onboarding.device_id_pattern", e))?,
            ),
            None => None,
        };
        let allowlist = match &settings.device_allowlist_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::key(
                        "onboarding.device_allowlist_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Some(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_owned)
                        .collect(),
                )
            }
            None => None,
        };
        Ok(Self { pattern, allowlist })
    }

    /// Whether it narrows the ids at all (a pattern, an allowlist).
    pub fn has_rules(&self) -> bool {
        self.pattern.is_some() || self.allowlist.is_some()
    }

    /// The pattern as configured, and how many ids the allowlist holds.
    pub fn describe(&self) -> (Option<String>, Option<usize>) {
        let pattern = self.pattern.as_ref().map(|p| {
            let full = p.as_str();
            full.strip_prefix("^(?:")
                .and_then(|p| p.strip_suffix(")$"))
                .unwrap_or(full)
                .to_owned()
        });
        (pattern, self.allowlist.as_ref().map(HashSet::len))
    }

    pub fn check(&self, device: &DeviceId) -> Result<(), ApiError> {
        let matches = self
            .pattern
            .as_ref()
            .is_none_or(|p| p.is_match(device.as_str()));
        let listed = self
            .allowlist
            .as_ref()
            .is_none_or(|list| list.contains(device.as_str()));
        if matches && listed {
            Ok(())
        } else {
            Err(ApiError::DeviceNotAllowed)
        }
    }
}
