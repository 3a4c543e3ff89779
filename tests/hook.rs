//! The pre-issuance hook against a real HTTP hook in the test, which checks every
//! request's signature with its own HMAC code: allow, deny, a shorter validity, answers
//! it may not give, a hook that is slow, failing, talking nonsense or away; and after
//! every refusal the token (or renewal proof) still works.

mod common;

use std::time::Duration;

use common::device::{enroll, renew};
use common::hook::{Answer, SECRET, start_hook};
use common::pki::{openssl_x509, quick_csr};
use common::{TestApp, within};
use provisiond::config::HookOnError;
use provisiond::device::KeyKind;
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::Value;

async fn app_with_hook(url: &str, on_error: HookOnError) -> TestApp {
    TestApp::spawn_with(None, |s| {
        s.hook.url = Some(url.to_owned());
        s.hook.secret = Some(Secret::new(SECRET));
        s.hook.timeout_ms = 500;
        s.hook.on_error = on_error;
    })
    .await
}

async fn refused(response: reqwest::Response) -> (StatusCode, String, String) {
    let retry_after = response.headers().get("retry-after").is_some();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    let code = body["error"]["code"].as_str().unwrap().to_owned();
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(retry_after, "a 503 says when to come back");
    }
    (status, code, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_decides_and_no_refusal_burns_the_token() {
    within(Duration::from_secs(60), async {
        let (hook, url) = start_hook().await;
        let app = app_with_hook(&url, HookOnError::Deny).await;
        let token = app.token_for("hooked-1").await;
        let csr = quick_csr("hooked-1");

        // Every answer the server must not sign on, each with the same token.
        let cases: [(Answer, StatusCode, &str); 6] = [
            (
                Answer::Deny("not in inventory"),
                StatusCode::FORBIDDEN,
                "hook_denied",
            ),
            (
                Answer::AllowDays(9999),
                StatusCode::SERVICE_UNAVAILABLE,
                "hook_unavailable",
            ),
            (
                Answer::Sans,
                StatusCode::SERVICE_UNAVAILABLE,
                "hook_unavailable",
            ),
            (
                Answer::Slow,
                StatusCode::SERVICE_UNAVAILABLE,
                "hook_unavailable",
            ),
            (
                Answer::Status(500),
                StatusCode::SERVICE_UNAVAILABLE,
                "hook_unavailable",
            ),
            (
                Answer::Garbage,
                StatusCode::SERVICE_UNAVAILABLE,
                "hook_unavailable",
            ),
        ];
        for (answer, status, code) in cases {
            hook.answer(answer);
            let (got, got_code, message) =
                refused(app.sign_csr(&token, "hooked-1", &csr).await).await;
            assert_eq!((got, got_code.as_str()), (status, code), "{message}");
            if code == "hook_denied" {
                assert!(message.contains("not in inventory"), "{message}");
            } else {
                // What went wrong stays in the log and the audit.
                assert!(
                    !message.contains("HTTP")
                        && !message.contains("validity")
                        && !message.contains("san"),
                    "{message}"
                );
            }
        }

        // What the hook was told, signed (the hook answered, so the signature held).
        let asked = hook.last();
        assert_eq!(asked["event"], "certificate.request");
        assert_eq!(asked["device_id"], "hooked-1");
        assert_eq!(asked["group"], "default");
        assert_eq!(asked["renewal"], false);
        assert_eq!(asked["csr"]["key_type"], "ecdsa-p256");
        assert_eq!(asked["csr"]["subject"], "CN=hooked-1");
        assert_eq!(asked["client_address"], "127.0.0.1");
        assert_eq!(asked["id"].as_str().unwrap().len(), 32);

        // A shorter validity is honoured, and the token still works after all that.
        hook.answer(Answer::AllowDays(30));
        let signed = app.sign_csr(&token, "hooked-1", &csr).await;
        assert_eq!(signed.status(), StatusCode::OK);
        let signed: Value = signed.json().await.unwrap();
        let expires = time::OffsetDateTime::parse(
            signed["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let days = (expires - time::OffsetDateTime::now_utc()).whole_hours() as f64 / 24.0;
        assert!((29.9..=30.1).contains(&days), "{days} days");
        // The certificate itself says so.
        let certificate = signed["certificate"].as_str().unwrap();
        let end = openssl_x509(certificate, &["-noout", "-enddate"]);
        let shown = expires.year().to_string();
        assert!(
            end.starts_with("notAfter=") && end.contains(&shown),
            "{end}"
        );

        // Renewal asks too; a denial leaves the proof good for the next try.
        let device = enroll(&app, "hooked-2", KeyKind::P256).await;
        let csr = device.key.csr_pem(Some("hooked-2")).unwrap();
        let proof = device.proof("hooked-2");
        hook.answer(Answer::Deny("recalled"));
        let (status, code, _) = refused(renew(&app, "hooked-2", &csr, Some(&proof)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::FORBIDDEN, "hook_denied")
        );
        assert_eq!(hook.last()["renewal"], true);
        hook.answer(Answer::Allow);
        assert_eq!(
            renew(&app, "hooked-2", &csr, Some(&proof)).await.status(),
            StatusCode::OK
        );

        let metrics = app.metrics().await;
        for decision in ["allow", "deny", "error"] {
            let line = format!(
                "provisiond_hook_decisions_total{{decision=\"{decision}\",group=\"default\"}}"
            );
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with(&line) && !l.ends_with(" 0")),
                "{decision}"
            );
        }
        let events = app
            .client
            .get(app.url("/api/v1/devices/hooked-1/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), StatusCode::UNAUTHORIZED, "admin only");
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_allow_signs_when_the_hook_is_away_never_when_it_answers_nonsense() {
    within(Duration::from_secs(30), async {
        // A port nothing listens on.
        let away = format!("http://127.0.0.1:{}/hook", common::redis::free_port());
        let strict = app_with_hook(&away, HookOnError::Deny).await;
        let token = strict.token_for("away-1").await;
        let csr = quick_csr("away-1");
        let (status, code, _) = refused(strict.sign_csr(&token, "away-1", &csr).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "hook_unavailable")
        );
        strict.stop().await;

        let lenient = app_with_hook(&away, HookOnError::Allow).await;
        let token = lenient.token_for("away-2").await;
        let signed = lenient
            .sign_csr(&token, "away-2", &quick_csr("away-2"))
            .await;
        assert_eq!(signed.status(), StatusCode::OK);
        lenient.stop().await;

        // A hook that answers, but not with an allowance, is never taken for one.
        let (hook, url) = start_hook().await;
        let lenient = app_with_hook(&url, HookOnError::Allow).await;
        let token = lenient.token_for("odd-1").await;
        let csr = quick_csr("odd-1");
        for answer in [
            Answer::Status(403),
            Answer::Garbage,
            Answer::AllowDays(0),
            Answer::Sans,
        ] {
            hook.answer(answer);
            let (status, code, _) = refused(lenient.sign_csr(&token, "odd-1", &csr).await).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, "hook_unavailable")
            );
        }
        // A 5xx is a hook that is away: signed, as configured.
        hook.answer(Answer::Status(503));
        assert_eq!(
            lenient.sign_csr(&token, "odd-1", &csr).await.status(),
            StatusCode::OK
        );
        lenient.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subject_reaches_the_hook_escaped() {
    within(Duration::from_secs(30), async {
        let (hook, url) = start_hook().await;
        let app = app_with_hook(&url, HookOnError::Deny).await;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "esc-1");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "x, CN=admin");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let token = app.token_for("esc-1").await;
        assert_eq!(
            app.sign_csr(&token, "esc-1", &csr).await.status(),
            StatusCode::OK
        );
        // The last RDN first, the comma in the value escaped: one CN, not two.
        assert_eq!(hook.last()["csr"]["subject"], "O=x\\, CN=admin,CN=esc-1");
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_hook_needs_https_or_loopback_and_a_secret() {
    for (url, secret, wanted) in [
        ("http://hooks.example/x", Some(SECRET), "hook.url"),
        ("ftp://127.0.0.1/x", Some(SECRET), "hook.url"),
        ("https://hooks.example/x", None, "hook.secret_file"),
        ("https://hooks.example/x", Some("short"), "hook.secret"),
    ] {
        let certs = tempfile::tempdir().unwrap();
        let mut settings = common::app::test_settings(None, certs.path());
        settings.hook.url = Some(url.into());
        settings.hook.secret = secret.map(Secret::new);
        let err = provisiond::startup::Application::build(settings)
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains(wanted), "{url}: {err}");
    }
    // A secret without a URL is a hook that was meant and is not on.
    let mut settings = common::app::test_settings(None, std::path::Path::new("/nonexistent"));
    settings.hook.secret = Some(Secret::new(SECRET));
    assert!(
        settings
            .hook
            .validate()
            .unwrap_err()
            .to_string()
            .contains("hook.url")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_on_a_private_ca_is_reached_through_hook_ca_file_only() {
    within(Duration::from_secs(30), async {
        let (hook, url, ca_pem) = common::hook::start_tls_hook().await;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("hook-ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();

        // The built-in roots do not know the hook's CA: no answer, nothing signed.
        let untrusting = app_with_hook(&url, HookOnError::Deny).await;
        let token = untrusting.token_for("tls-1").await;
        let (status, code, _) = refused(
            untrusting
                .sign_csr(&token, "tls-1", &quick_csr("tls-1"))
                .await,
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "hook_unavailable")
        );
        untrusting.stop().await;

        let trusting = TestApp::spawn_with(None, |s| {
            s.hook.url = Some(url.clone());
            s.hook.secret = Some(Secret::new(SECRET));
            s.hook.ca_file = Some(ca_file.clone());
        })
        .await;
        let token = trusting.token_for("tls-2").await;
        let signed = trusting
            .sign_csr(&token, "tls-2", &quick_csr("tls-2"))
            .await;
        assert_eq!(signed.status(), StatusCode::OK);
        assert_eq!(hook.last()["device_id"], "tls-2");
        trusting.stop().await;

        // A file that holds no certificate stops start-up, naming the setting.
        std::fs::write(&ca_file, "not a certificate").unwrap();
        let mut settings = common::app::test_settings(None, dir.path());
        settings.hook.url = Some(url);
        settings.hook.secret = Some(Secret::new(SECRET));
        settings.hook.ca_file = Some(ca_file);
        let error = provisiond::startup::Application::build(settings)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("hook.ca_file"), "{error}");
    })
    .await;
}
