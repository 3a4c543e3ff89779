//! The OCSP responder against `openssl ocsp`, a client we did not write, on a real
//! Redis: good, then revoked (time and reason) on two instances after one revocation,
//! unknown for a serial never issued and for another issuer's CertID, SHA-1 and SHA-256
//! CertIDs, the nonce echoed, the request by GET, and a malformed request answered
//! `malformedRequest`, never an HTTP error; and `provisiond bench --scenario ocsp` on it.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::device::enroll;
use common::pki::openssl_x509;
use common::{RedisServer, TestApp, path, within};
use provisiond::config::KeyList;
use provisiond::device::KeyKind;
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::json;

const ADMIN: &str = "admin-key-admin-key-admin-key-admin-key";
const AIA: &str = "http://ocsp.example.net/ocsp";

/// `openssl ocsp <args>`: what it printed, stdout then stderr.
fn openssl_ocsp(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("ocsp")
        .args(args)
        .output()
        .expect("openssl is installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `openssl ocsp -reqout`: a request about `cert` without a nonce, as most clients ask,
/// written to `req.der` in `dir`.
fn request_file(
    dir: &tempfile::TempDir,
    ca: &std::path::Path,
    cert: &std::path::Path,
) -> std::path::PathBuf {
    let request = dir.path().join("req.der");
    openssl_ocsp(&[
        "-issuer",
        path(ca),
        "-cert",
        path(cert),
        "-no_nonce",
        "-reqout",
        path(&request),
    ]);
    assert!(request.is_file(), "openssl ocsp wrote no request");
    request
}

/// A device enrolled on `app`, its certificate and the CA in files of their own.
struct Enrolled {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    device: common::device::Enrolled,
}

async fn enrolled(app: &TestApp, id: &str) -> Enrolled {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert) = (dir.path().join("ca.crt"), dir.path().join("dev.crt"));
    std::fs::write(&ca, app.ca_pem().await).unwrap();
    let device = enroll(app, id, KeyKind::P256).await;
    std::fs::write(&cert, &device.cert_pem).unwrap();
    Enrolled {
        dir,
        ca,
        cert,
        device,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_ocsp_sees_good_then_revoked_everywhere_and_unknown_for_the_rest() {
    let redis = RedisServer::start();
    within(Duration::from_secs(90), async {
        let app = TestApp::spawn_with(Some(&redis), |s| {
            s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
            s.ca.ocsp_url = Some(AIA.into());
        })
        .await;
        let Enrolled {
            dir,
            ca,
            cert,
            device,
        } = enrolled(&app, "ocsp-1").await;
        let url = app.url("/ocsp");

        // The certificate says where to ask.
        let aia = openssl_x509(&device.cert_pem, &["-noout", "-ocsp_uri"]);
        assert_eq!(aia.trim(), AIA);

        let ask = |extra: &[&str]| {
            let mut args = vec!["-issuer", path(&ca)];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["-url", &url, "-CAfile", path(&ca), "-resp_text"]);
            openssl_ocsp(&args)
        };
        let good = ask(&["-cert", path(&cert)]);
        assert!(good.contains("Response verify OK"), "{good}");
        assert!(good.contains("dev.crt: good"), "{good}");
        assert!(good.contains("OCSP Nonce"), "the nonce is echoed: {good}");
        let sha256 = ask(&["-sha256", "-cert", path(&cert)]);
        assert!(sha256.contains("dev.crt: good"), "{sha256}");
        assert!(sha256.contains("Hash Algorithm: sha256"), "{sha256}");

        // A second instance on the same Redis and CA.
        let other = TestApp::spawn_settings({
            let mut s = common::app::test_settings(Some(&redis), &app.certs);
            s.ca.ocsp_url = Some(AIA.into());
            s
        })
        .await;
        let revoked = app
            .post_json_as(
                ADMIN,
                &format!("/api/v1/certificates/{}/revoke", device.serial),
                &json!({ "reason": "keyCompromise" }),
            )
            .await;
        assert_eq!(revoked.status(), StatusCode::OK);
        for base in [&url, &other.url("/ocsp")] {
            let answer = openssl_ocsp(&[
                "-issuer",
                path(&ca),
                "-cert",
                path(&cert),
                "-url",
                base,
                "-CAfile",
                path(&ca),
            ]);
            assert!(answer.contains("Response verify OK"), "{answer}");
            assert!(answer.contains("dev.crt: revoked"), "{base}: {answer}");
            assert!(answer.contains("Reason: keyCompromise"), "{answer}");
        }

        // Never issued; and another issuer's CertID (checked against our CA as the
        // responder): unknown.
        let never = ask(&["-serial", "0x1234"]);
        assert!(never.contains("0x1234: unknown"), "{never}");
        let other_ca = dir.path().join("other.crt");
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=another CA",
            ])
            .arg("-keyout")
            .arg(dir.path().join("other.key"))
            .arg("-out")
            .arg(&other_ca)
            .status()
            .unwrap();
        assert!(made.success());
        let serial = format!("0x{}", device.serial);
        let foreign = openssl_ocsp(&[
            "-issuer",
            path(&other_ca),
            "-serial",
            &serial,
            "-url",
            &url,
            "-VAfile",
            path(&ca),
        ]);
        assert!(foreign.contains(&format!("{serial}: unknown")), "{foreign}");

        // By GET (RFC 5019): the request base64 and URL-encoded in the path.
        let request = request_file(&dir, &ca, &cert);
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&request).unwrap());
        let encoded: String = encoded
            .chars()
            .map(|c| match c {
                '+' => "%2B".to_owned(),
                '/' => "%2F".to_owned(),
                '=' => "%3D".to_owned(),
                c => c.to_string(),
            })
            .collect();
        let got = app
            .client
            .get(app.url(&format!("/ocsp/{encoded}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(
            got.headers()["content-type"].to_str().unwrap(),
            "application/ocsp-response"
        );
        let response = dir.path().join("resp.der");
        std::fs::write(&response, got.bytes().await.unwrap()).unwrap();
        let read = openssl_ocsp(&[
            "-respin",
            path(&response),
            "-issuer",
            path(&ca),
            "-cert",
            path(&cert),
            "-CAfile",
            path(&ca),
            "-no_nonce",
        ]);
        assert!(read.contains("dev.crt: revoked"), "{read}");

        // What does not read is answered malformedRequest (RFC 6960 §2.3), as OCSP.
        for garbage in [&b"garbage"[..], &[0x30, 0x00], &[0x30, 0x80, 0x00, 0x00]] {
            let answer = app
                .client
                .post(&url)
                .header("content-type", "application/ocsp-request")
                .body(garbage.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            let body = answer.bytes().await.unwrap();
            assert_eq!(&body[..], &[0x30, 0x03, 0x0a, 0x01, 0x01]);
        }
        let large = app
            .client
            .post(&url)
            .body(vec![0x30; 9000])
            .send()
            .await
            .unwrap();
        assert_eq!(
            large.status(),
            StatusCode::OK,
            "over 8 KB: an OCSP answer too"
        );
        assert_eq!(
            &large.bytes().await.unwrap()[..],
            &[0x30, 0x03, 0x0a, 0x01, 0x01]
        );
        // Seventeen certificates in one request: more than is answered.
        let serials: Vec<String> = (1..=17).map(|n| format!("0x{n:x}")).collect();
        let mut args = vec!["-issuer", path(&ca), "-url", &url, "-CAfile", path(&ca)];
        for serial in &serials {
            args.extend(["-serial", serial.as_str()]);
        }
        let many = openssl_ocsp(&args);
        assert!(many.to_lowercase().contains("malformedrequest"), "{many}");
        let broken = app.client.get(app.url("/ocsp/%%zz")).send().await.unwrap();
        assert_eq!(broken.status(), StatusCode::OK);
        assert_eq!(
            &broken.bytes().await.unwrap()[..],
            &[0x30, 0x03, 0x0a, 0x01, 0x01]
        );
        other.stop().await;
        app.stop().await;
    })
    .await;
}

/// `provisiond ca ocsp-signer` makes a delegated responder: the responses carry its
/// certificate and are signed by its key, and `openssl ocsp` accepts them against the CA
/// alone; the CA certificate is not the signer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_responder_signs_and_openssl_accepts_it_against_the_ca() {
    let redis = RedisServer::start();
    within(Duration::from_secs(90), async {
        let certs = tempfile::tempdir().unwrap();
        let empty = certs.path().join("empty.toml");
        std::fs::write(&empty, "").unwrap();
        let certs_dir = certs.path().join("certs");
        let env = [("CERTS_DIR", path(&certs_dir))];
        let config = ["--config", path(&empty)];
        let made = common::bin::run(&[&["ca", "init"][..], &config].concat(), &env).await;
        assert!(made.status.success(), "{}", common::bin::text(&made));
        let made = common::bin::run(
            &[&["ca", "ocsp-signer", "--days", "7"][..], &config].concat(),
            &env,
        )
        .await;
        assert!(made.status.success(), "{}", common::bin::text(&made));
        let signer = std::fs::read_to_string(certs_dir.join("ocsp.crt")).unwrap();
        let text = openssl_x509(&signer, &["-noout", "-text"]);
        assert!(text.contains("OCSP Signing"), "{text}");
        assert!(text.contains("OCSP No Check"), "{text}");
        assert!(text.contains("CA:FALSE"), "{text}");

        let app =
            TestApp::spawn_settings(common::app::test_settings(Some(&redis), &certs_dir)).await;
        let Enrolled {
            dir,
            ca,
            cert,
            device: _,
        } = enrolled(&app, "ocsp-delegated").await;
        let url = app.url("/ocsp");
        let answer = openssl_ocsp(&[
            "-issuer",
            path(&ca),
            "-cert",
            path(&cert),
            "-url",
            &url,
            "-CAfile",
            path(&ca),
            "-resp_text",
        ]);
        assert!(answer.contains("Response verify OK"), "{answer}");
        assert!(answer.contains("dev.crt: good"), "{answer}");
        assert!(
            answer.contains("provisiond OCSP responder"),
            "the response carries the responder's certificate: {answer}"
        );

        // The responder's certificate is what signed: checked against it alone
        // (-VAfile trusts it directly), the response verifies; against another key, not.
        let signer_file = dir.path().join("ocsp.crt");
        std::fs::write(&signer_file, &signer).unwrap();
        let direct = openssl_ocsp(&[
            "-issuer",
            path(&ca),
            "-cert",
            path(&cert),
            "-url",
            &url,
            "-VAfile",
            path(&signer_file),
        ]);
        assert!(direct.contains("Response verify OK"), "{direct}");
        let as_ca = openssl_ocsp(&[
            "-issuer",
            path(&ca),
            "-cert",
            path(&cert),
            "-url",
            &url,
            "-VAfile",
            path(&ca),
            "-no_intern",
        ]);
        assert!(
            as_ca.contains("Response Verify Failure"),
            "the CA key did not sign it: {as_ca}"
        );
        app.stop().await;
    })
    .await;
}

/// A request without a nonce is answered with the response signed for the same
/// statuses before (byte for byte, the same producedAt); a revocation changes the
/// status read from the registry, so the next answer is signed anew and says revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_without_a_nonce_are_kept_until_the_status_changes() {
    let redis = RedisServer::start();
    within(Duration::from_secs(60), async {
        let app = TestApp::spawn_with(Some(&redis), |s| {
            s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
        })
        .await;
        let Enrolled {
            dir,
            ca,
            cert,
            device,
        } = enrolled(&app, "ocsp-kept").await;
        let request = request_file(&dir, &ca, &cert);
        let body = std::fs::read(&request).unwrap();
        let ask = || async {
            app.client
                .post(app.url("/ocsp"))
                .header("content-type", "application/ocsp-request")
                .body(body.clone())
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        };
        let first = ask().await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let again = ask().await;
        assert_eq!(first, again, "the kept response, not a new signature");

        let revoked = app
            .post_json_as(
                ADMIN,
                &format!("/api/v1/certificates/{}/revoke", device.serial),
                &json!({ "reason": "keyCompromise" }),
            )
            .await;
        assert_eq!(revoked.status(), StatusCode::OK);
        let after = ask().await;
        assert_ne!(after, first);
        let response = dir.path().join("resp.der");
        std::fs::write(&response, &after).unwrap();
        let read = openssl_ocsp(&[
            "-respin",
            path(&response),
            "-issuer",
            path(&ca),
            "-cert",
            path(&cert),
            "-CAfile",
            path(&ca),
            "-no_nonce",
        ]);
        assert!(read.contains("Response verify OK"), "{read}");
        assert!(read.contains("dev.crt: revoked"), "{read}");
        app.stop().await;
    })
    .await;
}

/// `provisiond bench --scenario ocsp`, the load `scripts/bench-ocsp` drives: requests
/// made by `openssl ocsp -reqout`, kept connections and a connection per request, every
/// answer a successful OCSPResponse; a request the responder cannot read is counted as
/// `malformedRequest`, and a run without requests is refused before it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_loads_the_responder_with_openssls_requests() {
    within(Duration::from_secs(90), async {
        let app = TestApp::spawn(None).await;
        let Enrolled { dir, ca, cert, .. } = enrolled(&app, "ocsp-bench").await;
        let request = request_file(&dir, &ca, &cert);
        let bench = |extra: &'static [&'static str], request: std::path::PathBuf| {
            let server = app.address.clone();
            async move {
                let mut args = vec![
                    "bench",
                    "--server",
                    &server,
                    "--scenario",
                    "ocsp",
                    "--duration",
                    "1",
                    "--concurrency",
                    "4",
                    "--json",
                    "--ocsp-request",
                    path(&request),
                ];
                args.extend(extra);
                let run = common::bin::run(&args, &[]).await;
                let report: serde_json::Value = serde_json::from_slice(&run.stdout)
                    .unwrap_or_else(|_| panic!("{}", common::bin::text(&run)));
                (run.status.code(), report["results"]["ocsp"].clone())
            }
        };
        for extra in [&[][..], &["--connection-per-request"][..]] {
            let (code, ocsp) = bench(extra, request.clone()).await;
            assert_eq!(code, Some(0), "{extra:?}: {ocsp}");
            assert!(ocsp["ok"].as_u64().unwrap() > 0, "{extra:?}: {ocsp}");
            assert_eq!(ocsp["requests"], ocsp["ok"], "{extra:?}: {ocsp}");
        }

        let garbage = dir.path().join("garbage.der");
        std::fs::write(&garbage, b"not an OCSP request").unwrap();
        let (code, ocsp) = bench(&[], garbage).await;
        assert_eq!(code, Some(3), "{ocsp}");
        assert_eq!(ocsp["ok"], 0, "{ocsp}");
        let refused = &ocsp["errors"]["ocsp_status_1"];
        assert!(refused.as_u64().unwrap() > 0, "{ocsp}");
        assert_eq!(refused, &ocsp["requests"], "{ocsp}");

        let none = common::bin::run(
            &["bench", "--server", &app.address, "--scenario", "ocsp"],
            &[],
        )
        .await;
        assert!(!none.status.success());
        assert!(
            common::bin::text(&none).contains("--ocsp-request"),
            "{}",
            common::bin::text(&none)
        );
        app.stop().await;
    })
    .await;
}
