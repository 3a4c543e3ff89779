//! OCSP requests (RFC 6960 §4.1): any bytes are read without a panic, at most
//! `MAX_OCSP_REQUESTS` CertIDs come out, and whatever reads is answered with a response
//! the CA signs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisiond::ca::{CertStatus, MAX_OCSP_REQUESTS, parse_ocsp_request};
use provisiond_fuzz::ca;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse_ocsp_request(data) else {
        return;
    };
    assert!((1..=MAX_OCSP_REQUESTS).contains(&request.certs.len()));
    let statuses = vec![CertStatus::Unknown; request.certs.len()];
    let now = time::OffsetDateTime::now_utc();
    let response = ca()
        .ocsp_response(&request, &statuses, now, now + time::Duration::hours(1))
        .expect("a request that reads is answered");
    assert_eq!(response[0], 0x30);
});
