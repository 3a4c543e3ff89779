//! What the console keeps is what operators need: a flood of refusals, with one token or
//! with none, pushes out nobody else's history, and a refusal is filed under a device
//! only once the caller proved to act for it.

mod common;

use common::TestApp;
use common::pki::quick_csr;
use provisiond::config::KeyList;
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "audit-admin-key-audit-admin-key-audit!";

async fn spawn() -> TestApp {
    TestApp::spawn_with(None, |s| s.admin.keys = KeyList(vec![Secret::new(ADMIN)])).await
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    app.get_json_as(ADMIN, path).await
}

async fn events(app: &TestApp, device: &str) -> Vec<String> {
    let answer = admin_get(app, &format!("/api/v1/devices/{device}/events")).await;
    answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_holders_refusals_push_out_no_other_devices_history() {
    let app = spawn().await;
    let token = app.token_for("victim-1").await;
    let signed = app
        .sign_csr(&token, "victim-1", &quick_csr("victim-1"))
        .await;
    assert_eq!(signed.status(), StatusCode::OK);
    let before = events(&app, "victim-1").await;
    assert_eq!(
        before,
        ["certificate_issued", "token_consumed", "token_issued"],
        "{before:?}"
    );

    // More refusals than the console keeps events, all with one valid token (a bad CSR
    // burns nothing, so the token stays good for the next one).
    let token = app.token_for("flooder-1").await;
    let flood = (0..5_200).map(|_| {
        app.client
            .post(app.url("/api/v1/sign-csr"))
            .bearer_auth(&token)
            .json(&json!({ "device_id": "flooder-1", "csr": "not a csr" }))
    });
    let mut answers = send_all(flood).await;
    answers.sort_unstable();
    answers.dedup();
    assert_eq!(answers, [400]);

    assert_eq!(events(&app, "victim-1").await, before);
    let own = events(&app, "flooder-1").await;
    assert_eq!(own.len(), 50, "one device's page shows its latest 50");
    assert_eq!(own[0], "token_rejected");
}

/// Sends every request, 16 at a time; their statuses.
async fn send_all(requests: impl Iterator<Item = reqwest::RequestBuilder>) -> Vec<u16> {
    let mut statuses = Vec::new();
    let mut requests = requests.peekable();
    while requests.peek().is_some() {
        let mut batch = tokio::task::JoinSet::new();
        for request in requests.by_ref().take(16) {
            batch.spawn(request.send());
        }
        for response in batch.join_all().await {
            statuses.push(response.unwrap().status().as_u16());
        }
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_filed_under_a_device_only_once_the_caller_proved_to_act_for_it() {
    let app = spawn().await;
    // No token: the body's device id is anyone's to write.
    let anonymous = app
        .client
        .post(app.url("/api/v1/sign-csr"))
        .json(&json!({ "device_id": "framed-1", "csr": quick_csr("framed-1") }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // A token for one device, a body naming another: filed under the token's device.
    let token = app.token_for("caller-1").await;
    let mismatch = app
        .sign_csr(&token, "framed-1", &quick_csr("framed-1"))
        .await;
    assert_eq!(mismatch.status(), StatusCode::FORBIDDEN);

    let refusals = admin_get(&app, "/api/v1/refusals").await;
    let refusals = refusals["refusals"].as_array().unwrap();
    let filed: Vec<(&str, Option<&str>)> = refusals
        .iter()
        .map(|r| (r["code"].as_str().unwrap(), r["device_id"].as_str()))
        .collect();
    assert_eq!(
        filed,
        [
            ("device_mismatch", Some("caller-1")),
            ("token_invalid", None)
        ],
        "{refusals:?}"
    );
    assert!(events(&app, "framed-1").await.is_empty());
    assert_eq!(events(&app, "caller-1").await[0], "token_rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_without_a_credential_push_out_none_of_the_others() {
    let app = spawn().await;
    let token = app.token_for("used-1").await;
    let csr = quick_csr("used-1");
    assert_eq!(
        app.sign_csr(&token, "used-1", &csr).await.status(),
        StatusCode::OK
    );
    let again = app.sign_csr(&token, "used-1", &csr).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);

    // More anonymous refusals than the list keeps.
    let flood = (0..600).map(|i| app.client.get(app.url(&format!("/nowhere/{i}"))));
    let statuses = send_all(flood).await;
    assert!(statuses.iter().all(|s| *s == 404));

    let refusals = admin_get(&app, "/api/v1/refusals?code=token_used").await;
    let used = refusals["refusals"].as_array().unwrap();
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[0]["device_id"], "used-1");
    let totals = admin_get(&app, "/api/v1/activity").await;
    assert_eq!(totals["totals"]["refusals"]["not_found"], 600, "{totals}");
}
