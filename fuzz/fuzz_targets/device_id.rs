//! Device ids: an id accepted is safe in a Redis hash tag (no braces, so every key of a
//! device lands in one Cluster slot), a file name and a log line, and reads back as
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisiond::domain::{DEVICE_ID_MAX_LEN, DeviceId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = DeviceId::parse(text) {
        let id = id.as_str();
        assert_eq!(id, text);
        assert!(!id.is_empty() && id.len() <= DEVICE_ID_MAX_LEN);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b'/' | b'\\'))
        );
    }
});
