//! A pre-issuance hook for tests: a real HTTP server on a free loopback port that checks
//! every request's signature with its own HMAC code, records what it was asked and
//! answers as told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

pub const SECRET: &str = "hook-secret-hook-secret-hook-secret-0123";

/// What the hook answers next.
#[derive(Clone)]
pub enum Answer {
    Allow,
    AllowDays(u64),
    Deny(&'static str),
    Slow,
    Status(u16),
    Garbage,
    Sans,
    /// This JSON, as it is.
    Json(Value),
    /// Allow a certificate, deny a registration (MQTT's RegisterThing) with this reason.
    DenyRegistration(&'static str),
}

#[derive(Clone)]
pub struct Hook {
    answer: Arc<Mutex<Answer>>,
    pub seen: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn last(&self) -> Value {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the hook was asked")
    }
}

/// The receiver's side of the signature, written here from the scheme alone:
/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, at most 5 minutes old.
fn signed_by_us(req: &HttpRequest, body: &[u8]) -> bool {
    let Some(header) = req
        .headers()
        .get("provisiond-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = provisiond::clock::unix_now();
    if now.abs_diff(t) > 300 {
        return false;
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    aws_lc_rs::hmac::verify(&key, &signed, &v1).is_ok()
}

async fn answer(req: HttpRequest, body: web::Bytes, hook: web::Data<Hook>) -> HttpResponse {
    if !signed_by_us(&req, &body) {
        return HttpResponse::Unauthorized().finish();
    }
    let request: Value = serde_json::from_slice(&body).unwrap();
    hook.seen.lock().unwrap().push(request);
    let next = hook.answer.lock().unwrap().clone();
    match next {
        Answer::Allow => HttpResponse::Ok().json(json!({ "allow": true })),
        Answer::AllowDays(days) => {
            HttpResponse::Ok().json(json!({ "allow": true, "validity_days": days }))
        }
        Answer::Deny(reason) => {
            HttpResponse::Ok().json(json!({ "allow": false, "reason": reason }))
        }
        Answer::Slow => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            HttpResponse::Ok().json(json!({ "allow": true }))
        }
        Answer::Status(code) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap()).finish()
        }
        Answer::Garbage => HttpResponse::Ok().body("<html>not json</html>"),
        Answer::Json(value) => HttpResponse::Ok().json(value),
        Answer::DenyRegistration(reason) => {
            let allow = request_event(&hook) != "registration";
            HttpResponse::Ok().json(json!({ "allow": allow, "reason": reason }))
        }
        // A name no certificate may carry (the group's names may be replaced, by names).
        Answer::Sans => {
            HttpResponse::Ok().json(json!({ "allow": true, "san_dns": ["not a host name"] }))
        }
    }
}

fn request_event(hook: &Hook) -> String {
    let seen = hook.seen.lock().unwrap();
    seen.last()
        .and_then(|r| r["event"].as_str())
        .unwrap_or("")
        .to_owned()
}

pub async fn start_hook() -> (Hook, String) {
    let (hook, port) = serve(None).await;
    (hook, format!("http://127.0.0.1:{port}/hook"))
}

/// The hook over HTTPS, its certificate (for `localhost`) from a CA made here; answers
/// the hook, its URL and the CA certificate (PEM) to trust it with.
pub async fn start_tls_hook() -> (Hook, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "hook test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (hook, port) = serve(Some(config)).await;
    (
        hook,
        format!("https://localhost:{port}/hook"),
        ca_cert.pem(),
    )
}

/// The hook on a free loopback port (over TLS with `tls`); stopped when the test's
/// runtime ends.
async fn serve(tls: Option<rustls::ServerConfig>) -> (Hook, u16) {
    let hook = Hook {
        answer: Arc::new(Mutex::new(Answer::Allow)),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let data = web::Data::new(hook.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/hook", web::post().to(answer))
    })
    .workers(1);
    let server = match tls {
        Some(tls) => server.bind_rustls_0_23(("127.0.0.1", 0), tls),
        None => server.bind(("127.0.0.1", 0)),
    }
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    (hook, port)
}
