//! An operator's own CA, made with `openssl req -x509`: checked at start for everything
//! signing needs (keyCertSign, cRLSign), and used whatever the shape of its subject (the
//! Active Directory shape `DC=com, DC=example, ...`, a multi-valued RDN): certificates and
//! CRLs name it byte for byte, as `openssl verify -crl_check` insists. And `enroll`'s
//! check of what came back: the issuer name, not only the signature.

mod common;

use std::path::Path;
use std::process::Command;

use provisiond::ca::CertificateAuthority;
use provisiond::config::CaSettings;
use provisiond::device::{DeviceKey, KeyKind, VerifyError, verify_issued};

/// A CA in `dir` (`ca.crt`, `ca.key`) with `subject` and `key_usage`, made by openssl.
fn openssl_ca(dir: &Path, subject: &str, key_usage: &str) {
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-multivalue-rdn",
            "-newkey",
            "ec",
            "-pkeyopt",
        ])
        .args(["ec_paramgen_curve:P-256", "-days", "30", "-subj", subject])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", &format!("keyUsage=critical,{key_usage}")])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.crt"))
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// An ordinary openssl CA in `dir`: its certificate (PEM) and key.
fn plain_ca(dir: &Path) -> (String, rcgen::KeyPair) {
    openssl_ca(dir, "/O=Example/CN=Example CA", "keyCertSign,cRLSign");
    let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    let key = std::fs::read_to_string(dir.join("ca.key")).unwrap();
    (ca_pem, rcgen::KeyPair::from_pem(&key).unwrap())
}

fn load(dir: &Path) -> Result<CertificateAuthority, String> {
    let settings = CaSettings {
        dir: dir.to_owned(),
        ..CaSettings::default()
    };
    CertificateAuthority::load_or_init(&settings, 1).map_err(|e| format!("{e:#}"))
}

#[test]
fn a_ca_that_cannot_sign_certificates_or_crls_is_refused_at_start() {
    let no_crl_sign = tempfile::tempdir().unwrap();
    openssl_ca(
        no_crl_sign.path(),
        "/O=Example/CN=Example CA",
        "keyCertSign",
    );
    let refused = load(no_crl_sign.path()).err().expect("refused");
    assert!(refused.contains("cRLSign"), "{refused}");

    let no_cert_sign = tempfile::tempdir().unwrap();
    openssl_ca(no_cert_sign.path(), "/O=Example/CN=Example CA", "cRLSign");
    let refused = load(no_cert_sign.path()).err().expect("refused");
    assert!(refused.contains("keyCertSign"), "{refused}");

    let good = tempfile::tempdir().unwrap();
    openssl_ca(
        good.path(),
        "/C=DE/O=Example GmbH/OU=Devices/CN=Example Issuing CA",
        "keyCertSign,cRLSign",
    );
    assert!(load(good.path()).is_ok());
}

#[test]
fn enroll_refuses_a_certificate_that_names_another_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, ca_key) = plain_ca(dir.path());
    // The CA's key, another name: the signature verifies, the chain by name does not.
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example CA");
    let issuer = rcgen::Issuer::new(other, ca_key);
    let device = DeviceKey::generate(KeyKind::P256).unwrap();
    let device_key = rcgen::KeyPair::from_pem(&device.private_key_pem()).unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "edge-1");
    let leaf = leaf.signed_by(&device_key, &issuer).unwrap();
    let refused =
        verify_issued(&leaf.pem(), &ca_pem, device.public_key_raw(), "edge-1").unwrap_err();
    assert!(
        matches!(refused, VerifyError::WrongIssuerName { .. }),
        "{refused}"
    );
}

/// A device ten minutes slow gets a certificate valid from the server's "now": it keeps
/// it (the token is spent, the broker judges by its own clock) and is told why.
#[test]
fn a_certificate_valid_by_the_servers_clock_is_kept_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, ca_key) = plain_ca(dir.path());
    let ca_der = pem::parse(&ca_pem).unwrap().into_contents();
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der.into(), ca_key).unwrap();
    let device = DeviceKey::generate(KeyKind::P256).unwrap();
    let device_key = rcgen::KeyPair::from_pem(&device.private_key_pem()).unwrap();
    let server_now = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "slow-clock");
    leaf.not_before = server_now - time::Duration::minutes(5);
    leaf.not_after = server_now + time::Duration::days(90);
    let leaf = leaf.signed_by(&device_key, &issuer).unwrap().pem();

    verify_issued(&leaf, &ca_pem, device.public_key_raw(), "slow-clock").expect("kept");
    let server_time = server_now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let warning = provisiond::device::clock_warning(&leaf, Some(&server_time)).unwrap();
    assert!(warning.contains("this device's clock"), "{warning}");
    assert!(
        warning.contains("(600 s from this one)") || warning.contains("(599 s from this one)"),
        "{warning}"
    );
    assert!(provisiond::device::clock_warning(&ca_pem, None).is_none());
}

/// `openssl verify -crl_check` of `cert` against the CA and CRL files: its output.
fn verify_with_crl(ca: &Path, crl_pem: &str, cert_pem: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let (crl, cert) = (dir.path().join("crl.pem"), dir.path().join("cert.pem"));
    std::fs::write(&crl, crl_pem).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    let output = Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(ca)
        .arg("-CRLfile")
        .arg(&crl)
        .arg(&cert)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success() && text.contains(": OK"), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_with_a_repeated_or_multi_valued_rdn_signs_under_its_exact_name() {
    for subject in [
        "/DC=com/DC=example/O=Example/CN=Example Issuing CA",
        "/DC=com/DC=example/O=Example+OU=Devices/CN=Example Issuing CA",
    ] {
        let certs = tempfile::tempdir().unwrap();
        openssl_ca(certs.path(), subject, "keyCertSign,cRLSign");
        let mut settings = common::app::test_settings(None, certs.path());
        settings.admin.keys = provisiond::config::KeyList(vec![provisiond::secret::Secret::new(
            "ca-checks-admin-key-ca-checks-admin",
        )]);
        let app = common::TestApp::spawn_settings(settings).await;
        let ca = certs.path().join("ca.crt");
        let mut issued = Vec::new();
        for device in ["exact-1", "exact-2"] {
            let token = app.token_for(device).await;
            let signed = app
                .sign_csr(&token, device, &common::pki::quick_csr(device))
                .await;
            assert_eq!(signed.status(), reqwest::StatusCode::OK, "{subject}");
            let body: serde_json::Value = signed.json().await.unwrap();
            common::pki::verify_externally(&body);
            issued.push(body);
        }
        let serial = issued[0]["serial_number"].as_str().unwrap();
        let revoked = app
            .post_json_as(
                "ca-checks-admin-key-ca-checks-admin",
                &format!("/api/v1/certificates/{serial}/revoke"),
                &serde_json::json!({ "reason": "keyCompromise" }),
            )
            .await;
        assert_eq!(revoked.status(), reqwest::StatusCode::OK);
        let crl = app.crl_pem().await;
        // The CRL verifies under the CA's exact name, lists the revoked certificate and
        // not the other.
        let text = app.crl_text().await;
        assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
        let revoked_cert = issued[0]["certificate"].as_str().unwrap();
        let (ok, said) = verify_with_crl(&ca, &crl, revoked_cert);
        assert!(
            !ok && said.contains("certificate revoked"),
            "{subject}: {said}"
        );
        let (ok, said) = verify_with_crl(&ca, &crl, issued[1]["certificate"].as_str().unwrap());
        assert!(ok, "{subject}: {said}");
        app.stop().await;
    }
}

/// A delegated OCSP responder is checked at start as the CA is: one made for another CA,
/// or half of the pair, stops the start with the file named.
#[test]
fn an_ocsp_responder_from_another_ca_or_half_a_pair_is_refused_at_start() {
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    plain_ca(ours.path());
    plain_ca(theirs.path());
    let other = load(theirs.path()).unwrap();
    other.make_ocsp_signer(theirs.path(), 7).unwrap();
    assert!(load(theirs.path()).is_ok(), "its own CA takes it");
    for file in ["ocsp.crt", "ocsp.key"] {
        std::fs::copy(theirs.path().join(file), ours.path().join(file)).unwrap();
    }
    let refused = load(ours.path()).err().expect("refused");
    assert!(
        refused.contains("ocsp.crt: not issued by this CA"),
        "{refused}"
    );
    std::fs::remove_file(ours.path().join("ocsp.key")).unwrap();
    let refused = load(ours.path()).err().expect("refused");
    assert!(refused.contains("go together"), "{refused}");
    std::fs::remove_file(ours.path().join("ocsp.crt")).unwrap();
    assert!(load(ours.path()).is_ok());

    // An expired responder does not stop the start: the CA signs OCSP meanwhile.
    let ca = load(theirs.path()).unwrap();
    ca.make_ocsp_signer(theirs.path(), 0).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let ca = load(theirs.path()).expect("an expired responder is set aside");
    assert_eq!(ca.ocsp_signer_not_after(), None);

    // A CA replaced on purpose takes its responder with it.
    CertificateAuthority::init(theirs.path(), "Replaced", true).unwrap();
    assert!(!theirs.path().join("ocsp.crt").exists());
    assert!(!theirs.path().join("ocsp.key").exists());
    assert!(load(theirs.path()).is_ok());
}
