//! `[rate_limit]`: how often a client address or a device may call, and how many failed
//! admin logins an address may make.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests to onboarding and sign-csr per client address per minute; 0 turns it off.
    pub per_ip_per_minute: u32,
    /// Requests to onboarding and sign-csr per device id per minute; 0 turns it off.
    pub per_device_per_minute: u32,
    /// MQTT provisioning requests (create and register) per claim certificate per
    /// minute; 0 turns it off. One claim serves a whole production batch.
    pub per_claim_per_minute: u32,
    /// Failed admin authentications per client address per minute; past it the address
    /// is refused for a while. 0 turns it off.
    pub admin_failures_per_minute: u32,
    /// Count the per-address and per-device limits in Redis, shared by every instance
    /// (one script per check), instead of in each instance.
    pub shared: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_ip_per_minute: 120_000,
            per_device_per_minute: 60,
            per_claim_per_minute: 3_000,
            admin_failures_per_minute: 10,
            shared: false,
        }
    }
}
