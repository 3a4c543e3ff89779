//! Renewal goes by the registry: what the registry cannot vouch for never renews, a
//! revoked certificate's record outlives every renewal window, the API's own server
//! certificate is never a device's, and what the CA signed outside the registry can be
//! imported, revoked and renewed.

mod common;

use common::bin::{run, text};
use common::device::{renew, signed_outside_the_registry};
use common::{RedisServer, TestApp, error_code};
use provisiond::auth::renewal;
use provisiond::clock::unix_now;
use provisiond::config::{KeyList, Settings};
use provisiond::registry::slots;
use provisiond::secret::Secret;
use rcgen::ExtendedKeyUsagePurpose;
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

const ADMIN: &str = "registry-renewal-admin-key-registry!";

fn with_admin(s: &mut Settings) {
    s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
}

async fn admin(app: &TestApp, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn import(app: &TestApp, pem: &str) -> reqwest::Response {
    admin(
        app,
        "/api/v1/certificates",
        Some(json!({ "certificate": pem })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_whose_record_is_gone_never_renews() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), |s| {
        with_admin(s);
        s.renewal.after_expiry_days = 60;
    })
    .await;
    // Expired 40 days ago, so off the CRL; inside the 60 days it may renew.
    let device = "forgotten-1";
    let now = OffsetDateTime::now_utc();
    let held = signed_outside_the_registry(
        &app.certs,
        device,
        now - Duration::days(400),
        now - Duration::days(40),
        &slots::serial_in(slots::slot_of(device)),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let imported: Value = import(&app, &held.cert_pem).await.json().await.unwrap();
    assert_eq!(imported["certificate"]["status"], "expired", "{imported}");
    let serial = imported["certificate"]["serial_number"].as_str().unwrap();
    let revoked = admin(
        &app,
        &format!("/api/v1/certificates/{serial}/revoke"),
        Some(json!({ "reason": "keyCompromise" })),
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let csr = held.key.csr_pem(Some(device)).unwrap();
    let refused = renew(&app, device, &csr, Some(&held.proof(device))).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::FORBIDDEN, "certificate_revoked".into())
    );

    // Records outlive the renewal window: the bucket is kept past notAfter + 60 days.
    let bucket = format!(
        "mqtt-lite:certs:{{{}}}",
        slots::tag_for(slots::slot_of(device))
    );
    let expires_at: i64 = redis.cmd(&["EXPIRETIME", &bucket]);
    let not_after = not_after_of(&held.cert_pem);
    assert!(
        expires_at >= not_after + 61 * 86_400,
        "the record goes at {expires_at}, the certificate renews until {}",
        not_after + 60 * 86_400
    );

    // Whatever drops the record (a Redis that lost it, an operator), the certificate
    // renews no more: the registry can no longer say it is not revoked.
    let dropped: i64 = redis::cmd("HDEL")
        .arg(&bucket)
        .arg(hex::decode(serial).unwrap())
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(dropped, 1);
    let refused = renew(&app, device, &csr, Some(&held.proof(device))).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::FORBIDDEN, "certificate_unknown".into())
    );
}

/// notAfter of a PEM certificate, unix seconds.
fn not_after_of(pem: &str) -> i64 {
    let der = pem::parse(pem).unwrap().into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.validity().not_after.timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_revoked_record_outlives_the_renewal_window_across_restarts() {
    let certs = tempfile::tempdir().unwrap();
    let settings = || {
        let mut s = common::app::test_settings(None, certs.path());
        with_admin(&mut s);
        s.renewal.after_expiry_days = 90;
        s
    };
    let first = TestApp::spawn_settings(settings()).await;
    // Expired 40 days ago: past the 30 days records used to be kept, inside the 90 days
    // it may renew.
    let now = OffsetDateTime::now_utc();
    let device = "offline-1";
    let old = signed_outside_the_registry(
        &first.certs,
        device,
        now - Duration::days(400),
        now - Duration::days(40),
        &slots::serial_in(slots::slot_of(device)),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let imported: Value = import(&first, &old.cert_pem).await.json().await.unwrap();
    let serial = imported["certificate"]["serial_number"].as_str().unwrap();
    let revoked = admin(
        &first,
        &format!("/api/v1/certificates/{serial}/revoke"),
        Some(json!({ "reason": "keyCompromise" })),
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    first.stop().await;

    // The restart compacts the registry file; the revoked record must survive it.
    let second = TestApp::spawn_settings(settings()).await;
    let csr = old.key.csr_pem(Some(device)).unwrap();
    let refused = renew(&second, device, &csr, Some(&old.proof(device))).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::FORBIDDEN, "certificate_revoked".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apis_own_server_certificate_never_renews_as_a_device() {
    let certs = tempfile::tempdir().unwrap();
    let made = run(
        &["ca", "server-cert", "--dns", "localhost"],
        &[("CERTS_DIR", certs.path().to_str().unwrap())],
    )
    .await;
    assert!(made.status.success(), "{}", text(&made));
    let mut settings = common::app::test_settings(None, certs.path());
    with_admin(&mut settings);
    let app = TestApp::spawn_settings(settings).await;
    let chain = std::fs::read_to_string(certs.path().join("server.crt")).unwrap();
    let key = std::fs::read_to_string(certs.path().join("server.key")).unwrap();
    let der = pem::parse(&chain).unwrap().into_contents();
    let proof = renewal::sign("localhost", &der, &key, None, unix_now()).unwrap();
    let device_key = provisiond::device::DeviceKey::from_pem(&key).unwrap();
    let csr = device_key.csr_pem(Some("localhost")).unwrap();

    let refused = renew(&app, "localhost", &csr, Some(&proof)).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::UNAUTHORIZED, "renewal_proof_invalid".into())
    );
    // Nor can an operator import it as a device's.
    let refused = import(&app, &chain).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::BAD_REQUEST, "invalid_certificate".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_signed_outside_the_registry_is_imported_revoked_and_renewed() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), with_admin).await;
    let now = OffsetDateTime::now_utc();
    // Made before the registry: a random serial that does not carry the device's slot.
    let legacy = |device: &str| {
        let mut serial = [0u8; 16];
        provisiond::crypto::fill_random(&mut serial);
        // Positive, and no leading zero byte (which DER would drop).
        serial[0] = (serial[0] & 0x7f) | 0x10;
        while slots::slot_of_serial(&serial) == slots::slot_of(device) {
            serial[15] = serial[15].wrapping_add(1);
        }
        signed_outside_the_registry(
            &app.certs,
            device,
            now - Duration::days(10),
            now + Duration::days(300),
            &serial,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    };
    let (kept, stolen) = (legacy("legacy-1"), legacy("legacy-2"));

    // Unknown: it does not renew, and revoking it by serial finds nothing.
    let csr = kept.key.csr_pem(Some("legacy-1")).unwrap();
    let unknown = renew(&app, "legacy-1", &csr, Some(&kept.proof("legacy-1"))).await;
    assert_eq!(error_code(unknown).await.1, "certificate_unknown");
    let serial_of = |e: &common::device::Enrolled| {
        let der = e.der();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        // As the registry writes serials: 16 bytes, zero-padded.
        format!("{:0>32}", hex::encode_upper(cert.raw_serial()))
    };
    let not_found = admin(
        &app,
        &format!("/api/v1/certificates/{}/revoke", serial_of(&stolen)),
        None,
    )
    .await;
    assert_eq!(error_code(not_found).await.1, "certificate_not_found");

    // Imported, both are in the registry (twice is the same record).
    for enrolled in [&kept, &stolen, &kept] {
        let answer = import(&app, &enrolled.cert_pem).await;
        assert_eq!(answer.status(), StatusCode::OK);
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["certificate"]["status"], "valid", "{answer}");
        assert_eq!(answer["certificate"]["serial_number"], serial_of(enrolled));
    }
    // One is revoked by its serial, and the CRL lists it; it no longer renews.
    let revoked = admin(
        &app,
        &format!("/api/v1/certificates/{}/revoke", serial_of(&stolen)),
        Some(json!({ "reason": "keyCompromise" })),
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let listed = app.crl_text().await;
    assert!(listed.contains(&serial_of(&stolen)), "{listed}");
    let csr2 = stolen.key.csr_pem(Some("legacy-2")).unwrap();
    let refused = renew(&app, "legacy-2", &csr2, Some(&stolen.proof("legacy-2"))).await;
    assert_eq!(error_code(refused).await.1, "certificate_revoked");
    // The other renews into a certificate of the registry's own.
    let renewed = renew(&app, "legacy-1", &csr, Some(&kept.proof("legacy-1"))).await;
    assert_eq!(renewed.status(), StatusCode::OK);

    // What is not this CA's, or not a certificate, is refused with a code.
    let other = TestApp::spawn(None).await;
    let foreign = signed_outside_the_registry(
        &other.certs,
        "legacy-3",
        now - Duration::days(1),
        now + Duration::days(30),
        &slots::serial_in(slots::slot_of("legacy-3")),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    for body in [
        json!({ "certificate": foreign.cert_pem }),
        json!({ "certificate": "not a certificate" }),
        json!({ "certificate": 42 }),
        json!({}),
    ] {
        let refused = admin(&app, "/api/v1/certificates", Some(body.clone())).await;
        assert_eq!(
            error_code(refused).await,
            (StatusCode::BAD_REQUEST, "invalid_certificate".into()),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_for_key_compromise_revokes_what_the_certificate_was_renewed_into() {
    let redis = RedisServer::start();
    // Renewals that keep what they replace valid: the cascade is what revokes them here.
    let app = TestApp::spawn_with(Some(&redis), |s| {
        with_admin(s);
        s.renewal.revoke_previous = false;
    })
    .await;
    let device = "chain-1";
    let first = common::device::enroll(&app, device, provisiond::device::KeyKind::P256).await;
    // Whoever holds the first key renews it, then renews what they got, with new keys.
    let mut chain = vec![first.serial.clone()];
    let mut held: Option<common::device::Enrolled> = None;
    for _ in 0..2 {
        let key =
            provisiond::device::DeviceKey::generate(provisiond::device::KeyKind::P256).unwrap();
        let csr = key.csr_pem(Some(device)).unwrap();
        let proof = held.as_ref().unwrap_or(&first).bound_proof(device, &csr);
        let answer: Value = renew(&app, device, &csr, Some(&proof))
            .await
            .json()
            .await
            .unwrap();
        chain.push(answer["serial_number"].as_str().unwrap().to_owned());
        held = Some(common::device::Enrolled {
            key,
            cert_pem: answer["certificate"].as_str().unwrap().to_owned(),
            serial: answer["serial_number"].as_str().unwrap().to_owned(),
        });
    }
    let held = held.unwrap();
    // The first certificate renews no more: once is the bound.
    let key = provisiond::device::DeviceKey::generate(provisiond::device::KeyKind::P256).unwrap();
    let csr = key.csr_pem(Some(device)).unwrap();
    let again = renew(&app, device, &csr, Some(&first.bound_proof(device, &csr))).await;
    assert_eq!(error_code(again).await.1, "certificate_superseded");

    let revoked = admin(
        &app,
        &format!("/api/v1/certificates/{}/revoke", chain[0]),
        Some(json!({ "reason": "keyCompromise" })),
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let status = app
        .get_json_as(ADMIN, &format!("/api/v1/devices/{device}"))
        .await;
    for serial in &chain {
        let record = status["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["serial_number"] == serial.as_str())
            .unwrap_or_else(|| panic!("{serial} in {status}"));
        assert_eq!(record["status"], "revoked", "{status}");
        assert_eq!(record["reason"], "keyCompromise", "{status}");
    }
    let listed = app.crl_text().await;
    for serial in &chain {
        assert!(listed.contains(serial.as_str()), "{serial}: {listed}");
    }
    // The last of the chain is refused too.
    let csr = held.key.csr_pem(Some(device)).unwrap();
    let refused = renew(&app, device, &csr, Some(&held.bound_proof(device, &csr))).await;
    assert_eq!(error_code(refused).await.1, "certificate_revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_certificate_whose_revocation_redis_lost_keeps_it_revoked() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), with_admin).await;
    let device = "relost-1";
    let held = common::device::enroll(&app, device, provisiond::device::KeyKind::P256).await;
    let revoked = admin(
        &app,
        &format!("/api/v1/certificates/{}/revoke", held.serial),
        Some(json!({ "reason": "keyCompromise" })),
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    // Redis restarted without persistence: the record and the list are gone; the CRL
    // keeps listing it (and says so in crl-listed.log). The test waits for the server to
    // see the loss (a new epoch), so that what follows does not race its health check.
    let epoch = app.health().await["redis"]["epoch"].clone();
    let _: () = redis.cmd(&["FLUSHALL"]);
    app.wait_for_health(std::time::Duration::from_secs(10), |h| {
        h["redis"]["epoch"] != epoch
    })
    .await;
    let record = |app: &TestApp| {
        let url = app.url(&format!("/api/v1/certificates/{}", held.serial));
        let client = app.client.clone();
        async move { client.get(url).bearer_auth(ADMIN).send().await.unwrap() }
    };
    assert_eq!(
        error_code(record(&app).await).await.1,
        "certificate_not_found"
    );
    assert!(app.crl_text().await.contains(&held.serial));
    // A renewal proof made within a device clock's skew of the loss cannot be told from
    // one used before it: 503 with Retry-After, nothing issued.
    let csr = held.key.csr_pem(Some(device)).unwrap();
    let unsure = renew(&app, device, &csr, Some(&held.bound_proof(device, &csr))).await;
    assert_eq!(unsure.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(unsure.headers().contains_key("retry-after"));

    // The operator imports it (what a certificate_unknown refusal suggests): it comes
    // back revoked, from the CRL's own list.
    let imported: Value = import(&app, &held.cert_pem).await.json().await.unwrap();
    assert_eq!(imported["certificate"]["status"], "revoked", "{imported}");
    assert_eq!(
        imported["certificate"]["reason"], "keyCompromise",
        "{imported}"
    );
    let found: Value = record(&app).await.json().await.unwrap();
    assert_eq!(found["certificate"]["status"], "revoked", "{found}");

    // A notAfter past 2106 does not fit the registry: refused, not truncated.
    let now = OffsetDateTime::now_utc();
    let far = signed_outside_the_registry(
        &app.certs,
        "far-1",
        now - Duration::days(1),
        OffsetDateTime::from_unix_timestamp(4_300_000_000).unwrap(),
        &slots::serial_in(slots::slot_of("far-1")),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let refused = import(&app, &far.cert_pem).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::BAD_REQUEST, "invalid_certificate".into())
    );
}
