//! The wall clock as the server reads it (Unix seconds and milliseconds), and how far
//! the clocks of instances sharing a secret may disagree.

use std::time::{SystemTime, UNIX_EPOCH};

/// How far the clocks of instances sharing a secret may disagree: a token's `iat` and
/// `nbf` may be this far in the future. (`exp` has no leeway: the store's TTL is exact.)
pub const CLOCK_LEEWAY_SECS: u64 = 5;

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
