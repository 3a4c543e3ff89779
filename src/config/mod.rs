//! Settings: defaults < `config.toml` < environment < command-line flags.
//!
//! The environment names are the original service's flat names (`PORT`, `REDIS_URL`, ...),
//! mapped onto the nested keys of `config.toml` by [`ENV_KEYS`]. Every error names the key
//! it is about, and the environment variable when that is where the value came from.

mod admin;
mod ca;
mod env;
mod error;
mod groups;
mod hook;
mod issuers;
mod log;
mod memory;
mod mqtt;
mod onboarding;
mod rate_limit;
mod redis;
mod renewal;
mod server;
mod tokens;
mod values;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use env::LegacyEnv;

pub use admin::AdminSettings;
pub use ca::CaSettings;
pub use env::ENV_KEYS;
pub use error::ConfigError;
pub use groups::{
    ExtendedKeyUsage, GroupRenewalSettings, GroupSettings, SubjectSettings, read_groups_file,
};
pub use hook::{HookOnError, HookSettings};
pub use issuers::{DEFAULT_ISSUER, IssuerSettings};
pub use log::{LogFormat, LogSettings};
pub use memory::MemorySettings;
pub use mqtt::{MqttSettings, MqttTemplateSettings};
pub use onboarding::{OnboardingMode, OnboardingSettings};
pub use rate_limit::RateLimitSettings;
pub use redis::{FallbackPolicy, RedisSettings, RedisTopology, SentinelAddress, redact_url};
pub use renewal::RenewalSettings;
pub use server::{ServerSettings, TlsIdentity, TlsSettings, rustls_server_config};
pub use tokens::TokenSettings;
pub use values::{KeyList, List};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub redis: RedisSettings,
    pub tokens: TokenSettings,
    pub onboarding: OnboardingSettings,
    pub ca: CaSettings,
    pub renewal: RenewalSettings,
    pub memory: MemorySettings,
    pub rate_limit: RateLimitSettings,
    pub admin: AdminSettings,
    pub hook: HookSettings,
    pub log: LogSettings,
    /// `[mqtt]`: provisioning over MQTT (AWS IoT fleet provisioning); off by default.
    pub mqtt: MqttSettings,
    /// Enrollment groups (`[[groups]]`); none: the top-level settings form one group,
    /// `default`.
    pub groups: Vec<GroupSettings>,
    /// A TOML file of more `[[groups]]` (`GROUPS_FILE`), read at start and on SIGHUP.
    pub groups_file: Option<PathBuf>,
    /// The CAs that sign (`[[issuers]]`), the first for groups that name none; none:
    /// `[ca]`'s CA, named `default`.
    pub issuers: Vec<IssuerSettings>,
    /// Where these settings were read from, to read them again (SIGHUP); `None` for
    /// settings made in code.
    #[serde(skip)]
    pub loaded_from: Option<LoadedFrom>,
}

/// The arguments [`Settings::load`] was called with.
#[derive(Debug, Clone)]
pub struct LoadedFrom {
    pub config: Option<PathBuf>,
    pub overrides: Overrides,
}

/// Overrides given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Settings {
    /// Loads the layers. `config` is an explicit file (which must then exist); without it,
    /// `config.toml` in the working directory is read when present.
    pub fn load(config: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let file = match config {
            Some(path) if !path.is_file() => {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            Some(path) => path.to_owned(),
            None => PathBuf::from("config.toml"),
        };
        let figment = Figment::new()
            .merge(Toml::file(&file))
            .merge(LegacyEnv)
            .merge(Serialized::default("server", overrides));
        let mut settings: Settings = figment.extract_lossy().map_err(|e| {
            let key = e.path.join(".");
            let message = describe(&e.kind);
            // The file as the operator named it (figment shows it relative to the
            // working directory).
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(figment::Source::File(_)) => format!("{} {}", m.name, file.display()),
                    Some(source) => format!("{} {source}", m.name),
                    None => m.name.to_string(),
                })
                .unwrap_or_default();
            if key.is_empty() {
                ConfigError(format!("{message} ({source})"))
            } else if source.contains("environment") {
                ConfigError::key(&key, message)
            } else {
                ConfigError(format!("`{key}`: {message} (in {source})"))
            }
        })?;
        settings.validate()?;
        settings.loaded_from = Some(LoadedFrom {
            config: config.map(Path::to_owned),
            overrides: overrides.clone(),
        });
        Ok(settings)
    }

    /// Each section judges its own values; only the first mistake found is reported.
    /// [`Settings::load`] calls it; settings built in code (tests, embedders) should too.
    ///
    /// # Errors
    /// The first value out of range or in contradiction with another, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.tokens.validate()?;
        self.ca.validate()?;
        self.server.validate()?;
        self.redis.validate()?;
        self.memory.validate()?;
        self.hook.validate()?;
        issuers::validate(&self.issuers)?;
        Ok(())
    }

    /// Reads a secret given inline or as a file; the file wins when both are set.
    pub fn read_secret(
        inline: Option<&Secret>,
        file: Option<&Path>,
        key: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        match file {
            Some(path) => crate::fsutil::check_private(path)
                .and_then(|()| std::fs::read_to_string(path))
                .map(|s| Some(Secret::new(s.trim())))
                .map_err(|e| ConfigError::key(key, format!("cannot use {}: {e}", path.display()))),
            None => Ok(inline.cloned()),
        }
    }
}

/// A configuration error in the operator's words: figment's own text quotes lists that
/// are already quoted (``memory` or `none``).
fn describe(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        Kind::UnknownVariant(found, expected) => {
            format!(
                "`{found}` is not a choice here; use one of {}",
                list(expected)
            )
        }
        Kind::UnknownField(found, expected) => {
            format!(
                "unknown key `{found}`; the keys here are {}",
                list(expected)
            )
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Settings, Box<figment::Error>> {
        Figment::new()
            .merge(Toml::string(toml))
            .extract_lossy::<Settings>()
            .map_err(Box::new)
    }

    #[test]
    fn defaults_match_the_design() {
        let s = parse("").unwrap();
        assert_eq!(s.server.port, 3002);
        assert_eq!(s.tokens.ttl_seconds, 300);
        assert_eq!(s.redis.key_prefix, "mqtt-lite:");
        assert_eq!(s.redis.fallback, FallbackPolicy::Memory);
        assert_eq!(s.ca.validity_days, 365);
    }

    #[test]
    fn enrollment_keys_accept_a_comma_separated_string_or_a_list() {
        let s = parse("[onboarding]\nenrollment_keys = \"a, b,,c\"").unwrap();
        assert_eq!(s.onboarding.enrollment_keys.0.len(), 3);
        let s = parse("[onboarding]\nenrollment_keys = [\"a\", \"b\"]").unwrap();
        assert_eq!(s.onboarding.enrollment_keys.0[1].expose(), "b");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("[server]\nprot = 1").unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn errors_list_the_choices_quoted_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("odd.toml");
        std::fs::write(&file, "[redis]\nfallback = \"disk\"\n[server]\n").unwrap();
        let err = Settings::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`disk`") && err.contains("`memory`, `none`"),
            "{err}"
        );
        assert!(!err.contains("``"), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
        std::fs::write(&file, "[server]\nprot = 1\n").unwrap();
        let err = Settings::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `prot`"), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = parse("[tokens]\njwt_secret = \"hunter2hunter2\"").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
