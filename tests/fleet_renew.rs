//! `enroll` with a key or CSR of the device's own, and `renew` as a device agent: only
//! when due, patient with a busy server, in a loop until Ctrl-C. Run as the real binary
//! against a real server.

mod common;

use std::path::Path;
use std::time::Duration;

use common::TestApp;
use common::bin::{BIN, enroll_into, run, text};
use common::front::reluctant_front;
use common::pki::openssl_verify;
use provisiond::device::{DeviceKey, KeyKind, carries};

const LIMIT: Duration = Duration::from_secs(90);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

async fn renew(server: &str, dir: &Path, device: &str, extra: &[&str]) -> std::process::Output {
    let (cert, key) = (
        dir.join(format!("{device}.crt")),
        dir.join(format!("{device}.key")),
    );
    let mut args = vec![
        "renew",
        "--server",
        server,
        "--cert",
        cert.to_str().unwrap(),
    ];
    args.extend(["--key", key.to_str().unwrap()]);
    args.extend_from_slice(extra);
    run(&args, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_acts_only_when_due_and_waits_out_a_busy_server() {
    common::within(LIMIT, async {
        let app = TestApp::spawn(None).await;
        let dir = tempfile::tempdir().unwrap();
        enroll_into(&app.address, "due-1", dir.path().to_str().unwrap(), &[]).await;
        let cert = dir.path().join("due-1.crt");
        let before = read(&cert);

        let early = renew(
            &app.address,
            dir.path(),
            "due-1",
            &["--if-expiring-within", "30d"],
        )
        .await;
        assert!(early.status.success(), "{}", text(&early));
        assert!(text(&early).contains("due-1: not due"), "{}", text(&early));
        assert_eq!(read(&cert), before);

        let bad = renew(
            &app.address,
            dir.path(),
            "due-1",
            &["--if-expiring-within", "3w"],
        )
        .await;
        assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));

        // Due (the certificate lives 365 days), behind a front that answers 503 twice.
        let (front, seen) = reluctant_front(app.address.clone(), 2, 503).await;
        let due = renew(
            &front,
            dir.path(),
            "due-1",
            &["--if-expiring-within", "400d"],
        )
        .await;
        assert!(due.status.success(), "{}", text(&due));
        assert!(text(&due).contains("due-1: renewed"), "{}", text(&due));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_ne!(read(&cert), before);
        openssl_verify(&app.ca_pem().await, &read(&cert));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_watch_renews_again_and_again_until_ctrl_c() {
    common::within(LIMIT, async {
        let app = TestApp::spawn(None).await;
        let dir = tempfile::tempdir().unwrap();
        enroll_into(&app.address, "agent-1", dir.path().to_str().unwrap(), &[]).await;
        let unbounded = renew(&app.address, dir.path(), "agent-1", &["--watch"]).await;
        assert_eq!(unbounded.status.code(), Some(2), "--watch needs a window");

        let (cert, key) = (
            dir.path().join("agent-1.crt"),
            dir.path().join("agent-1.key"),
        );
        let mut child = tokio::process::Command::new(BIN)
            .args([
                "renew",
                "--server",
                &app.address,
                "--watch",
                "--interval",
                "1",
            ])
            .args([
                "--if-expiring-within",
                "400d",
                "--cert",
                cert.to_str().unwrap(),
            ])
            .args(["--key", key.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let mut serials = std::collections::HashSet::new();
        while serials.len() < 2 {
            let line = lines.next_line().await.unwrap().expect("the agent runs on");
            assert!(line.contains("agent-1: renewed, serial "), "{line}");
            let stamp = line.split(' ').next().unwrap();
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .unwrap();
            serials.insert(line.split("serial ").nth(1).unwrap().to_owned());
        }
        let pid = child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(130));
        openssl_verify(&app.ca_pem().await, &read(&cert));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_uses_the_devices_own_key_or_csr_and_makes_larger_rsa_keys() {
    common::within(LIMIT, async {
        let app = TestApp::spawn(None).await;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let out_dir = out.to_str().unwrap();
        let ca = app.ca_pem().await;

        let own = DeviceKey::generate(KeyKind::P384).unwrap();
        let key_file = tmp.path().join("own.key");
        std::fs::write(&key_file, own.private_key_pem()).unwrap();
        enroll_into(
            &app.address,
            "own-key",
            out_dir,
            &["--key", key_file.to_str().unwrap()],
        )
        .await;
        let cert = read(&out.join("own-key.crt"));
        openssl_verify(&ca, &cert);
        assert!(carries(&cert, &own));
        assert!(!out.join("own-key.key").exists(), "the key is not copied");

        let device = DeviceKey::generate(KeyKind::Ed25519).unwrap();
        let csr_file = tmp.path().join("own.csr");
        std::fs::write(&csr_file, device.csr_pem(Some("own-csr")).unwrap()).unwrap();
        let csr = csr_file.to_str().unwrap();
        enroll_into(&app.address, "own-csr", out_dir, &["--csr", csr]).await;
        let cert = read(&out.join("own-csr.crt"));
        assert!(carries(&cert, &device));
        assert!(!out.join("own-csr.key").exists());

        // A CSR for another device is refused by the server; a key given as a CSR is
        // refused here, before a token is spent.
        let other = run(
            &[
                "enroll",
                "--server",
                &app.address,
                "--device-id",
                "someone",
                "--out",
                out_dir,
            ]
            .into_iter()
            .chain(["--csr", csr])
            .collect::<Vec<_>>(),
            &[],
        )
        .await;
        assert_eq!(other.status.code(), Some(3), "{}", text(&other));
        assert!(
            text(&other).contains("csr_policy_violation"),
            "{}",
            text(&other)
        );
        let not_csr = run(
            &[
                "enroll",
                "--server",
                &app.address,
                "--device-id",
                "nocsr",
                "--out",
                out_dir,
            ]
            .into_iter()
            .chain(["--csr", key_file.to_str().unwrap()])
            .collect::<Vec<_>>(),
            &[],
        )
        .await;
        assert_eq!(not_csr.status.code(), Some(5), "{}", text(&not_csr));
        assert!(
            text(&not_csr).contains("not a CERTIFICATE REQUEST"),
            "{}",
            text(&not_csr)
        );
        let both = run(
            &["enroll", "--device-id", "x", "--key", "a", "--csr", "b"],
            &[],
        )
        .await;
        assert_eq!(both.status.code(), Some(2));

        for (kind, bits) in [("rsa3072", "3072"), ("rsa4096", "4096")] {
            let id = format!("big-{kind}");
            enroll_into(&app.address, &id, out_dir, &["--key-type", kind]).await;
            let printed = std::process::Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in"])
                .arg(out.join(format!("{id}.crt")))
                .output()
                .unwrap();
            let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
            assert!(
                printed.contains(&format!("Public-Key: ({bits} bit)")),
                "{printed}"
            );
        }
    })
    .await
}
