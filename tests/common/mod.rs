//! Shared by every test binary; each uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod app;
pub mod bin;
pub mod browser;
pub mod cluster;
pub mod device;
pub mod fleet;
pub mod front;
pub mod hook;
pub mod mosquitto;
pub mod pki;
pub mod proxy;
pub mod redis;
pub mod redis_tls;
pub mod softhsm;

pub use app::{TestApp, error_code, jti_of};
pub use redis::RedisServer;

/// Runs `test`, failing it if it takes longer than `limit`.
pub async fn within<F: std::future::Future>(limit: std::time::Duration, test: F) -> F::Output {
    tokio::time::timeout(limit, test)
        .await
        .expect("the test ran out of time")
}

/// A path as the `&str` an argument list wants (test paths are UTF-8).
pub fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Sends `request` and reads its body as JSON, whatever the status (the callers assert
/// on what came back).
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}
