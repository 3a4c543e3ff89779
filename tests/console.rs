//! The operator console in a real browser (headless Chromium over WebDriver): sign in,
//! watch the counts move, find a device, revoke its token and see the API refuse it;
//! a wrong key is refused; no console without admin keys. Screenshots land in
//! `target/console/` (two of them are in the README).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::browser::Browser;
use common::pki::quick_csr;
use common::{RedisServer, TestApp, error_code};
use provisiond::config::KeyList;
use provisiond::secret::Secret;
use reqwest::StatusCode;

const ADMIN: &str = "console-admin-key-console-admin-key!";
/// The same key as `ADMIN_KEYS` names it: audit events carry the name.
const NAMED: &str = "ops-alice:console-admin-key-console-admin-key!";

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_watches_the_counts_and_revokes_a_devices_token() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), |s| {
        s.admin.keys = KeyList(vec![Secret::new(NAMED)]);
    })
    .await;
    let browser = Browser::start().await;
    let test = async {
        let console = app.url("/console/");
        browser.client.goto(&console).await.unwrap();
        assert!(browser.is_shown("sign-in").await);
        assert!(!browser.is_shown("overview").await);
        // Nothing of the signed-in page shows before sign-in.
        assert!(!browser.is_shown("nav").await);
        assert!(!browser.is_shown("sign-out").await);

        // A wrong key is refused, and says so.
        browser
            .type_into("admin-key", "not-the-admin-key-not-the-admin-key")
            .await;
        browser.click("sign-in-button").await;
        let refused = browser
            .wait_for_text("sign-in-error", |t| !t.is_empty())
            .await;
        assert!(refused.contains("not accepted"), "{refused}");
        assert!(!browser.is_shown("overview").await);

        // The right one opens the overview.
        browser.type_into("admin-key", ADMIN).await;
        browser.click("sign-in-button").await;
        browser.wait_for_text("status", |t| t == "ok").await;
        assert_eq!(browser.text("storage").await, "redis");
        browser.wait_for_text("issued", |t| t == "0 tokens").await;
        // The key is in session storage, never in the address.
        let url = browser.client.current_url().await.unwrap();
        assert!(!url.as_str().contains(ADMIN), "{url}");

        // Devices arrive through the API; the counts move.
        for n in 0..5 {
            assert_eq!(
                app.onboard(&format!("console-{n}")).await.status(),
                StatusCode::OK
            );
        }
        let token = app.token_for("console-target").await;
        let bad = app.sign_csr("not-a-token", "console-0", "x").await;
        assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
        browser.wait_for_text("issued", |t| t == "6 tokens").await;
        browser
            .wait_for_text("pending", |t| t.starts_with('6') || t.starts_with('7'))
            .await;
        browser
            .wait_for_text("reasons", |t| t.contains("token_invalid"))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser
            .screenshot(&screenshots().join("overview.png"))
            .await;

        // Find the device; revoke its pending token, after confirming.
        browser.click("nav-devices").await;
        browser.type_into("device-id", "console-target").await;
        browser.click("device-find").await;
        browser
            .wait_for_text("device-pending", |t| t.starts_with("Pending token until"))
            .await;
        browser
            .wait_for_text("events-table", |t| t.contains("token_issued"))
            .await;
        browser.click("revoke-token").await;
        browser
            .wait_for_text("confirm-text", |t| t.contains("console-target"))
            .await;
        browser.click("confirm-ok").await;
        browser
            .wait_for_text("notice", |t| t == "Pending token revoked.")
            .await;
        browser
            .wait_for_text("device-pending", |t| t == "No pending token")
            .await;
        // The event names the admin key that acted, not just the address.
        browser
            .wait_for_text("events-table", |t| {
                t.contains("token_revoked") && t.contains("ops-alice")
            })
            .await;
        browser.screenshot(&screenshots().join("device.png")).await;

        // An id nobody enrolled is said to be unknown: nothing to revoke, but it can be
        // blocked ahead.
        browser.type_into("device-id", "never-seen-device").await;
        browser.click("device-find").await;
        browser
            .wait_for_text("device-title", |t| t == "never-seen-device")
            .await;
        assert!(browser.is_shown("device-unknown").await);
        assert!(!browser.is_enabled("revoke-device").await);
        assert!(!browser.is_enabled("revoke-token").await);
        assert_eq!(browser.text("block-device").await, "Block this id");

        // The reason picked is the reason revoked with.
        let enrolled = app.token_for("console-enrolled").await;
        let signed = app
            .sign_csr(
                &enrolled,
                "console-enrolled",
                &quick_csr("console-enrolled"),
            )
            .await;
        assert_eq!(signed.status(), StatusCode::OK);
        browser.type_into("device-id", "console-enrolled").await;
        browser.click("device-find").await;
        browser
            .wait_for_text("certificates-table", |t| t.contains("valid"))
            .await;
        assert!(!browser.is_shown("device-unknown").await);
        browser
            .select("revoke-reason", "cessationOfOperation")
            .await;
        browser.click("revoke-device").await;
        browser
            .wait_for_text("confirm-text", |t| t.contains("cessationOfOperation"))
            .await;
        browser.click("confirm-ok").await;
        browser
            .wait_for_text("certificates-table", |t| {
                t.contains("revoked (cessationOfOperation)")
            })
            .await;

        // The fleet list: by prefix, then only the devices with a pending token.
        browser.type_into("fleet-prefix", "console-").await;
        browser.click("fleet-list").await;
        browser
            .wait_for_text("fleet-table", |t| {
                t.contains("console-enrolled") && t.contains("revoked")
            })
            .await;
        assert!(!browser.is_shown("device").await);
        browser.select("fleet-state", "pending").await;
        browser.click("fleet-list").await;
        let pending = browser
            .wait_for_text("fleet-table", |t| t.contains("console-4"))
            .await;
        assert!(!pending.contains("console-enrolled"), "{pending}");
        // By group (of the certificates): the devices here are all `default`'s.
        browser.select("fleet-state", "").await;
        browser.type_into("fleet-group", "default").await;
        browser.click("fleet-list").await;
        browser
            .wait_for_text("fleet-table", |t| t.contains("console-enrolled"))
            .await;
        browser.type_into("fleet-group", "sensors").await;
        browser.click("fleet-list").await;
        // The table is emptied while the list loads: wait for the answer itself.
        browser
            .wait_for_text("fleet-table", |t| {
                !t.contains("console-enrolled") && t.contains("none")
            })
            .await;
        browser.type_into("fleet-group", "").await;
        browser.screenshot(&screenshots().join("fleet.png")).await;

        // The API agrees: the token is dead.
        let used = app
            .sign_csr(&token, "console-target", &quick_csr("console-target"))
            .await;
        assert_eq!(error_code(used).await.1, "token_used");

        // The refusal shows in the list, with its device; a path no route matches shows
        // as itself.
        let lost = app
            .client
            .get(app.url("/no/such/page"))
            .send()
            .await
            .unwrap();
        assert_eq!(lost.status(), StatusCode::NOT_FOUND);
        browser.click("nav-refusals").await;
        browser
            .wait_for_text("refusals-table", |t| {
                t.contains("token_used")
                    && t.contains("console-target")
                    && t.contains("GET /no/such/page")
            })
            .await;
        // The console's own page asked for no favicon that could be counted.
        assert!(!browser.text("refusals-table").await.contains("favicon"));
        browser
            .screenshot(&screenshots().join("refusals.png"))
            .await;

        // Signing out forgets the key.
        browser.click("sign-out").await;
        assert!(browser.is_shown("sign-in").await);
        browser.client.refresh().await.unwrap();
        assert!(browser.is_shown("sign-in").await);
    };
    tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .expect("the browser test ran out of time");
    // Dropping the browser stops the driver and Chromium.
    drop(browser);
}

#[tokio::test]
async fn without_admin_keys_there_is_no_console() {
    let app = TestApp::spawn(None).await;
    for path in [
        "/console",
        "/console/",
        "/console/app.js",
        "/console/app.css",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        // It says why, and what to set.
        let body: serde_json::Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("ADMIN_KEYS"), "{path}: {message}");
    }
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_holds_no_secret() {
    let app = TestApp::spawn_with(None, |s| {
        s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
    })
    .await;
    for path in ["/console/", "/console/app.js", "/console/app.css"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(headers["x-frame-options"], "DENY");
        let body = response.text().await.unwrap();
        assert!(!body.contains(ADMIN));
        if path == "/console/" {
            // No inline script or style for the policy to forbid.
            assert!(
                !body.contains("<script>") && !body.contains("style="),
                "{body}"
            );
        }
    }
    // The console's data needs the admin key like every admin call.
    for path in [
        "/api/v1/activity",
        "/api/v1/refusals",
        "/api/v1/devices/d1/events",
    ] {
        let anonymous = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(error_code(anonymous).await.1, "unauthorized", "{path}");
    }
}
