//! What CMP reads from the network: a `PKIMessage` (seeded with what `openssl cmp` sent:
//! ir, cr, p10cr, kur, rr, certConf). Reading never panics; a body that reads is checked
//! as the server checks it (a CRMF request as sign-csr checks a CSR, PBM parameters, a
//! MAC, bounded), and every refusal of a request is a 4xx.
#![no_main]

use der::Decode;
use libfuzzer_sys::fuzz_target;
use provisiond::api::cmp::protection::Pbm;
use provisiond::api::cmp::wire::{Kind, parse};
use provisiond::ca::check_template;
use provisiond_fuzz::{assert_client_error, ca, device};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse(data) else {
        return;
    };
    if let Some(alg) = &request.header.protection_alg
        && let Ok(Some(pbm)) = Pbm::of(alg)
        && let Some(protection) = &request.protection
    {
        // Bounded work whatever the parameters say (iterations are capped).
        let _ = pbm.check(b"a secret", &request.protected_part, protection, alg);
    }
    match request.kind {
        Kind::Ir | Kind::Cr | Kind::Kur => {
            if let Ok(messages) = crmf::request::CertReqMessages::from_der(request.content) {
                for message in &messages {
                    if let Err(error) = check_template(message, &device(), ca().policy()) {
                        assert_client_error(&error);
                    }
                }
            }
        }
        Kind::Rr => {
            let _ = cmpv2::rev::RevReqContent::from_der(request.content);
        }
        Kind::CertConf => {
            let _ = cmpv2::status::CertConfirmContent::from_der(request.content);
        }
        _ => {}
    }
});
