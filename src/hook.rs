//! The pre-issuance hook: before a certificate is signed, the operator's service is
//! asked whether it may be, and may shorten its validity.
//!
//! The request is a JSON POST signed as Stripe signs its webhooks, so that receivers have
//! libraries for it: `Provisiond-Signature: t=<unix s>,v1=<hex>`, the HMAC-SHA256 of
//! `<t>.<body>` with the hook's secret. It runs before the token or the renewal proof is
//! used, so a denial or a hook that cannot answer never burns one.
//!
//! `on_error = "allow"` covers a hook that is away (no connection, a timeout, a 5xx),
//! never one that answered something else: a redirect, a 4xx, or an answer that does not
//! read as an allowance is refused whatever the setting, since a hook that speaks but is
//! not understood may well be saying no.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::ca::{CsrFacts, MAX_NAMES, NameOverrides};
use crate::clock::unix_now;
use crate::config::{ConfigError, HookOnError, HookSettings, Settings};
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::metrics::{HookLabel, Metrics};
use crate::secret::Secret;

/// The longest reason a denial may carry back to the device.
const MAX_REASON: usize = 200;
/// The most a hook's answer may hold.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// What the CSR asks for, as the hook sees it.
#[derive(Serialize)]
struct HookCsr<'a> {
    key_type: &'static str,
    #[serde(flatten)]
    facts: &'a CsrFacts,
}

#[derive(Serialize)]
struct HookRequest<'a> {
    event: &'static str,
    id: String,
    device_id: &'a str,
    group: &'a str,
    protocol: &'static str,
    renewal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    csr: Option<HookCsr<'a>>,
    /// RegisterThing's parameters (`registration` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a std::collections::BTreeMap<String, String>>,
    /// The certificate already issued (`registration` only), upper-case hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<&'a str>,
    client_address: Option<String>,
}

/// 128 random bits, hex: a request's `id`, for the receiver to drop a replay.
fn request_id() -> String {
    let mut id = [0u8; 16];
    crate::crypto::fill_random(&mut id);
    hex::encode(id)
}

/// The hook's word: allowed, with the validity it asked for (days), if shorter, and
/// the names it gave instead of the group's.
pub enum Verdict {
    Allow {
        validity_days: Option<u32>,
        names: NameOverrides,
    },
    Deny(String),
    /// No answer, and `on_error = "allow"` signs anyway; why no answer came.
    SignedWithoutAnswer(String),
}

/// Why no allowance came: the hook is away (`on_error` decides), or it answered what
/// cannot be taken for one (always refused).
enum NoAnswer {
    Away(String),
    Unreadable(String),
}

impl NoAnswer {
    fn why(&self) -> &str {
        match self {
            NoAnswer::Away(why) | NoAnswer::Unreadable(why) => why,
        }
    }
}

pub struct PreIssuanceHook {
    client: reqwest::Client,
    url: String,
    secret: Secret,
    on_error: HookOnError,
    timeout_ms: u64,
    /// The longest validity an override may ask for: the server's own.
    max_validity_days: u32,
}

impl PreIssuanceHook {
    /// The hook `hook` configures, if any; `max_validity_days` is the longest validity
    /// an override may ask for (the group's own), `key` names the setting in errors.
    pub fn new(
        hook: &HookSettings,
        max_validity_days: u32,
        key: &str,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(url) = &hook.url else {
            return Ok(None);
        };
        hook.validate()?;
        let secret_key = format!("{key}.secret_file");
        let secret = Settings::read_secret(
            hook.secret.as_ref(),
            hook.secret_file.as_deref(),
            &secret_key,
        )?
        .ok_or_else(|| ConfigError::key(&secret_key, "a hook needs a secret"))?;
        if secret.expose().len() < 32 {
            let key = match hook.secret_file {
                Some(_) => secret_key,
                None => format!("{key}.secret"),
            };
            return Err(ConfigError::key(
                &key,
                "the hook's secret needs at least 32 bytes (openssl rand -hex 32)",
            ));
        }
        // No proxy from the environment: a proxy would read the request and could answer
        // for the hook, which is exactly what the loopback-only rule for http:// prevents.
        let mut client = reqwest::Client::builder()
            .timeout(Duration::from_millis(hook.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(path) = &hook.ca_file {
            let ca_key = format!("{key}.ca_file");
            let roots = std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())
                })
                .map_err(|e| ConfigError::key(&ca_key, format!("{}: {e}", path.display())))?;
            if roots.is_empty() {
                return Err(ConfigError::key(
                    &ca_key,
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            client = client.tls_certs_only(roots);
        }
        let client = client.build().map_err(|e| {
            ConfigError::key(&format!("{key}.url"), format!("cannot build a client: {e}"))
        })?;
        if hook.on_error == HookOnError::Allow {
            tracing::warn!(
                "HOOK ON_ERROR IS ALLOW: when the pre-issuance hook cannot answer, certificates \
                 are signed without its word"
            );
        }
        tracing::info!(
            timeout_ms = hook.timeout_ms,
            on_error = ?hook.on_error,
            "pre-issuance hook on: every certificate is asked about first"
        );
        Ok(Some(Self {
            client,
            url: url.clone(),
            secret,
            on_error: hook.on_error,
            timeout_ms: hook.timeout_ms,
            max_validity_days,
        }))
    }

    /// `(timeout in ms, on_error)`, for the groups listing (never the URL's secrets or
    /// the HMAC key).
    pub fn describe(&self) -> (u64, HookOnError) {
        (self.timeout_ms, self.on_error)
    }

    /// Asks the hook about a certificate for `device`, requested through the door
    /// `protocol` (`http`, `est`, `cmp`, `mqtt`) from `client`. A hook that is away (no
    /// connection, a timeout, a 5xx) is 503 `hook_unavailable`, or
    /// [`Verdict::SignedWithoutAnswer`] with `on_error = "allow"`; an answer that is no
    /// allowance (a redirect, a 4xx, one that does not parse or asks for more than it
    /// may) is 503 `hook_unavailable` whatever the setting. The device is told no more
    /// than that; the detail goes to the log and the audit.
    pub async fn ask(
        &self,
        device: &DeviceId,
        group: &str,
        renewal: bool,
        (key_type, facts): (&'static str, &CsrFacts),
        (protocol, client): (&'static str, Option<IpAddr>),
        metrics: &Metrics,
    ) -> Result<Verdict, ApiError> {
        let request = HookRequest {
            event: "certificate.request",
            id: request_id(),
            device_id: device.as_str(),
            group,
            protocol,
            renewal,
            csr: Some(HookCsr { key_type, facts }),
            parameters: None,
            serial: None,
            client_address: client.map(|ip| ip.to_string()),
        };
        self.decide(device, group, &request, metrics).await
    }

    /// Asks the hook whether `device` may finish provisioning over MQTT (RegisterThing)
    /// with `parameters`, its certificate `serial` issued already (AWS's pre-provisioning
    /// hook): `event` `registration`, no `csr`. Answers as [`PreIssuanceHook::ask`].
    pub async fn ask_registration(
        &self,
        device: &DeviceId,
        group: &str,
        parameters: &std::collections::BTreeMap<String, String>,
        serial: &str,
        client: Option<IpAddr>,
        metrics: &Metrics,
    ) -> Result<Verdict, ApiError> {
        let request = HookRequest {
            event: "registration",
            id: request_id(),
            device_id: device.as_str(),
            group,
            protocol: "mqtt",
            renewal: false,
            csr: None,
            parameters: Some(parameters),
            serial: Some(serial),
            client_address: client.map(|ip| ip.to_string()),
        };
        self.decide(device, group, &request, metrics).await
    }

    async fn decide(
        &self,
        device: &DeviceId,
        group: &str,
        request: &HookRequest<'_>,
        metrics: &Metrics,
    ) -> Result<Verdict, ApiError> {
        let started = Instant::now();
        let answer = self.call(request).await;
        let decision = match &answer {
            Ok(Verdict::Allow { .. }) => "allow",
            Ok(_) => "deny",
            Err(_) => "error",
        };
        metrics
            .hook_decisions
            .get_or_create(&HookLabel {
                decision,
                group: group.to_owned(),
            })
            .inc();
        metrics
            .hook_duration
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(verdict) => Ok(verdict),
            Err(no) => {
                tracing::warn!(device_id = %device, error = no.why(), "the pre-issuance hook gave no allowance");
                match (no, self.on_error) {
                    (NoAnswer::Away(why), HookOnError::Allow) => {
                        Ok(Verdict::SignedWithoutAnswer(why))
                    }
                    (no, _) => Err(ApiError::HookUnavailable(no.why().to_owned())),
                }
            }
        }
    }

    async fn call(&self, request: &HookRequest<'_>) -> Result<Verdict, NoAnswer> {
        let body = serde_json::to_vec(request)
            .map_err(|e| NoAnswer::Unreadable(format!("encoding the request: {e}")))?;
        let at = unix_now();
        let mut response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("provisiond-signature", signature(&self.secret, at, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| NoAnswer::Away(format!("the hook did not answer: {}", short(&e))))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(NoAnswer::Away(format!(
                "the hook answered HTTP {}",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(NoAnswer::Unreadable(format!(
                "the hook answered HTTP {}",
                status.as_u16()
            )));
        }
        let too_large = || NoAnswer::Unreadable("the hook's answer is over 16 KB".into());
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(too_large());
        }
        // Read by chunks, so that an endless answer stops at the cap, not in memory.
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| NoAnswer::Away(format!("reading the hook's answer: {}", short(&e))))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        self.verdict(&bytes).map_err(NoAnswer::Unreadable)
    }

    /// `{"allow": true, "validity_days": 30}` or `{"allow": false, "reason": "..."}`.
    fn verdict(&self, bytes: &[u8]) -> Result<Verdict, String> {
        let answer: Value = serde_json::from_slice(bytes)
            .map_err(|_| "the hook's answer is not JSON".to_owned())?;
        match answer.get("allow").and_then(Value::as_bool) {
            Some(false) => {
                let reason = answer
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                let reason: String = reason
                    .chars()
                    .filter(|c| !c.is_control() && !is_format(*c))
                    .take(MAX_REASON)
                    .collect();
                Ok(Verdict::Deny(reason))
            }
            Some(true) => {
                let names = NameOverrides {
                    san_dns: names(&answer, "san_dns", crate::ca::is_dns_name)?,
                    san_uris: names(&answer, "san_uris", crate::ca::is_uri)?,
                };
                let validity_days = match answer.get("validity_days") {
                    None | Some(Value::Null) => None,
                    Some(days) => Some(
                        days.as_u64()
                            .filter(|d| (1..=u64::from(self.max_validity_days)).contains(d))
                            .ok_or_else(|| {
                                format!(
                                    "the hook asked for a validity_days that is not 1 to {} (the group's)",
                                    self.max_validity_days
                                )
                            })? as u32,
                    ),
                };
                Ok(Verdict::Allow {
                    validity_days,
                    names,
                })
            }
            None => Err("the hook's answer has no boolean `allow`".into()),
        }
    }
}

/// The names a hook gave for `field` instead of the group's: `None` when it gave none
/// (absent or null); each must pass `valid`, and there may be [`MAX_NAMES`] at most.
fn names(
    answer: &Value,
    field: &str,
    valid: fn(&str) -> bool,
) -> Result<Option<Vec<String>>, String> {
    let list = match answer.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(format!("the hook's {field} is not a list")),
    };
    if list.len() > MAX_NAMES {
        return Err(format!("the hook gave more than {MAX_NAMES} {field}"));
    }
    list.iter()
        .map(|v| match v.as_str() {
            Some(name) if valid(name) => Ok(name.to_owned()),
            _ => Err(format!(
                "the hook's {field} holds {v}, which a certificate cannot carry"
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Unicode format characters (bidirectional overrides, zero-width ones): they could make
/// a reason shown to a device or an operator read as something else.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// `t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn signature(secret: &Secret, at: u64, body: &[u8]) -> String {
    let mac = crate::crypto::hmac_sha256(
        secret.expose().as_bytes(),
        &[format!("{at}.").as_bytes(), body],
    );
    format!("t={at},v1={}", hex::encode(mac))
}

/// A reqwest error without the URL (which the log line does not need twice).
fn short(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}
