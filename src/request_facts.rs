//! What a request's log line says about it beyond its method, path and status: the
//! device it names, its token's short id, the certificate issued. Handlers and the
//! issuing path note them as they learn them; `api::log_requests` writes them on the
//! request's line when there is one (a refusal or an error).
//!
//! A task-local, not a tracing span: a span per request was formatted when made and at
//! every field recorded, entered and left at every poll, and printed again as the
//! prefix of the request's audit line, which names the same device and token itself. It
//! cost 5–7 µs of server CPU per request at the default level (BENCHMARKS.md, issue 25).

use std::cell::RefCell;
use std::future::Future;

/// The facts of one request; `None` for what it did not get to.
#[derive(Debug, Default)]
pub struct RequestFacts {
    pub device_id: Option<String>,
    /// The first 8 characters of the token's jti.
    pub jti: Option<String>,
    /// The certificate's serial, upper-case hex.
    pub serial: Option<String>,
    pub key_type: Option<&'static str>,
}

tokio::task_local! {
    static FACTS: RefCell<RequestFacts>;
}

/// Runs `request` with a fresh set of facts; answers its output and what was noted.
pub async fn gather<F: Future>(request: F) -> (F::Output, RequestFacts) {
    FACTS
        .scope(RefCell::default(), async {
            let output = request.await;
            (output, FACTS.with(RefCell::take))
        })
        .await
}

/// Notes a fact of the request being answered; nothing outside one (an MQTT session,
/// a background task).
pub fn note(fact: impl FnOnce(&mut RequestFacts)) {
    let _ = FACTS.try_with(|facts| fact(&mut facts.borrow_mut()));
}
