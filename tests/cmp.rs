//! CMP (RFC 9483) with a client we did not write: OpenSSL 3's `openssl cmp` enrolls
//! devices with `ir`, `cr` and `p10cr` under a MAC keyed with the provisioning token or
//! its enrollment code, renews with `kur` and revokes with `rr` signed by the device's
//! certificate. Each certificate is checked with `openssl verify`, a renewed one with a
//! real Mosquitto; a revocation reaches the CRL and OCSP; what is in Redis is counted.
//! Replays, wrong secrets and bad messages get CMP error messages.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::mosquitto::Mosquitto;
use common::pki::openssl;
use common::{RedisServer, TestApp, path, within};
use serde_json::Value;

/// `openssl cmp <args>` against `app` (bounded): whether it succeeded, and what it said.
fn cmp(app: &TestApp, label: Option<&str>, args: &[&str]) -> (bool, String) {
    let server = app.address.trim_start_matches("http://").to_owned();
    let cmp_path = match label {
        Some(label) => format!(".well-known/cmp/p/{label}"),
        None => ".well-known/cmp".to_owned(),
    };
    let mut all = vec!["cmp", "-server", &server, "-path", &cmp_path];
    all.extend(args);
    openssl(&all)
}

/// `kur`: `cert` and `key` sign for `new_key`'s certificate, written to `out`.
fn kur(
    app: &TestApp,
    ca: &Path,
    (cert, key): (&Path, &Path),
    new_key: &Path,
    out: &Path,
) -> (bool, String) {
    cmp(
        app,
        None,
        &[
            "-cmd",
            "kur",
            "-cert",
            path(cert),
            "-key",
            path(key),
            "-newkey",
            path(new_key),
            "-trusted",
            path(ca),
            "-certout",
            path(out),
        ],
    )
}

fn new_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    let (ok, said) = openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path(&key),
    ]);
    assert!(ok, "{said}");
    key
}

async fn onboard(app: &TestApp, device: &str) -> Value {
    let answer = app.onboard(device).await;
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

fn verify(ca: &Path, cert: &Path) {
    let (ok, said) = openssl(&["verify", "-CAfile", path(ca), path(cert)]);
    assert!(ok, "{said}");
}

fn serial_of(cert: &Path) -> String {
    let (ok, said) = openssl(&["x509", "-in", path(cert), "-noout", "-serial"]);
    assert!(ok, "{said}");
    said.trim().trim_start_matches("serial=").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_cmp_enrolls_renews_and_revokes_and_each_token_is_used_once() {
    let redis = RedisServer::start();
    within(Duration::from_secs(150), async {
        let app = TestApp::spawn(Some(&redis)).await;
        let ca = app.certs.join("ca.crt");
        let work = tempfile::tempdir().unwrap();
        let work = work.path();

        // ir with the enrollment code, then certConf/pkiConf (no implicitConfirm).
        let code = onboard(&app, "cmp-1").await["enrollment_code"]
            .as_str()
            .unwrap()
            .to_owned();
        let key = new_key(work, "cmp-1");
        let cert = work.join("cmp-1.crt");
        let capubs = work.join("capubs.pem");
        let secret = format!("pass:{code}");
        let ir = |cert: &Path| {
            vec![
                "-cmd".to_owned(),
                "ir".into(),
                "-ref".into(),
                "cmp-1".into(),
                "-secret".into(),
                secret.clone(),
                "-newkey".into(),
                path(&key).into(),
                "-subject".into(),
                "/CN=cmp-1".into(),
                "-trusted".into(),
                path(&ca).into(),
                "-certout".into(),
                path(cert).into(),
            ]
        };
        let mut args = ir(&cert);
        args.extend(["-cacertsout".to_owned(), path(&capubs).into()]);
        let (ok, said) = cmp(&app, None, &args.iter().map(|s| &**s).collect::<Vec<_>>());
        assert!(ok, "{said}");
        assert!(
            said.contains("sending CERTCONF") && said.contains("received PKICONF"),
            "{said}"
        );
        verify(&ca, &cert);
        assert_eq!(
            std::fs::read_to_string(&capubs).unwrap().trim(),
            std::fs::read_to_string(&ca).unwrap().trim(),
            "caPubs is the trust anchor"
        );

        // The same code again: used, said in a CMP error signed by the CMP signer.
        let again = work.join("again.crt");
        let (ok, said) = cmp(
            &app,
            None,
            &ir(&again).iter().map(|s| &**s).collect::<Vec<_>>(),
        );
        assert!(
            !ok && said.contains("rejection") && said.contains("token_invalid"),
            "{said}"
        );
        assert!(!again.exists());

        // A wrong secret burns nothing: the JWT itself then enrolls (cr, implicitConfirm).
        let onboarded = onboard(&app, "cmp-2").await;
        let jwt = onboarded["provisioning_token"].as_str().unwrap();
        let key2 = new_key(work, "cmp-2");
        let cert2 = work.join("cmp-2.crt");
        let cr = |secret: &str| {
            cmp(
                &app,
                None,
                &[
                    "-cmd",
                    "cr",
                    "-ref",
                    "cmp-2",
                    "-secret",
                    secret,
                    "-newkey",
                    path(&key2),
                    "-subject",
                    "/CN=cmp-2",
                    "-trusted",
                    path(&ca),
                    "-implicit_confirm",
                    "-certout",
                    path(&cert2),
                ],
            )
        };
        let (ok, said) = cr("pass:not-the-token");
        assert!(!ok && said.contains("badMessageCheck"), "{said}");
        let (ok, said) = cr(&format!("pass:{jwt}"));
        assert!(ok, "{said}");
        assert!(
            !said.contains("sending CERTCONF"),
            "implicitConfirm granted: {said}"
        );
        verify(&ca, &cert2);

        // p10cr: a PKCS#10 request, through a group label.
        let code3 = onboard(&app, "cmp-3").await["enrollment_code"]
            .as_str()
            .unwrap()
            .to_owned();
        let key3 = new_key(work, "cmp-3");
        let csr3 = work.join("cmp-3.csr");
        let (ok, said) = openssl(&[
            "req",
            "-new",
            "-key",
            path(&key3),
            "-subj",
            "/CN=cmp-3",
            "-out",
            path(&csr3),
        ]);
        assert!(ok, "{said}");
        let cert3 = work.join("cmp-3.crt");
        let secret3 = format!("pass:{code3}");
        let p10cr = |label| {
            cmp(
                &app,
                label,
                &[
                    "-cmd",
                    "p10cr",
                    "-ref",
                    "cmp-3",
                    "-secret",
                    &secret3,
                    "-csr",
                    path(&csr3),
                    "-trusted",
                    path(&ca),
                    "-certout",
                    path(&cert3),
                ],
            )
        };
        let (ok, said) = p10cr(Some("no-such-group"));
        assert!(!ok && said.contains("group_unknown"), "{said}");
        let (ok, said) = p10cr(Some("default"));
        assert!(ok, "{said}");
        verify(&ca, &cert3);

        // kur: cmp-1 renews into a new key, signing with its certificate.
        let renewed_key = new_key(work, "cmp-1-next");
        let renewed = work.join("cmp-1-next.crt");
        let (ok, said) = kur(&app, &ca, (&cert, &key), &renewed_key, &renewed);
        assert!(ok, "{said}");
        verify(&ca, &renewed);
        assert_ne!(serial_of(&renewed), serial_of(&cert));
        let broker = Mosquitto::start(&app.certs, &ca, None);
        let published = broker.publish(&ca, Some((&renewed, &renewed_key)));
        assert!(published.status.success(), "{published:?}");
        drop(broker);
        // The predecessor renews once: the same key again (a lost answer) gets the same
        // certificate, another key is refused.
        let same = work.join("same.crt");
        let other_key = new_key(work, "other");
        let kur_again = |new_key: &Path, out: &Path| kur(&app, &ca, (&cert, &key), new_key, out);
        let (ok, said) = kur_again(&renewed_key, &same);
        assert!(ok, "{said}");
        assert_eq!(serial_of(&same), serial_of(&renewed));
        let (ok, said) = kur_again(&other_key, &again);
        assert!(!ok && said.contains("certificate_superseded"), "{said}");

        // A key given up cannot revoke: cmp-1's predecessor neither its successor nor
        // itself (renewed already), and a device does not say its CA was compromised.
        let rr = |cert: &Path, key: &Path, old: &Path, reason: &str| {
            cmp(
                &app,
                None,
                &[
                    "-cmd",
                    "rr",
                    "-cert",
                    path(cert),
                    "-key",
                    path(key),
                    "-oldcert",
                    path(old),
                    "-revreason",
                    reason,
                    "-trusted",
                    path(&ca),
                ],
            )
        };
        let (ok, said) = rr(&cert, &key, &renewed, "1");
        assert!(!ok && said.contains("the certificate it revokes"), "{said}");
        // (Renewal revoked it as superseded.)
        let (ok, said) = rr(&cert, &key, &cert, "1");
        assert!(!ok && said.contains("certRevoked"), "{said}");
        let (ok, said) = rr(&cert2, &key2, &cert2, "2");
        assert!(!ok && said.contains("reasonCode"), "{said}");

        // rr: cmp-3 revokes its certificate for keyCompromise.
        let (ok, said) = cmp(
            &app,
            None,
            &[
                "-cmd",
                "rr",
                "-cert",
                path(&cert3),
                "-key",
                path(&key3),
                "-oldcert",
                path(&cert3),
                "-revreason",
                "1",
                "-trusted",
                path(&ca),
            ],
        );
        assert!(ok && said.contains("revocation accepted"), "{said}");
        let crl = work.join("crl.der");
        let bytes = reqwest::get(app.url("/api/v1/crl"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        std::fs::write(&crl, &bytes).unwrap();
        let listed = common::pki::openssl_crl(&crl, "DER", &ca);
        assert!(listed.contains(&serial_of(&cert3)), "{listed}");
        assert!(listed.contains("Key Compromise"), "{listed}");
        let (_, said) = openssl(&[
            "ocsp",
            "-issuer",
            path(&ca),
            "-cert",
            path(&cert3),
            "-url",
            &app.url("/ocsp"),
            "-CAfile",
            path(&ca),
        ]);
        assert!(said.contains(": revoked"), "{said}");
        // ... and a revoked certificate cannot renew.
        let (ok, said) = kur(&app, &ca, (&cert3, &key3), &key3, &again);
        assert!(!ok && said.contains("certRevoked"), "{said}");

        // cmp-1, its renewal, cmp-2 and cmp-3: four records.
        assert_eq!(redis.certificate_records(), 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cmp_messages_get_cmp_errors_never_a_500() {
    within(Duration::from_secs(60), async {
        let app = TestApp::spawn(None).await;
        let ca = app.certs.join("ca.crt");
        // Not a PKIMessage: an error message, HTTP 200, as OpenSSL's client reads it.
        for body in [&b"hello"[..], &[0x30, 0x03, 0x02, 0x01, 0x02][..]] {
            let answer = app
                .client
                .post(app.url("/.well-known/cmp"))
                .header("content-type", "application/pkixcmp")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            assert_eq!(answer.headers()["content-type"], "application/pkixcmp");
            let der = answer.bytes().await.unwrap();
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("answer.der");
            std::fs::write(&file, &der).unwrap();
            let (ok, parsed) = openssl(&["asn1parse", "-inform", "DER", "-in", path(&file)]);
            assert!(ok, "{parsed}");
            assert!(parsed.contains("cont [ 23 ]"), "an error body: {parsed}");
            assert!(
                parsed.contains("badDataFormat") || parsed.contains("not a DER"),
                "{parsed}"
            );
        }
        // No body at all is no CMP: HTTP 400.
        let answer = app
            .client
            .post(app.url("/.well-known/cmp"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400);
        // genm is not served: said so.
        let (ok, said) = cmp(
            &app,
            None,
            &[
                "-cmd",
                "genm",
                "-secret",
                "pass:x",
                "-ref",
                "d",
                "-trusted",
                path(&ca),
            ],
        );
        assert!(!ok && said.contains("genm is not served"), "{said}");
        // No pending token.
        let work = tempfile::tempdir().unwrap();
        let key = new_key(work.path(), "k");
        let (ok, said) = cmp(
            &app,
            None,
            &[
                "-cmd",
                "ir",
                "-ref",
                "nobody",
                "-secret",
                "pass:x",
                "-newkey",
                path(&key),
                "-subject",
                "/CN=nobody",
                "-trusted",
                path(&ca),
                "-certout",
                path(&work.path().join("c.crt")),
            ],
        );
        assert!(
            !ok && said.contains("does not verify with a pending provisioning token"),
            "{said}"
        );
        // A subject naming another device: refused before the token is used.
        let code = onboard(&app, "cmp-9").await["enrollment_code"]
            .as_str()
            .unwrap()
            .to_owned();
        let secret = format!("pass:{code}");
        let enroll = |subject: &str| {
            cmp(
                &app,
                None,
                &[
                    "-cmd",
                    "ir",
                    "-ref",
                    "cmp-9",
                    "-secret",
                    &secret,
                    "-newkey",
                    path(&key),
                    "-subject",
                    subject,
                    "-trusted",
                    path(&ca),
                    "-certout",
                    path(&work.path().join("c.crt")),
                ],
            )
        };
        let (ok, said) = enroll("/CN=someone-else");
        assert!(!ok && said.contains("badCertTemplate"), "{said}");
        let (ok, said) = enroll("/CN=cmp-9");
        assert!(ok, "the refusal burnt nothing: {said}");
    })
    .await;
}

/// `provisiond bench --scenario cmp`, the load `scripts/bench-cmp` drives: `ir` messages
/// written by `openssl cmp -reqout` (its `-rspin` given a junk answer, so it sends
/// nothing), each sent once; every answer grants the certificate, which is in Redis and
/// the device's pending token gone. The same messages again are refused as CMP errors
/// (the tokens are used up), and a run without messages is refused before it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_replays_openssls_ir_messages_each_once() {
    let redis = RedisServer::start();
    within(Duration::from_secs(90), async {
        let app = TestApp::spawn(Some(&redis)).await;
        let work = tempfile::tempdir().unwrap();
        let work = work.path();
        let key = new_key(work, "replayed");
        let junk = work.join("junk.der");
        std::fs::write(&junk, b"junk").unwrap();
        let mut requests = Vec::new();
        for n in 0..3 {
            let device = format!("replayed-{n}");
            let code = onboard(&app, &device).await["enrollment_code"]
                .as_str()
                .unwrap()
                .to_owned();
            let request = work.join(format!("{device}.der"));
            // openssl fails on the junk answer after writing the request.
            openssl(&[
                "cmp",
                "-cmd",
                "ir",
                "-server",
                "127.0.0.1:1",
                "-path",
                ".well-known/cmp",
                "-ref",
                &device,
                "-secret",
                &format!("pass:{code}"),
                "-newkey",
                path(&key),
                "-subject",
                &format!("/CN={device}"),
                "-implicit_confirm",
                "-reqout",
                path(&request),
                "-rspin",
                path(&junk),
                "-certout",
                path(&work.join("unused.crt")),
            ]);
            assert!(request.exists(), "openssl cmp wrote no request");
            requests.push(request);
        }
        let bench = |requests: &[PathBuf]| {
            let mut args: Vec<String> = ["bench", "--server", &app.address, "--scenario", "cmp"]
                .into_iter()
                .chain(["--concurrency", "2", "--json"])
                .map(str::to_owned)
                .collect();
            for request in requests {
                args.extend(["--cmp-request".to_owned(), path(request).to_owned()]);
            }
            async move {
                let args: Vec<&str> = args.iter().map(|s| &**s).collect();
                let run = common::bin::run(&args, &[]).await;
                let report: Value = serde_json::from_slice(&run.stdout)
                    .unwrap_or_else(|_| panic!("{}", common::bin::text(&run)));
                (run.status.code(), report["results"]["cmp"].clone())
            }
        };

        let (code, cmp) = bench(&requests).await;
        assert_eq!(code, Some(0), "{cmp}");
        assert_eq!(cmp["requests"], 3, "{cmp}");
        assert_eq!(cmp["ok"], 3, "{cmp}");
        assert_eq!(redis.certificate_records(), 3);
        for n in 0..3 {
            let pending: Option<String> =
                redis.cmd(&["GET", &format!("mqtt-lite:device:{{replayed-{n}}}")]);
            assert_eq!(pending, None, "replayed-{n}'s token is used");
        }

        let (code, cmp) = bench(&requests).await;
        assert_eq!(code, Some(3), "{cmp}");
        assert_eq!(cmp["ok"], 0, "{cmp}");
        assert_eq!(cmp["errors"]["cmp_error"], 3, "{cmp}");
        assert_eq!(redis.certificate_records(), 3);

        let none = common::bin::run(
            &["bench", "--server", &app.address, "--scenario", "cmp"],
            &[],
        )
        .await;
        assert!(!none.status.success());
        let said = common::bin::text(&none);
        assert!(said.contains("--cmp-request"), "{said}");
        app.stop().await;
    })
    .await;
}
