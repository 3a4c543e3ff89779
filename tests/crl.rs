//! The CRL: served from the first start, signed by the CA, read by OpenSSL, the same on
//! every instance, and kept current in a broker's file by `provisiond crl`.

mod common;

use std::process::Command;

use common::bin::{run, text};
use common::pki::{crl_field as field, openssl_crl, openssl_x509, quick_csr};
use common::{TestApp, error_code};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn the_crl_is_served_from_the_start_and_signed_by_the_ca() {
    let app = TestApp::spawn(None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, app.ca_pem().await).unwrap();

    let der = app.client.get(app.url("/api/v1/crl")).send().await.unwrap();
    assert_eq!(der.headers()["content-type"], "application/pkix-crl");
    // A revocation replaces the CRL at once: caches revalidate, by the CRL number.
    assert_eq!(der.headers()["cache-control"], "public, no-cache");
    let etag = der.headers()["etag"].to_str().unwrap().to_owned();
    let revalidated = app
        .client
        .get(app.url("/api/v1/crl"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());
    // The PEM form is another representation, with its own tag.
    let pem = app
        .client
        .get(app.url("/api/v1/crl?format=pem"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(pem.status(), StatusCode::OK);
    assert_ne!(pem.headers()["etag"], etag.as_str());
    let der_file = dir.path().join("crl.der");
    std::fs::write(&der_file, der.bytes().await.unwrap()).unwrap();
    let text = openssl_crl(&der_file, "DER", &ca);
    assert!(text.contains("No Revoked Certificates."), "{text}");

    // The authority key identifier is the CA's subject key identifier.
    let ski = openssl_x509(&app.ca_pem().await, &["-ext", "subjectKeyIdentifier"]);
    let ski = ski.lines().last().unwrap().trim();
    assert_eq!(
        field(&text, "Authority Key Identifier").trim_start_matches("keyid:"),
        ski
    );
    let number = field(&text, "CRL Number");
    assert!(!number.is_empty());
    // Valid 24 hours from its thisUpdate, and current now.
    let times: Vec<time::OffsetDateTime> = ["Last Update: ", "Next Update: "]
        .iter()
        .map(|label| {
            let line = text.lines().find(|l| l.contains(label)).unwrap();
            let value = line.split(label).nth(1).unwrap().trim();
            let format = time::macros::format_description!(
                "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT"
            );
            time::PrimitiveDateTime::parse(value, &format)
                .unwrap()
                .assume_utc()
        })
        .collect();
    assert_eq!(times[1] - times[0], time::Duration::hours(24));
    // Signed five minutes early (a broker whose clock runs behind still takes it), and
    // at most one slot (12 hours) before that.
    let now = time::OffsetDateTime::now_utc();
    assert!(now - times[0] >= provisiond::ca::BACKDATE, "{text}");
    assert!(now - times[0] <= time::Duration::hours(12) + provisiond::ca::BACKDATE);

    let pem = app.crl_pem().await;
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"), "{pem}");
    let pem_file = dir.path().join("crl.pem");
    std::fs::write(&pem_file, &pem).unwrap();
    assert_eq!(
        field(&openssl_crl(&pem_file, "PEM", &ca), "CRL Number"),
        number
    );

    let bad = app
        .client
        .get(app.url("/api/v1/crl?format=xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(bad).await,
        (StatusCode::BAD_REQUEST, "invalid_query".into())
    );

    // An issued certificate passes OpenSSL's CRL check.
    let token = app.token_for("crl-1").await;
    let signed: Value = app
        .sign_csr(&token, "crl-1", &quick_csr("crl-1"))
        .await
        .json()
        .await
        .unwrap();
    let cert = dir.path().join("crl-1.crt");
    std::fs::write(&cert, signed["certificate"].as_str().unwrap()).unwrap();
    let output = Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(&ca)
        .arg("-CRLfile")
        .arg(&pem_file)
        .arg(&cert)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("provisiond_crl_entries 0"), "{metrics}");
    let next_update = times[1].unix_timestamp();
    assert!(
        metrics.contains(&format!(
            "provisiond_crl_next_update_timestamp_seconds {next_update}"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn instances_sharing_a_ca_serve_the_same_crl_number() {
    let first = TestApp::spawn(None).await;
    let mut settings = common::app::test_settings(None, &first.certs);
    settings.ca.dir = first.certs.clone();
    let second = TestApp::spawn_settings(settings).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, first.ca_pem().await).unwrap();
    let mut numbers = Vec::new();
    for app in [&first, &second] {
        let crl = app.client.get(app.url("/api/v1/crl")).send().await.unwrap();
        let file = dir.path().join("crl.der");
        std::fs::write(&file, crl.bytes().await.unwrap()).unwrap();
        numbers.push(field(&openssl_crl(&file, "DER", &ca), "CRL Number").to_owned());
    }
    assert_eq!(numbers[0], numbers[1]);
}

#[tokio::test]
async fn certificates_name_the_crl_url_when_one_is_configured() {
    let app = TestApp::spawn_with(None, |s| {
        s.ca.crl_url = Some("http://pki.example.test/provisiond.crl".into());
    })
    .await;
    let token = app.token_for("cdp-1").await;
    let signed: Value = app
        .sign_csr(&token, "cdp-1", &quick_csr("cdp-1"))
        .await
        .json()
        .await
        .unwrap();
    let text = openssl_x509(signed["certificate"].as_str().unwrap(), &["-text"]);
    assert!(text.contains("X509v3 CRL Distribution Points"), "{text}");
    assert!(
        text.contains("URI:http://pki.example.test/provisiond.crl"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisiond_crl_writes_a_checked_crl_once_and_runs_the_reload() {
    let app = TestApp::spawn(None).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("broker").join("crl.pem");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let marker = dir.path().join("reloaded");
    let exec = format!("echo reloaded >> {}", marker.display());
    let args = [
        "crl",
        "--server",
        &app.address,
        "--out",
        out.to_str().unwrap(),
        "--exec",
        &exec,
    ];
    let first = run(&args, &[]).await;
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("written"), "{}", text(&first));
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, app.ca_pem().await).unwrap();
    openssl_crl(&out, "PEM", &ca);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "reloaded\n");

    // The same CRL again: nothing written, no reload.
    let second = run(&args, &[]).await;
    assert!(second.status.success(), "{}", text(&second));
    assert!(text(&second).contains("unchanged"), "{}", text(&second));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "reloaded\n");

    // A CRL that does not verify against the pinned CA is not written.
    let other = TestApp::spawn(None).await;
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, other.ca_pem().await).unwrap();
    let elsewhere = dir.path().join("elsewhere.pem");
    let refused = run(
        &[
            "crl",
            "--server",
            &app.address,
            "--ca-file",
            other_ca.to_str().unwrap(),
            "--out",
            elsewhere.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(refused.status.code(), Some(6), "{}", text(&refused));
    assert!(!elsewhere.exists());
}
