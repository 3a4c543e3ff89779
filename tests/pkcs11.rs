//! A CA key inside a PKCS#11 token (SoftHSM2, in a temporary directory), with the real
//! binary on a real Redis: `ca init --pkcs11-uri` makes the key in the token and no key
//! file; certificates, CRLs and OCSP responses signed by the token verify with OpenSSL
//! and a real Mosquitto; the token going away answers 503 `ca_unavailable` (the
//! provisioning token survives) and its return is noticed without a restart.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::bin::enroll_into;
use common::bin::{provisiond, start, stop, text};
use common::mosquitto::Mosquitto;
use common::pki::openssl;
use common::softhsm::{MODULE, PIN, SoftHsm};
use common::{RedisServer, path, within};
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-admin-key-admin-key-admin-key";
const OBJECT: &str = "issuing-ca";

/// `provisiond ca init --pkcs11-uri ...` in `dir`, the certs in `dir/certs`.
fn ca_init(hsm: &SoftHsm, dir: &Path, object: &str, pin: &str) -> Output {
    provisiond(dir)
        .args(["ca", "init", "--pkcs11-uri", &SoftHsm::uri(object)])
        .args(["--pkcs11-module", MODULE])
        .env("SOFTHSM2_CONF", hsm.conf())
        .env("CA_PKCS11_PIN", pin)
        .env("CERTS_DIR", dir.join("certs"))
        .output()
        .unwrap()
}

fn serial_of(cert: &Path) -> String {
    let (ok, out) = openssl(&["x509", "-in", path(cert), "-noout", "-serial"]);
    assert!(ok, "{out}");
    out.trim().trim_start_matches("serial=").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_key_in_softhsm_signs_what_openssl_and_mosquitto_accept() {
    let redis = RedisServer::start();
    within(Duration::from_secs(150), async {
        let hsm = SoftHsm::new();
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let made = ca_init(&hsm, dir.path(), OBJECT, PIN);
        assert!(made.status.success(), "{}", text(&made));

        // The certs directory holds the certificate and no key; the token holds the key,
        // sensitive and never extractable.
        let names: Vec<String> = std::fs::read_dir(&certs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ca.crt"]);
        let ca = certs.join("ca.crt");
        assert!(
            !std::fs::read_to_string(&ca)
                .unwrap()
                .contains("PRIVATE KEY")
        );
        let listed = Command::new("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", "provisiond", "--login"])
            .args(["--pin", PIN, "--list-objects", "--type", "privkey"])
            .env("SOFTHSM2_CONF", hsm.conf())
            .output()
            .expect("pkcs11-tool is installed (opensc)");
        let listed = text(&listed);
        assert!(
            listed.contains(&format!("label:      {OBJECT}")),
            "{listed}"
        );
        assert!(listed.contains("never extractable"), "{listed}");

        let env = hsm.env(OBJECT, &certs);
        let mut server_env: Vec<(&str, String)> = env.clone();
        server_env.extend([
            ("REDIS_ENABLED", "true".into()),
            ("REDIS_URL", redis.url()),
            ("ONBOARDING_MODE", "open".into()),
            ("ADMIN_KEYS", format!("ops:{ADMIN}")),
        ]);
        let server_env: Vec<(&str, &str)> =
            server_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (server, base) = start(dir.path(), &server_env).await;

        let out = dir.path().join("devices");
        enroll_into(&base, "hsm-1", path(&out), &[]).await;
        enroll_into(&base, "hsm-2", path(&out), &[]).await;
        let (kept, gone) = (out.join("hsm-1.crt"), out.join("hsm-2.crt"));
        for cert in [&kept, &gone] {
            let (ok, said) = openssl(&["verify", "-CAfile", path(&ca), path(cert)]);
            assert!(ok, "{said}");
        }
        let records = redis.certificate_records();
        assert_eq!(records, 2, "both certificates are recorded in Redis");

        let client = reqwest::Client::new();
        let revoked = client
            .post(format!(
                "{base}/api/v1/certificates/{}/revoke",
                serial_of(&gone)
            ))
            .bearer_auth(ADMIN)
            .json(&json!({ "reason": "keyCompromise" }))
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200, "{:?}", revoked.text().await);
        let crl = dir.path().join("crl.pem");
        let crl_pem = client
            .get(format!("{base}/api/v1/crl?format=pem"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        std::fs::write(&crl, &crl_pem).unwrap();
        let check = |cert: &Path| {
            openssl(&[
                "verify",
                "-crl_check",
                "-CAfile",
                path(&ca),
                "-CRLfile",
                path(&crl),
                path(cert),
            ])
        };
        let (ok, said) = check(&kept);
        assert!(
            ok,
            "the token's CRL verifies and does not list hsm-1: {said}"
        );
        let (ok, said) = check(&gone);
        assert!(!ok && said.contains("certificate revoked"), "{said}");

        // OCSP responses signed in the token.
        let ocsp = |cert: &Path| {
            openssl(&[
                "ocsp",
                "-issuer",
                path(&ca),
                "-cert",
                path(cert),
                "-url",
                &format!("{base}/ocsp"),
                "-CAfile",
                path(&ca),
            ])
            .1
        };
        let good = ocsp(&kept);
        assert!(good.contains("Response verify OK"), "{good}");
        assert!(good.contains("hsm-1.crt: good"), "{good}");
        let bad = ocsp(&gone);
        assert!(bad.contains("hsm-2.crt: revoked"), "{bad}");

        // A broker trusting the CA certificate (its own server certificate made by
        // `ca server-cert`, signed in the token too) and enforcing the CRL.
        let broker = Mosquitto::start_with(&certs, &ca, Some(&crl), &env);
        let key = |id: &str| out.join(format!("{id}.key"));
        let published = broker.publish(&ca, Some((&kept, &key("hsm-1"))));
        assert!(published.status.success(), "{}", text(&published));
        let refused = broker.publish(&ca, Some((&gone, &key("hsm-2"))));
        assert!(!refused.status.success(), "a revoked device was let in");
        drop(broker);

        let log = text(&stop(server));
        assert!(log.contains("the CA key is in a PKCS#11 token"), "{log}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_goes_away_is_503_and_is_used_again_when_it_returns() {
    within(Duration::from_secs(90), async {
        let hsm = SoftHsm::new();
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let made = ca_init(&hsm, dir.path(), OBJECT, PIN);
        assert!(made.status.success(), "{}", text(&made));
        let ca = certs.join("ca.crt");
        let env = hsm.env(OBJECT, &certs);
        let mut server_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        server_env.push(("ONBOARDING_MODE", "open"));
        let (server, base) = start(dir.path(), &server_env).await;
        let client = reqwest::Client::new();
        let token = |device: &'static str| {
            let client = client.clone();
            let base = base.clone();
            async move {
                let body: Value = client
                    .post(format!("{base}/api/v1/onboarding"))
                    .json(&json!({ "device_id": device }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                body["provisioning_token"].as_str().unwrap().to_owned()
            }
        };
        let csr = common::pki::quick_csr("away-1");
        let sign = |token: String| {
            let client = client.clone();
            let base = base.clone();
            let csr = csr.clone();
            async move {
                client
                    .post(format!("{base}/api/v1/sign-csr"))
                    .bearer_auth(token)
                    .json(&json!({ "device_id": "away-1", "csr": csr }))
                    .send()
                    .await
                    .unwrap()
            }
        };

        let away = dir.path().join("tokens-away");
        std::fs::rename(hsm.tokens(), &away).unwrap();
        let provisioning = token("away-1").await;
        let refused = sign(provisioning.clone()).await;
        assert_eq!(refused.status(), 503);
        assert!(refused.headers().contains_key("retry-after"));
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "ca_unavailable", "{body}");
        // Asked again while still away: still a clear 503, no panic, no 500.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(sign(provisioning.clone()).await.status(), 503);

        std::fs::rename(&away, hsm.tokens()).unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // The same provisioning token: nothing was used while the CA could not sign.
        let signed = sign(provisioning).await;
        assert_eq!(signed.status(), 200, "{:?}", signed.text().await);
        let body: Value = signed.json().await.unwrap();
        let cert = dir.path().join("away-1.crt");
        std::fs::write(&cert, body["certificate"].as_str().unwrap()).unwrap();
        let (ok, said) = openssl(&["verify", "-CAfile", path(&ca), path(&cert)]);
        assert!(ok, "{said}");

        let log = text(&stop(server));
        assert!(log.contains("the CA's token answers again"), "{log}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mistakes_are_refused_with_what_to_fix() {
    within(Duration::from_secs(60), async {
        let hsm = SoftHsm::new();
        let dir = tempfile::tempdir().unwrap();

        let wrong_pin = ca_init(&hsm, dir.path(), OBJECT, "wrong-pin-98765");
        assert!(!wrong_pin.status.success());
        assert!(
            text(&wrong_pin).contains("refused the PIN"),
            "{}",
            text(&wrong_pin)
        );
        assert!(
            !text(&wrong_pin).contains("98765"),
            "the PIN is never printed"
        );

        let made = ca_init(&hsm, dir.path(), OBJECT, PIN);
        assert!(made.status.success(), "{}", text(&made));
        let again = ca_init(&hsm, dir.path(), OBJECT, PIN);
        assert!(
            text(&again).contains("a CA already exists"),
            "{}",
            text(&again)
        );

        // A second key in the token, under a CA certificate that is not its own: the
        // server will not start with a key that does not match its certificate.
        let other = tempfile::tempdir().unwrap();
        let made = ca_init(&hsm, other.path(), "other-ca", PIN);
        assert!(made.status.success(), "{}", text(&made));
        let third = tempfile::tempdir().unwrap();
        let taken = ca_init(&hsm, third.path(), OBJECT, PIN);
        assert!(!taken.status.success());
        assert!(
            text(&taken).contains("already holds a private key"),
            "a key in the token is never replaced: {}",
            text(&taken)
        );
        let mismatched = provisiond(dir.path())
            .args(["ca", "server-cert", "--ip", "127.0.0.1"])
            .envs(hsm.env("other-ca", &dir.path().join("certs")))
            .output()
            .unwrap();
        assert!(!mismatched.status.success());
        assert!(
            text(&mismatched).contains("does not match the certificate"),
            "{}",
            text(&mismatched)
        );

        for (key, says) in [
            (
                "pkcs11:token=provisiond;object=issuing-ca?pin-value=1234",
                "pin-value",
            ),
            ("pkcs11:token=provisiond", "name the key"),
            (
                "pkcs11:token=nowhere;object=issuing-ca",
                "no token matching",
            ),
            (
                "pkcs11:token=provisiond;object=nothing",
                "no private key matching",
            ),
        ] {
            let mut env = hsm.env(OBJECT, &dir.path().join("certs"));
            env.retain(|(k, _)| *k != "CA_KEY");
            let refused = provisiond(dir.path())
                .args(["ca", "server-cert", "--ip", "127.0.0.1"])
                .envs(env)
                .env("CA_KEY", key)
                .output()
                .unwrap();
            assert!(!refused.status.success(), "{key}");
            assert!(text(&refused).contains(says), "{key}: {}", text(&refused));
        }
        let no_module = provisiond(dir.path())
            .args(["ca", "server-cert", "--ip", "127.0.0.1"])
            .envs(hsm.env(OBJECT, &dir.path().join("certs")))
            .env_remove("CA_PKCS11_MODULE")
            .output()
            .unwrap();
        assert!(
            text(&no_module).contains("ca.pkcs11_module"),
            "{}",
            text(&no_module)
        );
    })
    .await;
}
