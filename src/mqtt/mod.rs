//! Provisioning over MQTT, compatible with AWS IoT fleet provisioning: a device holding a
//! claim certificate ([`crate::ca::claim`]) connects over TLS, publishes
//! CreateCertificateFromCsr (or CreateKeysAndCertificate) and RegisterThing on AWS's
//! topics, and gets its certificate on this connection, and on no other.
//!
//! Not a broker: only the provisioning topics exist ([`topics`]); anything else is
//! refused and counted (`provisiond_mqtt_refused_total`). Issuing goes through the same
//! path as every door ([`provision`]).

mod payload;
mod provision;
mod session;
mod tls;
mod topics;
mod unregistered;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Data;
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

pub use payload::{MAX_PAYLOAD, Payload, decode as decode_payload};
pub use provision::OWNERSHIP_TTL;
pub use topics::Request;
pub use wire::{Incoming, Wire};

use crate::api::AppState;
use crate::config::{MqttSettings, TlsSettings};
use crate::metrics::ReasonLabel;
use crate::token::TokenService;

/// How long a TLS handshake may take.
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);
/// `mqtt.max_connections` when unset.
const MAX_CONNECTIONS: usize = 10_000;

/// The listener, bound: where, and the runtime its connections run on, stopped when this
/// is dropped.
pub struct MqttListener {
    pub address: SocketAddr,
    runtime: Option<Runtime>,
}

impl Drop for MqttListener {
    fn drop(&mut self) {
        // Without waiting: the server may be dropped from async code, where a runtime
        // must not block.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Binds `mqtt.listen` and starts accepting, when it is set, on a runtime of its own with
/// `workers` threads: the handshakes and signing of many devices at once use every core,
/// as the HTTP workers do, not the one thread of the main runtime.
///
/// `ownership` signs the certificate ownership tokens: the JWT secret's, with an audience
/// of its own. Errors: the address does not bind, or TLS is not configured.
pub fn listen(
    mqtt: &MqttSettings,
    tls: &TlsSettings,
    state: Data<AppState>,
    ownership: TokenService,
    workers: usize,
) -> anyhow::Result<Option<MqttListener>> {
    let Some(address) = &mqtt.listen else {
        return Ok(None);
    };
    let config = tls::server_config(tls, state.issuers.clone(), state.metrics.clone())?;
    let listener = std::net::TcpListener::bind(address.as_str())
        .with_context(|| format!("cannot listen on {address} (mqtt.listen)"))?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let provisioner = Arc::new(provision::Provisioner::new(state, ownership));
    let slots = Arc::new(Semaphore::new(
        mqtt.max_connections.unwrap_or(MAX_CONNECTIONS),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name("mqtt")
        .enable_all()
        .build()
        .context("starting the MQTT listener's runtime")?;
    runtime.spawn(async move {
        match TcpListener::from_std(listener) {
            Ok(listener) => accept(listener, acceptor, provisioner, slots).await,
            Err(e) => tracing::error!(error = %e, "mqtt: the listener cannot be used"),
        }
    });
    tracing::info!(%address, "MQTT fleet provisioning listening (TLS, claim certificates)");
    Ok(Some(MqttListener {
        address,
        runtime: Some(runtime),
    }))
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    provisioner: Arc<provision::Provisioner>,
    slots: Arc<Semaphore>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "mqtt: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused(&provisioner, "connections");
            continue;
        };
        let acceptor = acceptor.clone();
        let provisioner = provisioner.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let stream = match tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                // A refused certificate was counted by the verifier.
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, client_ip = %peer.ip(), "mqtt: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            session::Session::new(stream, peer, provisioner).run().await;
        });
    }
}

fn refused(provisioner: &provision::Provisioner, reason: &'static str) {
    provisioner
        .state
        .metrics
        .mqtt_refused
        .get_or_create(&ReasonLabel { reason })
        .inc();
}
