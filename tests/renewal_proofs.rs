//! A renewal proof is bound to the CSR it was signed for: whoever sees it in flight (a
//! TLS-terminating proxy, a log) cannot spend it on a key of their own.

mod common;

use common::bin::{enroll_into, renew_files, text};
use common::device::{enroll, renew};
use common::{RedisServer, TestApp, error_code};
use provisiond::device::{DeviceKey, KeyKind};
use reqwest::StatusCode;

async fn metric(app: &TestApp, name: &str) -> String {
    let text = app.metrics().await;
    text.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_bound_to_one_csr_buys_nothing_for_another() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    let device = "bound-1";
    let held = enroll(&app, device, KeyKind::P256).await;
    let mine = DeviceKey::generate(KeyKind::P256).unwrap();
    let my_csr = mine.csr_pem(Some(device)).unwrap();
    let proof = held.bound_proof(device, &my_csr);

    // Seen in flight and spent first with the onlooker's own CSR: refused, not used up.
    let theirs = DeviceKey::generate(KeyKind::P256).unwrap();
    let their_csr = theirs.csr_pem(Some(device)).unwrap();
    let stolen = renew(&app, device, &their_csr, Some(&proof)).await;
    assert_eq!(
        error_code(stolen).await,
        (StatusCode::UNAUTHORIZED, "renewal_proof_invalid".into())
    );
    // The device's own request with the same proof goes through, once.
    let renewed = renew(&app, device, &my_csr, Some(&proof)).await;
    assert_eq!(renewed.status(), StatusCode::OK);
    let again = renew(&app, device, &my_csr, Some(&proof)).await;
    assert_eq!(error_code(again).await.1, "renewal_proof_invalid");
    assert_eq!(
        metric(&app, "provisiond_renewal_unbound_proofs_total").await,
        "provisiond_renewal_unbound_proofs_total 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_proofs_are_counted_and_refused_once_binding_is_required() {
    let redis = RedisServer::start();
    let lenient = TestApp::spawn(Some(&redis)).await;
    let device = "unbound-1";
    let held = enroll(&lenient, device, KeyKind::Ed25519).await;
    let csr = held.key.csr_pem(Some(device)).unwrap();
    // An older client: accepted during the transition, and counted.
    let accepted = renew(&lenient, device, &csr, Some(&held.proof(device))).await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(
        metric(&lenient, "provisiond_renewal_unbound_proofs_total").await,
        "provisiond_renewal_unbound_proofs_total 1"
    );

    let strict = TestApp::spawn_with(Some(&redis), |s| s.renewal.require_bound_proof = true).await;
    let held = enroll(&strict, "unbound-2", KeyKind::P384).await;
    let csr = held.key.csr_pem(Some("unbound-2")).unwrap();
    let refused = renew(&strict, "unbound-2", &csr, Some(&held.proof("unbound-2"))).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::UNAUTHORIZED, "renewal_proof_invalid".into())
    );
    let bound = held.bound_proof("unbound-2", &csr);
    assert_eq!(
        renew(&strict, "unbound-2", &csr, Some(&bound))
            .await
            .status(),
        StatusCode::OK
    );

    // `provisiond renew` binds its proofs: it renews where binding is required.
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    let ca_file = out.path().join("ca.crt");
    std::fs::write(&ca_file, strict.ca_pem().await).unwrap();
    let ca_file = ca_file.to_str().unwrap();
    enroll_into(
        &strict.address,
        "unbound-3",
        out_dir,
        &["--ca-file", ca_file],
    )
    .await;
    let (cert, key) = (
        out.path().join("unbound-3.crt"),
        out.path().join("unbound-3.key"),
    );
    for rekey in [None, Some("p256")] {
        let renewed = renew_files(&strict.address, ca_file, &cert, &key, rekey).await;
        assert!(renewed.status.success(), "{}", text(&renewed));
    }
}

/// A device whose clock drifts renews within the documented window (600 s either way),
/// and its proof is still used once; beyond the window it is told by how much.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_clock_drifts_minutes_renews_once() {
    use provisiond::auth::renewal;
    use provisiond::clock::unix_now;
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    for (device, drift) in [("slow-400", -400i64), ("fast-30", 30), ("fast-590", 590)] {
        let held = enroll(&app, device, KeyKind::P256).await;
        let csr = held.key.csr_pem(Some(device)).unwrap();
        let bound = provisiond::device::csr_key(&csr).unwrap();
        let device_now = unix_now().saturating_add_signed(drift);
        let proof = renewal::sign(
            device,
            &held.der(),
            &held.key.private_key_pem(),
            Some(bound),
            device_now,
        )
        .unwrap();
        let renewed = renew(&app, device, &csr, Some(&proof)).await;
        assert_eq!(renewed.status(), StatusCode::OK, "{device}");
        let replayed = renew(&app, device, &csr, Some(&proof)).await;
        assert_eq!(
            error_code(replayed).await.1,
            "renewal_proof_invalid",
            "{device}"
        );
    }
    for (device, drift, says) in [
        ("slow-900", -900i64, "does not verify"),
        ("fast-700", 700, "ahead of the server's clock"),
    ] {
        let held = enroll(&app, device, KeyKind::P256).await;
        let csr = held.key.csr_pem(Some(device)).unwrap();
        let bound = provisiond::device::csr_key(&csr).unwrap();
        let proof = renewal::sign(
            device,
            &held.der(),
            &held.key.private_key_pem(),
            Some(bound),
            unix_now().saturating_add_signed(drift),
        )
        .unwrap();
        let refused = renew(&app, device, &csr, Some(&proof)).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{device}");
        let body: serde_json::Value = refused.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{device}: {message}");
    }
}
