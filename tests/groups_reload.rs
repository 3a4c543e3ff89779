//! SIGHUP reloads the enrollment groups from `groups_file`: a group added is taken at
//! once, a broken file keeps the groups in force, and a group removed stops taking
//! devices (its tokens are refused with `group_unknown`, never signed under another).
//! Alone in its binary: the signal goes to the whole test process.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::pki::quick_csr;
use common::{TestApp, error_code, within};
use reqwest::StatusCode;
use serde_json::json;

fn hang_up() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn onboard(app: &TestApp, device: &str, group: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/onboarding"))
        .json(&json!({ "device_id": device, "group": group }))
        .send()
        .await
        .unwrap()
}

/// Sends SIGHUP until onboarding `device` into `group` answers `status` (a reload is
/// not instant), within 10 s.
async fn until_after_reload(app: &TestApp, device: &str, group: &str, status: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(10);
    hang_up();
    loop {
        if onboard(app, device, group).await.status() == status {
            return;
        }
        assert!(Instant::now() < deadline, "no reload gave {group} {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_groups(file: &Path, text: &str) {
    std::fs::write(file, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_groups_and_a_broken_file_keeps_the_ones_in_force() {
    within(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("groups.toml");
        write_groups(
            &file,
            "[[groups]]\nname = \"lab\"\nonboarding = \"open\"\nvalidity_days = 7\n",
        );
        let app = TestApp::spawn_with(None, |s| s.groups_file = Some(file.clone())).await;
        assert_eq!(onboard(&app, "lab-1", "lab").await.status(), StatusCode::OK);
        let refused = onboard(&app, "line-1", "line").await;
        assert_eq!(
            error_code(refused).await,
            (StatusCode::FORBIDDEN, "group_unknown".into())
        );
        let lab_token = {
            let body: serde_json::Value = onboard(&app, "lab-2", "lab").await.json().await.unwrap();
            body["provisioning_token"].as_str().unwrap().to_owned()
        };

        // A group added.
        write_groups(
            &file,
            "[[groups]]\nname = \"lab\"\nonboarding = \"open\"\nvalidity_days = 7\n\n\
             [[groups]]\nname = \"line\"\nonboarding = \"open\"\n\
             device_id_pattern = \"line-[0-9]+\"\n",
        );
        until_after_reload(&app, "line-0", "line", StatusCode::OK).await;
        assert_eq!(
            onboard(&app, "line-1", "line").await.status(),
            StatusCode::OK
        );
        assert_eq!(
            error_code(onboard(&app, "other-1", "line").await).await.1,
            "device_not_allowed"
        );

        // A broken file (a key in no group's vocabulary, then not TOML at all): the
        // groups in force stay.
        for (n, broken) in [
            "[[groups]]\nname = \"lab\"\nonboarding = \"open\"\nvalidty_days = 7\n",
            "[[groups]\nname = ",
            "[[groups]]\nname = \"Not Valid\"\nonboarding = \"open\"\n",
        ]
        .into_iter()
        .enumerate()
        {
            write_groups(&file, broken);
            hang_up();
            // Read and refused (not merely not read yet): the counter says so.
            let refused = format!(
                "provisiond_groups_reloads_total{{outcome=\"refused\"}} {}",
                n + 1
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while !app.metrics().await.contains(&refused) {
                assert!(Instant::now() < deadline, "no refused reload: {refused}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                onboard(&app, "line-2", "line").await.status(),
                StatusCode::OK
            );
            assert_eq!(onboard(&app, "lab-3", "lab").await.status(), StatusCode::OK);
        }

        // A group removed: its token is refused, not signed under another group.
        write_groups(
            &file,
            "[[groups]]\nname = \"line\"\nonboarding = \"open\"\n",
        );
        until_after_reload(&app, "lab-9", "lab", StatusCode::FORBIDDEN).await;
        let refused = app.sign_csr(&lab_token, "lab-2", &quick_csr("lab-2")).await;
        assert_eq!(
            error_code(refused).await,
            (StatusCode::FORBIDDEN, "group_unknown".into())
        );
        app.stop().await;
    })
    .await;
}
