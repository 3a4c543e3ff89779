//! The renewal proof: any text (first byte 0), or claims the harness signs with the
//! fixture device's key and certificate (first byte 1; integer times are offsets from
//! now). Every refusal is a 4xx; a proof accepted is for the device, from our CA, and
//! its `iat` is at most a device clock's skew (600 s) ahead of ours.
#![no_main]

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use provisiond::auth::renewal;
use provisiond::clock::{DEVICE_CLOCK_SKEW_SECS, unix_now};
use provisiond_fuzz::{
    DEVICE, assert_client_error, claims_from, device, device_credentials, issuers,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = unix_now();
    let proof = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let Some(claims) = claims_from(rest, now) else {
            return;
        };
        let (cert, key) = device_credentials();
        let mut header = Header::new(Algorithm::ES256);
        header.x5c = Some(vec![base64::engine::general_purpose::STANDARD.encode(cert)]);
        let key = EncodingKey::from_ec_pem(key.as_bytes()).expect("the fixture key");
        jsonwebtoken::encode(&header, &claims, &key).expect("ES256 signs anything")
    };
    match renewal::verify(&proof, issuers(), &device(), now) {
        Err(error) => assert_client_error(&error),
        Ok(proof) => {
            assert_eq!(proof.certificate.common_name, DEVICE);
            // A device's clock may run ahead of ours by the documented window, no more.
            assert!(proof.single_use.issued_at <= now + DEVICE_CLOCK_SKEW_SECS);
        }
    }
});
