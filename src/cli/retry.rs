//! Patience with a busy server: 429 and 503 are retried with exponential backoff and
//! full jitter, a Retry-After from the server taken as a floor. Shared by `bulk` (every
//! request of every device) and `renew` (one request, or one per round in `--watch`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::client::ClientError;

pub struct Retry {
    max_attempts: u32,
    retries: AtomicU64,
}

impl Retry {
    /// Up to `max_attempts` calls per request (at least one).
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            retries: AtomicU64::new(0),
        }
    }

    /// Requests sent again so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Calls until the answer is not a 429/503, or the attempts are spent.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(e) if e.is_retryable() && attempt + 1 < self.max_attempts => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt, e.retry_after())).await;
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }
}

/// Full jitter over an exponential ceiling (0.2 s doubling to 10 s); a Retry-After from
/// the server is a floor, with up to 250 ms of jitter so retries do not arrive together.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(wait) => wait + jitter(Duration::from_millis(250)),
        None => {
            let ceiling = Duration::from_millis(200).saturating_mul(1 << attempt.min(6));
            jitter(ceiling.min(Duration::from_secs(10)))
        }
    }
}

/// A uniformly random duration in `0..=max`.
pub fn jitter(max: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    crate::crypto::fill_random(&mut bytes);
    max.mul_f64(u64::from_le_bytes(bytes) as f64 / u64::MAX as f64)
}
