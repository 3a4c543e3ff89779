//! The README's Mosquitto recipe against a real broker: it starts as written (dropping to
//! user `mosquitto`, which must be able to read the server key), and its `pattern` ACL
//! keeps each device to `devices/<its id>/#`.

mod common;

use std::time::Duration;

use common::TestApp;
use common::bin::enroll_into;
use common::mosquitto::{Mosquitto, publish_to, subscribe_one};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_publishes_only_under_its_own_topic() {
    let app = TestApp::spawn(None).await;
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    for device in ["recipe-a", "recipe-b"] {
        enroll_into(&app.address, device, out_dir, &[]).await;
    }
    // The devices' files sit in the test's private directory; the broker only reads the CA.
    let ca = out.path().join("ca.crt");
    let shared = tempfile::tempdir().unwrap();
    let broker_ca = shared.path().join("ca.crt");
    std::fs::copy(&ca, &broker_ca).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(shared.path(), open).unwrap();
        std::fs::set_permissions(&broker_ca, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let broker = Mosquitto::start_as_recipe(&app.certs, &broker_ca);
    let files = |device: &str| {
        (
            out.path().join(format!("{device}.crt")),
            out.path().join(format!("{device}.key")),
        )
    };
    let (a_cert, a_key) = files("recipe-a");
    let (b_cert, b_key) = files("recipe-b");

    // B listens on its own topics; A writes there first, then B itself.
    let listener = subscribe_one(broker.port, &ca, &b_cert, &b_key, "devices/recipe-b/#");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let intruder = publish_to(
        broker.port,
        &ca,
        &a_cert,
        &a_key,
        "devices/recipe-b/cmd",
        "from-a",
    );
    // MQTT 3.1.1 has no way to refuse a publish: the broker acknowledges and drops it.
    assert!(intruder.status.success(), "{intruder:?}");
    let own = publish_to(
        broker.port,
        &ca,
        &b_cert,
        &b_key,
        "devices/recipe-b/state",
        "from-b",
    );
    assert!(own.status.success(), "{own:?}");
    let got = listener.wait_with_output().unwrap();
    let received = String::from_utf8_lossy(&got.stdout);
    assert_eq!(
        received.trim(),
        "from-b",
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );

    // A may use its own topics.
    let listener = subscribe_one(broker.port, &ca, &a_cert, &a_key, "devices/recipe-a/#");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let own = publish_to(
        broker.port,
        &ca,
        &a_cert,
        &a_key,
        "devices/recipe-a/state",
        "a-ok",
    );
    assert!(own.status.success(), "{own:?}");
    let got = listener.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "a-ok");
    drop(broker);
    app.stop().await;
}
