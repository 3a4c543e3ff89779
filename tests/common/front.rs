//! A front before a test server that answers "busy" for a while, for testing retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// A front that answers `status` (429 or 503, with Retry-After: 1) to the first
/// `refusals` requests, then passes requests through to `backend`; its address, and a
/// count of the requests it saw.
pub async fn reluctant_front(
    backend: String,
    refusals: usize,
    status: u16,
) -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let client = reqwest::Client::new();
    let server = HttpServer::new(move || {
        let (counter, client, backend) = (counter.clone(), client.clone(), backend.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (counter, client, backend) = (counter.clone(), client.clone(), backend.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < refusals {
                    let code = if status == 429 {
                        "rate_limited"
                    } else {
                        "storage_unavailable"
                    };
                    return HttpResponse::build(StatusCode::from_u16(status).unwrap())
                        .insert_header(("retry-after", "1"))
                        .json(serde_json::json!({"success": false,
                            "error": {"code": code, "message": "later"}}));
                }
                let mut forward = client
                    .post(format!("{backend}{}", req.path()))
                    .body(body.to_vec())
                    .header("content-type", "application/json");
                if let Some(auth) = req.headers().get("authorization") {
                    forward = forward.header("authorization", auth.to_str().unwrap());
                }
                let answer = forward.send().await.unwrap();
                let status = answer.status().as_u16();
                HttpResponse::build(StatusCode::from_u16(status).unwrap())
                    .content_type("application/json")
                    .body(answer.bytes().await.unwrap())
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let address = format!("http://{}", server.addrs()[0]);
    tokio::spawn(server.run());
    (address, seen)
}
