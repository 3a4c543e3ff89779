//! `Authorization` values: the bearer credential's extraction, and the `Device
//! ts=..,sig=..` signature of derived mode checked for the fixture device. A signature
//! accepted is one the device's derived key made (the harness recomputes it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisiond::auth::bearer_credential;
use provisiond::auth::derived::{self, DerivedKeys};
use provisiond::secret::Secret;
use provisiond_fuzz::{DEVICE, GROUP_SECRET, assert_client_error};

/// A fixed "now", so that the committed corpus's signatures stay inside the skew.
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(credential) = bearer_credential(header) {
        assert!(!credential.is_empty() && credential.trim() == credential);
    }
    let keys = DerivedKeys::new(&Secret::new(GROUP_SECRET), 300);
    match keys.verify(Some(header), DEVICE, NOW) {
        Err(error) => assert_client_error(&error),
        Ok(ts) => {
            assert!(ts.abs_diff(NOW) <= 300);
            // A signature binds its device: the same header fails for any other id.
            assert!(keys.verify(Some(header), "fuzz-device-2", NOW).is_err());
            let key = derived::device_key(GROUP_SECRET.as_bytes(), DEVICE);
            let made = derived::authorization(&key, DEVICE, ts);
            assert_eq!(keys.verify(Some(&made), DEVICE, NOW).ok(), Some(ts));
        }
    }
});
