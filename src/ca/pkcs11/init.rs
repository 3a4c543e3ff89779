//! `provisiond ca init --pkcs11-uri`: a new key pair made inside the token, where it
//! stays (CKA_SENSITIVE, not CKA_EXTRACTABLE).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};

use super::connection::{Module, find_slot, login, private_keys};
use super::{Curve, TokenLocation};

/// Generates an ECDSA key pair on `curve` in the token `location` names, labelled and
/// identified as its URI says (a random 16-byte CKA_ID when the URI gives none). A key
/// already matching the URI is refused, never replaced: tokens are where keys are kept.
/// Answers the public point, uncompressed.
pub fn generate_key(location: &TokenLocation, curve: Curve) -> anyhow::Result<Vec<u8>> {
    let fail = |e: String| anyhow::anyhow!("{}: {e}", location.uri);
    let module = Module::load(&location.module).map_err(fail)?;
    let slot = find_slot(&module.0, &location.uri).map_err(fail)?;
    let session = module
        .0
        .open_rw_session(slot)
        .map_err(|e| fail(format!("cannot open a read-write session: {e}")))?;
    login(&session, location.pin.expose()).map_err(|e| fail(e.to_string()))?;
    if !private_keys(&session, &location.uri)
        .map_err(fail)?
        .is_empty()
    {
        anyhow::bail!(
            "the token already holds a private key matching {}: name another object, or \
             use that key (set ca.key to the URI) with its certificate",
            location.uri
        );
    }
    let id = location.uri.id.clone().unwrap_or_else(|| {
        let mut id = vec![0u8; 16];
        crate::crypto::fill_random(&mut id);
        id
    });
    let mut common = vec![Attribute::Token(true), Attribute::Id(id)];
    if let Some(label) = &location.uri.object {
        common.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    let mut public = common.clone();
    public.extend([
        Attribute::EcParams(curve.ec_params()),
        Attribute::Verify(true),
    ]);
    let mut private = common;
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
    ]);
    let (public, _) = session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .map_err(|e| fail(format!("the token could not generate the key: {e}")))?;
    let attributes = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(|e| fail(format!("cannot read the new public key: {e}")))?;
    let Some(Attribute::EcPoint(point)) = attributes.into_iter().next() else {
        anyhow::bail!("{}: the token gave no CKA_EC_POINT", location.uri);
    };
    // CKA_EC_POINT is the DER of an OCTET STRING holding the point (PKCS#11 §2.3.3);
    // some tokens give the bare point.
    let point = match yasna::parse_der(&point, |r| r.read_bytes()) {
        Ok(inner) if Curve::of_point(&inner).is_some() => inner,
        _ => point,
    };
    if Curve::of_point(&point) != Some(curve) {
        anyhow::bail!("{}: the token made a key on another curve", location.uri);
    }
    drop(session);
    drop(module);
    Ok(point)
}
