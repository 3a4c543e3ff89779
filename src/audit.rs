//! The audit stream: one event per token issued, consumed, rejected or revoked, per
//! certificate issued, renewed or revoked, and per device blocked or unblocked, on the tracing target `audit` (route it with
//! `RUST_LOG=audit=info`; with `LOG_FORMAT=json` each event is one JSON object). Events
//! name the device and client and a token by the first 8 characters of its jti; never a
//! token, key or secret.

use std::net::IpAddr;

use crate::domain::{DeviceId, Jti};

fn ip(client: Option<IpAddr>) -> String {
    client.map_or_else(|| "-".to_owned(), |ip| ip.to_string())
}

pub fn token_issued(device: &DeviceId, jti: &Jti, client: Option<IpAddr>) {
    tracing::info!(target: "audit", event = "token_issued", device_id = %device, jti = %jti.short(), client_ip = %ip(client));
}

pub fn token_consumed(device: &DeviceId, jti: &Jti, client: Option<IpAddr>) {
    tracing::info!(target: "audit", event = "token_consumed", device_id = %device, jti = %jti.short(), client_ip = %ip(client));
}

pub fn token_rejected(device: Option<&str>, reason: &str, client: Option<IpAddr>) {
    tracing::info!(target: "audit", event = "token_rejected", device_id = device.unwrap_or("-"), reason, client_ip = %ip(client));
}

pub fn token_revoked(device: &DeviceId, had_token: bool, client: Option<IpAddr>) {
    tracing::info!(target: "audit", event = "token_revoked", device_id = %device, had_token, client_ip = %ip(client));
}

pub fn certificate_issued(
    device: &DeviceId,
    serial: &str,
    key_type: &str,
    fingerprint_sha256: &str,
    client: Option<IpAddr>,
) {
    tracing::info!(
        target: "audit",
        event = "certificate_issued",
        device_id = %device,
        serial,
        key_type,
        fingerprint_sha256,
        client_ip = %ip(client),
    );
}

pub fn certificate_revoked(
    device: &DeviceId,
    serial: &str,
    reason: &str,
    first: bool,
    client: Option<IpAddr>,
) {
    tracing::info!(
        target: "audit",
        event = "certificate_revoked",
        device_id = %device,
        serial,
        reason,
        already_revoked = !first,
        client_ip = %ip(client),
    );
}

pub fn certificate_renewed(
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
}

pub fn device_blocked(device: &DeviceId, reason: &str, client: Option<IpAddr>) {
    tracing::info!(target: "audit", event = "device_blocked", device_id = %device, reason, client_ip = %ip(client));
}

pub fn device_unblocked(device: &DeviceId, was_blocked: bool, client: Option<IpAddr>) {
    tracing::info!(target: "audit", event = "device_unblocked", device_id = %device, was_blocked, client_ip = %ip(client));
}
