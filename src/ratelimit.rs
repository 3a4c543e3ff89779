//! Rate limits on onboarding and sign-csr, per client address and per device id
//! (GCRA, from governor). Each instance keeps its own counts: behind a load balancer
//! with N instances, a client can reach N times the limit.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitSettings;
use crate::domain::DeviceId;
use crate::error::ApiError;

pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Keyed by a keyed 64-bit hash of the device id, not the id itself: an entry then
    /// needs no allocation of its own, which matters with a million devices seen in a
    /// minute. Two ids sharing a hash would share a limit; with a random key that is
    /// a one-in-2^64 chance per pair.
    per_device: Option<DefaultKeyedRateLimiter<u64>>,
    device_hasher: RandomState,
    clock: DefaultClock,
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
            clock: DefaultClock::default(),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check(self.per_ip.as_ref(), &ip)
    }

    pub fn check_device(&self, device: &DeviceId) -> Result<(), ApiError> {
        let key = self.device_hasher.hash_one(device.as_str());
        self.check(self.per_device.as_ref(), &key)
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: Option<&DefaultKeyedRateLimiter<K>>,
        key: &K,
    ) -> Result<(), ApiError> {
        match limiter.map(|l| l.check_key(key)) {
            None | Some(Ok(())) => Ok(()),
            Some(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(ApiError::RateLimited(
                    wait.as_secs_f64().ceil().max(1.0) as u64
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
    }
}
