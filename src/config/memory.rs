//! `[memory]`: the in-memory store (used without Redis, or while Redis is away).

use serde::Deserialize;

use super::error::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySettings {
    pub sweep_interval_seconds: f64,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            sweep_interval_seconds: 60.0,
        }
    }
}

impl MemorySettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.sweep_interval_seconds <= 0.0 {
            return Err(ConfigError::key(
                "memory.sweep_interval_seconds",
                "must be positive",
            ));
        }
        Ok(())
    }
}
