//! Several CAs signing at once, for a rollover (`[[issuers]]`): each group names the
//! issuer of its certificates, every issuer keeps signing its CRL, and what a device
//! presents (renewal, import, mTLS) may come from any of them.

use std::path::Path;
use std::sync::Arc;

use time::OffsetDateTime;

use super::presented::NOT_THIS_CA;
use super::{CertId, CertificateAuthority, KeySource, PresentedCertificate, ocsp_signer};
use crate::config::{CaSettings, DEFAULT_ISSUER, IssuerSettings};

/// The issuers in force, in the order configured; never empty.
pub struct Issuers {
    list: Vec<(Arc<str>, Arc<CertificateAuthority>)>,
    /// [`Issuers::bundle_pem`], made once.
    bundle: String,
}

impl Issuers {
    /// `[ca]`'s CA alone, named `default`: a server without `[[issuers]]`.
    pub fn single(ca: Arc<CertificateAuthority>) -> Self {
        Self::of(vec![(DEFAULT_ISSUER.into(), ca)])
    }

    /// Loads `configured` (`[[issuers]]`, keys proved against their certificates), or
    /// `[ca]`'s CA (generated on first start) when there are none. The delegated OCSP
    /// responder in `ca.dir` answers for the issuer that signed it.
    ///
    /// Errors: a file that does not load, a key that does not fit its certificate, two
    /// issuers with one certificate, more than one key in a PKCS#11 token (the module is
    /// initialized once per process).
    pub fn load(
        ca: &CaSettings,
        configured: &[IssuerSettings],
        sessions: usize,
    ) -> anyhow::Result<Self> {
        if configured.is_empty() {
            return Ok(Self::single(Arc::new(CertificateAuthority::load_or_init(
                ca, sessions,
            )?)));
        }
        let mut list: Vec<(Arc<str>, CertificateAuthority)> = Vec::new();
        let mut in_token = None;
        for issuer in configured {
            let settings = issuer_settings(ca, issuer);
            let source = KeySource::of(&settings)
                .map_err(|e| anyhow::anyhow!("issuer `{}`: {e:#}", issuer.name))?;
            if let KeySource::Token(_) = source
                && let Some(other) = in_token.replace(issuer.name.as_str())
            {
                anyhow::bail!(
                    "issuers `{other}` and `{}` both keep their key in a PKCS#11 token: one \
                     issuer's key may be in a token, the others' in files",
                    issuer.name
                );
            }
            let loaded = CertificateAuthority::load_at(
                &settings,
                source,
                &issuer.cert,
                issuer.chain.as_deref(),
                sessions,
            )
            .map_err(|e| anyhow::anyhow!("issuer `{}`: {e:#}", issuer.name))?;
            if let Some((other, _)) = list.iter().find(|(_, c)| c.cert_der() == loaded.cert_der()) {
                anyhow::bail!(
                    "issuers `{other}` and `{}` are the same CA certificate",
                    issuer.name
                );
            }
            list.push((issuer.name.as_str().into(), loaded));
        }
        attach_ocsp_signer(&ca.dir, &mut list)?;
        Ok(Self::of(
            list.into_iter()
                .map(|(name, ca)| (name, Arc::new(ca)))
                .collect(),
        ))
    }

    /// The CA the `ca` commands sign with (`ca ocsp-signer`, `ca server-cert`): the
    /// first of `[[issuers]]`, else `[ca]`'s (generated when there is none), without its
    /// OCSP responder, which the first of those commands replaces.
    pub fn load_first_signing(
        ca: &CaSettings,
        configured: &[IssuerSettings],
    ) -> anyhow::Result<CertificateAuthority> {
        let Some(first) = configured.first() else {
            return CertificateAuthority::load_signing(ca, 1);
        };
        let settings = issuer_settings(ca, first);
        let source = KeySource::of(&settings)
            .map_err(|e| anyhow::anyhow!("issuer `{}`: {e:#}", first.name))?;
        CertificateAuthority::load_at(&settings, source, &first.cert, first.chain.as_deref(), 1)
            .map_err(|e| anyhow::anyhow!("issuer `{}`: {e:#}", first.name))
    }

    /// The first issuer: groups that name none are signed by it, and `/api/v1/ca` serves
    /// its chain.
    pub fn first(&self) -> &Arc<CertificateAuthority> {
        &self.list[0].1
    }

    pub fn get(&self, name: &str) -> Option<&Arc<CertificateAuthority>> {
        self.list
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, ca)| ca)
    }

    /// The issuer whose CRL `/api/v1/crl` serves without `?issuer=`: the one named
    /// `default` (so the CRL distribution point of certificates signed before
    /// `[[issuers]]` keeps working), else the first.
    pub fn crl_default(&self) -> usize {
        self.list
            .iter()
            .position(|(n, _)| &**n == DEFAULT_ISSUER)
            .unwrap_or(0)
    }

    /// The index of the issuer `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|(n, _)| &**n == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<CertificateAuthority>)> {
        self.list.iter().map(|(n, ca)| (&**n, ca))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The issuer a CertID names (by its name and key hashes), if it is one of these.
    pub fn for_cert_id(&self, id: &CertId) -> Option<&Arc<CertificateAuthority>> {
        self.list
            .iter()
            .map(|(_, ca)| ca)
            .find(|ca| ca.ocsp_issuer().issued(id))
    }

    /// The issuer that signed the certificate `der`, found by its issuer name and
    /// proved by its signature.
    pub fn issuer_of(&self, der: &[u8]) -> Option<&Arc<CertificateAuthority>> {
        self.list.iter().map(|(_, ca)| ca).find(|ca| ca.signed(der))
    }

    /// As [`CertificateAuthority::check_presented`], by whichever issuer signed `der`:
    /// each compares the issuer name before it verifies, so the signature is verified
    /// once (twice only for two CAs of one name). One issuer's refusal is said in its
    /// words; with several, a certificate none of them names is "not issued by any".
    pub fn check_presented(&self, der: &[u8]) -> Result<PresentedCertificate, &'static str> {
        self.check_by_any(der, CertificateAuthority::check_presented)
    }

    /// As [`Issuers::check_presented`], for a claim certificate
    /// ([`CertificateAuthority::check_claim`]).
    pub fn check_claim(&self, der: &[u8]) -> Result<PresentedCertificate, &'static str> {
        self.check_by_any(der, CertificateAuthority::check_claim)
    }

    /// As [`Issuers::check_claim`], for a claim a TLS verifier has just verified
    /// ([`CertificateAuthority::read_verified_claim`]).
    pub fn read_verified_claim(&self, der: &[u8]) -> Result<PresentedCertificate, &'static str> {
        self.check_by_any(der, CertificateAuthority::read_verified_claim)
    }

    fn check_by_any(
        &self,
        der: &[u8],
        check: fn(&CertificateAuthority, &[u8]) -> Result<PresentedCertificate, &'static str>,
    ) -> Result<PresentedCertificate, &'static str> {
        let mut refusal = None;
        for (_, ca) in &self.list {
            match check(ca, der) {
                Ok(presented) => return Ok(presented),
                Err(NOT_THIS_CA) if self.list.len() > 1 => {}
                Err(e) => refusal = refusal.or(Some(e)),
            }
        }
        Err(refusal.unwrap_or("the certificate was not issued by any of this server's CAs"))
    }

    /// Every certificate of every issuer's chain, each once, the first issuer's first:
    /// what a broker trusts during a rollover (`/api/v1/ca?bundle=all`).
    pub fn bundle_pem(&self) -> &str {
        &self.bundle
    }

    /// The latest notAfter of any issuer: no certificate they sign outlives it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.list
            .iter()
            .map(|(_, ca)| ca.not_after())
            .max()
            .expect("never empty")
    }

    /// The DER of every issuing CA certificate: what mTLS clients may chain to.
    pub fn cert_ders(&self) -> Vec<Vec<u8>> {
        self.list
            .iter()
            .map(|(_, ca)| ca.cert_der().to_vec())
            .collect()
    }
}

impl Issuers {
    fn of(list: Vec<(Arc<str>, Arc<CertificateAuthority>)>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let mut bundle = String::new();
        for (_, ca) in &list {
            for block in ca
                .chain_pem()
                .split_inclusive("-----END CERTIFICATE-----\n")
            {
                if seen.insert(block) {
                    bundle.push_str(block);
                }
            }
        }
        Self { list, bundle }
    }
}

/// `[ca]`'s settings as `issuer` signs with them: its key, and its own CRL distribution
/// point (`ca.crl_url` with `issuer=<name>`, unless it is `default`, whose CRL is at
/// the URL as it is).
fn issuer_settings(ca: &CaSettings, issuer: &IssuerSettings) -> CaSettings {
    let mut settings = ca.clone();
    settings.key = Some(issuer.key.clone());
    if issuer.name != DEFAULT_ISSUER {
        settings.crl_url = ca.crl_url.as_ref().map(|url| {
            let join = if url.contains('?') { '&' } else { '?' };
            format!("{url}{join}issuer={}", issuer.name)
        });
    }
    settings
}

/// The delegated OCSP responder in `dir`, given to the issuer that signed it; one that
/// none of them signed is refused, as with one CA.
fn attach_ocsp_signer(
    dir: &Path,
    list: &mut [(Arc<str>, CertificateAuthority)],
) -> anyhow::Result<()> {
    let mut first_error = None;
    for (_, ca) in list.iter_mut() {
        match ocsp_signer::OcspSigner::load(dir, ca.cert_der()) {
            Ok(None) => return Ok(()),
            Ok(Some(signer)) => {
                ca.ocsp_signer = Some(signer);
                return Ok(());
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
