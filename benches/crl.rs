//! Building the CRL from a long revoked list: the time to read the list from Redis and
//! sign a CRL, at 1,000, 10,000 and 100,000 entries.
//!
//! `cargo bench --bench crl` (needs `redis-server`; it starts its own on a free port in
//! a temporary directory and stops it at the end).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisiond::ca::{CertificateAuthority, Issuers};
use provisiond::config::Settings;
use provisiond::crl::CrlPublisher;
use provisiond::store::{CertificateRegistry, RedisConfig, RedisStore};

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `count` revoked entries in the list's current form, valid for a year.
fn fill(url: &str, prefix: &str, count: usize) {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let not_after = provisiond::clock::unix_now() + 365 * 86_400;
    let mut pipe = redis::pipe();
    for i in 0..count {
        let mut serial = [0u8; 16];
        serial[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        serial[0] = 0x40;
        let member = format!("{}:1800000000:1", hex::encode_upper(serial));
        pipe.cmd("ZADD")
            .arg(format!("{prefix}revoked"))
            .arg(not_after)
            .arg(member)
            .ignore();
    }
    pipe.cmd("SET")
        .arg(format!("{prefix}revoked:revision"))
        .arg(provisiond::clock::unix_now_ms())
        .ignore();
    pipe.query::<()>(&mut conn).unwrap();
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _redis = Redis(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs"),
    );
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .is_ok()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut settings = Settings::default();
    settings.ca.dir = dir.path().join("certs");
    settings.redis.url = Some(url.clone());
    let ca = Arc::new(CertificateAuthority::load_or_init(&settings.ca, 1).unwrap());
    println!("entries   read list   first CRL   next CRL (one more revision)   CRL bytes");
    for count in [1_000, 10_000, 100_000] {
        let prefix = format!("bench{count}:");
        settings.redis.key_prefix = prefix.clone();
        fill(&url, &prefix, count);
        let config = RedisConfig::from_settings(&settings.redis).unwrap();
        let (store, _tasks) = RedisStore::connect(config, Default::default())
            .await
            .unwrap();
        let started = Instant::now();
        let list = store.revoked().await.unwrap();
        let read = started.elapsed();
        assert_eq!(list.entries.len(), count);
        let started = Instant::now();
        let publisher = CrlPublisher::new(
            Arc::new(Issuers::single(ca.clone())),
            store.clone(),
            Duration::from_secs(86_400),
            Default::default(),
            None,
        )
        .await;
        let first = started.elapsed();
        let bytes = publisher.current().unwrap().crl().der.len();
        fill(&url, &prefix, 1);
        let started = Instant::now();
        assert!(publisher.refresh().await.unwrap());
        let next = started.elapsed();
        println!(
            "{count:>7}   {:>7.1} ms   {:>7.1} ms   {:>7.1} ms                     {bytes}",
            read.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e3,
            next.as_secs_f64() * 1e3,
        );
    }
}
