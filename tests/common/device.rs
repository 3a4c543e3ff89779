//! The device side of renewal in tests: a device with a certificate, its proof, and
//! certificates signed by a test server's CA key outside its registry.

use provisiond::auth::renewal;
use provisiond::clock::unix_now;
use provisiond::device::{DeviceKey, KeyKind};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::TestApp;

/// A device with a certificate: its key (PKCS#8 PEM), certificate (PEM) and serial.
pub struct Enrolled {
    pub key: DeviceKey,
    pub cert_pem: String,
    pub serial: String,
}

impl Enrolled {
    pub fn der(&self) -> Vec<u8> {
        pem::parse(&self.cert_pem).unwrap().into_contents()
    }

    pub fn proof(&self, device: &str) -> String {
        renewal::sign(
            device,
            &self.der(),
            &self.key.private_key_pem(),
            None,
            unix_now(),
        )
        .unwrap()
    }

    /// A proof bound to `csr` (its `csr_key` claim).
    pub fn bound_proof(&self, device: &str, csr: &str) -> String {
        let bound = provisiond::device::csr_key(csr).unwrap();
        let key = self.key.private_key_pem();
        renewal::sign(device, &self.der(), &key, Some(bound), unix_now()).unwrap()
    }
}

pub async fn enroll(app: &TestApp, device: &str, kind: KeyKind) -> Enrolled {
    let key = DeviceKey::generate(kind).unwrap();
    let token = app.token_for(device).await;
    let response = app
        .sign_csr(&token, device, &key.csr_pem(Some(device)).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let signed: Value = response.json().await.unwrap();
    Enrolled {
        key,
        cert_pem: signed["certificate"].as_str().unwrap().to_owned(),
        serial: signed["serial_number"].as_str().unwrap().to_owned(),
    }
}

pub async fn renew(
    app: &TestApp,
    device: &str,
    csr: &str,
    proof: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/renew"))
        .json(&json!({ "device_id": device, "csr": csr }));
    if let Some(proof) = proof {
        request = request.bearer_auth(proof);
    }
    request.send().await.unwrap()
}

/// A certificate from the test server's CA that expired yesterday.
pub fn expired_certificate(certs: &std::path::Path, device: &str) -> Enrolled {
    let now = time::OffsetDateTime::now_utc();
    let serial =
        provisiond::registry::slots::serial_in(provisiond::registry::slots::slot_of(device));
    signed_outside_the_registry(
        certs,
        device,
        now - time::Duration::days(30),
        now - time::Duration::days(1),
        &serial,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// A certificate signed with the test server's CA key but never recorded: as made before
/// the registry existed, or by the CA's key elsewhere.
pub fn signed_outside_the_registry(
    certs: &std::path::Path,
    device: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
    serial: &[u8],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> Enrolled {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.join("ca.key")).unwrap()).unwrap();
    let ca_der = pem::parse(std::fs::read_to_string(certs.join("ca.crt")).unwrap())
        .unwrap()
        .into_contents();
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der.into(), ca_key).unwrap();
    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    let device_key = rcgen::KeyPair::from_pem(&key.private_key_pem()).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device);
    params.extended_key_usages = vec![usage];
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    let cert = params.signed_by(&device_key, &issuer).unwrap();
    Enrolled {
        key,
        cert_pem: cert.pem(),
        serial: String::new(),
    }
}
