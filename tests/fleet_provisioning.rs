//! Provisioning over MQTT with a client we did not write: the AWS IoT Device SDK for
//! Python (`awsiotsdk`, unmodified, in `target/awsiot-venv`), driven by
//! `tests/aws/fleet_provisioning.py` as AWS's own samples drive it, over MQTT 3.1.1 and
//! MQTT 5, against the real server on a free port with a real Redis. The certificates it
//! gets verify with OpenSSL and are taken by a real Mosquitto, which refuses the claim;
//! `mosquitto_sub` with a claim tries to read other claimants' answers and gets nothing.

mod common;

use std::time::Duration;

use common::fleet::{Fleet, Run, SDK_FLOW, SDK_PYTHON, config, key_and_csr, rejected};
use common::hook::{Answer, start_hook};
use common::mosquitto::{Mosquitto, publish_to};
use common::pki::{openssl, openssl_x509, quick_csr, tamper_signature};
use common::{path, within};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_sdk_provisions_over_mqtt_3_and_5_and_the_broker_takes_the_certificate() {
    within(Duration::from_secs(240), async {
        let (_hook, url) = start_hook().await;
        let fleet = Fleet::start(&config(&url), &["sensors"]).await;
        let claim = fleet.claim("sensors");
        let dir = fleet.dir.path();

        // MQTT 3.1.1, CreateCertificateFromCsr: the CSR's CN is the device id, which the
        // template makes again from the serial number.
        let (key1, csr1) = key_and_csr(dir, "sensor-0001");
        let one = fleet
            .provision(&claim, Run::csr("sensor-0001", "sensors", &csr1, &["SerialNumber=0001"]))
            .await;
        assert_eq!(one["registered"]["thingName"], "sensor-0001", "{one}");
        assert_eq!(
            one["registered"]["deviceConfiguration"],
            json!({"broker": "mqtts://broker.example:8883", "interval": "60"})
        );
        let pem1 = one["created"]["certificatePem"].as_str().unwrap();
        assert!(openssl_x509(pem1, &["-subject"]).contains("sensor-0001"));

        // MQTT 5 (the SDK's request-response client), CreateKeysAndCertificate: the
        // client id names the device, the server makes its key.
        let two = fleet
            .provision(
                &claim,
                Run {
                    protocol: "mqtt5",
                    csr: None,
                    ..Run::csr("sensor-0002", "sensors", "", &["SerialNumber=0002"])
                },
            )
            .await;
        assert_eq!(two["registered"]["thingName"], "sensor-0002", "{two}");
        let pem2 = two["created"]["certificatePem"].as_str().unwrap();
        let key2 = dir.join("sensor-0002.key");
        std::fs::write(&key2, two["created"]["privateKey"].as_str().unwrap()).unwrap();

        // Each certificate verifies against the CA; its id is the SHA-256 of its DER.
        for (pem, created) in [(pem1, &one["created"]), (pem2, &two["created"])] {
            let file = dir.join("leaf.pem");
            std::fs::write(&file, pem).unwrap();
            let (ok, said) = openssl(&["verify", "-CAfile", path(&fleet.ca()), path(&file)]);
            assert!(ok, "{said}");
            let fingerprint = openssl_x509(pem, &["-noout", "-fingerprint", "-sha256"]);
            let hex: String = fingerprint
                .rsplit('=')
                .next()
                .unwrap()
                .trim()
                .replace(':', "")
                .to_lowercase();
            assert_eq!(created["certificateId"], hex.as_str());
        }

        // Redis: the two devices and the claim recorded; each ownership token used up.
        assert_eq!(fleet.redis.certificate_records(), 3);
        for device in ["sensor-0001", "sensor-0002"] {
            let pending: i64 = fleet
                .redis
                .cmd(&["EXISTS", &format!("mqtt-lite:device:{{{device}}}")]);
            assert_eq!(pending, 0, "{device}'s ownership token is used");
        }
        let registered = r#"provisiond_provisioning_requests_total{protocol="mqtt",request="RegisterThing",outcome="accepted"}"#;
        assert_eq!(fleet.metric(registered).await, 2.0);

        // A broker that trusts the CA takes both devices and refuses the claim, which
        // has no clientAuth.
        let broker = Mosquitto::start(&fleet.dir.path().join("certs"), &fleet.ca(), None);
        let cert1 = dir.join("sensor-0001.crt");
        std::fs::write(&cert1, pem1).unwrap();
        let cert2 = dir.join("sensor-0002.crt");
        std::fs::write(&cert2, pem2).unwrap();
        for (cert, key) in [(&cert1, &key1), (&cert2, &key2)] {
            let out = publish_to(broker.port, &fleet.ca(), cert, key, "devices/x/t", "hello");
            assert!(out.status.success(), "{out:?}");
        }
        let out = publish_to(broker.port, &fleet.ca(), &claim.0, &claim.1, "devices/x/t", "hello");
        assert!(!out.status.success(), "the broker took a claim: {out:?}");

        fleet.app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_comes_back_on_rejected_with_a_code() {
    within(Duration::from_secs(240), async {
        let (hook, url) = start_hook().await;
        let fleet = Fleet::start(&config(&url), &["sensors", "gateways"]).await;
        let sensors = fleet.claim("sensors");
        let gateways = fleet.claim("gateways");

        // A CSR whose signature does not verify; one for a name the group refuses.
        let bad = tamper_signature(&quick_csr("sensor-0100"));
        let result = fleet
            .provision(&sensors, Run::csr("sensor-0100", "sensors", &bad, &["SerialNumber=0100"]))
            .await;
        assert_eq!(rejected(&result), "csr_signature_invalid", "{result}");
        let result = fleet
            .provision(&sensors, Run::csr("x", "sensors", &quick_csr("meter-1"), &[]))
            .await;
        assert_eq!(rejected(&result), "device_not_allowed", "{result}");

        // Created, then registered with another template, with parameters that make
        // another device, without the parameter: refused, nothing used up. Then the
        // right registration works, and its token cannot be used again.
        let csr = quick_csr("sensor-0101");
        let first = fleet
            .provision(&sensors, Run::csr("sensor-0101", "gateways", &csr, &["SerialNumber=0101"]))
            .await;
        assert_eq!(rejected(&first), "template_unknown", "{first}");
        let token = first["created"]["certificateOwnershipToken"].as_str().unwrap().to_owned();
        for (device, parameters, code) in [
            ("sensor-0110", &["SerialNumber=0102"][..], "device_id_mismatch"),
            ("sensor-0111", &[][..], "invalid_parameters"),
            ("sensor-0112", &["SerialNumber=../x"][..], "invalid_parameters"),
        ] {
            // Each run creates a certificate for `device` first (the SDK's flow), then
            // registers with sensor-0101's token.
            let result = fleet
                .provision(
                    &sensors,
                    Run {
                        ownership_token: Some(&token),
                        ..Run::csr(device, "sensors", &quick_csr(device), parameters)
                    },
                )
                .await;
            assert_eq!(rejected(&result), code, "{result}");
        }
        let result = fleet
            .provision(
                &sensors,
                Run {
                    ownership_token: Some(&token),
                    ..Run::csr("sensor-0104", "sensors", &quick_csr("sensor-0104"), &["SerialNumber=0101"])
                },
            )
            .await;
        assert_eq!(result["registered"]["thingName"], "sensor-0101", "{result}");
        let again = fleet
            .provision(
                &sensors,
                Run {
                    ownership_token: Some(&token),
                    ..Run::csr("sensor-0105", "sensors", &quick_csr("sensor-0105"), &["SerialNumber=0101"])
                },
            )
            .await;
        assert_eq!(rejected(&again), "ownership_token_used", "{again}");
        let forged = fleet
            .provision(
                &sensors,
                Run {
                    ownership_token: Some("eyJhbGciOiJIUzI1NiJ9.e30.x"),
                    ..Run::csr("sensor-0106", "sensors", &quick_csr("sensor-0106"), &["SerialNumber=0106"])
                },
            )
            .await;
        assert_eq!(rejected(&forged), "ownership_token_invalid", "{forged}");

        // A device that holds a certificate is not provisioned again by a claim.
        let result = fleet
            .provision(&sensors, Run::csr("sensor-0101", "sensors", &quick_csr("sensor-0101"), &["SerialNumber=0101"]))
            .await;
        assert_eq!(rejected(&result), "device_already_provisioned", "{result}");

        // A device onboarded over HTTP is that door's: a claim does not take it (its
        // pending token would be replaced).
        let onboarded = fleet
            .https
            .post(format!("{}/api/v1/onboarding", fleet.base))
            .json(&json!({"device_id": "sensor-0115", "group": "sensors"}))
            .send()
            .await
            .unwrap();
        assert_eq!(onboarded.status(), 200);
        let result = fleet
            .provision(
                &sensors,
                Run::csr("sensor-0115", "sensors", &quick_csr("sensor-0115"), &["SerialNumber=0115"]),
            )
            .await;
        assert_eq!(rejected(&result), "device_pending", "{result}");

        // A certificate revoked between its creation and its registration is not
        // registered.
        let kept = fleet
            .provision(&sensors, Run::csr("sensor-0120", "sensors", &quick_csr("sensor-0120"), &[]))
            .await;
        assert_eq!(rejected(&kept), "invalid_parameters", "{kept}");
        let pem = kept["created"]["certificatePem"].as_str().unwrap();
        let serial = openssl_x509(pem, &["-noout", "-serial"]);
        let serial = serial.trim().trim_start_matches("serial=");
        let (status, body) = fleet
            .admin_post(&format!("/api/v1/certificates/{serial}/revoke"), &json!({"reason": "keyCompromise"}))
            .await;
        assert_eq!(status, 200, "{body}");
        let token = kept["created"]["certificateOwnershipToken"].as_str().unwrap();
        let result = fleet
            .provision(
                &sensors,
                Run {
                    ownership_token: Some(token),
                    ..Run::csr("sensor-0121", "sensors", &quick_csr("sensor-0121"), &["SerialNumber=0120"])
                },
            )
            .await;
        assert_eq!(rejected(&result), "certificate_revoked", "{result}");

        // A blocked device: an operator revokes (and blocks) it.
        let (status, body) = fleet
            .admin_post("/api/v1/devices/sensor-0107/revoke", &json!({"block": true}))
            .await;
        assert_eq!(status, 200, "{body}");
        let result = fleet
            .provision(&sensors, Run::csr("sensor-0107", "sensors", &quick_csr("sensor-0107"), &["SerialNumber=0107"]))
            .await;
        assert_eq!(rejected(&result), "device_blocked", "{result}");

        // Server-made keys are the group's choice: gateways make their own.
        let result = fleet
            .provision(
                &gateways,
                Run {
                    csr: None,
                    ..Run::csr("gw-1", "gateways", "", &["SerialNumber=1"])
                },
            )
            .await;
        assert_eq!(rejected(&result), "create_keys_off", "{result}");

        // The gateways' hook sees RegisterThing's parameters, and its denial revokes the
        // certificate created for the device.
        let csr = quick_csr("gw-2");
        hook.answer(Answer::Deny("not in inventory"));
        let denied = fleet
            .provision(&gateways, Run::csr("gw-2", "gateways", &csr, &["SerialNumber=2", "Site=ber"]))
            .await;
        // The hook denied at CreateCertificateFromCsr already: nothing was issued.
        assert_eq!(rejected(&denied), "hook_denied", "{denied}");
        assert!(denied.get("created").is_none(), "{denied}");
        let asked = hook.last();
        assert_eq!(asked["protocol"], "mqtt");
        assert_eq!(asked["event"], "certificate.request");

        // Allow the certificate, deny the registration: the hook is asked twice.
        hook.answer(Answer::DenyRegistration("site closed"));
        let allowed_then_denied = fleet
            .provision(&gateways, Run::csr("gw-3", "gateways", &quick_csr("gw-3"), &["SerialNumber=3", "Site=ber"]))
            .await;
        assert_eq!(rejected(&allowed_then_denied), "hook_denied", "{allowed_then_denied}");
        let registration = hook.last();
        assert_eq!(registration["event"], "registration");
        assert_eq!(registration["parameters"], json!({"SerialNumber": "3", "Site": "ber"}));
        let serial = registration["serial"].as_str().unwrap();
        let status: Value = serde_json::from_str(
            &fleet
                .get(&fleet.base, &format!("/api/v1/certificates/{serial}"))
                .await,
        )
        .unwrap();
        assert_eq!(status["certificate"]["status"], "revoked", "{status}");

        let rejected_total = fleet
            .metric(r#"provisiond_provisioning_requests_total{protocol="mqtt",request="RegisterThing",outcome="ownership_token_used"}"#)
            .await;
        assert_eq!(rejected_total, 1.0);
        fleet.app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_reach_only_the_connection_that_asked_and_only_claims_connect() {
    within(Duration::from_secs(240), async {
        let (_hook, url) = start_hook().await;
        let fleet = Fleet::start(&config(&url), &["sensors"]).await;
        let claim = fleet.claim("sensors");

        // A claimant listening on every answer topic it may subscribe to, while two
        // others provision at once: it receives nothing.
        let port = fleet.port.to_string();
        let ca = fleet.ca();
        let mut spy = tokio::process::Command::new("timeout")
            .args([
                "90",
                SDK_PYTHON,
                SDK_FLOW,
                "--endpoint",
                "127.0.0.1",
                "--port",
                &port,
            ])
            .args([
                "--ca",
                path(&ca),
                "--cert",
                path(&claim.0),
                "--key",
                path(&claim.1),
            ])
            .args(["--client-id", "spy", "--template", "sensors", "--spy", "60"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut said = tokio::io::BufReader::new(spy.stdout.take().unwrap()).lines();
        let first = said.next_line().await.unwrap().unwrap_or_default();
        assert!(
            first.contains("subscribed"),
            "the spy did not subscribe: {first}"
        );
        let (csr1, csr2) = (quick_csr("sensor-0201"), quick_csr("sensor-0202"));
        let (one, two) = tokio::join!(
            fleet.provision(
                &claim,
                Run::csr("sensor-0201", "sensors", &csr1, &["SerialNumber=0201"])
            ),
            fleet.provision(
                &claim,
                Run {
                    protocol: "mqtt5",
                    ..Run::csr("sensor-0202", "sensors", &csr2, &["SerialNumber=0202"])
                }
            ),
        );
        assert_eq!(one["registered"]["thingName"], "sensor-0201", "{one}");
        assert_eq!(two["registered"]["thingName"], "sensor-0202", "{two}");
        assert!(
            openssl_x509(
                one["created"]["certificatePem"].as_str().unwrap(),
                &["-subject"]
            )
            .contains("sensor-0201")
        );
        assert!(
            openssl_x509(
                two["created"]["certificatePem"].as_str().unwrap(),
                &["-subject"]
            )
            .contains("sensor-0202")
        );
        // The spy sends its own request now: it gets its own rejection, and nothing
        // before it.
        use tokio::io::AsyncWriteExt;
        spy.stdin.take().unwrap().write_all(b"go\n").await.unwrap();
        let report: Value =
            serde_json::from_str(&said.next_line().await.unwrap().unwrap_or_default()).unwrap();
        assert_eq!(
            report["before_own_request"], 0,
            "the spy saw others' answers: {report}"
        );
        let received = report["received"].as_array().unwrap();
        assert_eq!(received.len(), 1, "{report}");
        assert_eq!(
            received[0]["topic"],
            "$aws/certificates/create-from-csr/json/rejected"
        );
        assert_eq!(received[0]["payload"]["errorCode"], "invalid_payload");

        // Any other topic is refused: a SUBACK failure, a publish ends the connection.
        let before = fleet
            .metric(r#"provisiond_mqtt_refused_total{reason="topic"}"#)
            .await;
        let out = tokio::process::Command::new("timeout")
            .args([
                "10",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &fleet.port.to_string(),
            ])
            .args([
                "--cafile",
                path(&fleet.ca()),
                "--cert",
                path(&claim.0),
                "--key",
                path(&claim.1),
            ])
            .args(["-t", "#", "-W", "3"])
            .output()
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("All subscription requests were denied"),
            "{out:?}"
        );
        let out = publish_to(
            fleet.port,
            &fleet.ca(),
            &claim.0,
            &claim.1,
            "devices/x/telemetry",
            "hi",
        );
        assert!(
            !out.status.success(),
            "a publish outside the provisioning topics: {out:?}"
        );
        assert!(
            fleet
                .metric(r#"provisiond_mqtt_refused_total{reason="topic"}"#)
                .await
                >= before + 2.0
        );

        // A device certificate is no claim: the handshake is refused.
        let dir = fleet.dir.path();
        let device = (dir.join("sensor-0201.crt"), dir.join("sensor-0201.key"));
        let (key, csr) = key_and_csr(dir, "sensor-0203");
        let created = fleet
            .provision(
                &claim,
                Run::csr("sensor-0203", "sensors", &csr, &["SerialNumber=0203"]),
            )
            .await;
        std::fs::write(
            &device.0,
            created["created"]["certificatePem"].as_str().unwrap(),
        )
        .unwrap();
        std::fs::copy(&key, &device.1).unwrap();
        let result = fleet
            .provision(
                &device,
                Run::csr(
                    "sensor-0204",
                    "sensors",
                    &quick_csr("sensor-0204"),
                    &["SerialNumber=0204"],
                ),
            )
            .await;
        assert!(
            result.get("error").is_some(),
            "a device certificate connected: {result}"
        );
        assert!(
            fleet
                .metric(r#"provisiond_mqtt_refused_total{reason="handshake"}"#)
                .await
                >= 1.0
        );

        // A revoked claim is refused at CONNECT.
        let serial = openssl_x509(
            &std::fs::read_to_string(&claim.0).unwrap(),
            &["-noout", "-serial"],
        );
        let serial = serial.trim().trim_start_matches("serial=");
        let (status, body) = fleet
            .admin_post(
                &format!("/api/v1/certificates/{serial}/revoke"),
                &json!({"reason": "keyCompromise"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let result = fleet
            .provision(
                &claim,
                Run::csr(
                    "sensor-0205",
                    "sensors",
                    &quick_csr("sensor-0205"),
                    &["SerialNumber=0205"],
                ),
            )
            .await;
        assert!(
            result.get("error").is_some(),
            "a revoked claim connected: {result}"
        );
        assert!(
            fleet
                .metric(r#"provisiond_mqtt_refused_total{reason="claim_revoked"}"#)
                .await
                >= 1.0
        );
        fleet.app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_rate_limited_and_can_be_recorded_before_its_first_use() {
    within(Duration::from_secs(120), async {
        let (_hook, url) = start_hook().await;
        let fleet = Fleet::start_with(&config(&url), &["sensors"], |s| {
            s.rate_limit.per_claim_per_minute = 2;
        })
        .await;
        let claim = fleet.claim("sensors");

        // An operator records the claim before any device uses it.
        let pem = std::fs::read_to_string(&claim.0).unwrap();
        let (status, body) = fleet
            .admin_post("/api/v1/certificates", &json!({"certificate": pem}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["certificate"]["device_id"], "claim:sensors", "{body}");

        // Two requests a minute with this claim: a create and a register, then refused.
        let one = fleet
            .provision(
                &claim,
                Run::csr(
                    "sensor-0301",
                    "sensors",
                    &quick_csr("sensor-0301"),
                    &["SerialNumber=0301"],
                ),
            )
            .await;
        assert_eq!(one["registered"]["thingName"], "sensor-0301", "{one}");
        let two = fleet
            .provision(
                &claim,
                Run::csr(
                    "sensor-0302",
                    "sensors",
                    &quick_csr("sensor-0302"),
                    &["SerialNumber=0302"],
                ),
            )
            .await;
        assert_eq!(rejected(&two), "rate_limited", "{two}");
        assert_eq!(
            fleet
                .metric(r#"provisiond_rate_limited_total{scope="claim"}"#)
                .await,
            1.0
        );
        fleet.app.stop().await;
    })
    .await;
}
