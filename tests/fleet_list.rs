//! `GET /api/v1/devices`: the fleet page by page, filtered by prefix, state and expiry,
//! on a real Redis, a real 3-primary cluster and the memory store; bad queries refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::app::test_settings;
use common::cluster::RedisCluster;
use common::pki::quick_csr;
use common::{RedisServer, TestApp, error_code, within};
use provisiond::config::{KeyList, Settings};
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "fleet-list-admin-key-fleet-list-admin";

fn with_admin(mut s: Settings) -> Settings {
    s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
    s
}

async fn enroll(app: &TestApp, device: &str) {
    let token = app.token_for(device).await;
    let signed = app.sign_csr(&token, device, &quick_csr(device)).await;
    assert_eq!(signed.status(), StatusCode::OK, "{device}");
}

async fn get(app: &TestApp, query: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/v1/devices?{query}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
}

/// Every device of the listing, following the cursors; each page at most `limit`.
async fn all(app: &TestApp, query: &str, limit: usize) -> BTreeMap<String, Value> {
    let mut found = BTreeMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut q = format!("{query}&limit={limit}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let response = get(app, &q).await;
        assert_eq!(response.status(), StatusCode::OK, "{q}");
        let page: Value = response.json().await.unwrap();
        let devices = page["devices"].as_array().unwrap();
        // Whole buckets: a page holds at most the devices of one more slot.
        assert!(devices.len() <= limit + 1, "{page}");
        for d in devices {
            found.insert(d["device_id"].as_str().unwrap().to_owned(), d.clone());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return found,
        }
    }
    panic!("the listing never ended");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn ids(found: &BTreeMap<String, Value>, prefix: &str) -> BTreeSet<String> {
    found
        .keys()
        .filter(|k| k.starts_with(prefix))
        .cloned()
        .collect()
}

/// The same fleet on any store: what each filter lists.
async fn lists_the_fleet(app: &TestApp, tag: &str) {
    let name = |n: &str| format!("{tag}-{n}");
    for n in ["a-1", "a-2", "a-3", "b-1", "gone", "stop"] {
        enroll(app, &name(n)).await;
    }
    app.token_for(&name("waiting")).await;
    let revoke = |device: String, block: bool| async move {
        let path = format!("/api/v1/devices/{device}/revoke");
        let body = json!({ "reason": "cessationOfOperation", "block": block });
        assert_eq!(
            app.post_json_as(ADMIN, &path, &body).await.status(),
            StatusCode::OK
        );
    };
    revoke(name("gone"), false).await;
    revoke(name("stop"), true).await;

    // Everything with certificates, two at a time.
    let every = all(app, &format!("prefix={tag}-"), 2).await;
    let expected: BTreeSet<String> = ["a-1", "a-2", "a-3", "b-1", "gone", "stop"]
        .iter()
        .map(|n| name(n))
        .collect();
    assert_eq!(ids(&every, &format!("{tag}-")), expected);
    let a1 = &every[&name("a-1")];
    assert_eq!(a1["state"], "active", "{a1}");
    assert_eq!(
        (
            a1["certificates"].as_u64(),
            a1["valid_certificates"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(a1["valid_until"].is_string(), "{a1}");
    assert_eq!(every[&name("gone")]["state"], "revoked");
    assert_eq!(every[&name("stop")]["state"], "blocked");
    assert_eq!(
        every[&name("stop")]["blocked"]["reason"],
        "cessationOfOperation"
    );

    // By prefix, state and expiry.
    let a = all(app, &format!("prefix={tag}-a-"), 50).await;
    assert_eq!(a.len(), 3, "{a:?}");
    let revoked = all(app, &format!("prefix={tag}-&state=revoked"), 50).await;
    assert_eq!(ids(&revoked, ""), BTreeSet::from([name("gone")]));
    let blocked = all(app, &format!("prefix={tag}-&state=blocked"), 50).await;
    assert_eq!(ids(&blocked, ""), BTreeSet::from([name("stop")]));
    let pending = all(app, &format!("prefix={tag}-&state=pending"), 50).await;
    assert_eq!(ids(&pending, ""), BTreeSet::from([name("waiting")]));
    assert_eq!(pending[&name("waiting")]["certificates"], 0);
    let active = all(app, &format!("prefix={tag}-&state=active"), 50).await;
    assert_eq!(active.len(), 4, "{active:?}");
    // Test certificates live a year: none expires within a day, every valid one within
    // two years.
    let soon = all(app, &format!("prefix={tag}-&expiring_within_days=1"), 50).await;
    assert!(soon.is_empty(), "{soon:?}");
    let later = all(app, &format!("prefix={tag}-&expiring_within_days=730"), 50).await;
    assert_eq!(ids(&later, ""), ids(&active, ""));

    // Bad queries get a clear 400; no key a 401.
    for bad in [
        "state=nope",
        "limit=0",
        "limit=201",
        "expiring_within_days=0",
        "expiring_within_days=x",
        "prefix=a%20b",
        "prefix=%3Cscript%3E",
        "colour=blue",
    ] {
        let (status, code) = error_code(get(app, bad).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{bad}"
        );
    }
    let anonymous = app
        .client
        .get(app.url("/api/v1/devices"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(anonymous).await.1, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_lists_on_redis_and_a_foreign_cursor_is_refused() {
    within(Duration::from_secs(90), async {
        let redis = RedisServer::start();
        let certs = tempfile::tempdir().unwrap();
        let app =
            TestApp::spawn_settings(with_admin(test_settings(Some(&redis), certs.path()))).await;
        lists_the_fleet(&app, "rl").await;
        for cursor in ["garbage", "9-0-0", "0-x-0", "0-0"] {
            let (status, code) = error_code(get(&app, &format!("cursor={cursor}")).await).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::BAD_REQUEST, "invalid_query")
            );
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_lists_in_memory_with_redis_off() {
    within(Duration::from_secs(60), async {
        let certs = tempfile::tempdir().unwrap();
        let app = TestApp::spawn_settings(with_admin(test_settings(None, certs.path()))).await;
        lists_the_fleet(&app, "ml").await;
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_lists_across_every_primary_of_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    within(Duration::from_secs(120), async {
        let certs = tempfile::tempdir().unwrap();
        let mut settings = with_admin(test_settings(None, certs.path()));
        settings.redis.enabled = true;
        settings.redis.url = None;
        settings.redis.cluster_nodes = provisiond::config::List(cluster.urls());
        let app = TestApp::spawn_settings(settings).await;
        app.wait_for_health(Duration::from_secs(20), |h| h["redis"]["primaries"] == 3)
            .await;
        lists_the_fleet(&app, "cl").await;
        app.stop().await;
    })
    .await;
}
