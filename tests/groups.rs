//! Enrollment groups on a real server and a real Redis: two product lines with their own
//! keys, id patterns, key types, validity, subject and names, each certificate read back
//! with `openssl x509` and checked with `openssl verify`; the group a device names; the
//! group a renewal keeps; the listing; a group's hook replacing names within its limits.

mod common;

use std::time::Duration;

use common::device::{Enrolled, renew};
use common::hook::{Answer, SECRET, start_hook};
use common::pki::{openssl_verify, openssl_x509};
use common::{RedisServer, TestApp, error_code, within};
use provisiond::auth::derived;
use provisiond::clock::unix_now;
use provisiond::config::{
    ExtendedKeyUsage, GroupSettings, HookSettings, KeyList, OnboardingMode, Settings,
};
use provisiond::device::{DeviceKey, KeyKind};
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SENSOR_KEY: &str = "sensor-line-key-sensor-line-key-0001";
const GATEWAY_SECRET: &str = "gateway-group-secret-gateway-group-secret";
const ADMIN: &str = "admin-key-admin-key-admin-key-admin-key";

fn sensors() -> GroupSettings {
    let mut g = GroupSettings {
        name: "sensors".into(),
        onboarding: OnboardingMode::Key,
        enrollment_keys: KeyList(vec![Secret::new(SENSOR_KEY)]),
        device_id_pattern: Some("sensor-[0-9]{3}".into()),
        key_types: Some(vec![KeyKind::P256]),
        validity_days: Some(90),
        san_uris: vec!["urn:acme:sensor:{device_id}".into()],
        ..GroupSettings::default()
    };
    g.subject.organization = Some("Acme".into());
    g.subject.organizational_unit = Some("{group}".into());
    g.subject.country = Some("DE".into());
    g
}

fn gateways() -> GroupSettings {
    let mut g = GroupSettings {
        name: "gateways".into(),
        onboarding: OnboardingMode::Derived,
        group_secret: Some(Secret::new(GATEWAY_SECRET)),
        device_id_pattern: Some("gw-[0-9]+".into()),
        key_types: Some(vec![KeyKind::Ed25519, KeyKind::P384]),
        san_dns: vec!["{device_id}.gw.example.com".into()],
        extended_key_usage: Some(vec![
            ExtendedKeyUsage::ClientAuth,
            ExtendedKeyUsage::ServerAuth,
        ]),
        ..GroupSettings::default()
    };
    // Not the device id: renewal must find the device by the registry, not the CN.
    g.subject.common_name = Some("{device_id}.gw".into());
    g
}

fn with_groups(s: &mut Settings, groups: Vec<GroupSettings>) {
    s.onboarding.mode = OnboardingMode::Key;
    s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
    s.groups = groups;
}

async fn onboard(app: &TestApp, body: Value, authorization: Option<String>) -> reqwest::Response {
    let mut request = app.client.post(app.url("/api/v1/onboarding")).json(&body);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

async fn token(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["provisioning_token"].as_str().unwrap().to_owned()
}

fn gateway_auth(device: &str) -> String {
    let key = derived::device_key(GATEWAY_SECRET.as_bytes(), device);
    derived::authorization(&key, device, unix_now())
}

/// Signs `key`'s CSR with `token`; the answer's JSON, which must be a certificate.
async fn signed(app: &TestApp, token: &str, device: &str, key: &DeviceKey) -> Value {
    let response = app
        .sign_csr(token, device, &key.csr_pem(Some(device)).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{device}");
    response.json().await.unwrap()
}

fn days_left(certificate: &Value) -> f64 {
    let end = time::OffsetDateTime::parse(
        certificate["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    (end - time::OffsetDateTime::now_utc()).whole_minutes() as f64 / 1440.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_issue_their_own_certificates_and_renewal_keeps_the_group() {
    let redis = RedisServer::start();
    within(Duration::from_secs(90), async {
        let lab = GroupSettings {
            name: "lab".into(),
            onboarding: OnboardingMode::Open,
            ..GroupSettings::default()
        };
        let app = TestApp::spawn_with(Some(&redis), |s| {
            with_groups(s, vec![sensors(), gateways(), lab])
        })
        .await;
        let ca = app.ca_pem().await;
        let sensor_key = format!("Bearer {SENSOR_KEY}");

        // A sensor: the key names the group; only its pattern and key type pass.
        let refused = onboard(&app, json!({"device_id": "gw-1"}), Some(sensor_key.clone())).await;
        assert_eq!(error_code(refused).await.1, "device_not_allowed");
        let named_other = json!({"device_id": "sensor-001", "group": "gateways"});
        let refused = onboard(&app, named_other, Some(sensor_key.clone())).await;
        assert_eq!(error_code(refused).await.0, StatusCode::UNAUTHORIZED);
        let sensor_token = token(
            onboard(
                &app,
                json!({"device_id": "sensor-001"}),
                Some(sensor_key.clone()),
            )
            .await,
        )
        .await;
        let ed25519 = DeviceKey::generate(KeyKind::Ed25519).unwrap();
        let refused = app
            .sign_csr(
                &sensor_token,
                "sensor-001",
                &ed25519.csr_pem(Some("sensor-001")).unwrap(),
            )
            .await;
        assert_eq!(
            error_code(refused).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "csr_policy_violation".into()
            )
        );
        // The refusal burnt nothing: the same token signs a key of the group's type.
        let sensor = DeviceKey::generate(KeyKind::P256).unwrap();
        let cert = signed(&app, &sensor_token, "sensor-001", &sensor).await;
        let pem = cert["certificate"].as_str().unwrap();
        openssl_verify(&ca, pem);
        let text = openssl_x509(pem, &["-noout", "-text", "-nameopt", "RFC2253"]);
        assert!(
            text.contains("Subject: CN=sensor-001,OU=sensors,O=Acme,C=DE"),
            "{text}"
        );
        assert!(text.contains("URI:urn:acme:sensor:sensor-001"), "{text}");
        assert!(text.contains("TLS Web Client Authentication"), "{text}");
        assert!(!text.contains("TLS Web Server Authentication"), "{text}");
        assert!(
            (89.9..=90.1).contains(&days_left(&cert)),
            "{}",
            days_left(&cert)
        );

        // An open group takes any id no other group's rules claim, never one they do.
        let lab = |device: &str| json!({"device_id": device, "group": "lab"});
        assert_eq!(
            onboard(&app, lab("bench-1"), None).await.status(),
            StatusCode::OK
        );
        for claimed in ["sensor-001", "gw-7"] {
            let refused = onboard(&app, lab(claimed), None).await;
            assert_eq!(
                error_code(refused).await.1,
                "device_not_allowed",
                "{claimed}"
            );
        }

        // A gateway: derived onboarding names its group; no group means `default`,
        // which this server does not have.
        let unnamed = onboard(
            &app,
            json!({"device_id": "gw-7"}),
            Some(gateway_auth("gw-7")),
        )
        .await;
        assert_eq!(
            error_code(unnamed).await,
            (StatusCode::FORBIDDEN, "group_unknown".into())
        );
        let body = json!({"device_id": "gw-7", "group": "gateways"});
        let gw_token = token(onboard(&app, body, Some(gateway_auth("gw-7"))).await).await;
        let gateway = DeviceKey::generate(KeyKind::Ed25519).unwrap();
        let cert = signed(&app, &gw_token, "gw-7", &gateway).await;
        let gw_pem = cert["certificate"].as_str().unwrap().to_owned();
        openssl_verify(&ca, &gw_pem);
        let text = openssl_x509(&gw_pem, &["-noout", "-text", "-nameopt", "RFC2253"]);
        assert!(text.contains("Subject: CN=gw-7.gw"), "{text}");
        assert!(text.contains("DNS:gw-7.gw.example.com"), "{text}");
        assert!(
            text.contains("TLS Web Client Authentication, TLS Web Server Authentication"),
            "{text}"
        );
        assert!((364.9..=365.1).contains(&days_left(&cert)));

        // The registry (in Redis) says which group each certificate is of.
        let status = app.get_json_as(ADMIN, "/api/v1/devices/gw-7").await;
        assert_eq!(status["certificates"][0]["group"], "gateways");
        let status = app.get_json_as(ADMIN, "/api/v1/devices/sensor-001").await;
        assert_eq!(status["certificates"][0]["group"], "sensors");
        // The fleet list by group.
        let ids = |page: &Value| -> Vec<String> {
            page["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["device_id"].as_str().unwrap().to_owned())
                .collect()
        };
        let gateways = app
            .get_json_as(ADMIN, "/api/v1/devices?group=gateways")
            .await;
        assert_eq!(ids(&gateways), ["gw-7"], "{gateways}");
        assert_eq!(gateways["devices"][0]["group"], "gateways");
        let sensors = app
            .get_json_as(ADMIN, "/api/v1/devices?group=sensors")
            .await;
        assert_eq!(ids(&sensors), ["sensor-001"], "{sensors}");
        let nobody = app.get_json_as(ADMIN, "/api/v1/devices?group=nobody").await;
        assert!(ids(&nobody).is_empty(), "{nobody}");
        let mut redis_cli = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("mqtt-lite:certs:*")
            .query(&mut redis_cli)
            .unwrap();
        let holds_group = keys.iter().any(|k| {
            let records: Vec<Vec<u8>> = redis::cmd("HVALS").arg(k).query(&mut redis_cli).unwrap();
            records
                .iter()
                .any(|v| v.windows(8).any(|w| w == b"gateways"))
        });
        assert!(holds_group, "a record in Redis carries the group: {keys:?}");

        // Renewal keeps the group: the gateway's profile again, found by the registry
        // although its CN is not its id.
        let enrolled = Enrolled {
            key: gateway,
            cert_pem: gw_pem,
            serial: cert["serial_number"].as_str().unwrap().to_owned(),
        };
        let next = DeviceKey::generate(KeyKind::P384).unwrap();
        let renewed = renew(
            &app,
            "gw-7",
            &next.csr_pem(Some("gw-7")).unwrap(),
            Some(&enrolled.proof("gw-7")),
        )
        .await;
        assert_eq!(renewed.status(), StatusCode::OK);
        let renewed: Value = renewed.json().await.unwrap();
        let text = openssl_x509(
            renewed["certificate"].as_str().unwrap(),
            &["-noout", "-text"],
        );
        assert!(text.contains("DNS:gw-7.gw.example.com"), "{text}");
        let status = app.get_json_as(ADMIN, "/api/v1/devices/gw-7").await;
        let groups: Vec<&str> = status["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["group"].as_str().unwrap())
            .collect();
        assert_eq!(groups, ["gateways", "gateways"]);
        // Another device cannot renew with it.
        let other = renew(
            &app,
            "gw-8",
            &next.csr_pem(Some("gw-8")).unwrap(),
            Some(&enrolled.proof("gw-8")),
        )
        .await;
        assert_eq!(error_code(other).await.1, "renewal_proof_invalid");

        // The listing: policy and counts, never a key or a secret.
        let listing = app
            .client
            .get(app.url("/api/v1/groups"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(listing.status(), StatusCode::OK);
        let text = listing.text().await.unwrap();
        assert!(
            !text.contains(SENSOR_KEY) && !text.contains(GATEWAY_SECRET),
            "{text}"
        );
        let listing: Value = serde_json::from_str(&text).unwrap();
        let sensors = &listing["groups"][0];
        assert_eq!(sensors["name"], "sensors");
        assert_eq!(sensors["onboarding"], "key");
        assert_eq!(sensors["enrollment_keys"], 1);
        assert_eq!(sensors["key_types"], json!(["ecdsa-p256"]));
        assert_eq!(sensors["validity_days"], 90);
        assert_eq!(sensors["issued_since_start"]["certificates"], 1);
        assert_eq!(
            listing["groups"][1]["issued_since_start"]["certificates"],
            2
        );
        let anonymous = app
            .client
            .get(app.url("/api/v1/groups"))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

        // The fleet command names the group: a gateway enrolls from the CLI.
        let out = tempfile::tempdir().unwrap();
        let device_key =
            derived::encode_key(&derived::device_key(GATEWAY_SECRET.as_bytes(), "gw-11"));
        let server = app.address.clone();
        let out_dir = out.path().to_str().unwrap();
        let extra = [
            "--group",
            "gateways",
            "--device-key",
            &device_key,
            "--key-type",
            "ed25519",
        ];
        common::bin::enroll_into(&server, "gw-11", out_dir, &extra).await;
        let written = std::fs::read_to_string(out.path().join("gw-11.crt")).unwrap();
        let text = openssl_x509(&written, &["-noout", "-text"]);
        assert!(text.contains("DNS:gw-11.gw.example.com"), "{text}");

        let metrics = app.metrics().await;
        assert!(
            metrics.contains("provisiond_group_certificates_issued_total{group=\"gateways\"} 3"),
            "{metrics}"
        );
        assert!(metrics.contains("provisiond_group_tokens_issued_total{group=\"sensors\"} 1"));
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_hook_may_replace_names_and_shorten_validity_within_the_groups_limits() {
    within(Duration::from_secs(60), async {
        let (hook, url) = start_hook().await;
        let mut gateways = gateways();
        gateways.validity_days = Some(30);
        gateways.hook = Some(HookSettings {
            url: Some(url),
            secret: Some(Secret::new(SECRET)),
            timeout_ms: 1000,
            ..HookSettings::default()
        });
        let app = TestApp::spawn_with(None, |s| with_groups(s, vec![sensors(), gateways])).await;
        let body = json!({"device_id": "gw-9", "group": "gateways"});
        let gw_token = token(onboard(&app, body, Some(gateway_auth("gw-9"))).await).await;
        let key = DeviceKey::generate(KeyKind::P384).unwrap();
        let csr = key.csr_pem(Some("gw-9")).unwrap();

        // Longer than the group's validity, or a name no certificate may carry: refused,
        // and the token stays good.
        for answer in [
            json!({"allow": true, "validity_days": 31}),
            json!({"allow": true, "san_dns": ["-bad-.example"]}),
            json!({"allow": true, "san_uris": ["not a uri"]}),
        ] {
            hook.answer(Answer::Json(answer.clone()));
            let refused = app.sign_csr(&gw_token, "gw-9", &csr).await;
            assert_eq!(
                error_code(refused).await,
                (StatusCode::SERVICE_UNAVAILABLE, "hook_unavailable".into()),
                "{answer}"
            );
        }
        hook.answer(Answer::Json(json!({
            "allow": true,
            "validity_days": 10,
            "san_dns": ["gw-9.site-4.example.net"],
            "san_uris": ["spiffe://acme/gw/gw-9"],
        })));
        let cert = signed(&app, &gw_token, "gw-9", &key).await;
        assert_eq!(hook.last()["group"], "gateways");
        let text = openssl_x509(cert["certificate"].as_str().unwrap(), &["-noout", "-text"]);
        assert!(text.contains("DNS:gw-9.site-4.example.net"), "{text}");
        assert!(text.contains("URI:spiffe://acme/gw/gw-9"), "{text}");
        assert!(
            !text.contains("gw.example.com"),
            "the hook's names replace the group's"
        );
        assert!((9.9..=10.1).contains(&days_left(&cert)));

        // The sensors have no hook: never asked.
        let asked = hook.seen.lock().unwrap().len();
        let sensor_token = token(
            onboard(
                &app,
                json!({"device_id": "sensor-002"}),
                Some(format!("Bearer {SENSOR_KEY}")),
            )
            .await,
        )
        .await;
        signed(
            &app,
            &sensor_token,
            "sensor-002",
            &DeviceKey::generate(KeyKind::P256).unwrap(),
        )
        .await;
        assert_eq!(hook.seen.lock().unwrap().len(), asked);
        let metrics = app.metrics().await;
        assert!(
            metrics.contains(
                "provisiond_hook_decisions_total{decision=\"allow\",group=\"gateways\"} 1"
            ),
            "{metrics}"
        );
        app.stop().await;
    })
    .await;
}
