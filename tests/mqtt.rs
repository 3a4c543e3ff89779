//! What the fleet commands write is what a device needs to reach a real MQTT broker:
//! each key type's key file loads in OpenSSL, and `mosquitto_pub` connects with it to a
//! Mosquitto that requires a certificate from our CA and checks it against our CRL.
//! Renewed certificates connect; revoked, superseded and blocked ones do not.

mod common;

use std::path::Path;
use std::process::Command;

use common::TestApp;
use common::bin::{enroll_into, renew_files, run, text};
use common::mosquitto::Mosquitto;

const KEY_TYPES: &[&str] = &["p256", "p384", "ed25519", "rsa2048"];

fn openssl_loads(key: &Path) {
    let output = Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(key)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl pkey refused {}: {}",
        key.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn connects(broker: &Mosquitto, dir: &Path, device: &str) {
    let (cert, key) = (
        dir.join(format!("{device}.crt")),
        dir.join(format!("{device}.key")),
    );
    openssl_loads(&key);
    let output = broker.publish(&dir.join("ca.crt"), Some((&cert, &key)));
    assert!(
        output.status.success(),
        "mosquitto_pub with {device}'s certificate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_enrolled_with_every_key_type_publish_to_a_real_broker() {
    let app = TestApp::spawn(None).await;
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    for key_type in KEY_TYPES {
        let device = format!("mqtt-{key_type}");
        enroll_into(&app.address, &device, out_dir, &["--key-type", key_type]).await;
    }
    let bulk_dir = out.path().join("bulk");
    for key_type in KEY_TYPES {
        let bulked = run(
            &[
                "bulk",
                "--server",
                &app.address,
                "--count",
                "2",
                "--prefix",
                &format!("bulk-{key_type}-"),
                "--key-type",
                key_type,
                "--out",
                bulk_dir.to_str().unwrap(),
            ],
            &[],
        )
        .await;
        assert!(bulked.status.success(), "{}", text(&bulked));
    }

    // The broker enforces our CRL, kept by `provisiond crl` as an operator would.
    let crl = out.path().join("crl.pem");
    let fetched = run(
        &[
            "crl",
            "--server",
            &app.address,
            "--out",
            crl.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(fetched.status.success(), "{}", text(&fetched));
    let broker = Mosquitto::start(&app.certs, &out.path().join("ca.crt"), Some(&crl));
    let certs = app.certs.clone();
    tokio::task::spawn_blocking(move || {
        for key_type in KEY_TYPES {
            connects(&broker, out.path(), &format!("mqtt-{key_type}"));
            connects(&broker, &bulk_dir, &format!("bulk-{key_type}-000001"));
        }
        // The broker really does insist on a certificate.
        let anonymous = broker.publish(&out.path().join("ca.crt"), None);
        assert!(
            !anonymous.status.success(),
            "connected without a certificate"
        );
        drop(broker);

        // And on the CRL: one signed by our CA listing mqtt-p256 keeps that device out
        // while the others still connect.
        let crl = out.path().join("revoked.pem");
        std::fs::write(
            &crl,
            revocation_list(&certs, &out.path().join("mqtt-p256.crt")),
        )
        .unwrap();
        let broker = Mosquitto::start(&certs, &out.path().join("ca.crt"), Some(&crl));
        let (cert, key) = (
            out.path().join("mqtt-p256.crt"),
            out.path().join("mqtt-p256.key"),
        );
        let refused = broker.publish(&out.path().join("ca.crt"), Some((&cert, &key)));
        assert!(!refused.status.success(), "a revoked certificate connected");
        // The same broker still takes the others: it is the CRL that keeps this one out.
        connects(&broker, out.path(), "mqtt-p384");
        connects(&broker, &bulk_dir, "bulk-p256-000001");
    })
    .await
    .unwrap();
}

/// A CRL signed by the CA in `certs`, listing the certificate in `cert` as compromised.
fn revocation_list(certs: &Path, cert: &Path) -> String {
    let serial = common::pki::openssl_x509(&std::fs::read_to_string(cert).unwrap(), &["-serial"]);
    let serial = hex::decode(serial.trim().trim_start_matches("serial=")).unwrap();
    let mut settings = provisiond::config::Settings::default();
    settings.ca.dir = certs.to_owned();
    let ca = provisiond::ca::CertificateAuthority::load_or_init(&settings.ca, 1).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let entry = provisiond::ca::RevokedEntry {
        serial,
        revoked_at: now,
        reason: provisiond::ca::RevocationReason::KeyCompromise,
    };
    ca.sign_crl(2, now, now + time::Duration::hours(1), &[entry])
        .unwrap()
        .pem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_through_the_api_is_refused_by_the_broker_after_a_crl_reload() {
    const ADMIN: &str = "mqtt-admin-key-mqtt-admin-key-mqtt-admin";
    let app = TestApp::spawn_with(None, |s| {
        s.admin.keys = provisiond::config::KeyList(vec![provisiond::secret::Secret::new(ADMIN)]);
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    for device in ["stolen-1", "honest-1"] {
        enroll_into(&app.address, device, out_dir, &[]).await;
    }
    let crl = out.path().join("crl.pem");
    let keep_crl = |exec: Option<String>| {
        let mut args = vec![
            "crl".to_owned(),
            "--server".to_owned(),
            app.address.clone(),
            "--out".to_owned(),
            crl.to_str().unwrap().to_owned(),
        ];
        if let Some(exec) = exec {
            args.extend(["--exec".to_owned(), exec]);
        }
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &[]).await
        }
    };
    assert!(keep_crl(None).await.status.success());
    let broker = Mosquitto::start(&app.certs, &out.path().join("ca.crt"), Some(&crl));
    let dir = out.path().to_owned();
    let broker = tokio::task::spawn_blocking(move || {
        connects(&broker, &dir, "stolen-1");
        connects(&broker, &dir, "honest-1");
        broker
    })
    .await
    .unwrap();

    // The operator revokes the stolen device's certificate...
    let serial = common::pki::openssl_x509(
        &std::fs::read_to_string(out.path().join("stolen-1.crt")).unwrap(),
        &["-serial"],
    );
    let serial = serial.trim().trim_start_matches("serial=").to_owned();
    let revoked = app
        .post_json_as(
            ADMIN,
            &format!("/api/v1/certificates/{serial}/revoke"),
            &serde_json::json!({ "reason": "keyCompromise" }),
        )
        .await;
    assert_eq!(revoked.status(), reqwest::StatusCode::OK);
    // ...and `provisiond crl` writes the new CRL and reloads the broker.
    let reload = format!("kill -HUP {}", broker.pid());
    let fetched = keep_crl(Some(reload)).await;
    assert!(fetched.status.success(), "{}", text(&fetched));
    assert!(text(&fetched).contains("written"), "{}", text(&fetched));

    let dir = out.path().to_owned();
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (cert, key) = (dir.join("stolen-1.crt"), dir.join("stolen-1.key"));
        let refused = broker.publish(&dir.join("ca.crt"), Some((&cert, &key)));
        assert!(
            !refused.status.success(),
            "the revoked certificate still connects"
        );
        connects(&broker, &dir, "honest-1");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificates_connect_and_a_blocked_device_is_kept_out() {
    const ADMIN: &str = "mqtt-admin-key-mqtt-admin-key-mqtt-admin";
    let certs = tempfile::tempdir().unwrap();
    let (_app, server) = common::app::spawn_tls(certs.path(), |s| {
        s.renewal.revoke_previous = true;
        s.admin.keys = provisiond::config::KeyList(vec![provisiond::secret::Secret::new(ADMIN)]);
    })
    .await;
    let ca = certs.path().join("ca.crt");
    let ca_file = ca.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    for device in ["renew-1", "block-1"] {
        enroll_into(&server, device, out_dir, &["--ca-file", ca_file]).await;
    }
    let (cert, key) = (
        out.path().join("renew-1.crt"),
        out.path().join("renew-1.key"),
    );
    let old = out.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::copy(&cert, old.join("renew-1.crt")).unwrap();
    std::fs::copy(&key, old.join("renew-1.key")).unwrap();
    std::fs::copy(&ca, old.join("ca.crt")).unwrap();

    // Renewed with a JWT proof and a new key, by the CLI.
    let renewed = renew_files(&server, ca_file, &cert, &key, Some("p384")).await;
    assert!(renewed.status.success(), "{}", text(&renewed));
    // Renewed again by mutual TLS, the new certificate as client certificate.
    let mtls_dir = out.path().join("mtls");
    std::fs::create_dir(&mtls_dir).unwrap();
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let identity = format!("{}{key_pem}", std::fs::read_to_string(&cert).unwrap());
    let mtls = common::app::https_client(&ca, Some(&identity));
    let csr = provisiond::device::DeviceKey::from_pem(&key_pem)
        .unwrap()
        .csr_pem(Some("renew-1"))
        .unwrap();
    let answer: serde_json::Value = common::json_of(
        mtls.post(format!("{server}/api/v1/renew"))
            .json(&serde_json::json!({ "device_id": "renew-1", "csr": csr })),
    )
    .await;
    let mtls_cert = answer["certificate"].as_str().expect("renewed by mTLS");
    std::fs::write(mtls_dir.join("renew-1.crt"), mtls_cert).unwrap();
    std::fs::copy(&key, mtls_dir.join("renew-1.key")).unwrap();
    std::fs::copy(&ca, mtls_dir.join("ca.crt")).unwrap();

    // The stolen device: revoked and blocked.
    let admin = common::app::https_client(&ca, None);
    let blocked = admin
        .post(format!("{server}/api/v1/devices/block-1/revoke"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "reason": "keyCompromise", "block": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status(), reqwest::StatusCode::OK);

    let crl = out.path().join("crl.pem");
    let fetched = run(
        &[
            "crl",
            "--server",
            &server,
            "--ca-file",
            ca_file,
            "--out",
            crl.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(fetched.status.success(), "{}", text(&fetched));
    let broker = Mosquitto::start(certs.path(), &ca, Some(&crl));
    let dir = out.path().to_owned();
    tokio::task::spawn_blocking(move || {
        // The current certificate (renewed by mTLS) connects; the two it replaced
        // (superseded) and the blocked device's do not.
        connects(&broker, &mtls_dir, "renew-1");
        let (cert, key) = (old.join("renew-1.crt"), old.join("renew-1.key"));
        let refused = broker.publish(&old.join("ca.crt"), Some((&cert, &key)));
        assert!(
            !refused.status.success(),
            "the enrolled certificate still connects"
        );
        let (cert, key) = (dir.join("renew-1.crt"), dir.join("renew-1.key"));
        let refused = broker.publish(&dir.join("ca.crt"), Some((&cert, &key)));
        assert!(
            !refused.status.success(),
            "the certificate renewed by the CLI, superseded by the mTLS renewal, still connects"
        );
        let (cert, key) = (dir.join("block-1.crt"), dir.join("block-1.key"));
        let refused = broker.publish(&dir.join("ca.crt"), Some((&cert, &key)));
        assert!(
            !refused.status.success(),
            "the blocked device still connects"
        );
    })
    .await
    .unwrap();
    let onboard = admin
        .post(format!("{server}/api/v1/onboarding"))
        .json(&serde_json::json!({ "device_id": "block-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(onboard.status(), reqwest::StatusCode::FORBIDDEN);
}
