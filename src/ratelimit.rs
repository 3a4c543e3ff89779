//! Rate limits on onboarding and sign-csr, per client address and per device id, and on
//! failed admin authentication per address (GCRA, from governor). Each instance keeps
//! its own counts: behind a load balancer with N instances, a client can reach N times
//! the limit.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitSettings;
use crate::domain::DeviceId;
use crate::error::{ApiError, LimitScope};

pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Keyed by a keyed 64-bit hash of the device id, not the id itself: an entry then
    /// needs no allocation of its own, which matters with a million devices seen in a
    /// minute. Two ids sharing a hash would share a limit; with a random key that is
    /// a one-in-2^64 chance per pair.
    per_device: Option<DefaultKeyedRateLimiter<u64>>,
    device_hasher: RandomState,
    /// Keyed by the claim certificate's serial.
    per_claim: Option<DefaultKeyedRateLimiter<[u8; 16]>>,
    admin_failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses that failed admin authentication too often, until when: they are refused
    /// before their key is even looked at, so guessing stops.
    admin_blocked: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
    per_ip_per_minute: u32,
    per_device_per_minute: u32,
    /// Whether the per-address and per-device limits are counted in Redis when it is up.
    pub shared: bool,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_minute: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            per_ip: limiter(settings.per_ip_per_minute),
            per_device: limiter(settings.per_device_per_minute),
            device_hasher: RandomState::new(),
            per_claim: limiter(settings.per_claim_per_minute),
            admin_failures: limiter(settings.admin_failures_per_minute),
            admin_blocked: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
            per_ip_per_minute: settings.per_ip_per_minute,
            per_device_per_minute: settings.per_device_per_minute,
            shared: settings.shared,
        }
    }

    /// Requests per minute per address; 0 when off.
    pub fn per_ip_per_minute(&self) -> u32 {
        self.per_ip_per_minute
    }

    /// Requests per minute per device; 0 when off.
    pub fn per_device_per_minute(&self) -> u32 {
        self.per_device_per_minute
    }

    /// The refusal for a shared limit that says to wait `wait`.
    pub fn refusal(scope: LimitScope, wait: Duration) -> ApiError {
        ApiError::RateLimited {
            scope,
            retry_after: seconds(wait),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check(self.per_ip.as_ref(), &ip, LimitScope::Ip)
            .map_err(|(e, _)| e)
    }

    pub fn check_device(&self, device: &DeviceId) -> Result<(), ApiError> {
        let key = self.device_hasher.hash_one(device.as_str());
        self.check(self.per_device.as_ref(), &key, LimitScope::Device)
            .map_err(|(e, _)| e)
    }

    /// One MQTT provisioning request with the claim certificate of serial `claim`.
    pub fn check_claim(&self, claim: &[u8; 16]) -> Result<(), ApiError> {
        self.check(self.per_claim.as_ref(), claim, LimitScope::Claim)
            .map_err(|(e, _)| e)
    }

    /// Refuses an address that failed admin authentication too often lately.
    pub fn check_admin(&self, ip: IpAddr) -> Result<(), ApiError> {
        let mut blocked = self.admin_blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(&ip) {
            Some(until) if *until > Instant::now() => Err(ApiError::RateLimited {
                scope: LimitScope::Admin,
                retry_after: seconds(*until - Instant::now()),
            }),
            Some(_) => {
                blocked.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed admin authentication; past the limit, the address is refused
    /// (this answer included) until its allowance has recovered.
    pub fn admin_failed(&self, ip: IpAddr) -> Result<(), ApiError> {
        match self.check(self.admin_failures.as_ref(), &ip, LimitScope::Admin) {
            Ok(()) => Ok(()),
            Err((e, wait)) => {
                self.admin_blocked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(ip, Instant::now() + wait);
                Err(e)
            }
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: Option<&DefaultKeyedRateLimiter<K>>,
        key: &K,
        scope: LimitScope,
    ) -> Result<(), (ApiError, Duration)> {
        match limiter.map(|l| l.check_key(key)) {
            None | Some(Ok(())) => Ok(()),
            Some(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err((
                    ApiError::RateLimited {
                        scope,
                        retry_after: seconds(wait),
                    },
                    wait,
                ))
            }
        }
    }

    /// Forgets keys whose limits have fully recovered, so that a million devices seen
    /// once do not stay in memory.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_device {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_claim {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.admin_failures {
            l.retain_recent();
            l.shrink_to_fit();
        }
        let now = Instant::now();
        self.admin_blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
    }
}

/// Whole seconds to wait, at least one.
fn seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}
