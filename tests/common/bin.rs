//! Running the `provisiond` binary the way an operator or a fleet script would.

use std::process::Output;

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
