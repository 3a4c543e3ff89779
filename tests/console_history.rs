//! The console's history is shared through Redis: what one instance saw, another (or one
//! started later) shows; with Redis off each instance shows its own.

mod common;

use std::time::{Duration, Instant};

use common::app::test_settings;
use common::pki::quick_csr;
use common::{RedisServer, TestApp, within};
use provisiond::config::KeyList;
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::Value;

const ADMIN: &str = "history-admin-key-history-admin-key!";
const WITHIN: Duration = Duration::from_secs(10);

async fn instance(redis: &RedisServer, certs: &std::path::Path) -> TestApp {
    let mut s = test_settings(Some(redis), certs);
    s.admin.keys = KeyList(vec![Secret::new(format!("ops-bob:{ADMIN}"))]);
    TestApp::spawn_settings(s).await
}

/// Polls an admin GET until `ready` holds.
async fn until(app: &TestApp, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let answer = app.get_json_as(ADMIN, path).await;
        if ready(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never got there: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_instance_saw_the_other_and_a_later_one_show() {
    within(Duration::from_secs(60), async {
        let redis = RedisServer::start();
        let certs = tempfile::tempdir().unwrap();
        let a = instance(&redis, certs.path()).await;
        let b = instance(&redis, certs.path()).await;

        // A issues and signs; B refuses a replay and revokes the token of another device.
        let token = a.token_for("hist-1").await;
        let signed = a.sign_csr(&token, "hist-1", &quick_csr("hist-1")).await;
        assert_eq!(signed.status(), StatusCode::OK);
        let replay = b.sign_csr(&token, "hist-1", &quick_csr("hist-1")).await;
        assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
        b.token_for("hist-2").await;
        let revoked = b.delete_as(ADMIN, "/api/v1/devices/hist-2/token").await;
        assert_eq!(revoked.status(), StatusCode::OK);

        // A shows B's refusal, B's admin action (with the key's name) and the totals of
        // both; B shows A's certificate.
        until(&a, "/api/v1/refusals?code=token_used", |r| {
            r["refusals"].as_array().is_some_and(|l| l.len() == 1)
        })
        .await;
        let events = until(&a, "/api/v1/devices/hist-2/events", |e| {
            e["events"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["event"] == "token_revoked"))
        })
        .await;
        let revocation = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["event"] == "token_revoked")
            .unwrap();
        assert_eq!(revocation["admin"], "ops-bob", "{events}");
        until(&a, "/api/v1/activity", |t| {
            t["totals"]["tokens_issued"] == 2 && t["totals"]["certificates_issued"] == 1
        })
        .await;
        until(&b, "/api/v1/devices/hist-1/events", |e| {
            e["events"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["event"] == "certificate_issued"))
        })
        .await;
        // The per-second counts are copied to Redis a second at a time, after the totals:
        // B's token second arrives in A's timeline shortly after.
        until(&a, "/api/v1/activity", |timeline| {
            let tokens: u64 = timeline["seconds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["tokens"].as_u64().unwrap())
                .sum();
            tokens == 2
        })
        .await;

        // An instance started now has the same history.
        a.stop().await;
        b.stop().await;
        let c = instance(&redis, certs.path()).await;
        let refusals = c.get_json_as(ADMIN, "/api/v1/refusals").await;
        assert!(
            refusals["refusals"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["code"] == "token_used"),
            "{refusals}"
        );
        let totals = c.get_json_as(ADMIN, "/api/v1/activity").await;
        assert_eq!(totals["totals"]["certificates_issued"], 1, "{totals}");
        // The history lives in one slot, under the prefix.
        let keys: Vec<String> = redis.cmd(&["KEYS", "mqtt-lite:history:*"]);
        assert!(keys.iter().all(|k| k.contains("{console}")), "{keys:?}");
        assert!(keys.len() >= 4, "{keys:?}");
        c.stop().await;
    })
    .await;
}
