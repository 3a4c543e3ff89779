//! Running the `provisiond` binary the way an operator or a fleet script would.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;

pub const BIN: &str = env!("CARGO_BIN_EXE_provisiond");

/// Runs `provisiond args...` with `env` set (and no fleet credentials inherited).
pub async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("PROVISIOND_ENROLLMENT_KEY")
        .env_remove("PROVISIOND_DEVICE_KEY")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("the binary runs")
}

/// What it printed, stdout then stderr.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `provisiond renew` against `server`, trusting `ca_file`, on the device files `cert`
/// and `key`; with `rekey`, a new key of that type.
pub async fn renew_files(
    server: &str,
    ca_file: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
    rekey: Option<&str>,
) -> Output {
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut args = vec![
        "renew",
        "--server",
        server,
        "--ca-file",
        ca_file,
        "--cert",
        cert,
        "--key",
        key,
    ];
    if let Some(kind) = rekey {
        args.extend(["--rekey", kind]);
    }
    run(&args, &[]).await
}

/// `provisiond enroll --server <server> --device-id <device> --out <out_dir> <extra...>`,
/// which must succeed: the device's key and certificate are then in `out_dir`.
pub async fn enroll_into(server: &str, device: &str, out_dir: &str, extra: &[&str]) {
    let mut args = vec![
        "enroll",
        "--server",
        server,
        "--device-id",
        device,
        "--out",
        out_dir,
    ];
    args.extend_from_slice(extra);
    let enrolled = run(&args, &[]).await;
    assert!(enrolled.status.success(), "{}", text(&enrolled));
}

/// `provisiond bench --scenario flow` against `server` for `seconds` with `concurrency`
/// workers; its JSON report.
pub async fn bench_flow(server: String, concurrency: u32, seconds: u32) -> serde_json::Value {
    let out = run(
        &[
            "bench",
            "--server",
            &server,
            "--scenario",
            "flow",
            "--concurrency",
            &concurrency.to_string(),
            "--duration",
            &seconds.to_string(),
            "--json",
        ],
        &[],
    )
    .await;
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("bench printed no report: {}", text(&out)))
}

/// The binary in a scratch directory (so the repository's config.toml is not read).
pub fn provisiond(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    command
}

/// A running server, killed if the test ends (or fails) without stopping it.
pub struct Running(pub Option<Child>);

impl Running {
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn stop(child: Running) -> Output {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    stop_waiting(child)
}

pub fn stop_waiting(mut running: Running) -> Output {
    let mut child = running.0.take().expect("running");
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
        }
        assert!(Instant::now() < deadline, "provisiond did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Starts the binary on a free port, without Redis unless `env` says otherwise, and
/// waits until it answers.
pub async fn start(dir: &Path, env: &[(&str, &str)]) -> (Running, String) {
    let port = free_port();
    let mut command = provisiond(dir);
    command
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("REDIS_ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = Running(Some(command.spawn().unwrap()));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/livez")).await.is_err() {
        assert!(Instant::now() < deadline, "provisiond did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}
