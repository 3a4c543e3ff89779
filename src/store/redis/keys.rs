//! Key names: the only place that knows the layout drawn in the [`super`] module's docs.

use crate::domain::DeviceId;
use crate::registry::slots;

/// Key names; the only place that knows the layout.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) prefix: String,
}

/// The device of a `<kind prefix>{<device>}` key (`<prefix>device:`, `<prefix>blocked:`),
/// if the key is one.
pub(super) fn device_in(key: &str, kind_prefix: &str) -> Option<DeviceId> {
    let id = key
        .strip_prefix(kind_prefix)?
        .strip_prefix('{')?
        .strip_suffix('}')?;
    DeviceId::parse(id).ok()
}

impl Keys {
    pub(super) fn device(&self, device: &DeviceId) -> String {
        format!("{}device:{{{device}}}", self.prefix)
    }

    pub(super) fn token(&self, device: &DeviceId, jti: &str) -> String {
        format!("{}token:{{{device}}}:{jti}", self.prefix)
    }

    /// The certificate records of every device in `slot`.
    pub(super) fn certificates(&self, slot: u16) -> String {
        format!("{}certs:{{{}}}", self.prefix, slots::tag_for(slot))
    }

    /// The bucket that holds the record of the certificate with `serial`.
    pub(super) fn certificate_of(&self, serial: &[u8; 16]) -> String {
        self.certificates(slots::slot_of_serial(serial))
    }

    /// The device of an imported certificate whose serial does not carry its device's
    /// slot (one made before the registry, or elsewhere): its record lives in the
    /// device's bucket, and this finds it from the serial.
    pub(super) fn serial_index(&self, serial: &[u8; 16]) -> String {
        format!("{}serial:{{{}}}", self.prefix, hex::encode_upper(serial))
    }

    /// Each renewed certificate of the device: serial -> its successor's serial.
    pub(super) fn successors(&self, device: &DeviceId) -> String {
        format!("{}renewed:{{{device}}}", self.prefix)
    }

    /// What the renewal of `previous` handed out, for a retry.
    pub(super) fn handover(&self, device: &DeviceId, previous: &[u8; 16]) -> String {
        format!(
            "{}handover:{{{device}}}:{}",
            self.prefix,
            hex::encode_upper(previous)
        )
    }

    /// Revoked serials (upper-case hex), scored by their certificates' notAfter.
    pub(super) fn revoked(&self) -> String {
        format!("{}revoked", self.prefix)
    }

    /// Serials whose revocation may have changed their record but not reached the
    /// revoked list yet, scored by when (unix s).
    pub(super) fn owed_listings(&self) -> String {
        format!("{}revoked:pending", self.prefix)
    }

    /// A serial listed on the CRL without a record: `<revoked at>:<reason code>`, kept
    /// until the listing's end, so that a record written later comes back revoked.
    pub(super) fn listed(&self, serial: &[u8; 16]) -> String {
        format!("{}listed:{{{}}}", self.prefix, hex::encode_upper(serial))
    }

    /// Unix ms of the latest revocation.
    pub(super) fn revision(&self) -> String {
        format!("{}revoked:revision", self.prefix)
    }

    pub(super) fn blocked(&self, device: &DeviceId) -> String {
        format!("{}blocked:{{{device}}}", self.prefix)
    }

    /// When the device's block was last lifted: a lost block that is replayed from the
    /// certs directory must not come back over a later unblock.
    pub(super) fn unblocked(&self, device: &DeviceId) -> String {
        format!("{}unblocked:{{{device}}}", self.prefix)
    }

    /// The console's shared history, one key per kind (`events`, `rejected`,
    /// `refusals`, `anonymous`, `seconds`, `totals`), all in one slot.
    pub(super) fn history(&self, kind: &str) -> String {
        format!("{}history:{{console}}:{kind}", self.prefix)
    }

    pub(super) fn blocked_prefix(&self) -> String {
        format!("{}blocked:", self.prefix)
    }

    pub(super) fn proof(&self, device: &DeviceId, id: u64) -> String {
        format!("{}proof:{{{device}}}:{id:016x}", self.prefix)
    }

    pub(super) fn device_limit(&self, device: &DeviceId) -> String {
        format!("{}rl:{{{device}}}", self.prefix)
    }

    pub(super) fn address_limit(&self, ip: std::net::IpAddr) -> String {
        format!("{}rl:ip:{{{ip}}}", self.prefix)
    }

    pub(super) fn nonce(&self, device: &DeviceId, nonce: u64) -> String {
        format!("{}nonce:{{{device}}}:{nonce}", self.prefix)
    }

    /// One instance's counter, bumped at every health check.
    pub(super) fn marker(&self, instance: &str, shard: Option<&str>) -> String {
        match shard {
            None => format!("{}marker:{instance}", self.prefix),
            Some(tag) => format!("{}marker:{{{tag}}}:{instance}", self.prefix),
        }
    }

    /// The Redis `run_id` some instance last checked for lost writes.
    pub(super) fn incarnation(&self, shard: Option<&str>) -> String {
        match shard {
            None => format!("{}incarnation", self.prefix),
            Some(tag) => format!("{}incarnation:{{{tag}}}", self.prefix),
        }
    }

    /// The epoch (bumped at each loss of writes any instance noticed) and the moment of
    /// the latest loss.
    pub(super) fn lost_writes(&self) -> String {
        format!("{}lost-writes", self.prefix)
    }

    pub(super) fn token_prefix(&self) -> String {
        format!("{}token:", self.prefix)
    }

    pub(super) fn device_prefix(&self) -> String {
        format!("{}device:", self.prefix)
    }

    /// A SCAN pattern for every key of ours, the prefix's glob characters escaped.
    pub(super) fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 1);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn keys_follow_the_documented_layout() {
        let keys = Keys {
            prefix: "mqtt-lite:".into(),
        };
        let device = DeviceId::parse("device-001").unwrap();
        assert_eq!(keys.device(&device), "mqtt-lite:device:{device-001}");
        assert_eq!(
            keys.token(&device, "abc"),
            "mqtt-lite:token:{device-001}:abc"
        );
        assert_eq!(keys.blocked(&device), "mqtt-lite:blocked:{device-001}");
        assert_eq!(keys.unblocked(&device), "mqtt-lite:unblocked:{device-001}");
        let blocked = keys.blocked(&device);
        assert_eq!(
            device_in(&blocked, &keys.blocked_prefix()),
            Some(device.clone())
        );
        assert_eq!(device_in(&blocked, &keys.device_prefix()), None);
        assert_eq!(
            device_in("mqtt-lite:blocked:device-001", &keys.blocked_prefix()),
            None
        );
        assert_eq!(
            keys.proof(&device, 0xabc),
            "mqtt-lite:proof:{device-001}:0000000000000abc"
        );
        let glob = Keys {
            prefix: "a*b[".into(),
        };
        assert_eq!(glob.scan_pattern(), "a\\*b\\[*");
    }
}
