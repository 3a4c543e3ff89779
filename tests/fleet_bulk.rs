//! `provisiond bulk`: stopping early on a missing key, CSV headers, existing keys and
//! CSRs, and the manifest. Run as the real binary against a real server.

mod common;

use std::path::Path;
use std::time::Duration;

use common::TestApp;
use common::bin::{run, text};
use common::pki::openssl_verify;
use provisiond::config::OnboardingMode;
use provisiond::device::{DeviceKey, KeyKind};
use provisiond::secret::Secret;
use serde_json::Value;

use common::app::FLEET_KEY as KEY;
const LIMIT: Duration = Duration::from_secs(90);

async fn key_mode_server() -> TestApp {
    TestApp::spawn_key_mode(None).await
}

async fn bulk(server: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["bulk", "--server", server, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args, &[]).await
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_without_a_key_stops_after_five_refusals_and_says_how_to_pass_one() {
    common::within(LIMIT, async {
        let app = key_mode_server().await;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("fleet");
        let count = ["--count", "500", "--prefix", "nokey-", "--concurrency", "2"];
        let stopped = bulk(&app.address, &out, &count).await;
        assert_eq!(stopped.status.code(), Some(3), "{}", text(&stopped));
        let said = String::from_utf8_lossy(&stopped.stderr).into_owned();
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {said}");
        assert!(lines[0].contains("first 5 devices were all refused with unauthorized"));
        assert!(lines[0].contains("--enrollment-key-file FILE"), "{said}");
        assert!(!out.exists(), "nothing enrolled, nothing left: {said}");
        // It stopped: the server saw a handful of onboardings, not 500.
        let refused = app.metrics().await;
        let onboardings: u64 = refused
            .lines()
            .filter(|l| {
                l.starts_with("provisiond_http_request_duration_seconds_count")
                    && l.contains("onboarding")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum();
        assert!(
            (5..20).contains(&onboardings),
            "{onboardings} onboardings:\n{refused}"
        );

        // Fewer than five devices: all of them decide.
        let two = bulk(&app.address, &out, &["--count", "2", "--prefix", "few-"]).await;
        assert_eq!(two.status.code(), Some(3), "{}", text(&two));
        assert!(
            text(&two).contains("first 2 devices were all refused"),
            "{}",
            text(&two)
        );

        // With the key, the same run goes through.
        let keyed = bulk(
            &app.address,
            &out,
            &["--count", "3", "--prefix", "few-", "--enrollment-key", KEY],
        )
        .await;
        assert!(keyed.status.success(), "{}", text(&keyed));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_does_not_stop_early_on_a_mix_of_outcomes() {
    common::within(LIMIT, async {
        const SECRET: &str = "mix-group-secret-mix-group-secret-mix";
        let app = TestApp::spawn_with(None, |s| {
            s.onboarding.mode = OnboardingMode::Derived;
            s.onboarding.group_secret = Some(Secret::new(SECRET));
        })
        .await;
        let tmp = tempfile::tempdir().unwrap();
        let key = |id: &str, secret: &str| {
            provisiond::auth::derived::encode_key(&provisiond::auth::derived::device_key(
                secret.as_bytes(),
                id,
            ))
        };
        // Four wrong keys, then right ones: refusals first, but not only refusals.
        let mut csv = String::from("device_id,device_key\n");
        for i in 0..12 {
            let id = format!("mix-{i}");
            let secret = if i < 4 {
                "another-secret-another-secret"
            } else {
                SECRET
            };
            csv.push_str(&format!("{id},{}\n", key(&id, secret)));
        }
        let list = tmp.path().join("list.csv");
        std::fs::write(&list, csv).unwrap();
        let out = tmp.path().join("out");
        let mixed = bulk(
            &app.address,
            &out,
            &["--csv", list.to_str().unwrap(), "--concurrency", "1"],
        )
        .await;
        assert_eq!(mixed.status.code(), Some(1), "{}", text(&mixed));
        let s = summary(&out);
        assert_eq!(
            (s["enrolled"].as_u64(), s["failed"].as_u64()),
            (Some(8), Some(4)),
            "{s}"
        );
        assert_eq!(s["stopped"], Value::Null, "{s}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_header_must_name_device_id_or_be_declared_absent() {
    common::within(LIMIT, async {
        let app = TestApp::spawn(None).await;
        let tmp = tempfile::tempdir().unwrap();
        let csv = |name: &str, text: &str| {
            let path = tmp.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let headerish = csv("serials.csv", "serial\nh-1\nh-2\n");
        let out = tmp.path().join("h");
        let refused = bulk(&app.address, &out, &["--csv", &headerish]).await;
        assert_eq!(refused.status.code(), Some(5), "{}", text(&refused));
        let said = text(&refused);
        assert!(
            said.contains("names no device_id column") && said.contains("--no-header"),
            "{said}"
        );
        assert!(!out.exists(), "refused before anything was made");

        let upper = csv("upper.csv", "Site,Device_ID\nlab,h-1\nlab,h-2\n");
        let run_upper = bulk(&app.address, &out, &["--csv", &upper]).await;
        assert!(run_upper.status.success(), "{}", text(&run_upper));
        assert_eq!(summary(&out)["enrolled"], 2);
        assert!(!out.join("Device_ID.crt").exists() && !out.join("Site.crt").exists());

        let bare = csv("bare.csv", "h-3\nh-4\n");
        let run_bare = bulk(&app.address, &out, &["--csv", &bare, "--no-header"]).await;
        assert!(run_bare.status.success(), "{}", text(&run_bare));
        assert_eq!(summary(&out)["enrolled"], 2);
        assert!(out.join("h-3.crt").exists());

        let contradiction = bulk(&app.address, &out, &["--csv", &upper, "--no-header"]).await;
        assert_eq!(
            contradiction.status.code(),
            Some(5),
            "{}",
            text(&contradiction)
        );
        assert!(text(&contradiction).contains("drop --no-header"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_writes_a_manifest_that_a_rerun_completes() {
    common::within(LIMIT, async {
        let app = TestApp::spawn(None).await;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let args = ["--count", "40", "--prefix", "man-", "--concurrency", "8"];
        let first = bulk(&app.address, &out, &args).await;
        assert!(first.status.success(), "{}", text(&first));
        let manifest = std::fs::read_to_string(out.join("devices.csv")).unwrap();
        let lines: Vec<&str> = manifest.lines().collect();
        assert_eq!(lines[0], "device_id,serial,not_after,cert_file,key_file");
        assert_eq!(lines.len(), 41, "{manifest}");
        let row = lines.iter().find(|l| l.starts_with("man-000007,")).unwrap();
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[3..], ["man-000007.crt", "man-000007.key"]);
        time::OffsetDateTime::parse(cells[2], &time::format_description::well_known::Rfc3339)
            .unwrap();
        let cert = std::fs::read_to_string(out.join("man-000007.crt")).unwrap();
        let serial = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(cert.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&serial.stdout).trim(),
            format!("serial={}", cells[1])
        );

        // A crash left a device done but unlisted, and a staged file: the rerun lists
        // the one and removes the other.
        let kept: String = manifest
            .lines()
            .filter(|l| !l.starts_with("man-000007,"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(out.join("devices.csv"), kept).unwrap();
        std::fs::write(out.join(".man-000041.crt.staged"), "half").unwrap();
        let rerun = bulk(&app.address, &out, &args).await;
        assert!(rerun.status.success(), "{}", text(&rerun));
        assert_eq!(summary(&out)["skipped"], 40);
        let manifest = std::fs::read_to_string(out.join("devices.csv")).unwrap();
        assert_eq!(manifest.lines().count(), 41);
        assert!(manifest.contains("man-000007,"));
        assert!(!out.join(".man-000041.crt.staged").exists());

        // The operator's own devices.csv in --out is never written to.
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("devices.csv"), "device_id\nmine-1\n").unwrap();
        let list = theirs.join("devices.csv");
        let refused = bulk(&app.address, &theirs, &["--csv", list.to_str().unwrap()]).await;
        assert_eq!(refused.status.code(), Some(5), "{}", text(&refused));
        assert_eq!(
            std::fs::read_to_string(&list).unwrap(),
            "device_id\nmine-1\n"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_uses_each_devices_own_key_or_csr() {
    common::within(LIMIT, async {
        let app = TestApp::spawn(None).await;
        let tmp = tempfile::tempdir().unwrap();
        let (keys, csrs) = (tmp.path().join("keys"), tmp.path().join("csrs"));
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::create_dir_all(&csrs).unwrap();
        let mut public = Vec::new();
        for i in 1..=3 {
            let key = DeviceKey::generate(KeyKind::P384).unwrap();
            std::fs::write(keys.join(format!("own-{i:06}.key")), key.private_key_pem()).unwrap();
            let other = DeviceKey::generate(KeyKind::Ed25519).unwrap();
            let id = format!("csr-{i:06}");
            std::fs::write(
                csrs.join(format!("{id}.csr")),
                other.csr_pem(Some(&id)).unwrap(),
            )
            .unwrap();
            public.push((key, other));
        }
        let by_key = tmp.path().join("by-key");
        let run_keys = bulk(
            &app.address,
            &by_key,
            &[
                "--count",
                "3",
                "--prefix",
                "own-",
                "--key-dir",
                keys.to_str().unwrap(),
            ],
        )
        .await;
        assert!(run_keys.status.success(), "{}", text(&run_keys));
        assert!(
            !by_key.join("own-000001.key").exists(),
            "the key stays where it is"
        );
        let ca = std::fs::read_to_string(by_key.join("ca.crt")).unwrap();
        let cert = std::fs::read_to_string(by_key.join("own-000001.crt")).unwrap();
        openssl_verify(&ca, &cert);
        assert!(provisiond::device::carries(&cert, &public[0].0));
        let manifest = std::fs::read_to_string(by_key.join("devices.csv")).unwrap();
        assert!(manifest.contains(&format!("{}", keys.join("own-000002.key").display())));

        // --csr-dir: a device without its CSR fails alone, with its own code.
        std::fs::remove_file(csrs.join("csr-000003.csr")).unwrap();
        let by_csr = tmp.path().join("by-csr");
        let run_csrs = bulk(
            &app.address,
            &by_csr,
            &[
                "--count",
                "3",
                "--prefix",
                "csr-",
                "--csr-dir",
                csrs.to_str().unwrap(),
            ],
        )
        .await;
        assert_eq!(run_csrs.status.code(), Some(1), "{}", text(&run_csrs));
        let s = summary(&by_csr);
        assert_eq!(s["enrolled"], 2, "{s}");
        assert_eq!(s["failures"][0]["code"], "local_key", "{s}");
        let cert = std::fs::read_to_string(by_csr.join("csr-000001.crt")).unwrap();
        assert!(provisiond::device::carries(&cert, &public[0].1));
        assert!(!by_csr.join("csr-000001.key").exists());
        let conflict = bulk(
            &app.address,
            &by_csr,
            &[
                "--count",
                "1",
                "--prefix",
                "x",
                "--csr-dir",
                "a",
                "--key-dir",
                "b",
            ],
        )
        .await;
        assert_eq!(conflict.status.code(), Some(2));
        let missing = tmp.path().join("missing");
        let no_dir = bulk(
            &app.address,
            &missing,
            &["--count", "2", "--prefix", "m", "--key-dir", "/nonexistent"],
        )
        .await;
        assert_eq!(no_dir.status.code(), Some(5), "{}", text(&no_dir));
        assert!(text(&no_dir).contains("--key-dir /nonexistent is not a directory"));
        assert!(!missing.exists());
    })
    .await
}
