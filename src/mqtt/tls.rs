//! The listener's TLS: the API's server certificate (`server.tls`), a client certificate
//! required, and that certificate a claim ([`crate::ca::claim`]) signed by one of the
//! served issuers. Its own configuration, not the API's: claims lack clientAuth, which
//! rustls' webpki verifier requires, and AWS's SDK offers the ALPN `x-amzn-mqtt-ca` (on
//! port 443) or none.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::Issuers;
use crate::config::{ConfigError, TlsSettings, rustls_server_config};
use crate::metrics::{Metrics, ReasonLabel};

/// AWS IoT's ALPN for MQTT over TLS on port 443.
const ALPN_AWS_MQTT: &[u8] = b"x-amzn-mqtt-ca";

/// The listener's rustls configuration.
///
/// Errors: `mqtt.listen` without `server.tls.cert` and `server.tls.key`, or files that do
/// not load (named by their key).
pub fn server_config(
    tls: &TlsSettings,
    issuers: Arc<Issuers>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<rustls::ServerConfig> {
    let Some((chain, key_der)) = tls.identity()? else {
        return Err(ConfigError::key(
            "mqtt.listen",
            "the MQTT listener speaks TLS only: set server.tls.cert and server.tls.key \
             (TLS_CERT_FILE, TLS_KEY_FILE; `provisiond ca server-cert` makes them)",
        )
        .into());
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let subjects = issuers
        .cert_ders()
        .iter()
        .filter_map(|der| {
            let (_, cert) = X509Certificate::from_der(der).ok()?;
            Some(DistinguishedName::from(cert.subject().as_raw().to_vec()))
        })
        .collect();
    let verifier = ClaimVerifier {
        issuers,
        subjects,
        provider: provider.clone(),
        metrics,
    };
    let mut config = rustls_server_config(provider, Arc::new(verifier), (chain, key_der))?;
    // No resumption: a resumed session skips the client verifier, so a claim that has
    // expired since would connect without it.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    // Chosen only when offered: a client that offers no ALPN (the SDK on any port but
    // 443) is served all the same.
    config.alpn_protocols = vec![ALPN_AWS_MQTT.to_vec(), b"mqtt".to_vec()];
    Ok(config)
}

/// Takes a claim certificate of one of `issuers`, valid now; refuses anything else
/// (device certificates included), counting each refusal.
struct ClaimVerifier {
    issuers: Arc<Issuers>,
    subjects: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ClaimVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimVerifier")
            .field("issuers", &self.issuers.len())
            .finish()
    }
}

impl ClaimVerifier {
    fn check(&self, der: &[u8], now: UnixTime) -> Result<(), CertificateError> {
        let claim = self.issuers.check_claim(der).map_err(|why| {
            tracing::info!(reason = why, "mqtt: client certificate refused");
            if why.contains("claim") {
                CertificateError::InvalidPurpose
            } else if why.contains("signature") {
                CertificateError::BadSignature
            } else {
                CertificateError::UnknownIssuer
            }
        })?;
        let now = now.as_secs();
        if now < claim.not_before {
            return Err(CertificateError::NotValidYet);
        }
        if now > claim.not_after {
            return Err(CertificateError::Expired);
        }
        Ok(())
    }
}

impl ClientCertVerifier for ClaimVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity.as_ref(), now).map_err(|e| {
            self.metrics
                .mqtt_refused
                .get_or_create(&ReasonLabel {
                    reason: "handshake",
                })
                .inc();
            rustls::Error::InvalidCertificate(e)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
