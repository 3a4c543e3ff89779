//! Who may do what: onboarding (`open`, `key`, `derived`), which device ids may onboard,
//! and the admin endpoints.
//!
//! Keys are kept only as SHA-256 digests and compared in constant time, so neither the
//! memory of the process nor the timing of a refusal tells anything about a key.

pub mod derived;
mod policy;
pub mod renewal;

use std::path::Path;
use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

pub use derived::DerivedKeys;
pub use policy::DevicePolicy;

use crate::config::{ConfigError, KeyList, OnboardingMode, OnboardingSettings, Settings};
use crate::crypto::sha256;
use crate::error::ApiError;
use crate::fsutil;

pub const ENROLLMENT_KEY_FILE: &str = "enrollment.key";

/// A set of accepted keys, held as digests, each with a name that audit events carry.
pub struct KeyDigests(Vec<NamedDigest>);

struct NamedDigest {
    name: Arc<str>,
    digest: [u8; 32],
}

impl KeyDigests {
    /// Keys from a list and a file (one per line, `#` comments); `config_key` names the
    /// setting in errors. Each key is plain or `sha256:<hex>`, and is named by the first
    /// 8 hex digits of its SHA-256, which tells nothing of the key.
    pub fn load(
        list: &KeyList,
        file: Option<&Path>,
        config_key: &str,
    ) -> Result<Self, ConfigError> {
        Self::read(list, file, config_key, false)
    }

    /// As [`KeyDigests::load`], and a key may be named `<name>:<key>` (name
    /// `[A-Za-z0-9][A-Za-z0-9._-]{0,31}`, the rest a key of its own): for admin keys,
    /// whose names audit events carry. Enrollment keys are read whole, so that a key
    /// already flashed into devices keeps working whatever it holds.
    pub fn load_named(
        list: &KeyList,
        file: Option<&Path>,
        config_key: &str,
    ) -> Result<Self, ConfigError> {
        Self::read(list, file, config_key, true)
    }

    fn read(
        list: &KeyList,
        file: Option<&Path>,
        config_key: &str,
        names: bool,
    ) -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        for key in &list.0 {
            keys.push(named_digest(key.expose(), config_key, names)?);
        }
        if let Some(text) = Settings::read_secret(None, file, config_key)? {
            for line in text.expose().lines().map(str::trim) {
                if !line.is_empty() && !line.starts_with('#') {
                    keys.push(named_digest(line, config_key, names)?);
                }
            }
        }
        Ok(Self(keys))
    }

    /// The keys' names, for the start-up line (never a key).
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|k| &*k.name).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a key is in both sets.
    pub fn overlaps(&self, other: &KeyDigests) -> bool {
        self.0
            .iter()
            .any(|a| other.0.iter().any(|b| a.digest == b.digest))
    }

    /// Whether the request's bearer credential is one of the keys.
    pub fn accepts(&self, req: &HttpRequest) -> bool {
        self.matched(req).is_some()
    }

    /// The name of the key the request's bearer credential is, if it is one.
    pub fn matched(&self, req: &HttpRequest) -> Option<Arc<str>> {
        let presented = sha256(bearer(req)?.as_bytes());
        // Look at every key, so the time taken does not say which one matched.
        let mut found = None;
        for key in &self.0 {
            let equal: bool = key.digest.ct_eq(&presented).into();
            if equal && found.is_none() {
                found = Some(key.name.clone());
            }
        }
        found
    }
}

fn named_digest(entry: &str, config_key: &str, names: bool) -> Result<NamedDigest, ConfigError> {
    if names
        && let Some((name, key)) = entry.split_once(':')
        && name != "sha256"
        && is_key_name(name)
        && let Ok(digest) = digest_of(key, config_key)
    {
        return Ok(NamedDigest {
            name: name.into(),
            digest,
        });
    }
    let digest = digest_of(entry, config_key)?;
    Ok(NamedDigest {
        name: format!("sha256:{}", &hex::encode(digest)[..8]).into(),
        digest,
    })
}

fn is_key_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 32
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub enum OnboardingAuth {
    Open,
    Keys(KeyDigests),
    /// Boxed: an HMAC key is large, and the other variants are small.
    Derived(Box<DerivedKeys>),
}

impl OnboardingAuth {
    /// Builds the check from configuration. In `key` mode with no key configured, one is
    /// generated into `<certs_dir>/enrollment.key` (mode 0600) on first start, and its
    /// location (never the key) is printed that once.
    pub fn from_settings(
        settings: &OnboardingSettings,
        certs_dir: &Path,
    ) -> Result<Self, ConfigError> {
        match settings.mode {
            OnboardingMode::Open => Ok(Self::Open),
            OnboardingMode::Key => {
                let mut keys = KeyDigests::load(
                    &settings.enrollment_keys,
                    settings.enrollment_keys_file.as_deref(),
                    "onboarding.enrollment_keys",
                )?;
                if keys.is_empty() {
                    let generated = generated_enrollment_key(certs_dir)?;
                    keys.0.push(NamedDigest {
                        name: ENROLLMENT_KEY_FILE.into(),
                        digest: sha256(generated.as_bytes()),
                    });
                }
                Ok(Self::Keys(keys))
            }
            OnboardingMode::Derived => {
                let secret = Settings::read_secret(
                    settings.group_secret.as_ref(),
                    settings.group_secret_file.as_deref(),
                    "onboarding.group_secret",
                )?
                .ok_or_else(|| {
                    ConfigError::key(
                        "onboarding.group_secret",
                        "`derived` mode needs a group secret",
                    )
                })?;
                if secret.expose().len() < 32 {
                    return Err(ConfigError::key(
                        "onboarding.group_secret",
                        "must be at least 32 bytes",
                    ));
                }
                Ok(Self::Derived(Box::new(DerivedKeys::new(
                    &secret,
                    settings.clock_skew_seconds,
                ))))
            }
        }
    }

    /// How many enrollment keys it takes (0 outside `key` mode).
    pub fn key_count(&self) -> usize {
        match self {
            Self::Keys(keys) => keys.0.len(),
            _ => 0,
        }
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Keys(_) => "key",
            Self::Derived(_) => "derived",
        }
    }

    /// The check that needs no body: the enrollment key of `key` mode.
    pub fn check_key(&self, req: &HttpRequest) -> Result<(), ApiError> {
        match self {
            Self::Keys(keys) if !keys.accepts(req) => Err(if bearer(req).is_some() {
                ApiError::Unauthorized("enrollment key not accepted")
            } else {
                ApiError::Unauthorized("an enrollment key is required")
            }),
            _ => Ok(()),
        }
    }
}

fn generated_enrollment_key(certs_dir: &Path) -> Result<String, ConfigError> {
    let path = certs_dir.join(ENROLLMENT_KEY_FILE);
    let (key, created) = fsutil::read_or_create_secret(&path, crate::crypto::random_secret)
        .map_err(|e| {
            ConfigError::key(
                "onboarding.enrollment_keys",
                format!("{}: {e}", path.display()),
            )
        })?;
    if created {
        tracing::warn!(
            path = %path.display(),
            "generated an enrollment key (mode 0600); fleet scripts send it as \
             `Authorization: Bearer <key>` to /api/v1/onboarding"
        );
    }
    Ok(key)
}

/// Shortest plain key accepted: 32 bytes, so that even a key of letters only has well
/// over 128 bits of entropy when it is random.
pub const MIN_KEY_LEN: usize = 32;

/// A key as configured: plain (at least [`MIN_KEY_LEN`] bytes), or already hashed as
/// `sha256:<64 hex digits>` (whose key the server cannot measure).
fn digest_of(key: &str, config_key: &str) -> Result<[u8; 32], ConfigError> {
    match key.strip_prefix("sha256:") {
        Some(hex_digest) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut digest)
                .map_err(|_| ConfigError::key(config_key, "a sha256: entry needs 64 hex digits"))?;
            Ok(digest)
        }
        None if key.len() < MIN_KEY_LEN => Err(ConfigError::key(
            config_key,
            format!(
                "a key of {} bytes is too short to resist guessing; each key needs at least \
                 {MIN_KEY_LEN} bytes (make one with `openssl rand -base64 32`)",
                key.len()
            ),
        )),
        None => Ok(sha256(key.as_bytes())),
    }
}

/// The raw `Authorization` header, when it is text.
pub fn authorization(req: &HttpRequest) -> Option<&str> {
    req.headers().get(AUTHORIZATION)?.to_str().ok()
}

/// The credential of an `Authorization: Bearer <credential>` header.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    bearer_credential(authorization(req)?)
}

/// The credential of an `Authorization` value of the `Bearer` scheme.
pub fn bearer_credential(header: &str) -> Option<&str> {
    let (scheme, credential) = header.trim().split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use actix_web::test::TestRequest;

    fn keys(list: &[&str]) -> OnboardingAuth {
        let settings = OnboardingSettings {
            mode: OnboardingMode::Key,
            enrollment_keys: KeyList(list.iter().map(|k| Secret::new(*k)).collect()),
            ..OnboardingSettings::default()
        };
        OnboardingAuth::from_settings(&settings, Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn a_configured_key_or_its_digest_is_accepted() {
        const FIRST: &str = "first-key-first-key-first-key-first";
        const SECOND: &str = "second-key-second-key-second-key-2";
        let digest = format!("sha256:{}", hex::encode(sha256(SECOND.as_bytes())));
        let auth = keys(&[FIRST, &digest]);
        for key in [FIRST, SECOND] {
            let req = TestRequest::default()
                .insert_header((AUTHORIZATION, format!("Bearer {key}")))
                .to_http_request();
            assert!(auth.check_key(&req).is_ok(), "{key}");
        }
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, "Bearer third-key-third-key-third-key-3"))
            .to_http_request();
        assert!(auth.check_key(&req).is_err());
        assert!(
            auth.check_key(&TestRequest::default().to_http_request())
                .is_err()
        );
    }

    #[test]
    fn a_named_key_carries_its_name_and_an_unnamed_one_a_digest_prefix() {
        const OPS: &str = "ops-key-ops-key-ops-key-ops-key-ops";
        const PLAIN: &str = "plain-key-plain-key-plain-key-plain";
        // A key with a colon that does not name (its rest is too short) stays whole.
        const COLON: &str = "x:y-colon-key-colon-key-colon-key";
        let list = KeyList(
            [format!("alice-ops:{OPS}"), PLAIN.into(), COLON.into()]
                .into_iter()
                .map(Secret::new)
                .collect(),
        );
        let keys = KeyDigests::load_named(&list, None, "admin.keys").unwrap();
        // Enrollment keys are read whole: a colon names nothing.
        let whole = KeyDigests::load(&list, None, "onboarding.enrollment_keys").unwrap();
        assert!(whole.names().iter().all(|n| n.starts_with("sha256:")));
        let name = |key: &str| {
            let req = TestRequest::default()
                .insert_header((AUTHORIZATION, format!("Bearer {key}")))
                .to_http_request();
            keys.matched(&req).map(|n| n.to_string())
        };
        assert_eq!(name(OPS).as_deref(), Some("alice-ops"));
        let plain = format!("sha256:{}", &hex::encode(sha256(PLAIN.as_bytes()))[..8]);
        assert_eq!(name(PLAIN), Some(plain));
        assert!(name(COLON).is_some());
        assert_eq!(name(&format!("alice-ops:{OPS}")), None);
    }

    #[test]
    fn a_short_key_is_refused_at_start_up() {
        let settings = OnboardingSettings {
            mode: OnboardingMode::Key,
            enrollment_keys: KeyList(vec![Secret::new("a")]),
            ..OnboardingSettings::default()
        };
        let err = OnboardingAuth::from_settings(&settings, Path::new("/nonexistent"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("onboarding.enrollment_keys") && err.contains("32"),
            "{err}"
        );
    }

    #[test]
    fn bearer_needs_the_scheme_and_a_credential() {
        let with = |v: &str| {
            TestRequest::default()
                .insert_header((AUTHORIZATION, v))
                .to_http_request()
        };
        assert_eq!(bearer(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&with("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&with("Basic abc")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&with("abc")), None);
    }
}
