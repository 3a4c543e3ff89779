//! The HTTP floor of `scripts/bench.py`: what the server's HTTP stack alone costs per
//! request, so that a benchmark can tell what is crypto, what is HTTP and the kernel,
//! and what is provisiond's own work, on any machine.
//!
//! The same stack as `provisiond` (actix-web, one worker per core, the same keep-alive,
//! mimalloc), no middleware, no logging: `POST /api/v1/onboarding` and `POST
//! /api/v1/sign-csr` read the whole body and answer 200 with a fixed JSON body, which
//! `bench.py` takes from the real server's answers so that both write as many bytes.
//!
//!     cargo run --release --example http_floor -- ONBOARDING_ANSWER SIGN_ANSWER
//!
//! Prints `listening on 127.0.0.1:<port>` once bound (port 0: any free port).

use std::time::Duration;

use actix_web::http::header::ContentType;
use actix_web::{App, HttpResponse, HttpServer, web};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Answers {
    onboarding: web::Bytes,
    sign: web::Bytes,
}

fn answer(body: &web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(body.clone())
}

async fn onboarding(answers: web::Data<Answers>, _request: web::Bytes) -> HttpResponse {
    answer(&answers.onboarding)
}

async fn sign_csr(answers: web::Data<Answers>, _request: web::Bytes) -> HttpResponse {
    answer(&answers.sign)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [onboarding_file, sign_file] = args.as_slice() else {
        eprintln!("usage: http_floor ONBOARDING_ANSWER SIGN_ANSWER");
        std::process::exit(2);
    };
    let answers = web::Data::new(Answers {
        onboarding: std::fs::read(onboarding_file)?.into(),
        sign: std::fs::read(sign_file)?.into(),
    });
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(answers.clone())
            .route("/api/v1/onboarding", web::post().to(onboarding))
            .route("/api/v1/sign-csr", web::post().to(sign_csr))
    })
    .workers(workers)
    .keep_alive(Duration::from_secs(75))
    .bind(("127.0.0.1", 0))?;
    println!("listening on {}", server.addrs()[0]);
    server.run().await
}
