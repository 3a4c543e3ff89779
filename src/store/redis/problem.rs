//! Why Redis is not in use, told apart: a configuration that Redis refuses (a user
//! without a permission, a wrong password, a TLS certificate not trusted) will not heal
//! by waiting, while an outage will. `/health` and the log say which, and what to change.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::RedisError;

/// How long a configuration error a request met is shown after the last time.
const REQUEST_PROBLEM_SHOWN: Duration = Duration::from_secs(60);

/// Whether waiting can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Redis answered, and refused what it was configured to accept: NOPERM, WRONGPASS,
    /// NOAUTH, or a TLS handshake that fails on a certificate.
    Configuration,
    /// Redis could not be reached, or did not answer in time.
    Unreachable,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Configuration => "configuration",
            ProblemKind::Unreachable => "unreachable",
        }
    }
}

/// One problem, as operators read it: never a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisProblem {
    pub kind: ProblemKind,
    pub message: String,
}

impl RedisProblem {
    /// What `e` says about the setup; `user` is the configured ACL user, if any.
    pub fn of(e: &RedisError, user: Option<&str>) -> Self {
        let text = e.to_string();
        let user = user.unwrap_or("default");
        let configuration = |message: String| Self {
            kind: ProblemKind::Configuration,
            message,
        };
        match e.code() {
            Some("NOPERM") => {
                let detail = e.detail().unwrap_or(&text);
                return configuration(format!(
                    "the Redis user '{user}' lacks a permission the server needs (NOPERM: \
                     {detail}); grant it, for example ACL SETUSER {user} +<command>, as the \
                     README's \"The Redis user\" lists"
                ));
            }
            Some("WRONGPASS") => {
                return configuration(format!(
                    "Redis refused user '{user}' and its password (WRONGPASS): check \
                     redis.username and redis.password (REDIS_PASSWORD_FILE)"
                ));
            }
            Some("NOAUTH") => {
                return configuration(
                    "Redis requires a password (NOAUTH): set redis.password or \
                     REDIS_PASSWORD_FILE"
                        .into(),
                );
            }
            _ => {}
        }
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || text.contains("WRONGPASS")
            || text.contains("NOAUTH")
        {
            return configuration(format!(
                "Redis refused the credentials of user '{user}' ({text}): check \
                 redis.username and redis.password (REDIS_PASSWORD_FILE)"
            ));
        }
        let lower = text.to_ascii_lowercase();
        if lower.contains("unknownissuer")
            || lower.contains("invalid peer certificate")
            || lower.contains("certificate verify failed")
        {
            return configuration(format!(
                "Redis's TLS certificate is not trusted ({text}): set redis.tls_ca_file \
                 (REDIS_TLS_CA_FILE) to the CA that signed it"
            ));
        }
        if lower.contains("certificaterequired") || lower.contains("certificate required") {
            return configuration(format!(
                "Redis requires a TLS client certificate ({text}): set redis.tls_cert_file \
                 and redis.tls_key_file (REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE)"
            ));
        }
        Self {
            kind: ProblemKind::Unreachable,
            message: text,
        }
    }
}

/// The latest problem the health check met (cleared when it passes), and the latest
/// configuration error a request met (shown for a minute: the health check may pass
/// while a request's command is refused).
#[derive(Default)]
pub struct Problems {
    health: Mutex<Option<RedisProblem>>,
    request: Mutex<Option<(RedisProblem, Instant)>>,
}

impl Problems {
    /// Notes the health check's outcome; logs a configuration problem when it is new.
    pub fn health_checked(&self, problem: Option<RedisProblem>) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(new) = &problem
            && new.kind == ProblemKind::Configuration
            && health.as_ref() != Some(new)
        {
            tracing::error!(reason = %new.message, "redis refuses this server's configuration; memory serves meanwhile, if allowed");
        }
        *health = problem;
    }

    /// Notes a request's error when it is a configuration problem.
    pub fn request_failed(&self, problem: RedisProblem) {
        if problem.kind != ProblemKind::Configuration {
            return;
        }
        let mut request = self.request.lock().unwrap_or_else(|p| p.into_inner());
        if request.as_ref().map(|(p, _)| p) != Some(&problem) {
            tracing::error!(reason = %problem.message, "redis refused a request's command");
        }
        *request = Some((problem, Instant::now()));
    }

    /// What `/health` shows: the health check's problem, else a recent request's.
    pub fn current(&self) -> Option<RedisProblem> {
        if let Some(problem) = self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(problem);
        }
        self.request
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(_, at)| at.elapsed() < REQUEST_PROBLEM_SHOWN)
            .map(|(p, _)| p.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str, detail: &str) -> RedisError {
        redis::parse_redis_value(format!("-{code} {detail}\r\n").as_bytes())
            .and_then(|v| v.extract_error())
            .unwrap_err()
    }

    #[test]
    fn refusals_are_configuration_and_the_rest_an_outage() {
        let noperm = RedisProblem::of(
            &server_error(
                "NOPERM",
                "User app has no permissions to run the 'info' command",
            ),
            Some("app"),
        );
        assert_eq!(noperm.kind, ProblemKind::Configuration);
        assert!(noperm.message.contains("'info'"), "{}", noperm.message);
        assert!(
            noperm.message.contains("ACL SETUSER app"),
            "{}",
            noperm.message
        );
        let wrongpass = RedisProblem::of(
            &server_error("WRONGPASS", "invalid username-password pair"),
            None,
        );
        assert_eq!(wrongpass.kind, ProblemKind::Configuration);
        assert!(wrongpass.message.contains("WRONGPASS"));
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert_eq!(RedisProblem::of(&io, None).kind, ProblemKind::Unreachable);
        let untrusted = RedisError::from(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        ));
        let problem = RedisProblem::of(&untrusted, None);
        assert_eq!(problem.kind, ProblemKind::Configuration);
        assert!(problem.message.contains("redis.tls_ca_file"));
    }
}
