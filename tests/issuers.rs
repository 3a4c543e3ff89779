//! A CA rollover with `[[issuers]]`, the real binary on a real Redis: a server that
//! issued from its one CA gets a second issuer put first, so new certificates and
//! renewals come from it; the old issuer keeps signing its CRL at the old path, the new
//! one at `?issuer=`, OpenSSL verifies each against its own CA, a Mosquitto trusting
//! `/api/v1/ca?bundle=all` with `?issuer=all`'s CRLs lets in a device of each issuer and
//! refuses the one whose old certificate the renewal superseded, and OCSP answers for
//! both. Configurations that cannot work are refused at start.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::bin::{enroll_into, provisiond, renew_files, start, stop, text};
use common::mosquitto::Mosquitto;
use common::pki::openssl;
use common::{RedisServer, path, within};

const ADMIN: &str = "issuers-admin-key-issuers-admin-key-issuers";

const ROLLOVER: &str = r#"
[ca]
crl_url = "http://prov.example/api/v1/crl"

[[issuers]]
name = "next"
cert = "next/ca.crt"
key = "next/ca.key"

[[issuers]]
name = "default"
cert = "certs/ca.crt"
key = "certs/ca.key"
"#;

fn ca_init(dir: &Path, certs: &str) {
    let made = provisiond(dir)
        .args(["ca", "init"])
        .env("CERTS_DIR", dir.join(certs))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
}

fn verify(args: &[&str]) -> (bool, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    openssl(&all)
}

async fn get(url: String) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn crl_into(base: &str, issuer: Option<&str>, out: &Path) -> Output {
    let mut args = vec!["crl", "--server", base, "--out", path(out)];
    if let Some(issuer) = issuer {
        args.extend(["--issuer", issuer]);
    }
    common::bin::run(&args, &[]).await
}

/// `provisiond renew` of the device files `cert` (its key beside it), trusting
/// `bundle`; the new certificate must be signed by `ca`.
async fn renew_signed_by(base: &str, bundle: &Path, cert: &Path, ca: &Path) {
    let key = cert.with_extension("key");
    let renewed = renew_files(base, path(bundle), cert, &key, None).await;
    assert!(renewed.status.success(), "{}", text(&renewed));
    let (good, said) = verify(&["-CAfile", path(ca), path(cert)]);
    assert!(good, "renewed by {}: {said}", ca.display());
}

fn ocsp(issuer: &Path, cert: &Path, base: &str) -> String {
    let (_, said) = openssl(&[
        "ocsp",
        "-issuer",
        path(issuer),
        "-cert",
        path(cert),
        "-url",
        &format!("{base}/ocsp"),
        "-CAfile",
        path(issuer),
    ]);
    assert!(said.contains("Response verify OK"), "{said}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_issuer_takes_over_while_the_first_keeps_its_crl_and_devices() {
    let redis = RedisServer::start();
    within(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        ca_init(dir, "certs");
        let (old_ca, certs) = (dir.join("certs/ca.crt"), dir.join("certs"));
        let env = [
            ("CERTS_DIR", path(&certs).to_owned()),
            ("REDIS_ENABLED", "true".into()),
            ("REDIS_URL", redis.url()),
            ("ONBOARDING_MODE", "open".into()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let before = dir.join("before");
        let (server, base) = start(dir, &env).await;
        enroll_into(&base, "old-1", path(&before), &[]).await;
        enroll_into(&base, "old-2", path(&before), &[]).await;
        stop(server);

        // The rollover: a new CA put first, the old one kept as `default`.
        ca_init(dir, "next");
        let next_ca = dir.join("next/ca.crt");
        std::fs::write(dir.join("config.toml"), ROLLOVER).unwrap();
        // The `ca` commands sign with the first issuer too.
        let server_cert = dir.join("server.crt");
        let made = provisiond(dir)
            .args(["ca", "server-cert", "--ip", "127.0.0.1", "--cert-out"])
            .arg(&server_cert)
            .arg("--key-out")
            .arg(dir.join("server.key"))
            .env("CERTS_DIR", &certs)
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", text(&made));
        let (good, said) = verify(&["-CAfile", path(&next_ca), path(&server_cert)]);
        assert!(good, "{said}");
        let (server, base) = start(dir, &env).await;

        let after = dir.join("after");
        enroll_into(&base, "new-1", path(&after), &[]).await;
        let new_1 = after.join("new-1.crt");
        let (good, said) = verify(&["-CAfile", path(&next_ca), path(&new_1)]);
        assert!(good, "signed by the first issuer: {said}");
        let (good, _) = verify(&["-CAfile", path(&old_ca), path(&new_1)]);
        assert!(!good, "not by the old one");
        let (_, dump) = openssl(&["x509", "-noout", "-text", "-in", path(&new_1)]);
        assert!(
            dump.contains("URI:http://prov.example/api/v1/crl?issuer=next"),
            "its own CRL distribution point: {dump}"
        );

        let (status, chain) = get(format!("{base}/api/v1/ca")).await;
        assert_eq!(status, 200);
        assert_eq!(chain, std::fs::read_to_string(&next_ca).unwrap());
        let (status, bundle) = get(format!("{base}/api/v1/ca?bundle=all")).await;
        assert_eq!(status, 200);
        let old_pem = std::fs::read_to_string(&old_ca).unwrap();
        assert_eq!(bundle, format!("{chain}{old_pem}"));
        let bundle_file = dir.join("bundle.pem");
        std::fs::write(&bundle_file, &bundle).unwrap();

        // Renewal moves old-1 to the current issuer and supersedes its old certificate.
        let old_1 = before.join("old-1.crt");
        let kept = dir.join("old-1-before-renewal.crt");
        std::fs::copy(&old_1, &kept).unwrap();
        renew_signed_by(&base, &bundle_file, &old_1, &next_ca).await;

        // Each issuer's CRL, fetched and checked by `provisiond crl`, verified by OpenSSL
        // against its own CA; both list the superseded certificate.
        let (old_crl, next_crl) = (dir.join("old.crl"), dir.join("next.crl"));
        let fetched = crl_into(&base, None, &old_crl).await;
        assert!(fetched.status.success(), "{}", text(&fetched));
        let fetched = crl_into(&base, Some("next"), &next_crl).await;
        assert!(fetched.status.success(), "{}", text(&fetched));
        let superseded = common::pki::openssl_x509(
            &std::fs::read_to_string(&kept).unwrap(),
            &["-noout", "-serial"],
        );
        let superseded = superseded.trim().trim_start_matches("serial=").to_owned();
        for (crl, ca) in [(&old_crl, &old_ca), (&next_crl, &next_ca)] {
            let listed = common::pki::openssl_crl(crl, "PEM", ca);
            assert!(listed.contains(&superseded), "{listed}");
        }
        let (good, said) = verify(&[
            "-crl_check",
            "-CAfile",
            path(&old_ca),
            "-CRLfile",
            path(&old_crl),
            path(&before.join("old-2.crt")),
        ]);
        assert!(good, "{said}");
        let (good, said) = verify(&[
            "-crl_check",
            "-CAfile",
            path(&old_ca),
            "-CRLfile",
            path(&old_crl),
            path(&kept),
        ]);
        assert!(!good && said.contains("revoked"), "{said}");

        // A broker during the rollover: every anchor, every CRL.
        let all_crls = dir.join("all.crl");
        let (status, all) = get(format!("{base}/api/v1/crl?issuer=all&format=pem")).await;
        assert_eq!(status, 200);
        assert_eq!(all.matches("BEGIN X509 CRL").count(), 2, "{all}");
        std::fs::write(&all_crls, &all).unwrap();
        let broker = Mosquitto::start(&certs, &bundle_file, Some(&all_crls));
        for (device, cert) in [
            ("old-2", before.join("old-2.crt")),
            ("new-1", new_1.clone()),
        ] {
            let key = cert.with_file_name(format!("{device}.key"));
            let published = broker.publish(&old_ca, Some((&cert, &key)));
            assert!(published.status.success(), "{device}: {}", text(&published));
        }
        let refused = broker.publish(&old_ca, Some((&kept, &before.join("old-1.key"))));
        assert!(!refused.status.success(), "the superseded certificate");
        let renewed_in = broker.publish(&old_ca, Some((&old_1, &before.join("old-1.key"))));
        assert!(renewed_in.status.success(), "{}", text(&renewed_in));
        drop(broker);

        // OCSP for each issuer, signed by it.
        assert!(ocsp(&old_ca, &before.join("old-2.crt"), &base).contains(": good"));
        assert!(ocsp(&next_ca, &new_1, &base).contains(": good"));
        let said = ocsp(&old_ca, &kept, &base);
        assert!(said.contains(": revoked"), "{said}");
        // A serial no issuer signed is unknown, said by the issuer asked.
        let (_, said) = openssl(&[
            "ocsp",
            "-issuer",
            path(&next_ca),
            "-serial",
            "0x8000000000000000000000000000beef",
            "-url",
            &format!("{base}/ocsp"),
            "-CAfile",
            path(&next_ca),
        ]);
        assert!(said.contains("Response verify OK"), "{said}");
        assert!(said.contains(": unknown"), "{said}");

        // Bad queries get a JSON refusal.
        for (query, status, code) in [
            ("crl?issuer=nope", 404, "issuer_unknown"),
            ("crl?issuer=all", 400, "invalid_query"),
            ("crl?issuer=NOPE", 400, "invalid_query"),
            ("ca?bundle=some", 400, "invalid_query"),
        ] {
            let (got, body) = get(format!("{base}/api/v1/{query}")).await;
            assert_eq!(got, status, "{query}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["error"]["code"], code, "{query}: {body}");
        }

        // A certificate signed with the old issuer's key outside the server, under
        // old-2's serial and name: not the recorded one, so it renews nothing.
        let (_, serial) = openssl(&[
            "x509",
            "-noout",
            "-serial",
            "-in",
            path(&before.join("old-2.crt")),
        ]);
        let serial = serial.trim().trim_start_matches("serial=").to_owned();
        let forged = dir.join("forged");
        std::fs::create_dir(&forged).unwrap();
        let (key, csr, ext) = (
            forged.join("old-2.key"),
            forged.join("old-2.csr"),
            forged.join("ext"),
        );
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
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
            "/CN=old-2",
            "-out",
            path(&csr),
        ]);
        assert!(ok, "{said}");
        let cert = forged.join("old-2.crt");
        let (ok, said) = openssl(&[
            "x509",
            "-req",
            "-in",
            path(&csr),
            "-CA",
            path(&old_ca),
            "-CAkey",
            path(&certs.join("ca.key")),
            "-set_serial",
            &format!("0x{serial}"),
            "-days",
            "30",
            "-extfile",
            path(&ext),
            "-out",
            path(&cert),
        ]);
        assert!(ok, "{said}");
        let refused = renew_files(&base, path(&bundle_file), &cert, &key, None).await;
        assert!(!refused.status.success());
        assert!(
            text(&refused).contains("certificate_unknown"),
            "{}",
            text(&refused)
        );

        // Four devices' certificates, each recorded once, plus the renewal's.
        let records = redis.certificate_records();
        assert_eq!(records, 4);
        stop(server);
    })
    .await;
}

/// Starts the binary in `dir` with `config` and expects it to refuse, saying `why`.
fn refused_at_start(dir: &Path, config: &str, why: &str) {
    refused_at_start_with(dir, config, why, &[]);
}

/// As [`refused_at_start`], with `env` too.
fn refused_at_start_with(dir: &Path, config: &str, why: &str, env: &[(&str, &str)]) {
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let out = provisiond(dir)
        .envs(env.iter().copied())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("REDIS_ENABLED", "false")
        .env("ONBOARDING_MODE", "open")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains(why), "expected `{why}` in: {said}");
}

#[test]
fn issuers_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ca_init(dir, "certs");
    ca_init(dir, "next");
    let one = "[[issuers]]\nname = \"a\"\ncert = \"certs/ca.crt\"\nkey = \"certs/ca.key\"\n";
    refused_at_start(
        dir,
        &format!(
            "{one}[[issuers]]\nname = \"b\"\ncert = \"certs/ca.crt\"\nkey = \"certs/ca.key\"\n"
        ),
        "issuers `a` and `b` are the same CA certificate",
    );
    refused_at_start(
        dir,
        "[[issuers]]\nname = \"a\"\ncert = \"certs/ca.crt\"\nkey = \"next/ca.key\"\n",
        "do not belong together",
    );
    refused_at_start(
        dir,
        &format!("{one}[[groups]]\nname = \"default\"\nonboarding = \"open\"\nissuer = \"b\"\n"),
        "no issuer is named `b`",
    );
    refused_at_start(
        dir,
        "[[issuers]]\nname = \"all\"\ncert = \"certs/ca.crt\"\nkey = \"certs/ca.key\"\n",
        "`all` is taken",
    );
    refused_at_start(dir, &format!("{one}{one}"), "two issuers are named `a`");
    refused_at_start(
        dir,
        "[[issuers]]\nname = \"a\"\ncert = \"missing/ca.crt\"\nkey = \"certs/ca.key\"\n",
        "issuer `a`: cannot read missing/ca.crt",
    );
}

const GROUPS: &str = r#"
[[groups]]
name = "sensors"
onboarding = "open"
device_id_pattern = "sensor-[0-9]+"
issuer = "default"

[[groups]]
name = "gateways"
onboarding = "open"
device_id_pattern = "gw-[0-9]+"
"#;

/// The issuer of each group, as `GET /api/v1/groups` lists it.
async fn issuers_of_groups(base: &str) -> Vec<(String, String)> {
    let listed: serde_json::Value = common::json_of(
        reqwest::Client::new()
            .get(format!("{base}/api/v1/groups"))
            .bearer_auth(ADMIN),
    )
    .await;
    listed["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_owned(),
                g["issuer"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_names_its_issuer_and_a_reload_moves_its_renewals() {
    let redis = RedisServer::start();
    within(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        ca_init(dir, "certs");
        ca_init(dir, "next");
        let (old_ca, next_ca) = (dir.join("certs/ca.crt"), dir.join("next/ca.crt"));
        std::fs::write(
            dir.join("config.toml"),
            format!("groups_file = \"groups.toml\"\n{ROLLOVER}"),
        )
        .unwrap();
        let groups_file = dir.join("groups.toml");
        std::fs::write(&groups_file, GROUPS).unwrap();
        let env = [
            ("CERTS_DIR", path(&dir.join("certs")).to_owned()),
            ("REDIS_URL", redis.url()),
            ("REDIS_ENABLED", "true".into()),
            ("ADMIN_KEYS", ADMIN.into()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (server, base) = start(dir, &env).await;
        assert_eq!(
            issuers_of_groups(&base).await,
            [
                ("sensors".to_owned(), "default".to_owned()),
                ("gateways".to_owned(), "next".to_owned())
            ]
        );
        let devices = dir.join("devices");
        enroll_into(&base, "sensor-1", path(&devices), &["--group", "sensors"]).await;
        let gateways = dir.join("gateways");
        enroll_into(&base, "gw-1", path(&gateways), &["--group", "gateways"]).await;
        let sensor = devices.join("sensor-1.crt");
        let (good, said) = verify(&["-CAfile", path(&old_ca), path(&sensor)]);
        assert!(good, "sensors: the old issuer: {said}");
        let (good, said) = verify(&["-CAfile", path(&next_ca), path(&gateways.join("gw-1.crt"))]);
        assert!(good, "gateways: the first issuer: {said}");

        // A reload naming an issuer the server did not load is refused whole.
        std::fs::write(&groups_file, GROUPS.replace("\"default\"", "\"later\"")).unwrap();
        let hup = |pid: u32| {
            let sent = std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
        };
        hup(server.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, metrics) = get(format!("{base}/metrics")).await;
            if metrics.contains("provisiond_groups_reloads_total{outcome=\"refused\"} 1") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no refused reload: {metrics}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(issuers_of_groups(&base).await[0].1, "default");

        // Sensors moved to the first issuer: their renewals come from it.
        std::fs::write(&groups_file, GROUPS.replace("issuer = \"default\"\n", "")).unwrap();
        hup(server.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while issuers_of_groups(&base).await[0].1 != "next" {
            assert!(
                std::time::Instant::now() < deadline,
                "the reload did not move sensors"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let bundle = dir.join("bundle.pem");
        let (_, served) = get(format!("{base}/api/v1/ca?bundle=all")).await;
        std::fs::write(&bundle, served).unwrap();
        renew_signed_by(&base, &bundle, &sensor, &next_ca).await;
        stop(server);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_whose_key_is_in_a_token_signs_beside_one_in_a_file() {
    use common::softhsm::{MODULE, SoftHsm};
    let redis = RedisServer::start();
    within(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let hsm = SoftHsm::new();
        let token_env = hsm.env("issuing-ca", &dir.join("hsm"));
        let made = provisiond(dir)
            .args(["ca", "init", "--pkcs11-uri", &SoftHsm::uri("issuing-ca")])
            .args(["--pkcs11-module", MODULE])
            .envs(token_env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", text(&made));
        ca_init(dir, "certs");
        let hsm_ca = dir.join("hsm/ca.crt");
        assert!(!dir.join("hsm/ca.key").exists(), "the key stays in the token");
        let issuers = |second_key: &str| {
            format!(
                "[ca]\npkcs11_module = \"{MODULE}\"\n\n\
                 [[issuers]]\nname = \"hsm\"\ncert = \"hsm/ca.crt\"\nkey = \"{}\"\n\n\
                 [[issuers]]\nname = \"default\"\ncert = \"certs/ca.crt\"\nkey = \"{second_key}\"\n",
                SoftHsm::uri("issuing-ca")
            )
        };
        std::fs::write(dir.join("config.toml"), issuers("certs/ca.key")).unwrap();
        let mut env: Vec<(&str, String)> = token_env
            .iter()
            .filter(|(k, _)| matches!(*k, "SOFTHSM2_CONF" | "CA_PKCS11_PIN_FILE"))
            .cloned()
            .collect();
        env.extend([
            ("CERTS_DIR", path(&dir.join("certs")).to_owned()),
            ("REDIS_ENABLED", "true".into()),
            ("REDIS_URL", redis.url()),
            ("ONBOARDING_MODE", "open".into()),
            ("ADMIN_KEYS", ADMIN.into()),
        ]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (server, base) = start(dir, &env).await;
        let devices = dir.join("devices");
        enroll_into(&base, "hsm-1", path(&devices), &[]).await;
        let (good, said) = verify(&["-CAfile", path(&hsm_ca), path(&devices.join("hsm-1.crt"))]);
        assert!(good, "signed in the token: {said}");
        for (issuer, ca) in [("hsm", &hsm_ca), ("default", &dir.join("certs/ca.crt"))] {
            let crl = dir.join(format!("{issuer}.crl"));
            let fetched = crl_into(&base, Some(issuer), &crl).await;
            assert!(fetched.status.success(), "{}", text(&fetched));
            common::pki::openssl_crl(&crl, "PEM", ca);
        }

        // The token away: the file issuer's CRL goes on, the token's keeps its last
        // until the token is back.
        let (_, serial) = openssl(&[
            "x509", "-noout", "-serial", "-in", path(&devices.join("hsm-1.crt")),
        ]);
        let serial = serial.trim().trim_start_matches("serial=").to_owned();
        let away = dir.join("tokens-away");
        std::fs::rename(hsm.tokens(), &away).unwrap();
        let revoked = reqwest::Client::new()
            .post(format!("{base}/api/v1/certificates/{serial}/revoke"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({ "reason": "keyCompromise" }))
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200, "{:?}", revoked.text().await);
        let lists = |issuer: &'static str| {
            let (base, serial) = (base.clone(), serial.clone());
            async move {
                let (status, crl) =
                    get(format!("{base}/api/v1/crl?issuer={issuer}&format=pem")).await;
                assert_eq!(status, 200, "{issuer}: {crl}");
                let file = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(file.path(), crl).unwrap();
                let (_, text) = openssl(&["crl", "-noout", "-text", "-in", path(file.path())]);
                text.contains(&serial)
            }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !lists("default").await {
            assert!(std::time::Instant::now() < deadline, "the file issuer's CRL did not list it");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(!lists("hsm").await, "the token's CRL is its last one while it is away");
        std::fs::rename(&away, hsm.tokens()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !lists("hsm").await {
            assert!(std::time::Instant::now() < deadline, "the token's CRL did not catch up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop(server);

        // A second issuer in the token: refused, saying why.
        refused_at_start_with(
            dir,
            &issuers(&SoftHsm::uri("another-ca")),
            "issuers `hsm` and `default` both keep their key in a PKCS#11 token",
            &env,
        );
    })
    .await;
}
