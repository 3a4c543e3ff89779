//! Value types several sections share: lists given as a TOML array or as one
//! comma-separated string (the only form an environment variable can take).

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::secret::Secret;

/// A list of secrets given either as a TOML array or as one comma-separated string
/// (the form `ENROLLMENT_KEYS` takes).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyList(pub Vec<Secret>);

impl fmt::Debug for KeyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyList({} keys)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for KeyList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let keys = match Form::deserialize(deserializer)? {
            Form::One(joined) => joined.split(',').map(str::to_owned).collect(),
            Form::Many(keys) => keys,
        };
        Ok(KeyList(
            keys.into_iter()
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .map(Secret::new)
                .collect(),
        ))
    }
}

/// Plain strings given either as a TOML array or as one comma-separated string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let keys = KeyList::deserialize(deserializer)?;
        Ok(List(keys.0.into_iter().map(Secret::into_exposed).collect()))
    }
}
