//! CSRs as other tools make them: a common name in every DirectoryString encoding RFC
//! 5280 allows (Windows tools write BMPString), ECDSA signed with SHA-512 (`openssl req
//! -sha512`, Python's `cryptography`), and a refusal that names a weak algorithm in
//! words. Made by `openssl req`, checked by `openssl verify` and webpki.

mod common;

use common::pki::{openssl_csr, tamper_signature, verify_externally};
use common::{TestApp, error_code};
use reqwest::StatusCode;
use serde_json::Value;

async fn signed(app: &TestApp, device: &str, csr: &str) -> reqwest::Response {
    let token = app.token_for(device).await;
    app.sign_csr(&token, device, csr).await
}

/// An `openssl req` config whose `string_mask` makes every name attribute `mask`.
fn string_mask_config(dir: &std::path::Path, mask: &str) -> String {
    let path = dir.join(format!("{mask}.cnf"));
    std::fs::write(
        &path,
        format!("[req]\ndistinguished_name=dn\nstring_mask={mask}\nutf8=yes\n[dn]\n"),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_common_name_in_any_directory_string_encoding_is_read() {
    let app = TestApp::spawn(None).await;
    let dir = tempfile::tempdir().unwrap();
    // BMPString (mask 0x800) as Windows tools write it; TeletexString (0x4) as old CAs
    // do. (OpenSSL does not write UniversalString for a name it can print otherwise.)
    for (mask, encoding) in [("MASK:0x800", "BMPSTRING"), ("MASK:0x4", "T61STRING")] {
        let device = format!("name-{}", encoding.to_lowercase());
        let config = string_mask_config(dir.path(), mask);
        let csr = openssl_csr("p256", &device, &["-config", &config]);
        let parsed = common::pki::openssl_asn1parse(&csr.csr_pem);
        assert!(
            parsed.contains(encoding),
            "openssl wrote no {encoding}: {parsed}"
        );
        let response = signed(&app, &device, &csr.csr_pem).await;
        assert_eq!(response.status(), StatusCode::OK, "{encoding}");
        let body: Value = response.json().await.unwrap();
        verify_externally(&body);
        let subject = common::pki::openssl_x509(
            body["certificate"].as_str().unwrap(),
            &["-subject", "-nameopt", "RFC2253"],
        );
        assert_eq!(subject.trim(), format!("subject=CN={device}"), "{encoding}");
    }
    // A BMPString that names another device is refused like any other name.
    let config = string_mask_config(dir.path(), "MASK:0x800");
    let csr = openssl_csr("p256", "someone-else", &["-config", &config]);
    let (status, code) = error_code(signed(&app, "name-mismatch", &csr.csr_pem).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "csr_policy_violation")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_signed_with_sha512_is_accepted_and_weak_hashes_are_named() {
    let app = TestApp::spawn(None).await;
    for key in ["p256", "p384"] {
        let device = format!("sha512-{key}");
        let csr = openssl_csr(key, &device, &["-sha512"]);
        let response = signed(&app, &device, &csr.csr_pem).await;
        assert_eq!(response.status(), StatusCode::OK, "{key}");
        verify_externally(&response.json().await.unwrap());

        // Its proof of possession is checked, not only its algorithm.
        let tampered = tamper_signature(&csr.csr_pem);
        let response = signed(&app, &format!("{device}-t"), &tampered).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{key}");
    }
    let device = "sha1-device";
    let csr = openssl_csr("p256", device, &["-sha1"]);
    let response = signed(&app, device, &csr.csr_pem).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("ecdsa-with-SHA1"), "{message}");
}
