//! The fleet commands (`enroll`, `bulk`, `bench`), run as the real binary against a
//! real server.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::Ordering;

use common::pki::openssl_verify;
use common::{RedisServer, TestApp};
use provisiond::config::OnboardingMode;
use provisiond::secret::Secret;
use serde_json::Value;

use common::bin::{BIN, text};
use common::front::reluctant_front;

async fn provisiond(args: &[&str]) -> Output {
    common::bin::run(args, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_writes_a_verified_key_and_certificate_and_will_not_overwrite_them() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_key_mode(Some(&redis)).await;
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    let enroll = |extra: &'static [&'static str]| {
        let mut args = vec![
            "enroll",
            "--server",
            &app.address,
            "--device-id",
            "edge-7",
            "--enrollment-key",
            "fleet-key-fleet-key-fleet-key-fleet-key",
            "--out",
            out_dir,
        ];
        args.extend_from_slice(extra);
        async move { provisiond(&args).await }
    };

    let first = enroll(&[]).await;
    assert!(first.status.success(), "{}", text(&first));
    let key = out.path().join("edge-7.key");
    let cert = std::fs::read_to_string(out.path().join("edge-7.crt")).unwrap();
    let ca = std::fs::read_to_string(out.path().join("ca.crt")).unwrap();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    openssl_verify(&ca, &cert);
    // The key on disk is the one in the certificate.
    let pubkey = |args: &[&str], file: &Path| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        pubkey(&["pkey", "-pubout", "-in"], &key),
        pubkey(
            &["x509", "-noout", "-pubkey", "-in"],
            &out.path().join("edge-7.crt")
        )
    );

    let again = enroll(&[]).await;
    assert_eq!(again.status.code(), Some(5), "{}", text(&again));
    assert!(text(&again).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(out.path().join("edge-7.crt")).unwrap(),
        cert
    );

    let forced = enroll(&["--force", "--key-type", "ed25519"]).await;
    assert!(forced.status.success(), "{}", text(&forced));
    assert_ne!(
        std::fs::read_to_string(out.path().join("edge-7.crt")).unwrap(),
        cert
    );

    // Distinct exit codes: a refusal (3), an unreachable server (4).
    let refused = provisiond(&[
        "enroll",
        "--server",
        &app.address,
        "--device-id",
        "edge-8",
        "--out",
        out_dir,
    ])
    .await;
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(
        text(&refused).contains("unauthorized"),
        "the server's code is shown"
    );
    let port = common::redis::free_port().to_string();
    let unreachable = provisiond(&[
        "enroll",
        "--server",
        &format!("http://127.0.0.1:{port}"),
        "--device-id",
        "edge-9",
        "--out",
        out_dir,
    ])
    .await;
    assert_eq!(unreachable.status.code(), Some(4), "{}", text(&unreachable));
    assert!(!out.path().join("edge-8.key").exists() && !out.path().join("edge-9.key").exists());
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enrolls_two_hundred_devices_and_a_rerun_skips_them_all() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    let out = tempfile::tempdir().unwrap();
    let args = [
        "bulk",
        "--server",
        &app.address,
        "--count",
        "200",
        "--prefix",
        "unit-",
        "--concurrency",
        "16",
        "--out",
        out.path().to_str().unwrap(),
    ];
    let run = provisiond(&args).await;
    assert!(run.status.success(), "{}", text(&run));
    let s = summary(out.path());
    assert_eq!(
        (s["enrolled"].as_u64(), s["failed"].as_u64()),
        (Some(200), Some(0)),
        "{s}"
    );
    let certs = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "crt")
        })
        .count();
    assert_eq!(certs, 201, "200 device certificates and ca.crt");
    let ca = std::fs::read_to_string(out.path().join("ca.crt")).unwrap();
    for id in ["unit-000001", "unit-000100", "unit-000200"] {
        openssl_verify(
            &ca,
            &std::fs::read_to_string(out.path().join(format!("{id}.crt"))).unwrap(),
        );
    }

    let rerun = provisiond(&args).await;
    assert!(rerun.status.success(), "{}", text(&rerun));
    let s = summary(out.path());
    assert_eq!(
        (s["enrolled"].as_u64(), s["skipped"].as_u64()),
        (Some(0), Some(200)),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_reads_a_csv_and_records_failures_by_code() {
    let app = TestApp::spawn(None).await;
    let out = tempfile::tempdir().unwrap();
    let csv = out.path().join("list.csv");
    std::fs::write(&csv, "model,device_id\nx,csv-1\ny,csv-2\nz,not valid\n").unwrap();
    let run = provisiond(&[
        "bulk",
        "--server",
        &app.address,
        "--csv",
        csv.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(
        run.status.code(),
        Some(1),
        "failures make exit code 1: {}",
        text(&run)
    );
    let s = summary(out.path());
    assert_eq!(s["enrolled"], 2);
    assert_eq!(s["failed_by_code"]["invalid_device_id"], 1);
    assert_eq!(s["failures"][0]["device_id"], "not valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enrolls_a_device_listed_twice_once_and_says_so() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    let out = tempfile::tempdir().unwrap();
    let csv = out.path().join("list.csv");
    std::fs::write(&csv, "device_id\ntwin-1\ntwin-2\ntwin-1\ntwin-1\n").unwrap();
    let args = [
        "bulk",
        "--server",
        &app.address,
        "--csv",
        csv.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ];
    let run = provisiond(&args).await;
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains("repeated in the list, enrolled once: twin-1, twin-1"),
        "{}",
        text(&run)
    );
    let s = summary(out.path());
    assert_eq!(
        (s["total"].as_u64(), s["enrolled"].as_u64()),
        (Some(4), Some(2)),
        "{s}"
    );
    assert_eq!(s["duplicates"], serde_json::json!(["twin-1", "twin-1"]));
    // One certificate was issued for twin-1, not two: the server saw one onboarding.
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"provisiond_certificates_issued_total{key_type="ecdsa-p256"} 2"#),
        "{metrics}"
    );
    // Each run keeps its own summary beside summary.json.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let rerun = provisiond(&args).await;
    assert!(rerun.status.success(), "{}", text(&rerun));
    let runs = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("summary-") && name.ends_with(".json")
        })
        .count();
    assert_eq!(runs, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enrolls_against_a_derived_mode_server() {
    const GROUP_SECRET: &str = "bulk-group-secret-bulk-group-secret-bulk";
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), |s| {
        s.onboarding.mode = OnboardingMode::Derived;
        s.onboarding.group_secret = Some(Secret::new(GROUP_SECRET));
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let secret_file = out.path().join("group.secret");
    std::fs::write(&secret_file, GROUP_SECRET).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let by_secret = provisiond(&[
        "bulk",
        "--server",
        &app.address,
        "--count",
        "3",
        "--prefix",
        "derived-",
        "--group-secret-file",
        secret_file.to_str().unwrap(),
        "--out",
        out.path().join("a").to_str().unwrap(),
    ])
    .await;
    assert!(by_secret.status.success(), "{}", text(&by_secret));
    assert_eq!(summary(&out.path().join("a"))["enrolled"], 3);

    // Or each device's own key, from the CSV, as the factory line recorded them.
    let csv = out.path().join("keys.csv");
    let key = |id: &str| {
        provisiond::auth::derived::encode_key(&provisiond::auth::derived::device_key(
            GROUP_SECRET.as_bytes(),
            id,
        ))
    };
    std::fs::write(
        &csv,
        format!(
            "device_id,device_key\nkeyed-1,{}\nkeyed-2,{}\nkeyed-3,{}\n",
            key("keyed-1"),
            key("keyed-2"),
            key("keyed-1")
        ),
    )
    .unwrap();
    let by_key = provisiond(&[
        "bulk",
        "--server",
        &app.address,
        "--csv",
        csv.to_str().unwrap(),
        "--out",
        out.path().join("b").to_str().unwrap(),
    ])
    .await;
    assert_eq!(by_key.status.code(), Some(1), "{}", text(&by_key));
    let s = summary(&out.path().join("b"));
    assert_eq!(s["enrolled"], 2, "{s}");
    // keyed-3 carried keyed-1's key: the server refused it.
    assert_eq!(s["failures"][0]["device_id"], "keyed-3");
    assert_eq!(s["failures"][0]["code"], "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_retries_a_server_that_answers_429_for_a_while() {
    let app = TestApp::spawn(None).await;
    let (front, seen) = reluctant_front(app.address.clone(), 24, 429).await;
    let out = tempfile::tempdir().unwrap();
    let run = provisiond(&[
        "bulk",
        "--server",
        &front,
        "--count",
        "20",
        "--prefix",
        "busy-",
        "--concurrency",
        "8",
        "--out",
        out.path().to_str().unwrap(),
    ])
    .await;
    assert!(run.status.success(), "{}", text(&run));
    let s = summary(out.path());
    assert_eq!(s["enrolled"], 20, "{s}");
    assert!(s["retries"].as_u64().unwrap() >= 24, "{s}");
    assert!(seen.load(Ordering::SeqCst) >= 24 + 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_throughput_as_json() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    let run = provisiond(&[
        "bench",
        "--server",
        &app.address,
        "--duration",
        "2",
        "--concurrency",
        "8",
        "--json",
    ])
    .await;
    assert!(run.status.success(), "{}", text(&run));
    let report: Value = serde_json::from_slice(&run.stdout).expect("one JSON object");
    assert_eq!(report["scenario"], "flow");
    for endpoint in ["onboarding", "sign-csr", "flow"] {
        let r = &report["results"][endpoint];
        assert!(r["ok"].as_u64().unwrap() > 0, "{endpoint}: {r}");
        assert!(r["per_second"].as_f64().unwrap() > 0.0);
        assert!(r["p99_ms"].as_f64().unwrap() >= r["p50_ms"].as_f64().unwrap());
        assert_eq!(r["errors"], serde_json::json!({}), "{endpoint}: {r}");
        assert_eq!(r["requests"], r["ok"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fails_when_nothing_succeeds_and_counts_refusals_as_refusals() {
    let app = TestApp::spawn_key_mode(None).await;
    let run = provisiond(&[
        "bench",
        "--server",
        &app.address,
        "--scenario",
        "onboarding",
        "--devices",
        "200",
        "--concurrency",
        "4",
        "--json",
    ])
    .await;
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    let report: Value = serde_json::from_slice(&run.stdout).expect("one JSON object");
    // Every refusal is a 401, and the connection stays open after each: no network errors.
    assert_eq!(
        report["results"]["onboarding"]["errors"],
        serde_json::json!({ "unauthorized": 200 })
    );
    // Nothing listening: exit 4.
    let nobody = format!("http://127.0.0.1:{}", common::redis::free_port());
    let run = provisiond(&["bench", "--server", &nobody, "--duration", "1"]).await;
    assert_eq!(run.status.code(), Some(4), "{}", text(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_bulk_cleanly_and_a_rerun_finishes_the_job() {
    let app = TestApp::spawn(None).await;
    let out = tempfile::tempdir().unwrap();
    let args = [
        "bulk",
        "--server",
        &app.address,
        "--count",
        "3000",
        "--prefix",
        "int-",
        "--concurrency",
        "4",
        "--out",
        out.path().to_str().unwrap(),
    ];
    let child = tokio::process::Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it get going, then interrupt it as Ctrl-C would.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(out.path()).unwrap().count() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "bulk made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output));

    let s = summary(out.path());
    assert_eq!(s["interrupted"], true, "{s}");
    let done = s["enrolled"].as_u64().unwrap();
    assert!(done > 0 && done < 3000, "{s}");
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "no half-written file"
    );
    for cert in names
        .iter()
        .filter(|n| n.starts_with("int-") && n.ends_with(".crt"))
    {
        let key = cert.replace(".crt", ".key");
        assert!(names.contains(&key), "{cert} has its key");
    }
    assert_eq!(
        names
            .iter()
            .filter(|n| n.ends_with(".crt") && n.starts_with("int-"))
            .count() as u64,
        done
    );

    let rerun = provisiond(&args).await;
    assert!(rerun.status.success(), "{}", text(&rerun));
    let s = summary(out.path());
    assert_eq!(s["skipped"].as_u64().unwrap(), done);
    assert_eq!(s["enrolled"].as_u64().unwrap(), 3000 - done);
}
