//! A two-tier PKI with the real binary on a real Redis: a one-tier CA moved under an
//! offline root (`ca init-root`, `intermediate-csr`, `sign-intermediate`,
//! `import-intermediate`); devices then get their certificate followed by the
//! intermediate and the root as `ca_certificate`, OpenSSL and a Mosquitto trusting the
//! root alone accept them, and certificates issued before the move keep verifying.
//! Imports that do not fit the key or the root are refused and change nothing.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::bin::enroll_into;
use common::bin::{provisiond, start, stop, text};
use common::mosquitto::Mosquitto;
use common::{RedisServer, path, within};

/// `provisiond <args>` in `dir`, the CA in `dir/certs`.
fn ca(dir: &Path, args: &[&str]) -> Output {
    provisiond(dir)
        .args(args)
        .env("CERTS_DIR", dir.join("certs"))
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{}", text(&output));
    text(&output)
}

fn verify(ca_file: &Path, untrusted: &Path, cert: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", path(ca_file), "-untrusted"])
        .args([path(untrusted), path(cert)])
        .output()
        .unwrap();
    (out.status.success(), text(&out))
}

/// `ca sign-intermediate` in `dir`: the root in `root` signs `csr` into `out`.
fn sign_intermediate(dir: &Path, root: &Path, csr: &Path, out: &Path) {
    ok(ca(
        dir,
        &[
            "ca",
            "sign-intermediate",
            "--root",
            path(root),
            "--csr",
            path(csr),
            "--days",
            "365",
            "--out",
            path(out),
        ],
    ));
}

/// Makes a root in `dir/root` and moves the CA in `dir/certs` under it.
fn move_under_a_root(dir: &Path) {
    ok(ca(
        dir,
        &["ca", "init-root", "--out", path(&dir.join("root"))],
    ));
    let csr = dir.join("issuing.csr");
    ok(ca(dir, &["ca", "intermediate-csr", "--out", path(&csr)]));
    let chain = dir.join("chain.pem");
    sign_intermediate(dir, &dir.join("root"), &csr, &chain);
    ok(ca(
        dir,
        &["ca", "import-intermediate", "--cert", path(&chain)],
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_present_the_intermediate_and_trust_the_root_and_old_certificates_still_verify() {
    let redis = RedisServer::start();
    within(Duration::from_secs(150), async {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        ok(ca(dir, &["ca", "init"]));
        let certs = dir.join("certs");
        let env = [
            ("CERTS_DIR", path(&certs).to_owned()),
            ("REDIS_ENABLED", "true".into()),
            ("REDIS_URL", redis.url()),
            ("ONBOARDING_MODE", "open".into()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let devices = dir.join("devices");
        let (server, base) = start(dir, &env).await;
        enroll_into(&base, "before-1", path(&devices), &[]).await;
        stop(server);

        move_under_a_root(dir);
        ok(ca(dir, &["ca", "ocsp-signer"]));
        let root = dir.join("root").join("root.crt");
        {
            use std::os::unix::fs::PermissionsExt;
            let key = std::fs::metadata(dir.join("root").join("root.key")).unwrap();
            assert_eq!(key.permissions().mode() & 0o777, 0o600);
        }

        let (server, base) = start(dir, &env).await;
        // Another directory: `enroll` will not replace a ca.crt that names another CA.
        let moved = dir.join("moved");
        enroll_into(&base, "after-1", path(&moved), &[]).await;
        let after = moved.join("after-1.crt");
        let presented = std::fs::read_to_string(&after).unwrap();
        assert_eq!(
            presented.matches("BEGIN CERTIFICATE").count(),
            2,
            "the leaf, then the intermediate: {presented}"
        );
        assert_eq!(
            std::fs::read_to_string(moved.join("ca.crt")).unwrap(),
            std::fs::read_to_string(&root).unwrap(),
            "ca_certificate is the root"
        );
        let (good, said) = verify(&root, &after, &after);
        assert!(good, "{said}");
        // The same directory again: its ca.crt is the root that ends the served chain.
        enroll_into(&base, "after-2", path(&moved), &[]).await;
        // A broker's CRL fetcher pinned to the root alone.
        let crl = dir.join("crl.pem");
        let fetched = common::bin::run(
            &[
                "crl",
                "--server",
                &base,
                "--ca-file",
                path(&root),
                "--out",
                path(&crl),
            ],
            &[],
        )
        .await;
        assert!(fetched.status.success(), "{}", text(&fetched));
        let checked = Command::new("openssl")
            .args([
                "verify",
                "-crl_check",
                "-CAfile",
                path(&root),
                "-CRLfile",
                path(&crl),
            ])
            .args(["-untrusted", path(&after), path(&after)])
            .output()
            .unwrap();
        assert!(checked.status.success(), "{}", text(&checked));
        // Issued before the move, by the same key under the same name.
        let before = devices.join("before-1.crt");
        let (good, said) = verify(&root, &certs.join("ca.crt"), &before);
        assert!(good, "{said}");
        let served = reqwest::get(format!("{base}/api/v1/ca"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            served,
            std::fs::read_to_string(certs.join("ca.crt")).unwrap()
        );
        // CMP sends the intermediate in extraCerts and the root in caPubs: OpenSSL's
        // client, trusting the root alone for what it enrolls, accepts the certificate.
        let code: serde_json::Value = common::json_of(
            reqwest::Client::new()
                .post(format!("{base}/api/v1/onboarding"))
                .json(&serde_json::json!({"device_id": "after-cmp"})),
        )
        .await;
        let key = moved.join("after-cmp.key");
        ok(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-out", path(&key)])
            .output()
            .unwrap());
        let (cmp_cert, cmp_pubs) = (moved.join("after-cmp.crt"), moved.join("capubs.pem"));
        let (enrolled, said) = common::pki::openssl(&[
            "cmp",
            "-cmd",
            "ir",
            "-server",
            base.trim_start_matches("http://"),
            "-path",
            ".well-known/cmp",
            "-ref",
            "after-cmp",
            "-secret",
            &format!("pass:{}", code["enrollment_code"].as_str().unwrap()),
            "-newkey",
            path(&key),
            "-subject",
            "/CN=after-cmp",
            "-implicit_confirm",
            "-out_trusted",
            path(&root),
            "-certout",
            path(&cmp_cert),
            "-cacertsout",
            path(&cmp_pubs),
        ]);
        assert!(enrolled, "{said}");
        assert_eq!(
            std::fs::read_to_string(&cmp_pubs).unwrap(),
            std::fs::read_to_string(&root).unwrap(),
            "caPubs is the root"
        );
        let records = redis.certificate_records();
        assert_eq!(records, 4);

        // A broker whose cafile holds the root alone lets in the device that presents
        // its chain.
        let broker = Mosquitto::start(&certs, &root, None);
        let published = broker.publish(&root, Some((&after, &moved.join("after-1.key"))));
        assert!(published.status.success(), "{}", text(&published));
        // One sending its leaf alone (issued before the move) needs the chain in the
        // broker's cafile, as /api/v1/ca serves it, during the move.
        let leaf_only = broker.publish(&root, Some((&before, &devices.join("before-1.key"))));
        assert!(!leaf_only.status.success());
        drop(broker);
        let served_file = dir.join("served.pem");
        std::fs::write(&served_file, &served).unwrap();
        let broker = Mosquitto::start(&certs, &served_file, None);
        let published = broker.publish(&root, Some((&before, &devices.join("before-1.key"))));
        assert!(published.status.success(), "{}", text(&published));
        drop(broker);
        // OCSP by the delegated responder the intermediate certified: a client that
        // trusts the root alone verifies it (the response carries the intermediate).
        let issuer = dir.join("issuing.pem");
        let chain = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
        let first_end = chain.find("-----END CERTIFICATE-----").unwrap() + 26;
        std::fs::write(&issuer, &chain[..first_end]).unwrap();
        let (_, said) = common::pki::openssl(&[
            "ocsp",
            "-issuer",
            path(&issuer),
            "-cert",
            path(&after),
            "-url",
            &format!("{base}/ocsp"),
            "-CAfile",
            path(&root),
        ]);
        assert!(said.contains("Response verify OK"), "{said}");
        assert!(said.contains("after-1.crt: good"), "{said}");
        stop(server);
    })
    .await;
}

#[test]
fn an_import_that_does_not_fit_the_key_or_the_root_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ok(ca(dir, &["ca", "init"]));
    let current = std::fs::read(dir.join("certs").join("ca.crt")).unwrap();

    // An intermediate for another server's key.
    let other = tempfile::tempdir().unwrap();
    ok(ca(other.path(), &["ca", "init"]));
    move_under_a_root(other.path());
    let foreign = other.path().join("chain.pem");
    let refused = ca(
        dir,
        &["ca", "import-intermediate", "--cert", path(&foreign)],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("do not belong together"),
        "{}",
        text(&refused)
    );

    // Our own intermediate, with a root that did not sign it.
    let ours = tempfile::tempdir().unwrap();
    std::fs::create_dir(ours.path().join("certs")).unwrap();
    for file in ["ca.crt", "ca.key"] {
        std::fs::copy(
            dir.join("certs").join(file),
            ours.path().join("certs").join(file),
        )
        .unwrap();
    }
    move_under_a_root(ours.path());
    let chain = std::fs::read_to_string(ours.path().join("chain.pem")).unwrap();
    let intermediate = dir.join("intermediate.pem");
    let first_end = chain.find("-----END CERTIFICATE-----").unwrap() + 26;
    std::fs::write(&intermediate, &chain[..first_end]).unwrap();
    let alone = ca(
        dir,
        &["ca", "import-intermediate", "--cert", path(&intermediate)],
    );
    assert!(
        text(&alone).contains("must end with the self-signed root"),
        "{}",
        text(&alone)
    );
    let wrong_root = other.path().join("root").join("root.crt");
    let refused = ca(
        dir,
        &[
            "ca",
            "import-intermediate",
            "--cert",
            path(&intermediate),
            "--root",
            path(&wrong_root),
        ],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("is not signed by the next one"),
        "{}",
        text(&refused)
    );

    // An intermediate for our key under another name (a CSR made with openssl).
    let renamed_csr = dir.join("renamed.csr");
    let made = Command::new("openssl")
        .args(["req", "-new", "-subj", "/CN=Another name", "-key"])
        .arg(dir.join("certs").join("ca.key"))
        .arg("-out")
        .arg(&renamed_csr)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let renamed = dir.join("renamed.pem");
    sign_intermediate(dir, &ours.path().join("root"), &renamed_csr, &renamed);
    let refused = ca(
        dir,
        &["ca", "import-intermediate", "--cert", path(&renamed)],
    );
    assert!(
        text(&refused).contains("is not the current CA's"),
        "{}",
        text(&refused)
    );

    assert_eq!(
        std::fs::read(dir.join("certs").join("ca.crt")).unwrap(),
        current,
        "ca.crt untouched"
    );
    assert!(!dir.join("certs").join("ca.crt.new").exists());

    // And the right root is taken.
    let right_root = ours.path().join("root").join("root.crt");
    ok(ca(
        dir,
        &[
            "ca",
            "import-intermediate",
            "--cert",
            path(&intermediate),
            "--root",
            path(&right_root),
        ],
    ));
    assert_eq!(
        std::fs::read(dir.join("certs").join("ca.crt.previous")).unwrap(),
        current
    );
}
