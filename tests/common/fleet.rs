//! MQTT fleet provisioning for tests: a server with the MQTT listener, TLS and a real
//! Redis, claims made by `provisiond claim create`, and the AWS IoT Device SDK for Python
//! (`target/awsiot-venv`, made by `scripts/test`) driven by `tests/aws/fleet_provisioning.py`.

use std::path::{Path, PathBuf};

use provisiond::config::{Overrides, Settings};
use provisiond::secret::Secret;
use serde_json::Value;
use tempfile::TempDir;

use super::pki::openssl;
use super::{RedisServer, TestApp, path};

pub const ADMIN: &str = "fleet-admin-key-fleet-admin-key-fleet!";
pub const SDK_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/awsiot-venv/bin/python");
pub const SDK_FLOW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/aws/fleet_provisioning.py"
);

/// Two groups: `sensors` (device ids `sensor-<serial>`, server-made keys allowed, a device
/// configuration) and `gateways` (a pre-issuance hook at `hook_url`).
pub fn config(hook_url: &str) -> String {
    format!(
        r#"
[[groups]]
name = "sensors"
onboarding = "open"
device_id_pattern = "^sensor-[0-9]+$"
[groups.mqtt]
device_id = "sensor-{{SerialNumber}}"
create_keys = true
[groups.mqtt.device_configuration]
broker = "mqtts://broker.example:8883"
interval = "60"

[[groups]]
name = "gateways"
onboarding = "open"
[groups.mqtt]
device_id = "gw-{{SerialNumber}}"
[groups.hook]
url = "{hook_url}"
secret = "{}"
timeout_ms = 2000
"#,
        super::hook::SECRET
    )
}

pub struct Fleet {
    pub app: TestApp,
    /// The API over HTTPS (`server.tls` is on), and a client trusting its CA.
    pub base: String,
    pub https: reqwest::Client,
    pub dir: TempDir,
    pub redis: RedisServer,
    pub port: u16,
}

impl Fleet {
    pub async fn get(&self, base: &str, path: &str) -> String {
        let response = self
            .https
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    /// An admin POST; its status and JSON.
    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .https
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The server with `config`, its HTTPS and MQTT certificate for 127.0.0.1, and a
    /// claim for each of `groups` (in `<dir>/<group>/`).
    pub async fn start(config: &str, groups: &[&str]) -> Self {
        Self::start_with(config, groups, |_| {}).await
    }

    pub async fn start_with(
        config: &str,
        groups: &[&str],
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let file = dir.path().join("config.toml");
        std::fs::write(&file, config).unwrap();
        let env = [("CERTS_DIR", path(&certs))];
        let made = super::bin::run(
            &[
                "ca",
                "server-cert",
                "--dns",
                "localhost",
                "--ip",
                "127.0.0.1",
                "--config",
                path(&file),
            ],
            &env,
        )
        .await;
        assert!(made.status.success(), "{}", super::bin::text(&made));
        for group in groups {
            let out = dir.path().join(group);
            let made = super::bin::run(
                &[
                    "claim",
                    "create",
                    "--group",
                    group,
                    "--days",
                    "30",
                    "--out",
                    path(&out),
                    "--config",
                    path(&file),
                ],
                &env,
            )
            .await;
            assert!(made.status.success(), "{}", super::bin::text(&made));
        }
        let redis = RedisServer::start();
        let loaded = Settings::load(Some(&file), &Overrides::default()).unwrap();
        let mut settings = super::app::test_settings(Some(&redis), &certs);
        settings.groups = loaded.groups;
        settings.server.tls.cert = Some(certs.join("server.crt"));
        settings.server.tls.key = Some(certs.join("server.key"));
        settings.mqtt.listen = Some("127.0.0.1:0".into());
        settings.admin.keys = provisiond::config::KeyList(vec![Secret::new(ADMIN)]);
        adjust(&mut settings);
        let app = TestApp::spawn_settings(settings).await;
        let port = app.mqtt_port.expect("the MQTT listener is on");
        let base = format!(
            "https://localhost:{}",
            app.address.rsplit(':').next().unwrap()
        );
        let https = super::app::https_client(&certs.join("ca.crt"), None);
        Self {
            app,
            base,
            https,
            dir,
            redis,
            port,
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.crt")
    }

    pub fn claim(&self, group: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.path().join(group);
        (dir.join("claim.crt"), dir.join("claim.key"))
    }

    /// The SDK's flow with `identity` (certificate, key) as the claim: its JSON.
    pub async fn provision(&self, identity: &(PathBuf, PathBuf), run: Run<'_>) -> Value {
        let port = self.port.to_string();
        let ca = self.ca();
        let mut args = vec![
            SDK_FLOW,
            "--endpoint",
            "127.0.0.1",
            "--port",
            &port,
            "--ca",
            path(&ca),
            "--cert",
            path(&identity.0),
            "--key",
            path(&identity.1),
            "--client-id",
            run.client_id,
            "--template",
            run.template,
            "--protocol",
            run.protocol,
        ];
        let csr_file;
        if let Some(csr) = run.csr {
            csr_file = self.dir.path().join(format!("{}.csr", run.client_id));
            std::fs::write(&csr_file, csr).unwrap();
            args.extend(["--csr", path(&csr_file)]);
        }
        let parameters: Vec<String> = run.parameters.iter().map(|p| p.to_string()).collect();
        for p in &parameters {
            args.extend(["--parameter", p]);
        }
        if let Some(token) = run.ownership_token {
            args.extend(["--ownership-token", token]);
        }
        let out = tokio::process::Command::new("timeout")
            .arg("90")
            .arg(SDK_PYTHON)
            .args(&args)
            .kill_on_drop(true)
            .output()
            .await
            .expect("scripts/test makes target/awsiot-venv");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "the SDK flow printed no JSON: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    pub async fn metric(&self, line: &str) -> f64 {
        let text = self.get(&self.base, "/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// One run of the SDK's flow.
pub struct Run<'a> {
    pub client_id: &'a str,
    pub template: &'a str,
    pub protocol: &'a str,
    /// `None`: CreateKeysAndCertificate.
    pub csr: Option<&'a str>,
    pub parameters: &'a [&'a str],
    pub ownership_token: Option<&'a str>,
}

impl<'a> Run<'a> {
    pub fn csr(
        client_id: &'a str,
        template: &'a str,
        csr: &'a str,
        parameters: &'a [&'a str],
    ) -> Self {
        Self {
            client_id,
            template,
            protocol: "mqtt3",
            csr: Some(csr),
            parameters,
            ownership_token: None,
        }
    }
}

/// A P-256 key and a CSR for `cn`, made by OpenSSL in `dir`.
pub fn key_and_csr(dir: &Path, cn: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{cn}.key"));
    let csr = dir.join(format!("{cn}.req"));
    let (ok, said) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        path(&key),
        "-subj",
        &format!("/CN={cn}"),
        "-out",
        path(&csr),
    ]);
    assert!(ok, "{said}");
    (key, std::fs::read_to_string(csr).unwrap())
}

pub fn rejected(result: &Value) -> &str {
    result["rejected"]["errorCode"]
        .as_str()
        .unwrap_or_else(|| panic!("not rejected: {result}"))
}
