//! `[admin]`: the keys that open the admin endpoints.

use std::path::PathBuf;

use serde::Deserialize;

use super::values::KeyList;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Keys for the admin endpoints (plain, or `sha256:<hex>`); none disables them.
    pub keys: KeyList,
    pub keys_file: Option<PathBuf>,
}
