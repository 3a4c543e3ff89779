//! The front door: derived onboarding, the device-id policy, rate limits, the admin API,
//! TLS, timeouts, metrics and the OpenAPI document, each from real requests.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

use common::bin::{run, text};
use common::pki::quick_csr;
use common::{RedisServer, TestApp, error_code};
use provisiond::auth::derived;
use provisiond::clock::unix_now;
use provisiond::config::{KeyList, List, OnboardingMode};
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

const GROUP_SECRET: &str = "factory-group-secret-factory-group-secret";

#[tokio::test]
async fn derived_mode_accepts_a_device_signing_with_its_own_key_and_nothing_else() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), |s| {
        s.onboarding.mode = OnboardingMode::Derived;
        s.onboarding.group_secret = Some(Secret::new(GROUP_SECRET));
    })
    .await;
    let key = derived::device_key(GROUP_SECRET.as_bytes(), "dev-d1");
    let now = unix_now();

    let ok = app
        .onboard_with("dev-d1", &derived::authorization(&key, "dev-d1", now))
        .await;
    assert_eq!(ok.status(), StatusCode::OK);

    // The same signature again is a replay.
    let replay = app
        .onboard_with("dev-d1", &derived::authorization(&key, "dev-d1", now))
        .await;
    assert_eq!(
        error_code(replay).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    // A new timestamp is fine.
    let again = app
        .onboard_with("dev-d1", &derived::authorization(&key, "dev-d1", now + 1))
        .await;
    assert_eq!(again.status(), StatusCode::OK);

    let other_group = derived::device_key(b"some-other-group-secret-of-enough-length", "dev-d1");
    let another_device = derived::device_key(GROUP_SECRET.as_bytes(), "dev-d2");
    for (device, header) in [
        (
            "dev-d1",
            derived::authorization(&other_group, "dev-d1", now + 2),
        ),
        (
            "dev-d1",
            derived::authorization(&another_device, "dev-d1", now + 3),
        ),
        // Well outside the 600 s skew, so a second ticking during the test cannot bring
        // them back in.
        ("dev-d1", derived::authorization(&key, "dev-d1", now - 630)),
        ("dev-d1", derived::authorization(&key, "dev-d1", now + 630)),
        ("dev-d1", "Device ts=1,sig=!!".to_owned()),
        ("dev-d1", format!("Bearer {GROUP_SECRET}")),
    ] {
        let refused = app.onboard_with(device, &header).await;
        assert_eq!(
            error_code(refused).await,
            (StatusCode::UNAUTHORIZED, "unauthorized".into()),
            "{header}"
        );
    }
    let missing = app.onboard("dev-d1").await;
    assert_eq!(error_code(missing).await.1, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_key_and_enroll_with_a_device_key_work_together() {
    let app = TestApp::spawn_with(None, |s| {
        s.onboarding.mode = OnboardingMode::Derived;
        s.onboarding.group_secret = Some(Secret::new(GROUP_SECRET));
    })
    .await;
    let scratch = tempfile::tempdir().unwrap();
    let derive = run(
        &["derive-key", "--device-id", "factory-9"],
        &[("ONBOARDING_GROUP_SECRET", GROUP_SECRET)],
    )
    .await;
    assert!(derive.status.success(), "{}", text(&derive));
    let key = String::from_utf8(derive.stdout).unwrap().trim().to_owned();
    assert_eq!(
        derived::decode_key(&key),
        Some(derived::device_key(GROUP_SECRET.as_bytes(), "factory-9"))
    );

    let out = scratch.path().join("out");
    let out = out.to_str().unwrap();
    let enroll = |key: String, extra: &'static [&'static str]| {
        let mut args = vec![
            "enroll",
            "--server",
            &app.address,
            "--device-id",
            "factory-9",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        async move { run(&args, &[("PROVISIOND_DEVICE_KEY", &key)]).await }
    };
    let enrolled = enroll(key, &[]).await;
    assert!(enrolled.status.success(), "{}", text(&enrolled));
    assert!(scratch.path().join("out/factory-9.crt").exists());

    // The key of another device does not enroll this one.
    let wrong = derived::encode_key(&derived::device_key(GROUP_SECRET.as_bytes(), "factory-10"));
    let refused = enroll(wrong, &["--force"]).await;
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
}

#[tokio::test]
async fn devices_outside_the_policy_are_refused_with_device_not_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let allowlist = dir.path().join("allow.txt");
    std::fs::write(
        &allowlist,
        "# factory batch 7\nsensor-001\nsensor-002\nother-1\n",
    )
    .unwrap();
    let app = TestApp::spawn_with(None, |s| {
        s.onboarding.device_id_pattern = Some("sensor-[0-9]{3}".into());
        s.onboarding.device_allowlist_file = Some(allowlist.clone());
    })
    .await;
    assert_eq!(app.onboard("sensor-001").await.status(), StatusCode::OK);
    for outsider in ["sensor-003", "other-1", "xsensor-001", "sensor-0011"] {
        let refused = app.onboard(outsider).await;
        assert_eq!(
            error_code(refused).await,
            (StatusCode::FORBIDDEN, "device_not_allowed".into()),
            "{outsider}"
        );
    }
}

#[tokio::test]
async fn a_burst_past_the_device_limit_gets_429_with_retry_after() {
    let app = TestApp::spawn_with(None, |s| s.rate_limit.per_device_per_minute = 3).await;
    for _ in 0..3 {
        assert_eq!(app.onboard("chatty-1").await.status(), StatusCode::OK);
    }
    let limited = app.onboard("chatty-1").await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("per-device limit"), "{message}");
    // Other devices are not held back.
    assert_eq!(app.onboard("quiet-1").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_address_limit_believes_forwarded_for_only_from_trusted_proxies() {
    let app = TestApp::spawn_with(None, |s| {
        s.rate_limit.per_ip_per_minute = 2;
        s.server.trusted_proxies = List(vec!["127.0.0.1".into()]);
    })
    .await;
    let from = |ip: &'static str, device: &'static str| {
        app.client
            .post(app.url("/api/v1/onboarding"))
            .header("x-forwarded-for", ip)
            .json(&json!({ "device_id": device }))
            .send()
    };
    assert_eq!(
        from("198.51.100.1", "p-1").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        from("198.51.100.1", "p-2").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        from("198.51.100.1", "p-3").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Behind the same proxy, another client has its own allowance.
    assert_eq!(
        from("198.51.100.2", "p-4").await.unwrap().status(),
        StatusCode::OK
    );

    // Without the proxy trusted, the header is ignored: the peer is the client.
    let untrusting = TestApp::spawn_with(None, |s| s.rate_limit.per_ip_per_minute = 2).await;
    for (ip, expected) in [("1.1.1.1", 200), ("2.2.2.2", 200), ("3.3.3.3", 429)] {
        let response = untrusting
            .client
            .post(untrusting.url("/api/v1/onboarding"))
            .header("x-forwarded-for", ip)
            .json(&json!({ "device_id": format!("u-{ip}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{ip}");
    }
}

/// An admin call: its status and JSON body.
async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn an_admin_can_see_and_revoke_a_pending_token() {
    use reqwest::Method;
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), |s| {
        s.admin.keys = KeyList(vec![Secret::new("admin-key-1-admin-key-1-admin-key-1-xx")]);
    })
    .await;
    let token = app.token_for("revoke-me").await;
    let (status_path, token_path) = (
        "/api/v1/devices/revoke-me",
        "/api/v1/devices/revoke-me/token",
    );
    let key = Some("admin-key-1-admin-key-1-admin-key-1-xx");

    let (code, status) = admin(&app, Method::GET, status_path, key).await;
    assert_eq!(
        (code, &status["pending"]),
        (StatusCode::OK, &json!(true)),
        "{status}"
    );
    let left = status["expires_in"].as_u64().unwrap();
    assert!((295..=300).contains(&left), "{left}");

    for wrong in [None, Some("wrong")] {
        let (code, body) = admin(&app, Method::DELETE, token_path, wrong).await;
        assert_eq!(
            (code, &body["error"]["code"]),
            (StatusCode::UNAUTHORIZED, &json!("unauthorized"))
        );
    }
    let (code, revoked) = admin(&app, Method::DELETE, token_path, key).await;
    assert_eq!((code, &revoked["revoked"]), (StatusCode::OK, &json!(true)));

    let csr = quick_csr("revoke-me");
    let dead = app.sign_csr(&token, "revoke-me", &csr).await;
    assert_eq!(
        error_code(dead).await,
        (StatusCode::UNAUTHORIZED, "token_used".into())
    );
    assert_eq!(
        admin(&app, Method::GET, status_path, key).await.1["pending"],
        false
    );
    assert_eq!(
        admin(&app, Method::DELETE, token_path, key).await.1["revoked"],
        false
    );
    let (code, bad) = admin(&app, Method::GET, "/api/v1/devices/bad%20id", key).await;
    assert_eq!(
        (code, &bad["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_device_id"))
    );
}

#[tokio::test]
async fn without_admin_keys_the_admin_api_is_off() {
    let app = TestApp::spawn(None).await;
    let response = app
        .client
        .get(app.url("/api/v1/devices/x"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await.1, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_with_a_server_certificate_from_the_local_ca() {
    let certs = tempfile::tempdir().unwrap();
    let certs_dir = certs.path().to_str().unwrap();
    let made = run(
        &[
            "ca",
            "server-cert",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ],
        &[("CERTS_DIR", certs_dir)],
    )
    .await;
    assert!(made.status.success(), "{}", text(&made));
    let mut settings = common::app::test_settings(None, certs.path());
    settings.server.tls.cert = Some(certs.path().join("server.crt"));
    settings.server.tls.key = Some(certs.path().join("server.key"));
    let app = TestApp::spawn_settings(settings).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();

    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let health = client
            .get(format!("https://{host}:{port}/livez"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK, "{host}");
    }
    let onboarded = client
        .post(format!("https://localhost:{port}/api/v1/onboarding"))
        .json(&json!({ "device_id": "tls-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(onboarded.status(), StatusCode::OK);

    // A client that does not trust the CA is turned away by its own TLS check.
    assert!(
        reqwest::get(format!("https://localhost:{port}/livez"))
            .await
            .is_err()
    );
    // enroll says how to trust it, then works with --ca-file.
    let out = tempfile::tempdir().unwrap();
    let server = format!("https://localhost:{port}");
    let ca_file = certs.path().join("ca.crt");
    let enroll = |extra: Vec<&str>| {
        let mut args = vec![
            "enroll",
            "--server",
            &server,
            "--device-id",
            "tls-2",
            "--out",
            out.path().to_str().unwrap(),
        ];
        args.extend(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &[]).await
        }
    };
    let untrusted = enroll(vec![]).await;
    assert_eq!(untrusted.status.code(), Some(4), "{}", text(&untrusted));
    assert!(
        text(&untrusted).contains("--ca-file"),
        "{}",
        text(&untrusted)
    );
    let trusted = enroll(vec!["--ca-file", ca_file.to_str().unwrap()]).await;
    assert!(trusted.status.success(), "{}", text(&trusted));
    // Plain HTTP to the TLS port fails cleanly, and the server goes on serving.
    let mut plain = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
    let health = client
        .get(format!("https://localhost:{port}/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let app = TestApp::spawn_with(None, |s| s.server.body_timeout_ms = 300).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let mut slow = std::net::TcpStream::connect(address).unwrap();
        slow.write_all(
            b"POST /api/v1/onboarding HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"device_id\":",
        )
        .unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = vec![0u8; 4096];
        let n = slow.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"))
}

#[tokio::test]
async fn metrics_move_with_the_traffic() {
    let app = TestApp::spawn(None).await;
    let scrape = || app.metrics();
    let token = app.token_for("m-1").await;
    app.token_for("m-2").await;
    let csr = quick_csr("m-1");
    assert_eq!(
        app.sign_csr(&token, "m-1", &csr).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.sign_csr(&token, "m-1", &csr).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.sign_csr("junk", "m-1", &csr).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let text = scrape().await;
    assert_eq!(metric(&text, "provisiond_tokens_issued_total "), 2.0);
    assert_eq!(metric(&text, "provisiond_tokens_consumed_total "), 1.0);
    assert_eq!(
        metric(
            &text,
            "provisiond_tokens_rejected_total{reason=\"token_used\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "provisiond_tokens_rejected_total{reason=\"token_invalid\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "provisiond_certificates_issued_total{key_type=\"ecdsa-p256\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "provisiond_http_request_duration_seconds_count{route=\"/api/v1/onboarding\",method=\"POST\",status=\"200\"}"
        ),
        2.0
    );
    assert!(
        metric(
            &text,
            "provisiond_store_operation_duration_seconds_count{store=\"memory\",operation=\"consume\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(&text, "provisiond_storage_mode{mode=\"memory\"}"),
        1.0
    );
    assert_eq!(metric(&text, "provisiond_redis_connected "), 0.0);
    assert_eq!(metric(&text, "provisiond_redis_enabled "), 0.0);
    let version = env!("CARGO_PKG_VERSION");
    let build = format!("provisiond_build_info{{version=\"{version}\"}}");
    assert_eq!(metric(&text, &build), 1.0);
    // The CA made for the test lives ten years: its notAfter is that far ahead.
    let ca_left = metric(&text, "provisiond_ca_not_after_timestamp_seconds ")
        - provisiond::clock::unix_now() as f64;
    assert!((9.0 * 365.0 * 86400.0..11.0 * 365.0 * 86400.0).contains(&ca_left));
    // The standard process metrics, from /proc: this process (the test runs the server
    // in-process) has used CPU, holds memory and files, and started before now.
    assert!(metric(&text, "process_cpu_seconds_total ") > 0.0);
    assert!(metric(&text, "process_resident_memory_bytes ") > 1e6);
    assert!(metric(&text, "process_open_fds ") >= 3.0);
    assert!(metric(&text, "process_max_fds ") >= metric(&text, "process_open_fds "));
    let started = metric(&text, "process_start_time_seconds ");
    assert!(started <= provisiond::clock::unix_now() as f64 + 1.0 && started > 1.7e9);
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    // With an admin key, so that the console (404 without one) is served too.
    let app = TestApp::spawn_with(None, |s| {
        s.admin.keys = KeyList(vec![Secret::new("openapi-admin-key-openapi-admin-key!")]);
    })
    .await;
    let doc = app.get_json("/api/v1/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|k| matches!(k.as_str(), "get" | "post" | "put" | "delete" | "patch"))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = provisiond::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
    // And each is really there: a request to it is not a 404 or 405.
    for (method, path) in &served {
        let url = app.url(&path.replace("{device_id}", "probe-1"));
        let response = app
            .client
            .request(method.to_uppercase().parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        assert!(
            ![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&response.status()),
            "{method} {path}: {}",
            response.status()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_limits_hold_across_instances_and_fall_back_to_local_ones() {
    let mut redis = RedisServer::start();
    let limits = |shared: bool| {
        move |s: &mut provisiond::config::Settings| {
            s.rate_limit.per_device_per_minute = 3;
            s.rate_limit.shared = shared;
        }
    };
    let a = TestApp::spawn_with(Some(&redis), limits(true)).await;
    let b = TestApp::spawn_with(Some(&redis), limits(true)).await;
    // Alternating between the instances: three in all, not three each.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &a } else { &b };
        statuses.push(app.onboard("shared-1").await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let ttl: i64 = redis.cmd(&["PTTL", "mqtt-lite:rl:{shared-1}"]);
    assert!((1..=60_000).contains(&ttl), "{ttl}");

    // Not shared: each instance counts its own, so the same walk gets twice as far.
    let c = TestApp::spawn_with(Some(&redis), limits(false)).await;
    let d = TestApp::spawn_with(Some(&redis), limits(false)).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let app = if i % 2 == 0 { &c } else { &d };
        statuses.push(app.onboard("local-1").await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429]);

    // Redis away: the instance's own limiter takes over.
    redis.kill();
    a.wait_for_health(Duration::from_secs(10), |h| h["status"] == "degraded")
        .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(a.onboard("shared-2").await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
}
