//! The whole provisioning flow, against Redis and against the memory store, with the
//! certificates checked by openssl and by rustls/webpki.

mod common;

use std::time::Duration;

use common::pki::{openssl_csr, openssl_x509, verify_externally};
use common::{RedisServer, TestApp, error_code, jti_of};
use redis::Commands;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn a_device_is_provisioned_end_to_end_against_redis() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;

    let onboarding = app.onboard("device-001").await;
    assert_eq!(onboarding.status(), StatusCode::OK);
    let body: Value = onboarding.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["expires_in"], 300);
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    let token = body["provisioning_token"].as_str().unwrap();
    let jti = jti_of(token);

    // The store, as Redis itself sees it.
    let mut conn = redis.connection();
    let device_key = "mqtt-lite:device:{device-001}";
    let token_key = format!("mqtt-lite:token:{{device-001}}:{jti}");
    let pending: String = conn.get(device_key).unwrap();
    assert_eq!(pending, jti);
    let record: String = conn.get(&token_key).unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["deviceId"], "device-001");
    assert_eq!(record["jti"], jti.as_str());
    let expires_at = record["expiresAt"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 295..=now + 301).contains(&expires_at),
        "{expires_at}"
    );
    for key in [device_key, token_key.as_str()] {
        let ttl: i64 = conn.ttl(key).unwrap();
        assert!((295..=300).contains(&ttl), "TTL of {key} is {ttl}");
    }

    let csr = openssl_csr("p256", "device-001", &[]);
    let response = app.sign_csr(token, "device-001", &csr.csr_pem).await;
    assert_eq!(response.status(), StatusCode::OK);
    let signed: Value = response.json().await.unwrap();
    assert_eq!(signed["success"], true);
    verify_externally(&signed);

    // Consumed: both keys of the device are gone, and the token cannot be used again.
    let left: Vec<String> = conn.keys("mqtt-lite:*{device-001}*").unwrap();
    assert!(left.is_empty(), "keys left behind: {left:?}");
    let replay = app.sign_csr(token, "device-001", &csr.csr_pem).await;
    assert_eq!(
        error_code(replay).await,
        (StatusCode::UNAUTHORIZED, "token_used".into())
    );
}

#[tokio::test]
async fn a_device_is_provisioned_end_to_end_with_the_memory_store() {
    let app = TestApp::spawn(None).await;
    let health = app.health().await;
    assert_eq!(health["storage"], "memory");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["redis"]["enabled"], false);

    let token = app.token_for("mem-device").await;
    assert_eq!(app.health().await["memory"]["tokenCount"], 1);

    let csr = openssl_csr("p256", "mem-device", &[]);
    let response = app.sign_csr(&token, "mem-device", &csr.csr_pem).await;
    assert_eq!(response.status(), StatusCode::OK);
    verify_externally(&response.json().await.unwrap());
    assert_eq!(app.health().await["memory"]["tokenCount"], 0);

    let replay = app.sign_csr(&token, "mem-device", &csr.csr_pem).await;
    assert_eq!(error_code(replay).await.1, "token_used");
}

#[tokio::test]
async fn the_certificate_has_the_documented_profile() {
    let app = TestApp::spawn(None).await;
    let token = app.token_for("profile-1").await;
    let csr = openssl_csr("p256", "profile-1", &[]);
    let signed: Value = app
        .sign_csr(&token, "profile-1", &csr.csr_pem)
        .await
        .json()
        .await
        .unwrap();
    let cert = signed["certificate"].as_str().unwrap();
    let ca = signed["ca_certificate"].as_str().unwrap();

    let text = openssl_x509(cert, &["-text"]);
    assert!(text.contains("Subject: CN = profile-1"), "{text}");
    assert!(
        text.contains("X509v3 Basic Constraints: critical\n                CA:FALSE"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 Key Usage: critical\n                Digital Signature\n"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    assert!(!text.contains("Key Encipherment"), "{text}");

    // The serial in the answer is the certificate's, positive and 128 bits wide.
    let serial = openssl_x509(cert, &["-serial"]);
    let serial_hex = serial.trim().trim_start_matches("serial=");
    assert_eq!(serial_hex, signed["serial_number"].as_str().unwrap());
    assert_eq!(serial_hex.len(), 32);
    assert!(u8::from_str_radix(&serial_hex[..2], 16).unwrap() >= 0x80);

    // The authority key id is the CA's subject key id.
    let aki = openssl_x509(cert, &["-ext", "authorityKeyIdentifier"]);
    let ski = openssl_x509(ca, &["-ext", "subjectKeyIdentifier"]);
    let ski_value = ski.lines().nth(1).unwrap().trim();
    assert!(
        aki.contains(ski_value),
        "AKI {aki} does not name the CA's SKI {ski_value}"
    );

    // notBefore five minutes back, notAfter 365 days on, and expires_at says the same.
    let dates = openssl_x509(cert, &["-startdate", "-enddate", "-dateopt", "iso_8601"]);
    let date = |prefix: &str| {
        let line = dates.lines().find(|l| l.starts_with(prefix)).unwrap();
        time::PrimitiveDateTime::parse(
            line.trim_start_matches(prefix).trim_end_matches('Z'),
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        )
        .unwrap()
        .assume_utc()
    };
    let (not_before, not_after) = (date("notBefore="), date("notAfter="));
    let now = time::OffsetDateTime::now_utc();
    let back = now - not_before;
    assert!(
        back >= time::Duration::minutes(4) && back <= time::Duration::minutes(6),
        "{back}"
    );
    let span = not_after - not_before;
    assert!(
        (span - time::Duration::days(365) - time::Duration::minutes(5)).abs()
            < time::Duration::seconds(5)
    );
    let expires_at = time::OffsetDateTime::parse(
        signed["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!((expires_at - not_after).abs() < time::Duration::seconds(1));
}

#[tokio::test]
async fn csrs_of_every_accepted_key_type_are_signed() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    for (key, device) in [
        ("p256", "kt-p256"),
        ("p384", "kt-p384"),
        ("ed25519", "kt-ed25519"),
        ("rsa2048", "kt-rsa2048"),
    ] {
        let token = app.token_for(device).await;
        let csr = openssl_csr(key, device, &[]);
        let response = app.sign_csr(&token, device, &csr.csr_pem).await;
        assert_eq!(response.status(), StatusCode::OK, "{key}");
        let signed: Value = response.json().await.unwrap();
        verify_externally(&signed);
        let text = openssl_x509(signed["certificate"].as_str().unwrap(), &["-text"]);
        assert_eq!(
            text.contains("Key Encipherment"),
            key.starts_with("rsa"),
            "keyEncipherment only for RSA: {key}"
        );
    }
}

#[tokio::test]
async fn weak_and_unsupported_keys_are_refused_without_burning_the_token() {
    let app = TestApp::spawn(None).await;
    let token = app.token_for("weak-keys").await;
    for key in ["rsa1024", "secp256k1"] {
        let csr = openssl_csr(key, "weak-keys", &[]);
        let response = app.sign_csr(&token, "weak-keys", &csr.csr_pem).await;
        assert_eq!(
            error_code(response).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "csr_policy_violation".into()
            ),
            "{key}"
        );
    }
    let good = openssl_csr("p256", "weak-keys", &[]);
    let response = app.sign_csr(&token, "weak-keys", &good.csr_pem).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_ca_endpoint_serves_the_chain_that_signs_certificates() {
    let app = TestApp::spawn(None).await;
    let response = app.client.get(app.url("/api/v1/ca")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-pem-file");
    let ca = response.text().await.unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    let on_disk = std::fs::read_to_string(app.certs.join("ca.crt")).unwrap();
    assert_eq!(ca.trim(), on_disk.trim());

    let text = openssl_x509(&ca, &["-text"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");

    let token = app.token_for("ca-check").await;
    let csr = openssl_csr("p256", "ca-check", &[]);
    let signed: Value = app
        .sign_csr(&token, "ca-check", &csr.csr_pem)
        .await
        .json()
        .await
        .unwrap();
    common::pki::openssl_verify(&ca, signed["certificate"].as_str().unwrap());
}

#[tokio::test]
async fn health_counts_pending_tokens_in_redis() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    for i in 0..3 {
        app.token_for(&format!("count-{i}")).await;
    }
    // Re-onboarding replaces: still three devices, three tokens.
    app.token_for("count-0").await;
    let health = app
        .wait_for_health(Duration::from_secs(5), |h| h["redis"]["tokenCount"] == 3)
        .await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["storage"], "redis");
    assert_eq!(health["redis"]["connected"], true);
    assert_eq!(health["redis"]["deviceCount"], 3);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_seconds"].is_u64());
}

#[tokio::test]
async fn with_the_shipped_count_interval_a_new_device_shows_in_health_within_seconds() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), |s| {
        s.redis.count_interval_seconds = provisiond::config::Settings::default()
            .redis
            .count_interval_seconds;
    })
    .await;
    app.wait_for_health(Duration::from_secs(5), |h| h["redis"]["tokenCount"] == 0)
        .await;
    app.token_for("fresh-1").await;
    let onboarded = std::time::Instant::now();
    app.wait_for_health(Duration::from_secs(5), |h| h["redis"]["tokenCount"] == 1)
        .await;
    // Bounded by the test's own deadline above; the figure is for the log.
    println!("counted after {:?}", onboarded.elapsed());
}

#[tokio::test]
async fn the_generated_key_material_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn_with(None, |s| {
        s.onboarding.mode = provisiond::config::OnboardingMode::Key;
        s.tokens.jwt_secret = None;
    })
    .await;
    for file in ["ca.key", "jwt.secret", "enrollment.key"] {
        let mode = std::fs::metadata(app.certs.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}
