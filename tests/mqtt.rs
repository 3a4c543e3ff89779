//! What the fleet commands write is what a device needs to reach a real MQTT broker:
//! each key type's key file loads in OpenSSL, and `mosquitto_pub` connects with it to a
//! Mosquitto that requires a certificate from our CA and checks it against our CRL.

mod common;

use std::path::Path;
use std::process::Command;

use common::TestApp;
use common::bin::{run, text};
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
        let enrolled = run(
            &[
                "enroll",
                "--server",
                &app.address,
                "--device-id",
                &device,
                "--key-type",
                key_type,
                "--out",
                out_dir,
            ],
            &[],
        )
        .await;
        assert!(enrolled.status.success(), "{}", text(&enrolled));
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
    let ca = provisiond::ca::CertificateAuthority::load_or_init(&settings.ca).unwrap();
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
