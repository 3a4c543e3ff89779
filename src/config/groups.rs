//! `[[groups]]` and `groups_file`: enrollment groups, each with its own onboarding, device
//! ids, key types, validity, renewal and certificate profile. Read here; judged and
//! built in [`crate::groups`].

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

use super::{ConfigError, HookSettings, KeyList, OnboardingMode};
use crate::domain::KeyKind;
use crate::secret::Secret;

/// An extended key usage a group's certificates may carry (RFC 5280 §4.2.1.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ExtendedKeyUsage {
    #[serde(rename = "clientAuth")]
    ClientAuth,
    #[serde(rename = "serverAuth")]
    ServerAuth,
}

impl ExtendedKeyUsage {
    pub fn name(self) -> &'static str {
        match self {
            Self::ClientAuth => "clientAuth",
            Self::ServerAuth => "serverAuth",
        }
    }
}

/// The subject a group's certificates carry: templates with `{device_id}` and `{group}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubjectSettings {
    /// Default `{device_id}`.
    pub common_name: Option<String>,
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    /// Two letters (ISO 3166), after the templates are filled in.
    pub country: Option<String>,
}

/// `[groups.renewal]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupRenewalSettings {
    /// Renewal is taken only this many days before notAfter or later; none: any time.
    pub window_days: Option<u32>,
    /// How long after notAfter a certificate may still renew (default: `[renewal]`'s, and
    /// never more: the registry keeps records that long).
    pub after_expiry_days: Option<u32>,
}

/// One `[[groups]]` entry. Policy left out is the top-level one (`[ca]`, `[renewal]`,
/// `[hook]`); credentials and device ids are each group's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSettings {
    /// `[a-z0-9-]{1,32}`, unique.
    pub name: String,
    pub onboarding: OnboardingMode,
    pub enrollment_keys: KeyList,
    pub enrollment_keys_file: Option<PathBuf>,
    pub group_secret: Option<Secret>,
    pub group_secret_file: Option<PathBuf>,
    pub device_id_pattern: Option<String>,
    pub device_allowlist_file: Option<PathBuf>,
    /// None: the key types `[ca]` allows.
    pub key_types: Option<Vec<KeyKind>>,
    /// None: `ca.validity_days`.
    pub validity_days: Option<u32>,
    pub renewal: GroupRenewalSettings,
    pub subject: SubjectSettings,
    pub san_dns: Vec<String>,
    pub san_uris: Vec<String>,
    /// Default `["clientAuth"]`.
    pub extended_key_usage: Option<Vec<ExtendedKeyUsage>>,
    /// None: the top-level `[hook]`, if any.
    pub hook: Option<HookSettings>,
    /// The `[[issuers]]` entry that signs this group's certificates; none: the first.
    pub issuer: Option<String>,
    /// Its provisioning template over MQTT.
    pub mqtt: super::MqttTemplateSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupsFile {
    #[serde(default)]
    groups: Vec<GroupSettings>,
}

/// The groups of `groups_file` (`GROUPS_FILE`): a TOML file of `[[groups]]` only.
pub fn read_groups_file(path: &Path) -> Result<Vec<GroupSettings>, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError::key(
            "groups_file",
            format!("{} does not exist", path.display()),
        ));
    }
    Figment::from(Toml::file(path))
        .extract::<GroupsFile>()
        .map(|file| file.groups)
        .map_err(|e| {
            let at = e.path.join(".");
            ConfigError::key(
                "groups_file",
                format!("{} at `{at}`: {}", path.display(), e.kind),
            )
        })
}
