//! Writes the fixtures (a CA and a device certificate, once) and the seed corpora:
//! CSRs that openssl made for every key type, accepted and refused, in PEM and DER;
//! tokens, renewal proofs and `Authorization` values the server would accept; bodies
//! and ids from the API's examples. Run from `fuzz/`: `cargo run --bin make-seeds`.

use std::fs;
use std::path::Path;
use std::process::Command;

use provisiond::auth::{derived, renewal};
use provisiond::ca::{CertProfile, CertificateAuthority, check_csr};
use provisiond::clock::unix_now;
use provisiond::device::{DeviceKey, KeyKind};
use provisiond::domain::Jti;
use provisiond_fuzz::{DEVICE, FIXTURES, GROUP_SECRET, ca, device, tokens};

fn seed(target: &str, name: &str, mode: Option<u8>, body: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    let mut bytes = mode.map(|m| vec![m]).unwrap_or_default();
    bytes.extend_from_slice(body);
    fs::write(dir.join(name), bytes).unwrap();
}

fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn fixtures() {
    let dir = Path::new(FIXTURES);
    if CertificateAuthority::init(dir, "provisiond fuzz CA", false).unwrap() {
        println!("fixture CA written to {}", dir.display());
    }
    if !dir.join("device.crt").exists() {
        let key = DeviceKey::generate(KeyKind::P256).unwrap();
        let csr = key.csr_pem(Some(DEVICE)).unwrap();
        let public = check_csr(&csr, &device(), ca().policy()).unwrap();
        let profile = CertProfile::device(DEVICE);
        let validity = time::Duration::days(365);
        let issued = ca()
            .issue(&public, &[0x81; 16], &profile, validity)
            .unwrap();
        fs::write(dir.join("device.crt"), issued.pem).unwrap();
        fs::write(dir.join("device.key"), key.private_key_pem()).unwrap();
    }
}

/// (name, openssl genpkey arguments, extra req arguments, CN)
const CSRS: &[(&str, &[&str], &[&str], &str)] = &[
    (
        "p256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &[],
        DEVICE,
    ),
    (
        "p384",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        &[],
        DEVICE,
    ),
    (
        "p521",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
        &[],
        DEVICE,
    ),
    (
        "secp256k1",
        &[
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:secp256k1",
        ],
        &[],
        DEVICE,
    ),
    ("ed25519", &["-algorithm", "ED25519"], &[], DEVICE),
    ("ed448", &["-algorithm", "ED448"], &[], DEVICE),
    (
        "rsa2048",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        &[],
        DEVICE,
    ),
    (
        "rsa1024",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        &[],
        DEVICE,
    ),
    (
        "rsa-pss",
        &["-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"],
        &[],
        DEVICE,
    ),
    (
        "p256-ca-true",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["-addext", "basicConstraints=critical,CA:TRUE"],
        DEVICE,
    ),
    (
        "p256-san",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["-addext", "subjectAltName=DNS:fuzz.example,IP:127.0.0.1"],
        DEVICE,
    ),
    (
        "p256-other-cn",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &[],
        "another-device",
    ),
];

fn csrs() {
    let work = tempfile::tempdir().unwrap();
    for (name, genpkey, extra, cn) in CSRS {
        let mut args = vec!["genpkey", "-out", "key.pem"];
        args.extend_from_slice(genpkey);
        openssl(&args, work.path());
        let subject = format!("/CN={cn}/O=fleet");
        let mut args = vec!["req", "-new", "-key", "key.pem", "-subj", &subject];
        args.extend_from_slice(extra);
        let pem = openssl(&args, work.path());
        fs::write(work.path().join("req.pem"), &pem).unwrap();
        let der = openssl(&["req", "-in", "req.pem", "-outform", "DER"], work.path());
        seed("csr", &format!("{name}.pem"), Some(0), &pem);
        seed("csr", &format!("{name}.der"), Some(1), &der);
    }
}

fn tokens_and_proofs() {
    let issued = tokens()
        .issue(&device(), Jti::random(), 0, "default")
        .unwrap();
    seed(
        "provisioning_token",
        "issued",
        Some(0),
        issued.token.as_bytes(),
    );
    let claims = format!(
        r#"{{"sub":"{DEVICE}","jti":"{}","iat":0,"exp":300,"iss":"provisiond","aud":"provisiond","ep":0}}"#,
        Jti::random()
    );
    seed("provisioning_token", "claims", Some(1), claims.as_bytes());
    seed(
        "provisioning_token",
        "claims-nbf",
        Some(1),
        claims.replace(r#""ep":0"#, r#""ep":7,"nbf":60"#).as_bytes(),
    );

    let (cert, key) = provisiond_fuzz::device_credentials();
    let proof = renewal::sign(DEVICE, cert, key, None, unix_now()).unwrap();
    seed("renewal_proof", "signed", Some(0), proof.as_bytes());
    let claims = format!(
        r#"{{"sub":"{DEVICE}","aud":"{}","iat":0,"exp":60,"jti":"a1b2c3"}}"#,
        renewal::RENEW_AUDIENCE
    );
    seed("renewal_proof", "claims", Some(1), claims.as_bytes());
}

fn authorization() {
    let key = derived::device_key(GROUP_SECRET.as_bytes(), DEVICE);
    seed(
        "authorization",
        "derived",
        None,
        derived::authorization(&key, DEVICE, 1_800_000_000).as_bytes(),
    );
    seed(
        "authorization",
        "derived-reordered",
        None,
        b"device sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA, ts=1800000001",
    );
    seed(
        "authorization",
        "bearer",
        None,
        b"Bearer fleet-enrollment-key-0123456789abcdef",
    );
}

fn bodies_and_ids() {
    let bodies: &[(&str, &str)] = &[
        ("onboarding", r#"{"device_id":"sensor-001"}"#),
        (
            "sign-csr",
            r#"{"device_id":"sensor-001","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}"#,
        ),
        ("revoke", r#"{"reason":"keyCompromise","block":true}"#),
        (
            "nested",
            r#"{"device_id":{"a":[1,2.5e10,null,true]},"csr":7}"#,
        ),
    ];
    for (name, body) in bodies {
        seed("json_body", name, None, body.as_bytes());
    }
    for (i, id) in [
        "sensor-001",
        "fleet:eu.west_7",
        "a",
        &"x".repeat(128),
        "{tag}",
    ]
    .iter()
    .enumerate()
    {
        seed("device_id", &format!("id-{i}"), None, id.as_bytes());
    }
}

fn main() {
    fixtures();
    csrs();
    tokens_and_proofs();
    authorization();
    bodies_and_ids();
    println!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
