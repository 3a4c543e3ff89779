//! What EST reads from the network: the body of `simpleenroll` / `simplereenroll` (base64
//! of a PKCS#10 request, with or without line breaks, or PEM), checked as sign-csr checks
//! a CSR, and a Basic password read as an enrollment code. Every refusal is a 4xx; a
//! body that reads is PEM a CSR check can take.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisiond::api::est::wire::csr_pem;
use provisiond::ca::check_csr;
use provisiond::enrollment_code::CodeKey;
use provisiond_fuzz::{assert_client_error, ca, device};

fuzz_target!(|data: &[u8]| {
    match csr_pem(data) {
        Err(error) => assert_client_error(&error),
        Ok(pem) => {
            if let Err(error) = check_csr(&pem, &device(), ca().policy()) {
                assert_client_error(&error);
            }
        }
    }
    let key = CodeKey::derive(
        b"fuzz-secret-fuzz-secret-fuzz-sec",
        "provisiond",
        "provisiond",
    );
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(error) = key.decode(&device(), text, 0)
    {
        assert_client_error(&error);
    }
});
