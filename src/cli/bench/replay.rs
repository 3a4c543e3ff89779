//! The scenarios that replay DER bodies written by another client (`openssl ocsp
//! -reqout`, `openssl cmp -reqout`): reading them, and reading just enough of each answer
//! to tell success from refusal.

use std::path::PathBuf;

use bytes::Bytes;
use cmpv2::body::PkiBody;
use cmpv2::message::PkiMessage;
use cmpv2::status::PkiStatus;
use der::Decode;

use super::{BenchArgs, Scenario};
use crate::cli::CliError;

/// The bodies `--scenario ocsp` (`--ocsp-request`) or `--scenario cmp` (`--cmp-request`)
/// sends; empty for the others, which take neither option. A file that cannot be read is
/// [`CliError::LocalIo`].
pub(super) fn read_bodies(args: &BenchArgs) -> Result<Vec<Bytes>, CliError> {
    let usage = |message: String| CliError::Failed(anyhow::anyhow!(message));
    let (option, files, writer): (_, &[PathBuf], _) = match args.scenario {
        Scenario::Ocsp => (
            "--ocsp-request",
            &args.ocsp_requests,
            "openssl ocsp -reqout",
        ),
        Scenario::Cmp => ("--cmp-request", &args.cmp_requests, "openssl cmp -reqout"),
        _ => {
            for (option, files) in [
                ("--ocsp-request", &args.ocsp_requests),
                ("--cmp-request", &args.cmp_requests),
            ] {
                if !files.is_empty() {
                    let scenario = &option[2..option.len() - "-request".len()];
                    return Err(usage(format!("{option} is for --scenario {scenario}")));
                }
            }
            return Ok(Vec::new());
        }
    };
    if files.is_empty() {
        return Err(usage(format!(
            "--scenario {} needs at least one {option} FILE (a DER request, as `{writer}` \
             writes)",
            args.scenario.unit()
        )));
    }
    files
        .iter()
        .map(|path| {
            std::fs::read(path)
                .map(Bytes::from)
                .map_err(|e| CliError::LocalIo(anyhow::anyhow!("{option} {}: {e}", path.display())))
        })
        .collect()
}

/// How a replayed request's answer is judged: `Ok` when it counts, else the reason.
pub(super) type Judge = fn(&[u8]) -> Result<(), String>;

/// Whether an OCSP answer is an OCSPResponse whose `responseStatus` is `successful`;
/// otherwise `ocsp_status_<N>` or `bad_response`, as the bench counts it.
pub(super) fn ocsp_successful(body: &[u8]) -> Result<(), String> {
    match ocsp_response_status(body) {
        Some(0) => Ok(()),
        Some(status) => Err(format!("ocsp_status_{status}")),
        None => Err("bad_response".to_owned()),
    }
}

/// An OCSPResponse's `responseStatus` (RFC 6960 4.2.1: 0 is successful), read without
/// decoding the rest; `None` when the body is not one.
fn ocsp_response_status(body: &[u8]) -> Option<u8> {
    use der::{Tagged, asn1::AnyRef};
    let mut reader = der::SliceReader::new(body).ok()?;
    let header = der::Header::decode(&mut reader).ok()?;
    if header.tag != der::Tag::Sequence {
        return None;
    }
    let status = AnyRef::decode(&mut reader).ok()?;
    match (status.tag(), status.value()) {
        (der::Tag::Enumerated, [value]) => Some(*value),
        _ => None,
    }
}

/// Whether a CMP answer issued the certificate: an `ip`, `cp` or `kup` (RFC 4210 §5.3.4)
/// whose responses are all `accepted` or `grantedWithMods`. Otherwise the reason, as
/// the bench counts it: `cmp_error` (an `error` message), `cmp_rejected`, or
/// `bad_response` (not a PKIMessage).
pub(super) fn cmp_issued(body: &[u8]) -> Result<(), String> {
    let message = PkiMessage::from_der(body).map_err(|_| "bad_response".to_owned())?;
    let answer = match message.body {
        PkiBody::Ip(answer) | PkiBody::Cp(answer) | PkiBody::Kup(answer) => answer,
        PkiBody::Error(_) => return Err("cmp_error".to_owned()),
        _ => return Err("bad_response".to_owned()),
    };
    let granted = !answer.response.is_empty()
        && answer.response.iter().all(|r| {
            matches!(
                r.status.status,
                PkiStatus::Accepted | PkiStatus::GrantedWithMods
            )
        });
    if granted {
        Ok(())
    } else {
        Err("cmp_rejected".to_owned())
    }
}
