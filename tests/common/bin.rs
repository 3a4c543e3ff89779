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
