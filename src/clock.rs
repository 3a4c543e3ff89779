//! The wall clock as the server reads it (Unix seconds and milliseconds), and how far
//! the clocks of instances sharing a secret may disagree.

use std::time::{SystemTime, UNIX_EPOCH};

/// How far the clocks of instances sharing a secret may disagree: a token's `iat` and
/// `nbf` may be this far in the future. (`exp` has no leeway: the store's TTL is exact.)
pub const CLOCK_LEEWAY_SECS: u64 = 5;

/// How far a device's clock may be from the server's, either way, for every time a
/// device makes: a renewal proof's `iat` and `exp`, and derived-mode onboarding's
/// timestamp (`onboarding.clock_skew_seconds`, this by default). Devices without NTP
/// drift by minutes; what the window could let through twice is remembered for as long.
pub const DEVICE_CLOCK_SKEW_SECS: u64 = 600;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}
