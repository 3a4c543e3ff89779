//! What the fuzz targets share: the fixture CA and device (committed under `fixtures/`,
//! so that the committed corpora's renewal proofs stay valid), the secrets, and the one
//! property every target checks besides "no panic": a refusal is a client error.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::ResponseError;
use provisiond::ca::{CertificateAuthority, Issuers};
use provisiond::config::CaSettings;
use provisiond::domain::DeviceId;
use provisiond::error::ApiError;
use provisiond::secret::Secret;
use provisiond::token::TokenService;

pub const DEVICE: &str = "fuzz-device";
pub const TOKEN_SECRET: &str = "fuzz-token-secret-fuzz-token-secret-0123";
pub const GROUP_SECRET: &str = "fuzz-group-secret-fuzz-group-secret-0123";
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

/// Every refusal of bad input must be a 4xx with an error code: a 500 would be a bug.
pub fn assert_client_error(error: &ApiError) {
    let status = error.status_code();
    assert!(
        status.is_client_error(),
        "bad input answered {status}: {error}"
    );
}

pub fn device() -> DeviceId {
    DeviceId::parse(DEVICE).expect("a valid id")
}

/// The fixture CA, from a private copy of `fixtures/` (git does not keep a key's 0600
/// mode, and the CA refuses a key others can read).
pub fn ca() -> &'static CertificateAuthority {
    issuers().first()
}

/// The fixture CA as the server's one issuer.
pub fn issuers() -> &'static Issuers {
    static ISSUERS: OnceLock<(tempfile::TempDir, Issuers)> = OnceLock::new();
    &ISSUERS
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            for file in ["ca.crt", "ca.key"] {
                let to = dir.path().join(file);
                std::fs::copy(Path::new(FIXTURES).join(file), &to).expect("the fixture CA");
                set_private(&to);
            }
            let settings = CaSettings {
                dir: dir.path().to_owned(),
                ..CaSettings::default()
            };
            let ca =
                CertificateAuthority::load_or_init(&settings, 1).expect("the fixture CA loads");
            (dir, Issuers::single(std::sync::Arc::new(ca)))
        })
        .1
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

pub fn tokens() -> &'static TokenService {
    static TOKENS: OnceLock<TokenService> = OnceLock::new();
    TOKENS.get_or_init(|| {
        TokenService::new(
            &Secret::new(TOKEN_SECRET),
            "provisiond",
            "provisiond",
            Duration::from_secs(300),
        )
    })
}

/// The fixture device's certificate (DER) and key (PKCS#8 PEM), issued by the fixture CA.
pub fn device_credentials() -> &'static (Vec<u8>, String) {
    static DEVICE_FILES: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    DEVICE_FILES.get_or_init(|| {
        let cert = std::fs::read(Path::new(FIXTURES).join("device.crt")).expect("device.crt");
        let key =
            std::fs::read_to_string(Path::new(FIXTURES).join("device.key")).expect("device.key");
        let der = pem_der(&cert);
        (der, key)
    })
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).expect("PEM");
    block.contents
}

/// Claims as the fuzzer wrote them, with integer `iat`, `exp` and `nbf` taken as offsets
/// from now: fixed seeds would otherwise expire, and the paths past the time checks go
/// unexplored.
pub fn claims_from(json: &[u8], now: u64) -> Option<serde_json::Value> {
    let mut claims: serde_json::Value = serde_json::from_slice(json).ok()?;
    if let Some(map) = claims.as_object_mut() {
        for name in ["iat", "exp", "nbf"] {
            if let Some(offset) = map.get(name).and_then(serde_json::Value::as_i64) {
                map.insert(name.into(), now.wrapping_add_signed(offset).into());
            }
        }
    }
    Some(claims)
}
