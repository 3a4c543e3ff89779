//! A CSR as sign-csr receives it: PEM text (first byte 0), or DER that the harness wraps
//! in a PEM block (first byte 1), checked against the default key policy. Every
//! refusal is a 4xx; every CSR accepted is signed, and the certificate carries the
//! device's name and no CA bit.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use provisiond::ca::{CertProfile, check_csr};
use provisiond_fuzz::{assert_client_error, ca, device};
use x509_parser::prelude::{FromDer, X509Certificate};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pem = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let body = base64::engine::general_purpose::STANDARD.encode(rest);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n")
    };
    let ca = ca();
    let device = device();
    match check_csr(&pem, &device, ca.policy()) {
        Err(error) => assert_client_error(&error),
        Ok(key) => {
            let issued = ca
                .issue(
                    &key,
                    &[0x80; 16],
                    &CertProfile::device(device.as_str()),
                    time::Duration::days(365),
                )
                .expect("an accepted CSR is signed");
            let (_, block) = x509_parser::pem::parse_x509_pem(issued.pem.as_bytes()).unwrap();
            let (_, cert) = X509Certificate::from_der(&block.contents).unwrap();
            let cn: Vec<_> = cert.subject().iter_common_name().collect();
            assert_eq!(cn.len(), 1);
            assert_eq!(cn[0].as_str().unwrap(), device.as_str());
            assert!(!cert.is_ca());
        }
    }
});
