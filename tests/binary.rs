//! The `provisiond` binary itself: its logs, its configuration errors, `ca init`.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::bin::{provisiond, start, stop, stop_waiting};
use common::pki::openssl_csr;
use common::{RedisServer, jti_of};
use serde_json::{Value, json};

fn run(command: &mut Command) -> Output {
    command.output().expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_run_logs_no_token_key_or_secret() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let (child, base) = start(
        dir.path(),
        &[
            ("RUST_LOG", "trace"),
            ("REDIS_ENABLED", "true"),
            ("REDIS_URL", &url),
            ("ONBOARDING_MODE", "key"),
        ],
    )
    .await;
    let client = reqwest::Client::new();

    let certs = dir.path().join("certs");
    let enrollment_key = std::fs::read_to_string(certs.join("enrollment.key")).unwrap();
    let enrollment_key = enrollment_key.trim();
    let jwt_secret = std::fs::read_to_string(certs.join("jwt.secret")).unwrap();
    let ca_key = std::fs::read_to_string(certs.join("ca.key")).unwrap();

    let mut tokens = Vec::new();
    for device in ["log-1", "log-2", "log-3"] {
        let body: Value = common::json_of(
            client
                .post(format!("{base}/api/v1/onboarding"))
                .bearer_auth(enrollment_key)
                .json(&json!({ "device_id": device })),
        )
        .await;
        tokens.push(body["provisioning_token"].as_str().unwrap().to_owned());
    }
    let csr = openssl_csr("p256", "log-1", &[]);
    let sign = |token: &str, device: &str| {
        client
            .post(format!("{base}/api/v1/sign-csr"))
            .bearer_auth(token.to_owned())
            .json(&json!({ "device_id": device, "csr": csr.csr_pem }))
            .send()
    };
    assert_eq!(sign(&tokens[0], "log-1").await.unwrap().status(), 200);
    assert_eq!(sign(&tokens[0], "log-1").await.unwrap().status(), 401);
    assert_eq!(sign(&tokens[1], "log-1").await.unwrap().status(), 403);
    assert_eq!(sign("not-a-token", "log-2").await.unwrap().status(), 401);
    let wrong_key = client
        .post(format!("{base}/api/v1/onboarding"))
        .bearer_auth("a-wrong-enrollment-key-of-decent-length")
        .json(&json!({ "device_id": "log-4" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), 401);

    let output = stop(child);
    assert!(output.status.success(), "SIGTERM is a clean exit");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(log.contains("request done"), "requests are logged:\n{log}");
    assert!(log.contains("log-1") && log.contains("token_used"));
    // A refused request's line names what the request got to: the device, the token's
    // short jti; a request that issued, the certificate's serial and key type.
    let short = &jti_of(&tokens[0])[..8];
    let refused = log
        .lines()
        .find(|l| l.contains("request refused") && l.contains(r#"code="token_used""#))
        .unwrap_or_else(|| panic!("no token_used refusal logged:\n{log}"));
    for fact in [
        r#"path="/api/v1/sign-csr""#.to_owned(),
        r#"device_id="log-1""#.to_owned(),
        format!(r#"jti="{short}""#),
    ] {
        assert!(refused.contains(&fact), "{fact} missing: {refused}");
    }
    let issued = log
        .lines()
        .find(|l| {
            l.contains("request done")
                && l.contains(r#"path="/api/v1/sign-csr""#)
                && l.contains(&format!(r#"jti="{short}""#))
        })
        .unwrap_or_else(|| panic!("no line for the issuing request:\n{log}"));
    assert!(
        issued.contains("serial=") && issued.contains(r#"key_type="ecdsa-p256""#),
        "{issued}"
    );
    for token in &tokens {
        assert!(!log.contains(token.as_str()), "a full token is in the log");
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !log.contains(signature),
            "a token's signature is in the log"
        );
        assert!(!log.contains(&jti_of(token)), "a full jti is in the log");
    }
    assert!(
        !log.contains(enrollment_key),
        "the enrollment key is in the log"
    );
    assert!(
        !log.contains("a-wrong-enrollment-key"),
        "a presented key is in the log"
    );
    assert!(
        !log.contains(jwt_secret.trim()),
        "the JWT secret is in the log"
    );
    for line in ca_key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "the CA key is in the log");
    }
    assert!(
        log.contains("enrollment.key"),
        "where the key is, is said once"
    );
    // Start-up says what an operator must know: no console without an admin key, and a
    // Redis (here with its default snapshots, no append-only file) that loses writes.
    assert!(
        log.contains("admin API and console off: no admin key"),
        "{log}"
    );
    assert!(
        log.contains("redis does not keep every write across a restart"),
        "{log}"
    );
}

#[test]
fn a_configuration_error_stops_start_up_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("PORT", "not-a-port"),
        ("REDIS_FALLBACK", "sometimes"),
        ("PROVISIONING_TOKEN_TTL", "0"),
        ("JWT_SECRET", "short"),
        ("REDIS_URL", "http://example"),
    ] {
        let output = run(provisiond(dir.path()).env(var, value));
        assert!(!output.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains(var), "{var}: {stderr}");
        assert!(last.starts_with("provisiond: "), "{stderr}");
    }

    std::fs::write(dir.path().join("config.toml"), "[server]\nprot = 3002\n").unwrap();
    let output = run(&mut provisiond(dir.path()));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("prot"), "{stderr}");

    let output = run(provisiond(dir.path()).args(["--config", "missing.toml"]));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
}

/// A port already taken stops the start before anything else: no CA is generated into
/// the certs directory, no Redis is reached, and the line says which port.
#[test]
fn a_port_in_use_stops_start_up_before_a_ca_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = run(provisiond(dir.path()).envs([
        ("HOST", "127.0.0.1"),
        ("PORT", port.as_str()),
        ("REDIS_ENABLED", "false"),
    ]));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        !dir.path().join("certs").join("ca.key").exists(),
        "a CA was generated before the port was found taken"
    );
}

#[test]
fn ca_init_writes_a_ca_and_refuses_to_overwrite_it_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("pki");
    let init = |force: bool| {
        let mut command = provisiond(dir.path());
        command.env("CERTS_DIR", &certs).args(["ca", "init"]);
        if force {
            command.arg("--force");
        }
        run(&mut command)
    };
    assert!(init(false).status.success());
    let first = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    let refused = init(false);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(certs.join("ca.crt")).unwrap(),
        first
    );
    assert!(init(true).status.success());
    assert_ne!(
        std::fs::read_to_string(certs.join("ca.crt")).unwrap(),
        first
    );
    let text = common::pki::openssl_x509(
        &std::fs::read_to_string(certs.join("ca.crt")).unwrap(),
        &["-text"],
    );
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_then_exits_cleanly() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start(dir.path(), &[("ONBOARDING_MODE", "open")]).await;
    let address = base.trim_start_matches("http://").to_owned();

    // A request whose body is still arriving when the signal comes.
    let body = br#"{"device_id":"late-1"}"#;
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    write!(
        slow,
        "POST /api/v1/onboarding HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    slow.write_all(&body[..5]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // No new connections are taken while it drains.
    assert!(
        std::net::TcpStream::connect(&address).is_err(),
        "still accepting after SIGTERM"
    );

    slow.write_all(&body[5..]).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = slow.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("provisioning_token"));
    drop(slow);

    let output = stop_waiting(child);
    assert!(
        output.status.success(),
        "exit 0 after SIGTERM: {:?}",
        output.status
    );
}

/// Waits for an already signalled process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_an_audit_event_for_each_token_and_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start(
        dir.path(),
        &[
            ("ONBOARDING_MODE", "key"),
            (
                "ENROLLMENT_KEYS",
                "audit-enrollment-key-audit-enrollment-key",
            ),
            ("ADMIN_KEYS", "audit-admin-key-audit-admin-key-audit-admin"),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let onboard = |device: &'static str| {
        client
            .post(format!("{base}/api/v1/onboarding"))
            .bearer_auth("audit-enrollment-key-audit-enrollment-key")
            .json(&json!({ "device_id": device }))
            .send()
    };
    let token = onboard("audit-1")
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["provisioning_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let csr = openssl_csr("p256", "audit-1", &[]);
    let signed: Value = common::json_of(
        client
            .post(format!("{base}/api/v1/sign-csr"))
            .bearer_auth(&token)
            .json(&json!({ "device_id": "audit-1", "csr": csr.csr_pem })),
    )
    .await;
    let replay = client
        .post(format!("{base}/api/v1/sign-csr"))
        .bearer_auth(&token)
        .json(&json!({ "device_id": "audit-1", "csr": csr.csr_pem }))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
    onboard("audit-2").await.unwrap();
    let revoked = client
        .delete(format!("{base}/api/v1/devices/audit-2/token"))
        .bearer_auth("audit-admin-key-audit-admin-key-audit-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);

    let output = stop(child);
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "console at /console/ (admin API on)"),
        "start-up says the console is on: {log}"
    );
    let audit: Vec<&Value> = lines.iter().filter(|l| l["target"] == "audit").collect();
    let event = |name: &str| {
        audit
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event in {audit:?}"))
    };
    // One line per token and one per certificate at the default level: the consumption
    // is the certificate's line, which names the token's jti.
    for name in ["token_issued", "certificate_issued"] {
        let e = event(name);
        assert_eq!(e["device_id"], "audit-1");
        assert_eq!(e["client_ip"], "127.0.0.1");
        assert_eq!(e["jti"].as_str().unwrap().len(), 8);
    }
    assert_eq!(
        event("token_issued")["jti"],
        event("certificate_issued")["jti"]
    );
    assert!(audit.iter().all(|e| e["event"] != "token_consumed"));
    assert!(
        !lines.iter().any(|l| l["message"] == "request done"),
        "a request that succeeded is logged at debug only"
    );
    let rejected = event("token_rejected");
    assert_eq!(
        (&rejected["reason"], &rejected["device_id"]),
        (&json!("token_used"), &json!("audit-1"))
    );
    let revoked = event("token_revoked");
    assert_eq!(
        (&revoked["device_id"], &revoked["had_token"]),
        (&json!("audit-2"), &json!(true))
    );
    let issued = event("certificate_issued");
    assert_eq!(issued["serial"], signed["serial_number"]);
    assert_eq!(issued["key_type"], "ecdsa-p256");
    assert_eq!(issued["client_ip"], "127.0.0.1");
    let fingerprint = common::pki::openssl_x509(
        signed["certificate"].as_str().unwrap(),
        &["-fingerprint", "-sha256"],
    );
    let fingerprint = fingerprint
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(issued["fingerprint_sha256"], fingerprint.as_str());

    for secret in [
        token.as_str(),
        "audit-enrollment-key-audit-enrollment-key",
        "audit-admin-key-audit-admin-key-audit-admin",
    ] {
        assert!(!log.contains(secret), "a secret is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_password_never_reaches_the_logs_or_health() {
    const PASSWORD: &str = "s3cret-redis-pass";
    let mut redis = RedisServer::start_with(&["--save", "", "--requirepass", PASSWORD]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://default:{PASSWORD}@127.0.0.1:{}", redis.port());
    let (child, base) = start(
        dir.path(),
        &[
            ("RUST_LOG", "debug"),
            ("REDIS_ENABLED", "true"),
            ("REDIS_URL", &url),
            ("ONBOARDING_MODE", "open"),
        ],
    )
    .await;
    let health = |base: String| async move {
        reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let wait_for = |status: &'static str| {
        let base = base.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let body = health(base.clone()).await;
                if body.contains(&format!(r#""status":"{status}""#)) {
                    return body;
                }
                assert!(Instant::now() < deadline, "never {status}: {body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let up = wait_for("ok").await;
    assert!(!up.contains(PASSWORD), "{up}");
    // Lose the connection and get it back: both are logged.
    redis.kill();
    assert!(!wait_for("degraded").await.contains(PASSWORD));
    redis.restart();
    wait_for("ok").await;

    let output = stop(child);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(log.contains("redis connection lost"), "{log}");
    assert!(log.contains("redis connection is up"), "{log}");
    assert!(
        log.contains(&format!("redis://127.0.0.1:{}", redis.port())),
        "the address is still logged:\n{log}"
    );
    assert!(
        !log.contains(PASSWORD),
        "the Redis password is in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinels_password_in_its_url_is_used_and_never_logged() {
    const PASSWORD: &str = "s3cret-sentinel-pass";
    let setup = common::cluster::SentinelSetup::start_with_password(Some(PASSWORD)).await;
    let dir = tempfile::tempdir().unwrap();
    let sentinels = setup.urls().join(",");
    let (child, base) = start(
        dir.path(),
        &[
            ("RUST_LOG", "debug"),
            ("REDIS_ENABLED", "true"),
            ("REDIS_SENTINELS", &sentinels),
            ("REDIS_SENTINEL_MASTER", common::cluster::MASTER_NAME),
            ("ONBOARDING_MODE", "open"),
        ],
    )
    .await;
    // Through sentinels that require the password, the server finds the primary.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!health.contains(PASSWORD), "{health}");
        if health.contains(r#""status":"ok""#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never found the primary: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = stop(child);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(log.contains("redis connection is up"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the sentinel password is in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_generated_at_start_up_is_a_warning_naming_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("mistyped-certs");
    let certs_text = certs.display().to_string();
    let (child, _) = start(
        dir.path(),
        &[
            ("CERTS_DIR", certs_text.as_str()),
            ("ONBOARDING_MODE", "open"),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await;
    let output = stop(child);
    let log = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("generated a new one"))
        .unwrap_or_else(|| panic!("no line about the new CA:\n{log}"));
    let event: Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["level"], "WARN", "{line}");
    assert!(
        event["certs_dir"]
            .as_str()
            .unwrap()
            .ends_with("mistyped-certs"),
        "{line}"
    );
}
