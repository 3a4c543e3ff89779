//! Rate limits every instance shares: one GCRA script per device or address.

use std::time::Duration;

use super::super::StoreError;
use super::RedisStore;
use crate::domain::DeviceId;

/// What a shared rate limit counts.
#[derive(Debug, Clone, Copy)]
pub enum LimitSubject<'a> {
    Device(&'a DeviceId),
    Address(std::net::IpAddr),
}

impl RedisStore {
    /// One request against a limit of `per_minute` that every instance shares; `Ok(None)`
    /// when it is allowed, `Ok(Some(wait))` when it is not.
    pub async fn shared_limit(
        &self,
        subject: LimitSubject<'_>,
        per_minute: u32,
    ) -> Result<Option<Duration>, StoreError> {
        let key = match subject {
            LimitSubject::Device(device) => self.keys.device_limit(device),
            LimitSubject::Address(ip) => self.keys.address_limit(ip),
        };
        let emission_us = (60_000_000 / u64::from(per_minute.max(1))).max(1);
        let (allowed, wait_us): (i64, i64) = self
            .gcra_script
            .key(key)
            .arg(emission_us)
            .arg(per_minute)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))?;
        Ok((allowed == 0).then(|| Duration::from_micros(wait_us.max(0) as u64)))
    }
}
