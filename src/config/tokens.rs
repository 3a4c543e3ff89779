//! `[tokens]`: the provisioning tokens' lifetime and the JWT secret, issuer and audience.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use crate::secret::{MIN_SECRET_LEN, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    pub ttl_seconds: u64,
    pub jwt_secret: Option<Secret>,
    pub jwt_secret_file: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            ttl_seconds: 300,
            jwt_secret: None,
            jwt_secret_file: None,
            issuer: "provisiond".into(),
            audience: "provisiond".into(),
        }
    }
}

impl TokenSettings {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_seconds)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let ttl = self.ttl_seconds;
        if !(1..=86_400).contains(&ttl) {
            return Err(ConfigError::key(
                "tokens.ttl_seconds",
                format!("{ttl} is out of range; use 1..=86400 seconds"),
            ));
        }
        if let Some(secret) = &self.jwt_secret
            && secret.expose().len() < MIN_SECRET_LEN
        {
            return Err(ConfigError::key(
                "tokens.jwt_secret",
                format!("must be at least {} bytes", MIN_SECRET_LEN),
            ));
        }
        Ok(())
    }
}
