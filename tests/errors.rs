//! Every error code of the API, each from a real bad request. None of them burns the
//! token, and none is a 500: after each group, the same token still gets a certificate.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::app::TEST_JWT_SECRET;
use common::pki::{openssl_csr, quick_csr, tamper_signature};
use common::{RedisServer, TestApp, error_code, jti_of};
use provisiond::config::{KeyList, OnboardingMode};
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, jti: &str, exp: u64) -> Value {
    json!({ "sub": sub, "jti": jti, "iat": now() - 10, "exp": exp,
            "iss": "provisiond", "aud": "provisiond" })
}

fn forge(claims: &Value, secret: &str, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

async fn post(
    app: &TestApp,
    path: &str,
    auth: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String) {
    let mut request = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    error_code(request.send().await.unwrap()).await
}

#[tokio::test]
async fn ids_with_dots_among_other_characters_still_onboard() {
    let app = TestApp::spawn(None).await;
    for id in [".a", "a.", "a..b", "._", "..:", "1.2.3"] {
        let response = app
            .client
            .post(app.url("/api/v1/onboarding"))
            .json(&json!({ "device_id": id }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{id}");
    }
}

#[tokio::test]
async fn bad_onboarding_requests_get_400_with_a_code() {
    let app = TestApp::spawn(None).await;
    let cases: Vec<(&str, String)> = vec![
        ("invalid_json", "{not json".into()),
        ("invalid_json", "[1, 2]".into()),
        ("invalid_json", "".into()),
        ("invalid_device_id", r#"{"device_id": ""}"#.into()),
        (
            "invalid_device_id",
            json!({ "device_id": "x".repeat(129) }).to_string(),
        ),
        ("invalid_device_id", r#"{"device_id": "has space"}"#.into()),
        ("invalid_device_id", r#"{"device_id": "{braces}"}"#.into()),
        ("invalid_device_id", r#"{"device_id": "a/b"}"#.into()),
        // Path segments that clients resolve away: the admin API could not reach them.
        ("invalid_device_id", r#"{"device_id": "."}"#.into()),
        ("invalid_device_id", r#"{"device_id": ".."}"#.into()),
        ("invalid_device_id", r#"{"device_id": "..."}"#.into()),
        ("invalid_device_id", r#"{"device_id": 42}"#.into()),
        ("invalid_device_id", r#"{"device_id": null}"#.into()),
        ("invalid_device_id", r#"{"name": "x"}"#.into()),
    ];
    for (code, body) in cases {
        assert_eq!(
            post(&app, "/api/v1/onboarding", None, body.clone()).await,
            (StatusCode::BAD_REQUEST, code.to_owned()),
            "{body}"
        );
    }
    // 64 characters is fine; 65 would make a common name RFC 5280 does not allow.
    assert_eq!(app.onboard(&"x".repeat(64)).await.status(), StatusCode::OK);
    let long = app.onboard(&"x".repeat(65)).await;
    let (status, code) = error_code(long).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_device_id")
    );
}

#[tokio::test]
async fn key_mode_refuses_onboarding_without_the_enrollment_key() {
    let app = TestApp::spawn_with(None, |s| {
        s.onboarding.mode = OnboardingMode::Key;
        s.onboarding.enrollment_keys =
            KeyList(vec![Secret::new("fleet-key-1-fleet-key-1-fleet-key-1-xx")]);
    })
    .await;
    let body = r#"{"device_id": "keyed-1"}"#;
    for auth in [
        None,
        Some("Bearer wrong-key"),
        Some("Basic fleet-key-1"),
        Some("Bearer "),
    ] {
        assert_eq!(
            post(&app, "/api/v1/onboarding", auth, body).await,
            (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()),
            "{auth:?}"
        );
    }
    let ok = app
        .client
        .post(app.url("/api/v1/onboarding"))
        .bearer_auth("fleet-key-1-fleet-key-1-fleet-key-1-xx")
        .json(&json!({ "device_id": "keyed-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // No key file was generated: the configured one is used.
    assert!(!app.certs.join("enrollment.key").exists());
}

#[tokio::test]
async fn a_generated_enrollment_key_is_kept_and_works() {
    let app = TestApp::spawn_with(None, |s| s.onboarding.mode = OnboardingMode::Key).await;
    let key = std::fs::read_to_string(app.certs.join("enrollment.key")).unwrap();
    let key = key.trim();
    assert!(key.len() >= 32);
    let response = app
        .client
        .post(app.url("/api/v1/onboarding"))
        .bearer_auth(key)
        .json(&json!({ "device_id": "gen-key-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Runs every bad sign-csr request against one live token, then uses the token.
async fn bad_sign_requests_leave_the_token_usable(app: &TestApp) {
    let device = "victim-1";
    let token = app.token_for(device).await;
    let jti = jti_of(&token);
    let good = openssl_csr("p256", device, &[]);
    let bearer = |t: &str| format!("Bearer {t}");
    let body = |csr: &str| json!({ "device_id": device, "csr": csr }).to_string();
    let path = "/api/v1/sign-csr";
    let expect = |status: u16, code: &str| (StatusCode::from_u16(status).unwrap(), code.to_owned());

    // 1. The token itself.
    let cases: Vec<(Option<String>, (StatusCode, String))> = vec![
        (None, expect(401, "token_invalid")),
        (Some("Bearer".into()), expect(401, "token_invalid")),
        (Some(format!("Basic {token}")), expect(401, "token_invalid")),
        (Some(bearer("not.a.jwt")), expect(401, "token_invalid")),
        (Some(bearer("garbage")), expect(401, "token_invalid")),
        (
            Some(bearer(&unsigned(&claims(device, &jti, now() + 300)))),
            expect(401, "token_invalid"),
        ),
        (
            Some(bearer(&forge(
                &claims(device, &jti, now() + 300),
                "some-other-secret-some-other-secret",
                jsonwebtoken::Algorithm::HS256,
            ))),
            expect(401, "token_invalid"),
        ),
        (
            Some(bearer(&forge(
                &claims(device, &jti, now() + 300),
                TEST_JWT_SECRET,
                jsonwebtoken::Algorithm::HS512,
            ))),
            expect(401, "token_invalid"),
        ),
        (
            Some(bearer(&forge(
                &claims(device, &jti, now() - 5),
                TEST_JWT_SECRET,
                jsonwebtoken::Algorithm::HS256,
            ))),
            expect(401, "token_expired"),
        ),
        (
            Some(bearer(&forge(
                &json!({ "sub": device, "jti": jti, "iat": now(), "exp": now() + 300, "iss": "someone-else", "aud": "provisiond" }),
                TEST_JWT_SECRET,
                jsonwebtoken::Algorithm::HS256,
            ))),
            expect(401, "token_invalid"),
        ),
        (
            Some(bearer(&forge(
                &json!({ "sub": device, "jti": jti, "iat": now(), "exp": now() + 300, "iss": "provisiond", "aud": "elsewhere" }),
                TEST_JWT_SECRET,
                jsonwebtoken::Algorithm::HS256,
            ))),
            expect(401, "token_invalid"),
        ),
    ];
    for (auth, expected) in cases {
        assert_eq!(
            post(app, path, auth.as_deref(), body(&good.csr_pem)).await,
            expected,
            "{auth:?}"
        );
    }

    // 2. The device, then the body.
    let auth = Some(bearer(&token));
    let auth = auth.as_deref();
    let wrong_device = json!({ "device_id": "someone-else", "csr": good.csr_pem }).to_string();
    assert_eq!(
        post(app, path, auth, wrong_device).await,
        expect(403, "device_mismatch")
    );
    assert_eq!(
        post(app, path, auth, "{nope").await,
        expect(400, "invalid_json")
    );
    assert_eq!(
        post(app, path, auth, json!({ "csr": good.csr_pem }).to_string()).await,
        expect(400, "invalid_device_id")
    );

    // 3. The CSR.
    let cert_pem =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZ\n-----END CERTIFICATE-----\n";
    let oversized = format!("{}{}", good.csr_pem, " ".repeat(17 * 1024));
    for csr in [
        "junk".to_owned(),
        "-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----\n"
            .to_owned(),
        cert_pem.to_owned(),
        oversized,
        format!("{}trailing", good.csr_pem),
    ] {
        assert_eq!(
            post(app, path, auth, body(&csr)).await,
            expect(400, "invalid_csr"),
            "{csr:.60}"
        );
    }
    for bad in [
        json!({ "device_id": device }),
        json!({ "device_id": device, "csr": 7 }),
    ] {
        assert_eq!(
            post(app, path, auth, bad.to_string()).await,
            expect(400, "invalid_csr")
        );
    }
    assert_eq!(
        post(app, path, auth, body(&tamper_signature(&good.csr_pem))).await,
        expect(400, "csr_signature_invalid")
    );

    // 4. The policy.
    let policy_cases = [
        openssl_csr("p256", "not-the-device", &[]).csr_pem,
        openssl_csr(
            "p256",
            device,
            &["-addext", "basicConstraints=critical,CA:TRUE"],
        )
        .csr_pem,
        openssl_csr("rsa1024", device, &[]).csr_pem,
        openssl_csr("secp256k1", device, &[]).csr_pem,
    ];
    for csr in policy_cases {
        assert_eq!(
            post(app, path, auth, body(&csr)).await,
            expect(422, "csr_policy_violation")
        );
    }

    // 5. Too large a body, on both endpoints.
    let huge = json!({ "device_id": device, "csr": "A".repeat(200 * 1024) }).to_string();
    assert_eq!(
        post(app, path, auth, huge.clone()).await,
        expect(413, "payload_too_large")
    );
    assert_eq!(
        post(app, "/api/v1/onboarding", None, huge).await,
        expect(413, "payload_too_large")
    );

    // A token not valid yet (`nbf`, or `iat`, in the future): the right secret and the
    // live jti, so only the time claims are wrong.
    let mut early = claims(device, &jti, now() + 300);
    early["nbf"] = json!(now() + 3600);
    let mut future = claims(device, &jti, now() + 3600);
    future["iat"] = json!(now() + 1800);
    for forged in [early, future] {
        let token = forge(&forged, TEST_JWT_SECRET, jsonwebtoken::Algorithm::HS256);
        let response = app.sign_csr(&token, device, &good.csr_pem).await;
        assert_eq!(error_code(response).await, expect(401, "token_invalid"));
    }

    // Anything but JSON is 415, even when the bytes happen to be JSON.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app
            .client
            .post(app.url(path))
            .bearer_auth(&token)
            .body(body(&good.csr_pem));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            error_code(response).await,
            expect(415, "unsupported_media_type"),
            "{content_type:?}"
        );
    }
    let onboarding_as_text = app
        .client
        .post(app.url("/api/v1/onboarding"))
        .header("content-type", "text/plain")
        .body(json!({ "device_id": device }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(onboarding_as_text).await,
        expect(415, "unsupported_media_type")
    );

    // After all that, the token is still good: nothing above consumed it.
    let response = app.sign_csr(&token, device, &good.csr_pem).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn bad_sign_csr_requests_never_burn_the_token_in_redis() {
    let redis = RedisServer::start();
    bad_sign_requests_leave_the_token_usable(&TestApp::spawn(Some(&redis)).await).await;
}

#[tokio::test]
async fn bad_sign_csr_requests_never_burn_the_token_in_memory() {
    bad_sign_requests_leave_the_token_usable(&TestApp::spawn(None).await).await;
}

#[tokio::test]
async fn a_csr_without_a_common_name_is_accepted_and_named_after_the_device() {
    let app = TestApp::spawn(None).await;
    let token = app.token_for("no-cn-1").await;
    let csr = openssl_csr("p256", "", &[]);
    let response = app.sign_csr(&token, "no-cn-1", &csr.csr_pem).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let subject = common::pki::openssl_x509(body["certificate"].as_str().unwrap(), &["-subject"]);
    assert_eq!(subject.trim(), "subject=CN = no-cn-1");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn(None).await;
    let missing = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(
        error_code(missing).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let wrong = app
        .client
        .get(app.url("/api/v1/onboarding"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(wrong).await,
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
    let wrong = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_eq!(error_code(wrong).await.1, "method_not_allowed");
}

#[tokio::test]
async fn refusals_say_how_to_authenticate() {
    let app = TestApp::spawn(None).await;
    let csr = quick_csr("hdr-1");
    let response = app.sign_csr("bogus", "hdr-1", &csr).await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
}
