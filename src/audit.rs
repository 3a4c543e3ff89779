//! The audit stream: one event per token issued, consumed, rejected or revoked, per
//! certificate issued, renewed or revoked, and per device blocked or unblocked, on the
//! tracing target `audit` (route it with `RUST_LOG=audit=info`; with `LOG_FORMAT=json`
//! each event is one JSON object). Events name the device and client and a token by the
//! first 8 characters of its jti; never a token, key or secret.
//!
//! The latest events are also kept in memory, for the console's device page. Refused
//! tokens are kept apart, a few per device: whoever holds one token can send refusals
//! as fast as the server answers, and must not push every other device's history out.
//! A refusal is filed under a device only once its token verified for that device.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::domain::{DeviceId, Jti};
use crate::timefmt::rfc3339;

/// How many events the console can look back on, over every device.
const KEPT: usize = 5_000;
/// How many of them one device's page shows.
const PER_DEVICE: usize = 50;
/// How many devices' refused tokens are kept; past it, the device refused longest ago
/// makes room.
const REJECTED_DEVICES: usize = 1_000;

/// Who made a change: the client's address and, for an operator's request, the name of
/// the admin key it used (`name:key` in `ADMIN_KEYS`, else `sha256:` and 8 hex digits).
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub client: Option<IpAddr>,
    pub admin: Option<Arc<str>>,
}

impl Actor {
    /// A device's own request: no admin key.
    pub fn client(client: Option<IpAddr>) -> Self {
        Self {
            client,
            admin: None,
        }
    }

    fn admin_name(&self) -> &str {
        self.admin.as_deref().unwrap_or("-")
    }
}

/// One audit event, as the console shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub at: String,
    /// `token_issued`, `token_consumed`, `token_rejected`, `token_revoked`,
    /// `certificate_issued`, `certificate_renewed`, `certificate_revoked`,
    /// `device_blocked` or `device_unblocked`.
    pub event: String,
    pub device_id: String,
    /// What the event adds: a short token id, a serial, a reason.
    pub detail: String,
    pub client_ip: String,
    /// The admin key's name, for an operator's action; null for a device's own.
    pub admin: Option<String>,
}

/// An event as kept: formatted only when the console asks for it.
struct Kept {
    at: OffsetDateTime,
    event: &'static str,
    device_id: String,
    detail: String,
    client: Option<IpAddr>,
    admin: Option<Arc<str>>,
}

#[derive(Default)]
pub struct Audit {
    recent: Mutex<VecDeque<Kept>>,
    /// Refused tokens, by device: at most [`PER_DEVICE`] each.
    rejected: Mutex<HashMap<String, VecDeque<Kept>>>,
    /// Where events go to be shared through Redis, once set up.
    feed: OnceLock<mpsc::Sender<AuditEvent>>,
}

fn ip(client: Option<IpAddr>) -> String {
    client.map_or_else(|| "-".to_owned(), |ip| ip.to_string())
}

impl Kept {
    fn shown(&self) -> AuditEvent {
        AuditEvent {
            at: rfc3339(self.at),
            event: self.event.to_owned(),
            device_id: self.device_id.clone(),
            detail: self.detail.clone(),
            client_ip: ip(self.client),
            admin: self.admin.as_deref().map(str::to_owned),
        }
    }
}

impl Audit {
    /// Sends each event to `feed` too (dropped when it is full: the rings keep it).
    pub fn share(&self, feed: mpsc::Sender<AuditEvent>) {
        let _ = self.feed.set(feed);
    }

    fn send(&self, kept: &Kept) {
        // A full feed would drop the event: not worth formatting it.
        if let Some(feed) = self.feed.get().filter(|feed| feed.capacity() > 0) {
            let _ = feed.try_send(kept.shown());
        }
    }

    fn keep(&self, event: &'static str, device: &str, detail: String, client: Option<IpAddr>) {
        self.keep_by(event, device, detail, &Actor::client(client));
    }

    fn keep_by(&self, event: &'static str, device: &str, detail: String, who: &Actor) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEPT {
            recent.pop_front();
        }
        let kept = Kept {
            at: OffsetDateTime::now_utc(),
            event,
            device_id: device.to_owned(),
            detail,
            client: who.client,
            admin: who.admin.clone(),
        };
        self.send(&kept);
        recent.push_back(kept);
    }

    fn keep_rejected(&self, device: &str, reason: &str, client: Option<IpAddr>) {
        let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        if !rejected.contains_key(device) && rejected.len() >= REJECTED_DEVICES {
            let stalest = rejected
                .iter()
                .min_by_key(|(_, kept)| kept.back().map(|k| k.at))
                .map(|(device, _)| device.clone());
            if let Some(stalest) = stalest {
                rejected.remove(&stalest);
            }
        }
        let kept = rejected.entry(device.to_owned()).or_default();
        if kept.len() == PER_DEVICE {
            kept.pop_front();
        }
        let event = Kept {
            at: OffsetDateTime::now_utc(),
            event: "token_rejected",
            device_id: device.to_owned(),
            detail: reason.to_owned(),
            client,
            admin: None,
        };
        self.send(&event);
        kept.push_back(event);
    }

    /// The device's latest events, newest first.
    pub fn of_device(&self, device: &DeviceId) -> Vec<AuditEvent> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        let mut events: Vec<&Kept> = recent
            .iter()
            .rev()
            .filter(|e| e.device_id == device.as_str())
            .take(PER_DEVICE)
            .chain(rejected.get(device.as_str()).into_iter().flatten())
            .collect();
        events.sort_by_key(|e| std::cmp::Reverse(e.at));
        events
            .into_iter()
            .take(PER_DEVICE)
            .map(Kept::shown)
            .collect()
    }

    pub fn token_issued(&self, device: &DeviceId, jti: &Jti, group: &str, client: Option<IpAddr>) {
        tracing::info!(target: "audit", event = "token_issued", device_id = %device, jti = %jti.short(), group, client_ip = %ip(client));
        self.keep(
            "token_issued",
            device.as_str(),
            format!("jti {}{}", jti.short(), in_group(group)),
            client,
        );
    }

    /// Logged at debug: the `certificate_issued` line that always follows names the same
    /// `jti`, so the default level writes one line per certificate, not two.
    pub fn token_consumed(&self, device: &DeviceId, jti: &Jti, client: Option<IpAddr>) {
        tracing::debug!(target: "audit", event = "token_consumed", device_id = %device, jti = %jti.short(), client_ip = %ip(client));
        self.keep(
            "token_consumed",
            device.as_str(),
            format!("jti {}", jti.short()),
            client,
        );
    }

    /// A token refused; `device` only when the token verified for it (who sent it is
    /// otherwise unknown, and the body's device id is anyone's to write).
    pub fn token_rejected(&self, device: Option<&DeviceId>, reason: &str, client: Option<IpAddr>) {
        let shown = device.map_or("-", DeviceId::as_str);
        tracing::info!(target: "audit", event = "token_rejected", device_id = shown, reason, client_ip = %ip(client));
        if let Some(device) = device {
            self.keep_rejected(device.as_str(), reason, client);
        }
    }

    pub fn token_revoked(&self, device: &DeviceId, had_token: bool, who: &Actor) {
        tracing::info!(target: "audit", event = "token_revoked", device_id = %device, had_token, client_ip = %ip(who.client), admin = who.admin_name());
        let detail = if had_token {
            "pending token revoked"
        } else {
            "no token was pending"
        };
        self.keep_by("token_revoked", device.as_str(), detail.to_owned(), who);
    }

    pub fn certificate_issued(
        &self,
        record: &crate::registry::CertificateRecord,
        jti: Option<&Jti>,
        client: Option<IpAddr>,
    ) {
        let serial = record.serial_hex();
        tracing::info!(
            target: "audit",
            event = "certificate_issued",
            device_id = %record.device_id,
            serial,
            key_type = record.key_type,
            fingerprint_sha256 = hex::encode(record.fingerprint_sha256),
            jti = jti.map(Jti::short),
            group = record.group,
            client_ip = %ip(client),
        );
        self.keep(
            "certificate_issued",
            record.device_id.as_str(),
            format!("{serial} ({}){}", record.key_type, in_group(&record.group)),
            client,
        );
    }

    pub fn certificate_imported(&self, device: &DeviceId, serial: &str, new: bool, who: &Actor) {
        tracing::info!(
            target: "audit",
            event = "certificate_imported",
            device_id = %device,
            serial,
            already_recorded = !new,
            client_ip = %ip(who.client),
            admin = who.admin_name(),
        );
        let again = if new { "" } else { " (already recorded)" };
        self.keep_by(
            "certificate_imported",
            device.as_str(),
            format!("{serial}{again}"),
            who,
        );
    }

    pub fn certificate_revoked(
        &self,
        device: &DeviceId,
        serial: &str,
        reason: &str,
        first: bool,
        who: &Actor,
    ) {
        tracing::info!(
            target: "audit",
            event = "certificate_revoked",
            device_id = %device,
            serial,
            reason,
            already_revoked = !first,
            client_ip = %ip(who.client),
            admin = who.admin_name(),
        );
        let again = if first { "" } else { ", already revoked" };
        self.keep_by(
            "certificate_revoked",
            device.as_str(),
            format!("{serial} ({reason}{again})"),
            who,
        );
    }

    /// A serial put on the CRL with no record of its certificate: no device to file it
    /// under, so the recent events show it with an empty device id.
    pub fn serial_listed(&self, serial: &str, reason: &str, first: bool, who: &Actor) {
        tracing::info!(
            target: "audit",
            event = "serial_listed",
            serial,
            reason,
            already_listed = !first,
            client_ip = %ip(who.client),
            admin = who.admin_name(),
        );
        let again = if first { "" } else { ", already listed" };
        self.keep_by(
            "serial_listed",
            "",
            format!("{serial} ({reason}{again})"),
            who,
        );
    }

    pub fn certificate_renewed(
        &self,
        device: &DeviceId,
        previous: &str,
        serial: &str,
        proof: &str,
        client: Option<IpAddr>,
    ) {
        tracing::info!(
            target: "audit",
            event = "certificate_renewed",
            device_id = %device,
            previous_serial = previous,
            serial,
            proof,
            client_ip = %ip(client),
        );
        self.keep(
            "certificate_renewed",
            device.as_str(),
            format!("{previous} -> {serial} ({proof})"),
            client,
        );
    }

    /// The pre-issuance hook's word on a certificate for the device: `allow` (with the
    /// validity it asked for), `deny` (its reason), or `error` (why none came).
    pub fn hook_decided(
        &self,
        device: &DeviceId,
        group: &str,
        decision: &'static str,
        detail: &str,
        client: Option<IpAddr>,
    ) {
        tracing::info!(target: "audit", event = "hook_decided", device_id = %device, group, decision, detail, client_ip = %ip(client));
        let shown = match detail {
            "" => decision.to_owned(),
            _ => format!("{decision}: {detail}"),
        };
        self.keep("hook_decided", device.as_str(), shown, client);
    }

    /// A device finished provisioning over MQTT (RegisterThing): the certificate of
    /// `serial` is now its own.
    pub fn device_registered(
        &self,
        device: &DeviceId,
        serial: &str,
        group: &str,
        client: Option<IpAddr>,
    ) {
        tracing::info!(target: "audit", event = "device_registered", device_id = %device, serial, group, client_ip = %ip(client));
        self.keep(
            "device_registered",
            device.as_str(),
            format!("{serial}{}", in_group(group)),
            client,
        );
    }

    pub fn device_blocked(&self, device: &DeviceId, reason: &str, who: &Actor) {
        tracing::info!(target: "audit", event = "device_blocked", device_id = %device, reason, client_ip = %ip(who.client), admin = who.admin_name());
        self.keep_by("device_blocked", device.as_str(), reason.to_owned(), who);
    }

    pub fn device_unblocked(&self, device: &DeviceId, was_blocked: bool, who: &Actor) {
        tracing::info!(target: "audit", event = "device_unblocked", device_id = %device, was_blocked, client_ip = %ip(who.client), admin = who.admin_name());
        let detail = if was_blocked {
            "block lifted"
        } else {
            "was not blocked"
        };
        self.keep_by("device_unblocked", device.as_str(), detail.to_owned(), who);
    }
}

/// `, group <name>` for the console's detail line; nothing for `default`, so that a
/// server without groups reads as before.
fn in_group(group: &str) -> String {
    match group {
        crate::registry::DEFAULT_GROUP => String::new(),
        name => format!(", group {name}"),
    }
}
