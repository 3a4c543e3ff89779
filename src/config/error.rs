//! The configuration error, which names the key it is about and the environment variable
//! that sets that key.

use std::fmt;

use super::env::env_name_for;

/// A configuration error, naming the key (and variable) it is about.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub(super) String);

impl ConfigError {
    pub fn key(key: &str, message: impl fmt::Display) -> Self {
        match env_name_for(key) {
            Some(var) => Self(format!("`{key}` (env {var}): {message}")),
            None => Self(format!("`{key}`: {message}")),
        }
    }

    /// About `key` of the `[[groups]]` entry named `group`.
    pub fn group(group: &str, key: &str, message: impl fmt::Display) -> Self {
        Self(format!("group `{group}`, `{key}`: {message}"))
    }

    /// An error met while building the group `group`, said as being about it.
    pub fn in_group(group: &str, error: Self) -> Self {
        Self(format!("group `{group}`: {}", error.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_environment_variable() {
        let e = ConfigError::key("server.port", "bad");
        assert!(e.to_string().contains("PORT"));
    }
}
