//! Redis Cluster hash slots, and a hash tag for each: the certificate records of all the
//! devices of one slot live in one bucket whose key's tag falls in that same slot, so the
//! script that consumes a device's token can write its certificate record too.
//!
//! A certificate's serial carries its device's slot (14 of its 128 bits), so a record is
//! found from the serial alone, with no index to keep.

use std::sync::OnceLock;

pub const SLOTS: u16 = 16384;

/// CRC16-XMODEM, as Redis Cluster hashes keys.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key whose hash tag is `tag`.
pub fn slot_of(tag: &str) -> u16 {
    crc16(tag.as_bytes()) % SLOTS
}

/// The slot of a whole key, as Redis Cluster computes it: its hash tag (the part between
/// the first `{` and the next `}`, when not empty) or else the whole key.
pub fn key_slot(key: &str) -> u16 {
    let tagged = key.split_once('{').and_then(|(_, rest)| {
        let (tag, _) = rest.split_once('}')?;
        (!tag.is_empty()).then_some(tag)
    });
    slot_of(tagged.unwrap_or(key))
}

/// A short tag that falls in `slot`: the first of `s0`, `s1`, ... to do so. Every
/// instance computes the same table.
pub fn tag_for(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; usize::from(SLOTS)];
        let mut missing = usize::from(SLOTS);
        let mut n = 0u64;
        while missing > 0 {
            let tag = format!("s{n}");
            let entry = &mut tags[usize::from(slot_of(&tag))];
            if entry.is_none() {
                *entry = Some(tag);
                missing -= 1;
            }
            n += 1;
        }
        tags.into_iter().map(|t| t.expect("every slot")).collect()
    });
    &tags[usize::from(slot % SLOTS)]
}

/// The 14 bits of a serial that name the slot (bits 1 to 14: bit 0 is always set, so
/// that every serial has 128 bits and stays positive).
pub fn slot_of_serial(serial: &[u8; 16]) -> u16 {
    (u16::from(serial[0] & 0x3f) << 8 | u16::from(serial[1])) % SLOTS
}

/// A serial for a device in `slot`: 112 random bits around the slot.
pub fn serial_in(slot: u16) -> [u8; 16] {
    let mut serial = [0u8; 16];
    crate::crypto::fill_random(&mut serial);
    serial[0] = 0x80 | ((slot >> 8) as u8 & 0x3f);
    serial[1] = slot as u8;
    serial
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_follow_the_hash_tag_rule() {
        assert_eq!(key_slot("p:token:{dev-1}:abc"), slot_of("dev-1"));
        assert_eq!(key_slot("p:revoked"), slot_of("p:revoked"));
        assert_eq!(key_slot("p:{}:x"), slot_of("p:{}:x"));
        // Redis's own answer for CLUSTER KEYSLOT foo.
        assert_eq!(key_slot("foo"), 12182);
    }

    #[test]
    fn slots_match_redis_cluster() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("device-001"), slot_of("device-001"));
    }

    #[test]
    fn every_slot_has_a_tag_in_it_and_serials_keep_their_slot() {
        for slot in [0, 1, 5000, 12182, SLOTS - 1] {
            assert_eq!(slot_of(tag_for(slot)), slot);
            let serial = serial_in(slot);
            assert_eq!(slot_of_serial(&serial), slot);
            assert!(serial[0] & 0x80 != 0, "128 bits, positive");
        }
        assert_ne!(serial_in(7), serial_in(7));
    }
}
