//! `[admin]`: the keys that open the admin endpoints.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;
use super::values::KeyList;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Keys for the admin endpoints (plain, or `sha256:<hex>`); none disables them.
    pub keys: KeyList,
    pub keys_file: Option<PathBuf>,
}

impl AdminSettings {
    /// Nothing to judge on its own: the keys are judged in `auth` at start, where they are
    /// read from inline values or a file.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
