//! CSRs made by tools we did not write, and certificates checked by verifiers we did not
//! write: the openssl command line and rustls's webpki client-certificate verifier.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use serde_json::Value;

/// A device key and its CSR, made by `openssl req`.
pub struct OpensslCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

/// `key` is one of: p256, p384, ed25519, rsa2048, rsa1024, secp256k1.
/// `extra` goes to `openssl req` as is (for example `-addext basicConstraints=critical,CA:TRUE`).
pub fn openssl_csr(key: &str, common_name: &str, extra: &[&str]) -> OpensslCsr {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, csr_file) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    let newkey: &[&str] = match key {
        "p256" => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384" => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "secp256k1" => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
        "ed25519" => &["-newkey", "ed25519"],
        "rsa2048" => &["-newkey", "rsa:2048"],
        "rsa1024" => &["-newkey", "rsa:1024"],
        other => panic!("unknown key type {other}"),
    };
    let subject = if common_name.is_empty() {
        "/O=provisiond-tests".to_owned()
    } else {
        format!("/CN={common_name}")
    };
    let output = Command::new("openssl")
        .args(["req", "-new", "-nodes"])
        .args(newkey)
        .args(["-subj", &subject])
        .args(extra)
        .arg("-keyout")
        .arg(&key_file)
        .arg("-out")
        .arg(&csr_file)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    OpensslCsr {
        key_pem: std::fs::read_to_string(key_file).unwrap(),
        csr_pem: std::fs::read_to_string(csr_file).unwrap(),
    }
}

/// A P-256 CSR made in-process (fast, for tests that need many).
pub fn quick_csr(common_name: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// The same CSR with one bit of its signature flipped.
pub fn tamper_signature(csr_pem: &str) -> String {
    let parsed = pem::parse(csr_pem).unwrap();
    let mut der = parsed.contents().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
}

/// `openssl verify -purpose sslclient`: panics with openssl's words unless it says OK.
/// The certificates after the first in `cert_pem` (a two-tier CA's intermediates) are
/// given as untrusted, as a broker takes them from the client.
pub fn openssl_verify(ca_pem: &str, cert_pem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert) = (dir.path().join("ca.pem"), dir.path().join("cert.pem"));
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    let output = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&ca)
        .arg("-untrusted")
        .arg(&cert)
        .arg(&cert)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim().ends_with(": OK"),
        "openssl verify refused: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// rustls's webpki verifier, as a TLS server checking a client certificate would (the
/// certificates after the first in `cert_pem` as the intermediates the client sends).
pub fn webpki_verify(ca_pem: &str, cert_pem: &str) -> Result<(), rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let mut presented = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).map(|c| c.unwrap());
    let leaf = presented.next().expect("a certificate");
    let intermediates: Vec<_> = presented.collect();
    verifier
        .verify_client_cert(&leaf, &intermediates, UnixTime::now())
        .map(|_| ())
}

/// Both outside verifiers on a sign-csr response.
pub fn verify_externally(response: &Value) {
    let ca = response["ca_certificate"].as_str().unwrap();
    let cert = response["certificate"].as_str().unwrap();
    openssl_verify(ca, cert);
    webpki_verify(ca, cert).expect("webpki accepts the certificate");
}

/// The public key of a private key file, PEM, as OpenSSL reads it.
pub fn openssl_pkey_public(key: &Path) -> String {
    let output = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// `openssl x509 -noout <args>` on a PEM certificate.
pub fn openssl_x509(cert_pem: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cert.pem");
    std::fs::write(&file, cert_pem).unwrap();
    x509_of_file(&file, args)
}

/// `openssl asn1parse` of a PEM document: how each value is encoded.
pub fn openssl_asn1parse(pem_text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.pem");
    std::fs::write(&file, pem_text).unwrap();
    let output = Command::new("openssl")
        .args(["asn1parse", "-in"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

fn x509_of_file(file: &Path, args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-in"])
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// `openssl crl` on a CRL file, checking its signature against `ca`; the text it prints.
pub fn openssl_crl(crl: &std::path::Path, inform: &str, ca: &std::path::Path) -> String {
    let output = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-text", "-inform", inform, "-in"])
        .arg(crl)
        .arg("-CAfile")
        .arg(ca)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && all.contains("verify OK"),
        "{all}"
    );
    all
}

/// The line after `label` in OpenSSL's text, trimmed.
pub fn crl_field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .skip_while(|l| !l.contains(label))
        .nth(1)
        .unwrap_or_else(|| panic!("no {label} in {text}"))
        .trim()
}

/// `openssl <args>`, bounded to 30 s (a client that hangs on a server that does not
/// answer fails the test): whether it succeeded, and what it printed (stdout, then
/// stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .args(["30", "openssl"])
        .args(args)
        .output()
        .expect("openssl is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
