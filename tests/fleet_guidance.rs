//! The fleet commands tell an operator what to do: how to pass a key, what a URL lacks,
//! which side speaks TLS. Run as the real binary against a real server.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::TestApp;
use common::bin::{run, text};

use common::app::FLEET_KEY as KEY;
const LIMIT: Duration = Duration::from_secs(60);

async fn key_mode_server() -> TestApp {
    TestApp::spawn_key_mode(None).await
}

fn private_file(dir: &std::path::Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_says_how_to_pass_a_key_and_leaves_no_directory_behind() {
    common::within(LIMIT, async {
        let app = key_mode_server().await;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("new/out");
        let out_dir = out.to_str().unwrap();
        let enroll = |extra: &'static [&'static str], env: Vec<(&'static str, String)>| {
            let (server, out_dir) = (app.address.clone(), out_dir.to_owned());
            async move {
                let mut args = vec!["enroll", "--server", &server, "--device-id", "guided-1"];
                args.extend(["--out", &out_dir]);
                args.extend_from_slice(extra);
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                run(&args, &env).await
            }
        };

        let no_key = enroll(&[], vec![]).await;
        assert_eq!(no_key.status.code(), Some(3), "{}", text(&no_key));
        let said = text(&no_key);
        for hint in [
            "unauthorized: an enrollment key is required (HTTP 401)",
            "--enrollment-key KEY",
            "--enrollment-key-file FILE",
            "PROVISIOND_ENROLLMENT_KEY",
        ] {
            assert!(said.contains(hint), "{hint}: {said}");
        }
        assert!(!said.contains("401 Unauthorized"), "{said}");
        assert!(
            !tmp.path().join("new").exists(),
            "the failed run removed the directories it made"
        );

        let wrong = enroll(&["--enrollment-key", "not-the-key-not-the-key"], vec![]).await;
        assert_eq!(wrong.status.code(), Some(3), "{}", text(&wrong));
        assert!(text(&wrong).contains("did not accept this enrollment key"));
        assert!(
            !text(&wrong).contains("not-the-key"),
            "the key is never printed"
        );

        // The key from a file, its trailing newline trimmed; from the flag or the variable.
        let file = private_file(tmp.path(), "key", &format!("{KEY}\n"));
        let from_file = vec![("PROVISIOND_ENROLLMENT_KEY_FILE", file.clone())];
        let by_file = enroll(&[], from_file.clone()).await;
        assert!(by_file.status.success(), "{}", text(&by_file));
        assert!(out.join("guided-1.crt").exists());
        let by_flag = enroll(&["--force", "--enrollment-key", KEY], vec![]).await;
        assert!(by_flag.status.success(), "{}", text(&by_flag));

        let both = enroll(&["--enrollment-key", KEY], from_file.clone()).await;
        assert_eq!(both.status.code(), Some(2), "{}", text(&both));
        assert!(
            text(&both).contains("cannot be used with"),
            "{}",
            text(&both)
        );

        // A key file others can read is refused as a local problem, with the fix.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = enroll(&["--force"], from_file).await;
        assert_eq!(open.status.code(), Some(5), "{}", text(&open));
        assert!(text(&open).contains("chmod 600"), "{}", text(&open));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_url_without_a_scheme_is_a_bad_command_line() {
    for server in ["127.0.0.1:3002", "prov:3002", "prov"] {
        let out = run(&["enroll", "--server", server, "--device-id", "d"], &[]).await;
        assert_eq!(out.status.code(), Some(2), "{server}: {}", text(&out));
        assert!(
            text(&out).contains("--server needs a scheme, e.g. http://host:3002"),
            "{}",
            text(&out)
        );
        assert!(!text(&out).contains("builder error"));
    }
    let by_env = run(
        &["crl", "--out", "x.pem"],
        &[("PROVISIOND_SERVER", "prov:3002")],
    )
    .await;
    assert_eq!(by_env.status.code(), Some(2), "{}", text(&by_env));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_tls_port_and_an_untrusted_certificate_say_what_to_do_first() {
    common::within(LIMIT, async {
        let certs = tempfile::tempdir().unwrap();
        let (_app, https) = common::app::spawn_tls(certs.path(), |_| {}).await;
        let plain = https.replace("https://", "http://");
        let out = tempfile::tempdir().unwrap();
        let out_dir = out.path().to_str().unwrap();

        let http = run(
            &[
                "enroll",
                "--server",
                &plain,
                "--device-id",
                "t-1",
                "--out",
                out_dir,
            ],
            &[],
        )
        .await;
        assert_eq!(http.status.code(), Some(4), "{}", text(&http));
        assert!(
            text(&http).contains("the server speaks HTTPS: use https://"),
            "{}",
            text(&http)
        );

        let untrusted = run(
            &[
                "enroll",
                "--server",
                &https,
                "--device-id",
                "t-1",
                "--out",
                out_dir,
            ],
            &[],
        )
        .await;
        assert_eq!(untrusted.status.code(), Some(4), "{}", text(&untrusted));
        let said = String::from_utf8_lossy(&untrusted.stderr).into_owned();
        let line = said
            .lines()
            .find(|l| l.starts_with("provisiond:"))
            .unwrap_or_default();
        let (hint, cause) = (line.find("--ca-file"), line.find("UnknownIssuer"));
        assert!(
            hint.is_some() && cause.is_some() && hint < cause,
            "the hint comes before the raw cause: {said}"
        );

        let ca = certs.path().join("ca.crt");
        let trusted = run(
            &[
                "enroll",
                "--server",
                &https,
                "--ca-file",
                ca.to_str().unwrap(),
                "--device-id",
                "t-1",
                "--out",
                out_dir,
            ],
            &[],
        )
        .await;
        assert!(trusted.status.success(), "{}", text(&trusted));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_onboarding_commands_take_an_enrollment_key() {
    for command in ["enroll", "bulk", "bench"] {
        let help = run(&[command, "--help"], &[]).await;
        assert!(text(&help).contains("--enrollment-key-file"), "{command}");
    }
    for command in ["crl", "renew"] {
        let help = run(&[command, "--help"], &[]).await;
        assert!(!text(&help).contains("--enrollment-key"), "{command}");
        let given = run(&[command, "--enrollment-key", "k", "--out", "x"], &[]).await;
        assert_eq!(given.status.code(), Some(2), "{command}: {}", text(&given));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_key_reads_the_group_secret_from_a_file_as_the_server_does() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "derive-group-secret-derive-group-secret";
    let file = private_file(dir.path(), "group.secret", &format!("{secret}\n"));
    let out = run(
        &[
            "derive-key",
            "--device-id",
            "fac-1",
            "--group-secret-file",
            &file,
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let expected = provisiond::auth::derived::encode_key(&provisiond::auth::derived::device_key(
        secret.as_bytes(),
        "fac-1",
    ));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let open = run(
        &[
            "derive-key",
            "--device-id",
            "fac-1",
            "--group-secret-file",
            &file,
        ],
        &[],
    )
    .await;
    assert!(!open.status.success());
    assert!(text(&open).contains("chmod 600"), "{}", text(&open));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_watch_lines_start_with_a_utc_timestamp() {
    common::within(LIMIT, async {
        let app = TestApp::spawn(None).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("crl.pem");
        let mut child = tokio::process::Command::new(common::bin::BIN)
            .args([
                "crl",
                "--server",
                &app.address,
                "--out",
                out.to_str().unwrap(),
            ])
            .args(["--watch", "1"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let written = lines.next_line().await.unwrap().unwrap();
        let unchanged = lines.next_line().await.unwrap().unwrap();
        let _ = child.start_kill();
        for line in [&written, &unchanged] {
            let (stamp, rest) = line.split_once(' ').unwrap();
            assert!(stamp.ends_with('Z'), "{line}");
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(rest.starts_with("CRL "), "{line}");
        }
        assert!(written.contains("written to") && unchanged.contains("unchanged"));
    })
    .await
}
