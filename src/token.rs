//! Provisioning tokens: HS256 JWTs whose `jti` names the store entry that makes them live.
//!
//! The JWT is a cheap pre-check (signature, algorithm, expiry, issuer, audience); the
//! token store decides whether a token is still unused.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::{CLOCK_LEEWAY_SECS, unix_now};
use crate::domain::{DeviceId, Jti};
use crate::enrollment_code::CodeKey;
use crate::error::ApiError;
use crate::secret::Secret;
use crate::store::TokenFacts;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    jti: String,
    iat: u64,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    iss: String,
    aud: String,
    /// The store epoch the token was issued in ([`crate::store::TokenStore::epoch`]).
    #[serde(default)]
    ep: u64,
    /// The enrollment group; absent for `default` (and in tokens from before groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grp: Option<String>,
}

/// A freshly issued token.
pub struct IssuedToken {
    pub token: String,
    /// The same credential, short ([`crate::enrollment_code`]).
    pub code: String,
    pub jti: Jti,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// What a valid JWT says; whether it is still unused is the store's to answer.
#[derive(Debug)]
pub struct VerifiedToken {
    pub subject: String,
    pub jti: Jti,
    /// The store epoch it was issued in.
    pub epoch: u64,
    /// The enrollment group the device onboarded into (`grp`; `default` without one).
    pub group: String,
}

pub struct TokenService {
    code_key: CodeKey,
    encoding: EncodingKey,
    decoding: DecodingKey,
    header: Header,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenService {
    pub fn new(secret: &Secret, issuer: &str, audience: &str, ttl: Duration) -> Self {
        let key = secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        // The store's TTL is exact; a leeway would only turn "expired" into "used".
        validation.leeway = 0;
        // `nbf` and `iat` are checked below, with the leeway clocks need.
        validation.validate_nbf = false;
        Self {
            code_key: CodeKey::derive(key, issuer, audience),
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            header: Header::new(Algorithm::HS256),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// What the store keeps of a token issued now in store `epoch` for `group`.
    pub fn facts(&self, group: &str, epoch: u64) -> TokenFacts {
        TokenFacts {
            group: group.to_owned(),
            epoch,
            expires_at: unix_now() + self.ttl.as_secs(),
        }
    }

    /// Signs the token for `jti`, in store `epoch`, for `group` (the `grp` claim).
    pub fn issue(
        &self,
        device: &DeviceId,
        jti: Jti,
        epoch: u64,
        group: &str,
    ) -> Result<IssuedToken, ApiError> {
        self.issue_with(device, jti, &self.facts(group, epoch))
    }

    /// The token for `jti` with the `facts` the store keeps: the same JWT and code each
    /// time for the same arguments, so a door that finds the token in the store
    /// (CMP's MAC) makes the credential the device holds.
    pub fn issue_with(
        &self,
        device: &DeviceId,
        jti: Jti,
        facts: &TokenFacts,
    ) -> Result<IssuedToken, ApiError> {
        let expires_at = facts.expires_at;
        let issued_at = expires_at.saturating_sub(self.ttl.as_secs());
        let group = facts.group.as_str();
        let claims = Claims {
            sub: device.to_string(),
            jti: jti.to_string(),
            iat: issued_at,
            exp: expires_at,
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            ep: facts.epoch,
            grp: (group != crate::registry::DEFAULT_GROUP).then(|| group.to_owned()),
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.encoding)
            .map_err(|e| anyhow::anyhow!("JWT encoding failed: {e}"))?;
        let code = self
            .code_key
            .encode(device, &jti, expires_at, facts.epoch, group);
        Ok(IssuedToken {
            token,
            code,
            jti,
            issued_at,
            expires_at,
        })
    }

    /// What the token `jti` with `facts` verifies as, for a door that found it in the
    /// store and proved the device holds it.
    pub fn verified_from(device: &DeviceId, jti: Jti, facts: TokenFacts) -> VerifiedToken {
        VerifiedToken {
            subject: device.to_string(),
            jti,
            epoch: facts.epoch,
            group: facts.group,
        }
    }

    /// Verifies a bearer credential for `device`: the JWT, or its short form, the
    /// enrollment code (bound to the device id, so `device` is needed to check it).
    ///
    /// Errors: 401 `token_invalid`, 401 `token_expired`.
    pub fn verify_for(
        &self,
        credential: &str,
        device: &DeviceId,
    ) -> Result<VerifiedToken, ApiError> {
        if !crate::enrollment_code::is_code(credential) {
            return self.verify(credential);
        }
        let claims = self.code_key.decode(device, credential, unix_now())?;
        Ok(VerifiedToken {
            subject: device.to_string(),
            jti: claims.jti,
            epoch: claims.epoch,
            group: claims.group,
        })
    }

    pub fn verify(&self, token: &str) -> Result<VerifiedToken, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::TokenExpired,
                ErrorKind::InvalidSignature => {
                    ApiError::TokenInvalid("token signature does not verify")
                }
                ErrorKind::InvalidAlgorithm => {
                    ApiError::TokenInvalid("token algorithm not accepted")
                }
                ErrorKind::InvalidIssuer => ApiError::TokenInvalid("token issuer not accepted"),
                ErrorKind::InvalidAudience => ApiError::TokenInvalid("token audience not accepted"),
                _ => ApiError::TokenInvalid("malformed provisioning token"),
            })?;
        let claims = data.claims;
        let latest = unix_now() + CLOCK_LEEWAY_SECS;
        if claims.iat > latest || claims.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(ApiError::TokenInvalid("token is not valid yet"));
        }
        let jti = Jti::parse(&claims.jti)
            .ok_or(ApiError::TokenInvalid("malformed provisioning token"))?;
        Ok(VerifiedToken {
            subject: claims.sub,
            jti,
            epoch: claims.ep,
            group: claims
                .grp
                .unwrap_or_else(|| crate::registry::DEFAULT_GROUP.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        TokenService::new(
            &Secret::new("0123456789abcdef0123456789abcdef"),
            "provisiond",
            "provisiond",
            Duration::from_secs(300),
        )
    }

    #[test]
    fn an_issued_token_verifies_and_names_its_device() {
        let s = service();
        let device = DeviceId::parse("device-1").unwrap();
        let issued = s.issue(&device, Jti::random(), 7, "default").unwrap();
        let verified = s.verify(&issued.token).unwrap();
        assert_eq!(verified.subject, "device-1");
        assert_eq!(verified.jti, issued.jti);
        assert_eq!(verified.epoch, 7);
        assert_eq!(issued.expires_at - issued.issued_at, 300);
    }

    #[test]
    fn a_token_signed_with_another_key_is_invalid() {
        let other = TokenService::new(
            &Secret::new("another-secret-another-secret-xx"),
            "provisiond",
            "provisiond",
            Duration::from_secs(300),
        );
        let token = other
            .issue(&DeviceId::parse("d").unwrap(), Jti::random(), 0, "default")
            .unwrap()
            .token;
        assert!(matches!(
            service().verify(&token),
            Err(ApiError::TokenInvalid(_))
        ));
    }
}
