//! What a security review found at the front door, each tried as an attacker would: over
//! HTTP against the real server, or by starting it with the weak setting.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::app::test_settings;
use common::{TestApp, error_code};
use provisiond::config::{KeyList, List};
use provisiond::secret::Secret;
use provisiond::startup::Application;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let app = TestApp::spawn(None).await;
    let before = app.metrics().await;
    // Documented series exist before anything happened.
    for series in [
        r#"provisiond_rate_limited_total{scope="ip"} 0"#,
        r#"provisiond_rate_limited_total{scope="device"} 0"#,
        r#"provisiond_rate_limited_total{scope="admin"} 0"#,
        r#"provisiond_tokens_rejected_total{reason="token_used"} 0"#,
        r#"provisiond_certificates_issued_total{key_type="ed25519"} 0"#,
        "provisiond_redis_lost_writes_total 0",
    ] {
        assert!(before.contains(series), "{series} missing:\n{before}");
    }
    for i in 0..5000 {
        let method = Method::from_bytes(format!("M{i}X").as_bytes()).unwrap();
        let path = format!("/made/up/{i}");
        let response = app
            .client
            .request(method, app.url(&path))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error());
    }
    let after = app.metrics().await;
    assert!(
        after.len() < before.len() + 8 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    for line in after.lines().filter(|l| l.contains("method=\"")) {
        let method = line.split("method=\"").nth(1).unwrap();
        let method = &method[..method.find('"').unwrap()];
        assert!(
            ["GET", "HEAD", "POST", "DELETE", "OTHER"].contains(&method),
            "{line}"
        );
    }
    assert!(
        !after.contains("/made/up/"),
        "a client-chosen path became a label"
    );
}

#[tokio::test]
async fn forwarded_for_with_ports_or_garbage_cannot_dodge_the_address_limit() {
    let app = TestApp::spawn_with(None, |s| {
        s.rate_limit.per_ip_per_minute = 2;
        s.server.trusted_proxies = List(vec!["127.0.0.1".into()]);
    })
    .await;
    let from = async |xff: String, device: String| {
        app.client
            .post(app.url("/api/v1/onboarding"))
            .header("x-forwarded-for", xff)
            .json(&json!({ "device_id": device }))
            .send()
            .await
            .unwrap()
    };
    // The client makes up a new leftmost address each time; the proxy appends the real
    // one with a port. The real one is what counts.
    for (i, real) in ["203.0.113.7:51000", "[2001:db8::7]:443"]
        .iter()
        .enumerate()
    {
        for n in 0..2 {
            let ok = from(format!("6.6.{i}.{n}, {real}"), format!("xff-{i}-{n}")).await;
            assert_eq!(ok.status(), StatusCode::OK, "{real}");
        }
        let limited = from(format!("6.6.{i}.9, {real}"), format!("xff-{i}-9")).await;
        let (status, code) = error_code(limited).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
    }
    // An unreadable hop: the proxy itself stands for the client, never the made-up part.
    for n in 0..3 {
        let response = from(format!("7.7.7.{n}, unknown"), format!("xff-u-{n}")).await;
        if n < 2 {
            assert_eq!(response.status(), StatusCode::OK);
        } else {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("per-address"), "{message}");
        }
    }
}

async fn build_error(
    adjust: impl FnOnce(&mut provisiond::config::Settings, &std::path::Path),
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let mut settings = test_settings(None, &certs);
    adjust(&mut settings, &certs);
    match Application::build(settings).await {
        Ok(_) => panic!("the server started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn short_admin_and_enrollment_keys_stop_start_up() {
    let err = build_error(|s, _| s.admin.keys = KeyList(vec![Secret::new("a")])).await;
    assert!(
        err.contains("admin.keys") && err.contains("32 bytes"),
        "{err}"
    );
    let err = build_error(|s, _| {
        s.onboarding.mode = provisiond::config::OnboardingMode::Key;
        s.onboarding.enrollment_keys = KeyList(vec![Secret::new("short-fleet-key")]);
    })
    .await;
    assert!(err.contains("onboarding.enrollment_keys"), "{err}");
}

#[tokio::test]
async fn secret_files_others_can_read_and_a_shared_certs_dir_stop_start_up() {
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // Made by a first, clean start.
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let mut settings = test_settings(None, &certs);
    settings.tokens.jwt_secret = None;
    settings.onboarding.mode = provisiond::config::OnboardingMode::Key;
    drop(Application::build(settings.clone()).await.unwrap());

    for file in ["jwt.secret", "enrollment.key", "ca.key"] {
        let path = certs.join(file);
        chmod(&path, 0o666);
        let err = match Application::build(settings.clone()).await {
            Ok(_) => panic!("started with {file} at 0666"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(&path.display().to_string()) && err.contains("chmod 600"),
            "{err}"
        );
        chmod(&path, 0o600);
    }
    chmod(&certs, 0o777);
    let err = match Application::build(settings.clone()).await {
        Ok(_) => panic!("started with a world-writable certs directory"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("chmod go-w"), "{err}");
    chmod(&certs, 0o755);
    assert!(Application::build(settings).await.is_ok());

    // A secret file named in the configuration.
    let secret_file = dir.path().join("admin.keys");
    std::fs::write(
        &secret_file,
        "admin-key-from-a-file-admin-key-from-a-file\n",
    )
    .unwrap();
    chmod(&secret_file, 0o644);
    let err = build_error(|s, _| s.admin.keys_file = Some(secret_file.clone())).await;
    assert!(
        err.contains("admin.keys") && err.contains("chmod 600"),
        "{err}"
    );
}

#[tokio::test]
async fn failed_admin_authentication_is_rate_limited_per_address() {
    const KEY: &str = "admin-key-admin-key-admin-key-admin-key";
    let app = TestApp::spawn_with(None, |s| {
        s.admin.keys = KeyList(vec![Secret::new(KEY)]);
        s.rate_limit.admin_failures_per_minute = 3;
    })
    .await;
    let ask = |key: &'static str| {
        app.client
            .get(app.url("/api/v1/devices/some-device"))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(ask(KEY).await.unwrap().status(), StatusCode::OK);
    for _ in 0..3 {
        let wrong = ask("not-the-admin-key-not-the-admin-key").await.unwrap();
        let body: serde_json::Value = wrong.json().await.unwrap();
        assert_eq!(body["error"]["message"], "admin key not accepted");
    }
    let limited = ask("not-the-admin-key-not-the-admin-key").await.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    let (status, code) = error_code(limited).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    // While the address is held back, no key is even compared: the right one waits too.
    let held = ask(KEY).await.unwrap();
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        app.metrics()
            .await
            .contains(r#"provisiond_rate_limited_total{scope="admin"} 2"#)
    );
}

/// Sends `request` on `stream` and reads one response (head and body by Content-Length).
fn exchange(stream: &mut std::net::TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if response.len() >= head_end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_leaves_the_connection_open_for_the_next() {
    let app = TestApp::spawn(None).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = r#"{"device_id":"keep-1","csr":"x"}"#;
        let refused = format!(
            "POST /api/v1/sign-csr HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let first = exchange(&mut stream, &refused);
        assert!(first.starts_with("HTTP/1.1 401"), "{first}");
        assert!(
            !first.to_ascii_lowercase().contains("connection: close"),
            "{first}"
        );
        let body = r#"{"device_id":"keep-1"}"#;
        let onboard = format!(
            "POST /api/v1/onboarding HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let second = exchange(&mut stream, &onboard);
        assert!(second.starts_with("HTTP/1.1 200"), "{second}");
        assert!(
            second
                .to_ascii_lowercase()
                .contains("cache-control: no-store"),
            "{second}"
        );
    })
    .await
    .unwrap();
}
