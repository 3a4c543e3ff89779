//! Who may onboard: anyone (`open`) or holders of an enrollment key (`key`).
//!
//! Keys are kept only as SHA-256 digests and compared in constant time, so neither the
//! memory of the process nor the timing of a refusal tells anything about a key.

use std::path::Path;

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use crate::config::{ConfigError, OnboardingMode, OnboardingSettings, Settings};
use crate::crypto::sha256;
use crate::error::ApiError;
use crate::fsutil;

pub const ENROLLMENT_KEY_FILE: &str = "enrollment.key";

pub enum OnboardingAuth {
    Open,
    Keys(Vec<[u8; 32]>),
}

impl OnboardingAuth {
    /// Builds the check from configuration. In `key` mode with no key configured, one is
    /// generated into `<certs_dir>/enrollment.key` (mode 0600) on first start, and its
    /// location (never the key) is printed that once.
    pub fn from_settings(
        settings: &OnboardingSettings,
        certs_dir: &Path,
    ) -> Result<Self, ConfigError> {
        if settings.mode == OnboardingMode::Open {
            return Ok(Self::Open);
        }
        let mut digests = Vec::new();
        for key in &settings.enrollment_keys.0 {
            digests.push(digest_of(key.expose(), "onboarding.enrollment_keys")?);
        }
        if let Some(file) = Settings::read_secret(
            None,
            settings.enrollment_keys_file.as_deref(),
            "onboarding.enrollment_keys_file",
        )? {
            for line in file.expose().lines().map(str::trim) {
                if !line.is_empty() && !line.starts_with('#') {
                    digests.push(digest_of(line, "onboarding.enrollment_keys_file")?);
                }
            }
        }
        if digests.is_empty() {
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
            digests.push(sha256(key.as_bytes()));
        }
        Ok(Self::Keys(digests))
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open)
    }

    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let Self::Keys(digests) = self else {
            return Ok(());
        };
        let presented =
            bearer(req).ok_or(ApiError::Unauthorized("an enrollment key is required"))?;
        let presented = sha256(presented.as_bytes());
        // Look at every key, so the time taken does not say which one matched.
        let matched = digests
            .iter()
            .fold(subtle::Choice::from(0), |any, d| any | d.ct_eq(&presented));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("enrollment key not accepted"))
        }
    }
}

/// A key as configured: plain, or already hashed as `sha256:<64 hex digits>`.
fn digest_of(key: &str, config_key: &str) -> Result<[u8; 32], ConfigError> {
    match key.strip_prefix("sha256:") {
        Some(hex_digest) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut digest)
                .map_err(|_| ConfigError::key(config_key, "a sha256: entry needs 64 hex digits"))?;
            Ok(digest)
        }
        None => Ok(sha256(key.as_bytes())),
    }
}

/// The credential of an `Authorization: Bearer <credential>` header.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyList, Secret};
    use actix_web::test::TestRequest;

    fn keys(list: &[&str]) -> OnboardingAuth {
        let settings = OnboardingSettings {
            mode: OnboardingMode::Key,
            enrollment_keys: KeyList(list.iter().map(|k| Secret::new(*k)).collect()),
            enrollment_keys_file: None,
        };
        OnboardingAuth::from_settings(&settings, Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn a_configured_key_or_its_digest_is_accepted() {
        let digest = format!("sha256:{}", hex::encode(sha256(b"second")));
        let auth = keys(&["first", &digest]);
        for key in ["first", "second"] {
            let req = TestRequest::default()
                .insert_header((AUTHORIZATION, format!("Bearer {key}")))
                .to_http_request();
            assert!(auth.check(&req).is_ok(), "{key}");
        }
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, "Bearer third"))
            .to_http_request();
        assert!(auth.check(&req).is_err());
        assert!(
            auth.check(&TestRequest::default().to_http_request())
                .is_err()
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
