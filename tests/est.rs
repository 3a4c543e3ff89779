//! EST (RFC 7030) with a client we did not write: strongSwan's `pki` fetches the CA
//! certificates, enrolls a device with the enrollment code onboarding answered (its JWT is
//! longer than `pki` can send), re-enrolls it over mutual TLS, and is refused a second
//! enrollment with the same code and a re-enrollment once the device is revoked. Each
//! certificate is checked with `openssl verify` and a real Mosquitto, and what is in
//! Redis is counted. Bad requests get EST's text refusals.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::app::{https_client, spawn_tls};
use common::mosquitto::Mosquitto;
use common::pki::openssl;
use common::{RedisServer, TestApp, path, within};
use serde_json::{Value, json};

const ADMIN: &str = "est-admin-key-est-admin-key-est-admin-key";

/// `pki <args>`, bounded; what it wrote to stdout, and its stderr without the plugin
/// lines it prints on every machine.
fn pki(args: &[&str]) -> (bool, String, String) {
    let out: Output = Command::new("timeout")
        .arg("30")
        .arg("pki")
        .args(args)
        .output()
        .expect("pki is installed (scripts/test installs strongswan-pki)");
    let said = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("plugin '") && !l.contains("TPM 2.0"))
        .collect::<Vec<_>>()
        .join("\n");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        said,
    )
}

/// A P-256 key and a CSR for `device`, made by `pki` into `dir`.
fn key_and_csr(dir: &Path, name: &str, device: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let (ok, pem, said) = pki(&[
        "--gen",
        "--type",
        "ecdsa",
        "--size",
        "256",
        "--outform",
        "pem",
    ]);
    assert!(ok, "{said}");
    std::fs::write(&key, pem).unwrap();
    let csr = dir.join(format!("{name}.csr"));
    let dn = format!("CN={device}");
    let (ok, pem, said) = pki(&[
        "--req",
        "--in",
        path(&key),
        "--type",
        "priv",
        "--dn",
        &dn,
        "--outform",
        "pem",
    ]);
    assert!(ok, "{said}");
    std::fs::write(&csr, pem).unwrap();
    (key, csr)
}

/// Onboarding's answer for `device` (open onboarding).
async fn onboard(client: &reqwest::Client, base: &str, device: &str) -> Value {
    client
        .post(format!("{base}/api/v1/onboarding"))
        .json(&json!({ "device_id": device }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The server over HTTPS in `certs`, storing in `redis`, with `adjust` applied.
async fn serve(
    certs: &Path,
    redis: &RedisServer,
    adjust: impl FnOnce(&mut provisiond::config::Settings),
) -> (TestApp, String) {
    let url = redis.url();
    spawn_tls(certs, |s| {
        s.redis.enabled = true;
        s.redis.url = Some(url);
        adjust(s);
    })
    .await
}

fn verify(ca: &Path, cert: &Path) {
    let (ok, said) = openssl(&["verify", "-CAfile", path(ca), path(cert)]);
    assert!(ok, "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strongswan_pki_enrolls_and_reenrolls_and_each_credential_is_used_once() {
    let redis = RedisServer::start();
    within(Duration::from_secs(150), async {
        let certs = tempfile::tempdir().unwrap();
        let (_app, base) = serve(certs.path(), &redis, |s| {
            s.admin.keys = provisiond::config::KeyList(vec![ADMIN.to_owned().into()]);
        })
        .await;
        let ca = certs.path().join("ca.crt");
        let work = tempfile::tempdir().unwrap();
        let work = work.path();

        // cacerts: the CA, as the server keeps it.
        let caout = work.join("cacert.pem");
        let (ok, _, said) = pki(&[
            "--estca",
            "--url",
            &base,
            "--cacert",
            path(&ca),
            "--caout",
            path(&caout),
            "--outform",
            "pem",
        ]);
        assert!(ok, "{said}");
        assert_eq!(
            std::fs::read_to_string(&caout).unwrap(),
            std::fs::read_to_string(&ca).unwrap()
        );

        // simpleenroll with the enrollment code.
        let client = https_client(&ca, None);
        let onboarded = onboard(&client, &base, "est-1").await;
        let code = onboarded["enrollment_code"].as_str().unwrap().to_owned();
        assert!(code.len() < 64, "{code}");
        assert!(onboarded["provisioning_token"].as_str().unwrap().len() > 170);
        let userpass = format!("est-1:{code}");
        let (key, csr) = key_and_csr(work, "first", "est-1");
        let est = |extra: Vec<&str>| {
            let mut args = vec!["--est", "--url", &base, "--cacert", path(&ca)];
            args.extend(extra);
            args.extend(["--outform", "pem"]);
            pki(&args.iter().map(|s| &**s).collect::<Vec<_>>())
        };
        let (ok, cert_pem, said) = est(vec!["--userpass", &userpass, "--in", path(&csr)]);
        assert!(ok, "{said}");
        let cert = work.join("first.crt");
        std::fs::write(&cert, &cert_pem).unwrap();
        verify(&ca, &cert);
        let (_, subject) = openssl(&["x509", "-in", path(&cert), "-noout", "-subject"]);
        assert!(subject.contains("CN = est-1"), "{subject}");

        // The same code again: used.
        let (ok, _, said) = est(vec!["--userpass", &userpass, "--in", path(&csr)]);
        assert!(!ok && said.contains("HTTP 401"), "{said}");
        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("provisiond_tokens_rejected_total{reason=\"token_used\"} 1"),
            "counted as sign-csr counts it: {metrics}"
        );

        // simplereenroll over mutual TLS, with a new key.
        let (new_key, new_csr) = key_and_csr(work, "second", "est-1");
        let (ok, renewed_pem, said) = est(vec![
            "--cert",
            path(&cert),
            "--key",
            path(&key),
            "--in",
            path(&new_csr),
        ]);
        assert!(ok, "{said}");
        let renewed = work.join("second.crt");
        std::fs::write(&renewed, &renewed_pem).unwrap();
        verify(&ca, &renewed);
        assert_ne!(renewed_pem, cert_pem);

        // A real broker takes the renewed certificate.
        let broker = Mosquitto::start(certs.path(), &ca, None);
        let published = broker.publish(&ca, Some((&renewed, &new_key)));
        assert!(published.status.success(), "{published:?}");
        drop(broker);

        // Two records, the first superseded by the renewal.
        let records = redis.certificate_records();
        assert_eq!(records, 2);
        let device: Value = common::json_of(
            client
                .get(format!("{base}/api/v1/devices/est-1"))
                .bearer_auth(ADMIN),
        )
        .await;
        let statuses: Vec<&str> = device["certificates"]
            .as_array()
            .unwrap_or_else(|| panic!("{device}"))
            .iter()
            .map(|c| c["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == "revoked").count(),
            1,
            "{device}"
        );

        // A revoked device cannot re-enroll.
        let revoked = client
            .post(format!("{base}/api/v1/devices/est-1/revoke"))
            .bearer_auth(ADMIN)
            .json(&json!({ "reason": "keyCompromise" }))
            .send()
            .await
            .unwrap();
        assert!(revoked.status().is_success(), "{:?}", revoked.text().await);
        let (third_key, third_csr) = key_and_csr(work, "third", "est-1");
        let _ = third_key;
        let (ok, _, said) = est(vec![
            "--cert",
            path(&renewed),
            "--key",
            path(&new_key),
            "--in",
            path(&third_csr),
        ]);
        assert!(!ok && said.contains("HTTP 403"), "{said}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_est_requests_get_text_refusals_and_burn_nothing() {
    within(Duration::from_secs(60), async {
        let certs = tempfile::tempdir().unwrap();
        let (_app, base) = spawn_tls(certs.path(), |_| {}).await;
        let ca = certs.path().join("ca.crt");
        let client = https_client(&ca, None);
        let est = format!("{base}/.well-known/est");
        let onboarded = onboard(&client, &base, "est-9").await;
        let token = onboarded["provisioning_token"].as_str().unwrap();
        let code = onboarded["enrollment_code"].as_str().unwrap();

        // No credentials: 401, the challenge, an empty body (Bouncy Castle asks so first).
        let asked = client
            .post(format!("{est}/simpleenroll"))
            .body("MIIB")
            .send()
            .await
            .unwrap();
        assert_eq!(asked.status(), 401);
        assert!(
            asked.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
        assert!(asked.bytes().await.unwrap().is_empty());

        for (user, password, body, status, said) in [
            ("est-9", "not-a-code", "MIIB", 401, "token_invalid"),
            ("est-8", code, "MIIB", 401, "token_invalid"),
            ("est-9", code, "***", 400, "invalid_csr"),
            ("est-9", token, "", 400, "invalid_csr"),
            ("est-9", token, "MIIBAAAA", 400, "invalid_csr"),
        ] {
            let answer = client
                .post(format!("{est}/simpleenroll"))
                .basic_auth(user, Some(password))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), status, "{user} {body}");
            let text = answer.text().await.unwrap();
            assert!(text.starts_with(said), "{user} {body}: {text}");
        }
        // None of that used the token: the JSON API still takes it.
        let csr = common::pki::quick_csr("est-9");
        let signed = client
            .post(format!("{base}/api/v1/sign-csr"))
            .bearer_auth(code)
            .json(&json!({ "device_id": "est-9", "csr": csr }))
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status(), 200, "{:?}", signed.text().await);
        // ... and the code and the token are one credential: both are used now.
        let again = client
            .post(format!("{base}/api/v1/sign-csr"))
            .bearer_auth(token)
            .json(&json!({ "device_id": "est-9", "csr": csr }))
            .send()
            .await
            .unwrap();
        assert_eq!(common::error_code(again).await.1, "token_used");

        let answer = client.get(format!("{est}/csrattrs")).send().await.unwrap();
        assert_eq!(answer.status(), 204);
        let answer = client
            .get(format!("{est}/no-such-group/cacerts"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 404);
        // Re-enrolling without a client certificate.
        let answer = client
            .post(format!("{est}/simplereenroll"))
            .body("MIIB")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);

        // Not over TLS: refused, saying why.
        let plain = TestApp::spawn(None).await;
        let answer = reqwest::get(format!("{}/.well-known/est/cacerts", plain.address))
            .await
            .unwrap();
        assert_eq!(answer.status(), 403);
        assert!(answer.text().await.unwrap().contains("TLS"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_key_is_an_est_password_once_per_device() {
    const SECRET: &str = "est-derived-group-secret-est-derived-group-secret";
    let redis = RedisServer::start();
    within(Duration::from_secs(120), async {
        let certs = tempfile::tempdir().unwrap();
        let (_app, base) = serve(certs.path(), &redis, |s| {
            s.onboarding.mode = provisiond::config::OnboardingMode::Derived;
            s.onboarding.group_secret = Some(provisiond::secret::Secret::new(SECRET));
        })
        .await;
        let ca = certs.path().join("ca.crt");
        let work = tempfile::tempdir().unwrap();
        let work = work.path();
        let key_of = |device: &str| {
            provisiond::auth::derived::encode_key(&provisiond::auth::derived::device_key(
                SECRET.as_bytes(),
                device,
            ))
        };
        let (_, csr) = key_and_csr(work, "derived", "drv-1");
        let est = |userpass: &str| {
            pki(&[
                "--est",
                "--url",
                &base,
                "--cacert",
                path(&ca),
                "--userpass",
                userpass,
                "--in",
                path(&csr),
                "--outform",
                "pem",
            ])
        };
        // Another device's key, and a key for no one: 401, nothing issued.
        let (ok, _, said) = est(&format!("drv-1:{}", key_of("drv-2")));
        assert!(!ok && said.contains("HTTP 401"), "{said}");
        assert_eq!(redis.certificate_records(), 0);
        // The device's own key: onboarding and enrollment in one request.
        let (ok, cert_pem, said) = est(&format!("drv-1:{}", key_of("drv-1")));
        assert!(ok, "{said}");
        let cert = work.join("derived.crt");
        std::fs::write(&cert, &cert_pem).unwrap();
        verify(&ca, &cert);
        assert_eq!(redis.certificate_records(), 1);
        // Once: the same password again is refused.
        let (ok, _, said) = est(&format!("drv-1:{}", key_of("drv-1")));
        assert!(!ok && said.contains("HTTP 401"), "{said}");
        assert_eq!(redis.certificate_records(), 1);
    })
    .await;
}

/// Bouncy Castle's EST client (`tests/bc/EstClient.java`, compiled here with the JDK
/// against Debian's bcpkix and bctls): `getCACerts`, `getCSRAttributes`,
/// `simpleEnroll` and `simpleEnrollWithServersideCreation`. It asks each request
/// without credentials first and reads the 401's empty body, and needs
/// `Content-Transfer-Encoding: base64` on each answer and on each multipart part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bouncy_castle_enrolls_and_gets_a_server_made_key() {
    let redis = RedisServer::start();
    within(Duration::from_secs(150), async {
        let certs = tempfile::tempdir().unwrap();
        let (_app, base) = serve(certs.path(), &redis, |_| {}).await;
        let ca = certs.path().join("ca.crt");
        let client = https_client(&ca, None);
        let work = tempfile::tempdir().unwrap();
        let work = work.path();
        let jars = ["bcpkix", "bcprov", "bcutil", "bctls"]
            .map(|jar| format!("/usr/share/java/{jar}.jar"))
            .join(":");
        let javac = Command::new("timeout")
            .args(["120", "javac", "-cp", &jars, "-d", path(work)])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bc/EstClient.java"))
            .output()
            .expect("a JDK is installed (scripts/test installs default-jdk-headless)");
        assert!(javac.status.success(), "{javac:?}");

        let code = |onboarded: Value| onboarded["enrollment_code"].as_str().unwrap().to_owned();
        let first = code(onboard(&client, &base, "bc-1").await);
        let second = code(onboard(&client, &base, "bc-2").await);
        let server = base.trim_start_matches("https://");
        let java = Command::new("timeout")
            .args([
                "90",
                "java",
                "-cp",
                &format!("{}:{jars}", path(work)),
                "EstClient",
            ])
            .args([
                server,
                path(&ca),
                path(work),
                "bc-1",
                &first,
                "bc-2",
                &second,
            ])
            .output()
            .expect("java runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&java.stdout),
            String::from_utf8_lossy(&java.stderr)
        );
        assert!(java.status.success() && said.contains("done"), "{said}");
        assert!(said.contains("csrattrs: none"), "{said}");
        assert_eq!(
            std::fs::read_to_string(work.join("cacerts.pem"))
                .unwrap()
                .trim(),
            std::fs::read_to_string(&ca).unwrap().trim()
        );
        verify(&ca, &work.join("enrolled.crt"));
        let made = work.join("serverkeygen.crt");
        verify(&ca, &made);
        let (_, subject) = openssl(&["x509", "-in", path(&made), "-noout", "-subject"]);
        assert!(subject.contains("CN = bc-2"), "{subject}");
        // The key the server made is the certificate's, and a broker takes the pair.
        let key = work.join("serverkeygen.key");
        let (_, from_key) = openssl(&["pkey", "-in", path(&key), "-pubout"]);
        let (_, from_cert) = openssl(&["x509", "-in", path(&made), "-noout", "-pubkey"]);
        assert_eq!(from_key, from_cert);
        let broker = Mosquitto::start(certs.path(), &ca, None);
        let published = broker.publish(&ca, Some((&made, &key)));
        assert!(published.status.success(), "{published:?}");
        drop(broker);
        // Two certificates recorded, and the serverkeygen credential used.
        assert_eq!(redis.certificate_records(), 2);
        let again = client
            .post(format!("{base}/api/v1/sign-csr"))
            .bearer_auth(&second)
            .json(&json!({ "device_id": "bc-2", "csr": common::pki::quick_csr("bc-2") }))
            .send()
            .await
            .unwrap();
        assert_eq!(common::error_code(again).await.1, "token_used");
    })
    .await;
}
