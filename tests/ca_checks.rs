//! An operator's own CA, made with `openssl req -x509`, checked at start for everything
//! signing needs: a subject that can be copied byte for byte into what it signs (the
//! Active Directory shape `DC=com, DC=example, ...` cannot), keyCertSign and cRLSign.
//! And `enroll`'s check of what came back: the issuer name, not only the signature.

use std::path::Path;
use std::process::Command;

use provisiond::ca::CertificateAuthority;
use provisiond::config::CaSettings;
use provisiond::device::{DeviceKey, KeyKind, VerifyError, verify_issued};

/// A CA in `dir` (`ca.crt`, `ca.key`) with `subject` and `key_usage`, made by openssl.
fn openssl_ca(dir: &Path, subject: &str, key_usage: &str) {
    let output = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt"])
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

fn load(dir: &Path) -> Result<CertificateAuthority, String> {
    let settings = CaSettings {
        dir: dir.to_owned(),
        ..CaSettings::default()
    };
    CertificateAuthority::load_or_init(&settings).map_err(|e| format!("{e:#}"))
}

#[test]
fn a_ca_whose_subject_cannot_be_copied_or_that_cannot_sign_crls_is_refused_at_start() {
    let repeated = tempfile::tempdir().unwrap();
    openssl_ca(
        repeated.path(),
        "/DC=com/DC=example/O=Example/CN=Example Issuing CA",
        "keyCertSign,cRLSign",
    );
    let refused = load(repeated.path()).err().expect("refused");
    assert!(refused.contains("byte for byte"), "{refused}");
    assert!(refused.contains("DC=com"), "{refused}");

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
    openssl_ca(
        dir.path(),
        "/O=Example/CN=Example CA",
        "keyCertSign,cRLSign",
    );
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.path().join("ca.key")).unwrap())
            .unwrap();
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
    let refused = verify_issued(&leaf.pem(), &ca_pem, &device, "edge-1").unwrap_err();
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
    openssl_ca(
        dir.path(),
        "/O=Example/CN=Example CA",
        "keyCertSign,cRLSign",
    );
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.path().join("ca.key")).unwrap())
            .unwrap();
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

    verify_issued(&leaf, &ca_pem, &device, "slow-clock").expect("kept");
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
