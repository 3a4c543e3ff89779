//! Headless Chromium driven over WebDriver: Debian's `chromium` and `chromium-driver`
//! (`scripts/test` installs them). The driver process stops when the value is dropped.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::redis::free_port;

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        let port = free_port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (chromium-driver)");
        let profile = tempfile::tempdir().unwrap();
        // The flags keep Chromium off the network (this machine's is closed) and out of
        // a sandbox it cannot have as root.
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connected = ClientBuilder::rustls()
                .unwrap()
                .capabilities(capabilities.as_object().unwrap().clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            match connected {
                Ok(client) => break client,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    let _ = driver.kill();
                    panic!("no WebDriver session: {e}");
                }
            }
        };
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    pub async fn text(&self, id: &str) -> String {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id}: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub async fn click(&self, id: &str) {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click #{id}: {e}"));
    }

    pub async fn type_into(&self, id: &str, text: &str) {
        let field = self.client.find(Locator::Id(id)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Waits until the element's text satisfies `ready`; its text then.
    pub async fn wait_for_text(&self, id: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = match self.client.find(Locator::Id(id)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if ready(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "#{id} never got there: {text:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn is_shown(&self, id: &str) -> bool {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    }

    pub async fn is_enabled(&self, id: &str) -> bool {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap()
            .is_enabled()
            .await
            .unwrap()
    }

    /// Picks the option with `value` in the `<select>` with this id.
    pub async fn select(&self, id: &str, value: &str) {
        self.client
            .find(Locator::Css(&format!("#{id} option[value='{value}']")))
            .await
            .unwrap_or_else(|e| panic!("#{id} has no option {value}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// A screenshot of the page, PNG, written to `path` (its directory made if needed).
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver and every Chromium process it started are one process group.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
