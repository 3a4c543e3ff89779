//! Request bodies as every JSON route reads them: the object, then the fields the
//! routes take (device_id, csr, reason, block). Every refusal is a 4xx; a device id
//! read is a valid one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisiond::api::body::JsonBody;
use provisiond::domain::DeviceId;
use provisiond_fuzz::assert_client_error;

fuzz_target!(|data: &[u8]| {
    let body = match JsonBody::parse(data) {
        Ok(body) => body,
        Err(error) => return assert_client_error(&error),
    };
    match body.device_id() {
        Ok(id) => assert!(DeviceId::parse(id.as_str()).is_ok()),
        Err(error) => assert_client_error(&error),
    }
    for field in ["csr", "reason"] {
        if let Err(error) = body.str_field_or_absent(field) {
            assert_client_error(&error);
        }
    }
    if let Err(error) = body.bool_field_or_absent("block") {
        assert_client_error(&error);
    }
});
