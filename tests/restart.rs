//! A restart with Redis loses no pending token and no CA.

mod common;

use common::app::test_settings;
use common::pki::{openssl_csr, verify_externally};
use common::{RedisServer, TestApp};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_tokens_and_the_ca_survive_a_restart() {
    let redis = RedisServer::start();
    let certs = tempfile::tempdir().unwrap();
    let mut settings = test_settings(Some(&redis), certs.path());
    // The generated secret in certs/, not a configured one, must carry over.
    settings.tokens.jwt_secret = None;

    let first = TestApp::spawn_settings(settings.clone()).await;
    let token = first.token_for("survivor-1").await;
    let ca_before = first.ca_pem().await;
    first.stop().await;

    let second = TestApp::spawn_settings(settings).await;
    let ca_after = second.ca_pem().await;
    assert_eq!(ca_before, ca_after, "the CA was kept");

    let csr = openssl_csr("p256", "survivor-1", &[]);
    let response = second.sign_csr(&token, "survivor-1", &csr.csr_pem).await;
    assert_eq!(response.status(), StatusCode::OK);
    let signed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(signed["ca_certificate"].as_str().unwrap(), ca_before);
    verify_externally(&signed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_made_by_openssl_is_loaded_with_its_chain() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A root, and an intermediate under it that will do the signing (SEC1 key).
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.crt",
        "-subj",
        "/CN=Test Root",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ca.key",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=Test Issuing CA",
        "-out",
        "ca.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "ca.csr",
        "-CA",
        "root.crt",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-days",
        "20",
        "-extfile",
        "ext.cnf",
        "-out",
        "issuing.crt",
    ]);
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("issuing.crt")).unwrap(),
        std::fs::read_to_string(dir.join("root.crt")).unwrap()
    );
    std::fs::write(dir.join("ca.crt"), &chain).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let app = TestApp::spawn_settings(test_settings(None, dir)).await;
    let token = app.token_for("chained-1").await;
    let csr = openssl_csr("p256", "chained-1", &[]);
    let response = app.sign_csr(&token, "chained-1", &csr.csr_pem).await;
    assert_eq!(response.status(), StatusCode::OK);
    let signed: serde_json::Value = response.json().await.unwrap();
    // The root ends the chain: devices trust it, and present the intermediate.
    let anchor = signed["ca_certificate"].as_str().unwrap();
    assert_eq!(
        anchor,
        std::fs::read_to_string(dir.join("root.crt")).unwrap()
    );
    let presented = signed["certificate"].as_str().unwrap();
    assert_eq!(presented.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(presented.ends_with(&std::fs::read_to_string(dir.join("issuing.crt")).unwrap()));
    verify_externally(&signed);
    // The device certificate ends when the issuing CA does, not a year later.
    let end = common::pki::openssl_x509(signed["certificate"].as_str().unwrap(), &["-enddate"]);
    let ca_end = common::pki::openssl_x509(
        &std::fs::read_to_string(dir.join("issuing.crt")).unwrap(),
        &["-enddate"],
    );
    assert_eq!(end, ca_end);
}
