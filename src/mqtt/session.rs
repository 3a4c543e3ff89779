//! One client connection: CONNECT, then the provisioning topics only, each request
//! answered on this connection alone (AWS's SDK matches answers by topic, so an answer
//! another claimant could receive would hand it a certificate and a key).

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::DisconnectReasonCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::payload::{self, Payload};
use super::provision::{Claim, Provisioner, Rejection};
use super::topics::{self, Request};
use super::wire::{Incoming, Outgoing, Wire};
use crate::ca::PresentedCertificate;
use crate::metrics::{ProvisioningLabels, ReasonLabel};

/// How long a client has to send its CONNECT once TLS is up.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// The idle limit of a client that asked for no keep-alive, or for more than AWS IoT
/// allows (1,200 s): a provisioning connection has no reason to idle longer.
const MAX_IDLE: Duration = Duration::from_secs(1800);
/// Subscriptions one connection may hold: the three request topics' answers, twice over.
const MAX_SUBSCRIPTIONS: usize = 12;

/// Why a connection ended, when it was not the client's DISCONNECT or close.
enum End {
    Closed,
    /// Counted under this reason, and told with this code under MQTT 5.
    Refused(&'static str, DisconnectReasonCode),
}

pub struct Session {
    stream: TlsStream<TcpStream>,
    peer: SocketAddr,
    provisioner: Arc<Provisioner>,
    wire: Wire,
    input: BytesMut,
    output: BytesMut,
    subscriptions: Vec<String>,
    next_packet_id: u16,
}

impl Session {
    pub fn new(
        stream: TlsStream<TcpStream>,
        peer: SocketAddr,
        provisioner: Arc<Provisioner>,
    ) -> Self {
        Self {
            stream,
            peer,
            provisioner,
            wire: Wire::default(),
            input: BytesMut::with_capacity(4096),
            output: BytesMut::with_capacity(4096),
            subscriptions: Vec::new(),
            next_packet_id: 0,
        }
    }

    /// Serves the connection to its end.
    pub async fn run(mut self) {
        let ended = self.serve().await;
        if let Err(End::Refused(reason, code)) = ended {
            self.count_refused(reason);
            if self.wire.is_v5() {
                let _ = self.send(Outgoing::Disconnect(code)).await;
            }
        }
        let _ = self.stream.shutdown().await;
    }

    async fn serve(&mut self) -> Result<(), End> {
        let (client_id, keep_alive) = match self.next(CONNECT_WITHIN).await? {
            Incoming::Connect {
                client_id,
                keep_alive,
            } => (client_id, keep_alive),
            _ => {
                return Err(End::Refused(
                    "protocol",
                    DisconnectReasonCode::ProtocolError,
                ));
            }
        };
        // Read before the await, so that no borrow of the session (whose codec is not
        // `Sync`) is held across it.
        let presented = self.presented();
        let provisioner = self.provisioner.clone();
        let admitted = match presented {
            Ok((der, presented)) => provisioner.admit(&der, &presented).await,
            Err(reason) => Err(reason),
        };
        let claim = match admitted {
            Ok(claim) => claim,
            Err(reason) => {
                self.count_refused(reason);
                let answer = match reason {
                    "storage" => Outgoing::ConnectUnavailable,
                    _ => Outgoing::ConnectRefused,
                };
                self.send(answer).await?;
                return Ok(());
            }
        };
        self.wire.admitted();
        self.send(Outgoing::ConnectAccepted).await?;
        // MQTT's own limit is one and a half keep-alives (MQTT 3.1.1 §3.1.2.10).
        let idle = match keep_alive {
            0 => MAX_IDLE,
            secs => Duration::from_millis(u64::from(secs) * 1500).min(MAX_IDLE),
        };
        loop {
            match self.next(idle).await? {
                Incoming::Publish {
                    topic,
                    qos,
                    packet_id,
                    payload,
                } => {
                    let request = Request::parse(&topic)
                        .ok_or(End::Refused("topic", DisconnectReasonCode::NotAuthorized))?;
                    match (qos, packet_id) {
                        (QoS::AtMostOnce, _) => {}
                        (QoS::AtLeastOnce, Some(id)) => self.send(Outgoing::PublishAck(id)).await?,
                        _ => {
                            return Err(End::Refused(
                                "protocol",
                                DisconnectReasonCode::QosNotSupported,
                            ));
                        }
                    }
                    self.handle(&claim, &client_id, request, &payload).await?;
                }
                Incoming::Subscribe { packet_id, filters } => {
                    self.subscribe(packet_id, filters).await?;
                }
                Incoming::Unsubscribe { packet_id, filters } => {
                    self.subscriptions.retain(|s| !filters.contains(s));
                    self.send(Outgoing::UnsubscribeAck {
                        packet_id,
                        filters: filters.len(),
                    })
                    .await?;
                }
                Incoming::PingRequest => self.send(Outgoing::PingResponse).await?,
                Incoming::Disconnect => return Ok(()),
                Incoming::Acknowledgement => {}
                Incoming::Connect { .. } | Incoming::Unexpected => {
                    return Err(End::Refused(
                        "protocol",
                        DisconnectReasonCode::ProtocolError,
                    ));
                }
            }
        }
    }

    /// The claim this connection's TLS handshake presented: its DER, and as read.
    fn presented(&self) -> Result<(Vec<u8>, PresentedCertificate), &'static str> {
        let leaf = self
            .stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or("handshake")?;
        self.provisioner
            .state
            .issuers
            .read_verified_claim(leaf.as_ref())
            .map(|presented| (leaf.to_vec(), presented))
            .map_err(|_| "handshake")
    }

    async fn subscribe(&mut self, packet_id: NonZeroU16, filters: Vec<String>) -> Result<(), End> {
        let mut granted = Vec::with_capacity(filters.len());
        for filter in filters {
            if topics::may_subscribe(&filter) && self.subscriptions.len() < MAX_SUBSCRIPTIONS {
                if !self.subscriptions.contains(&filter) {
                    self.subscriptions.push(filter);
                }
                granted.push(Some(QoS::AtLeastOnce));
            } else {
                self.count_refused("topic");
                granted.push(None);
            }
        }
        self.send(Outgoing::SubscribeAck { packet_id, granted })
            .await
    }

    /// One request: decoded, done, counted, and answered if this connection subscribed
    /// to its answer.
    async fn handle(
        &mut self,
        claim: &Claim,
        client_id: &str,
        request: Request,
        bytes: &[u8],
    ) -> Result<(), End> {
        let client = Some(self.peer.ip());
        let provisioner = self.provisioner.clone();
        let answer: Result<Vec<u8>, Rejection> = async {
            match payload::decode(&request, bytes).map_err(Rejection::invalid_payload)? {
                Payload::CreateFromCsr { csr } => {
                    let created = provisioner
                        .create(claim, client_id, Some(&csr), client)
                        .await?;
                    Ok(json(&created))
                }
                Payload::CreateKeys => {
                    let created = provisioner.create(claim, client_id, None, client).await?;
                    Ok(json(&created))
                }
                Payload::Register {
                    ownership_token,
                    parameters,
                } => {
                    // `decode` reads a registration only from a template's topic.
                    let template = match &request {
                        Request::Register(template) => template.as_str(),
                        _ => {
                            return Err(Rejection::invalid_payload(
                                "not a template's topic".into(),
                            ));
                        }
                    };
                    let (device, configuration) = provisioner
                        .register(claim, template, &ownership_token, &parameters, client)
                        .await?;
                    Ok(json(&Provisioner::registered(&device, &configuration)))
                }
            }
        }
        .await;
        let outcome = match &answer {
            Ok(_) => "accepted",
            Err(rejection) => rejection.0.error_code,
        };
        self.provisioner
            .state
            .metrics
            .provisioning_requests
            .get_or_create(&ProvisioningLabels {
                protocol: "mqtt",
                request: request.name(),
                outcome,
            })
            .inc();
        if let Err(rejection) = &answer {
            tracing::info!(
                request = request.name(),
                code = rejection.0.error_code,
                message = %rejection.0.error_message,
                client_ip = %self.peer.ip(),
                "mqtt: request rejected"
            );
        }
        let (accepted, body) = match answer {
            Ok(body) => (true, body),
            Err(rejection) => (false, json(&rejection.0)),
        };
        let topic = request.answer_topic(accepted);
        if !self
            .subscriptions
            .iter()
            .any(|f| topics::matches(f, &topic))
        {
            return Ok(());
        }
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        let packet_id = NonZeroU16::new(self.next_packet_id);
        self.send(Outgoing::Publish {
            topic: &topic,
            payload: Bytes::from(body),
            packet_id,
        })
        .await
    }

    /// The next packet, whole within `within` (a client trickling a packet byte by byte
    /// gets no more time than one that sends nothing).
    async fn next(&mut self, within: Duration) -> Result<Incoming, End> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.wire.decode(&mut self.input) {
                Ok(Some(packet)) => return Ok(packet),
                Ok(None) => {}
                Err(why) => {
                    tracing::debug!(%why, client_ip = %self.peer.ip(), "mqtt: a packet that does not decode");
                    return Err(End::Refused(
                        "protocol",
                        DisconnectReasonCode::MalformedPacket,
                    ));
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.input)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(End::Closed),
                Ok(Ok(_)) => {}
                Err(_) => {
                    return Err(End::Refused(
                        "protocol",
                        DisconnectReasonCode::KeepAliveTimeout,
                    ));
                }
            }
        }
    }

    async fn send(&mut self, packet: Outgoing<'_>) -> Result<(), End> {
        self.wire
            .encode(packet, &mut self.output)
            .map_err(|_| End::Refused("protocol", DisconnectReasonCode::PacketTooLarge))?;
        let written = self.stream.write_all(&self.output).await;
        self.output.clear();
        written.map_err(|_| End::Closed)?;
        self.stream.flush().await.map_err(|_| End::Closed)
    }

    fn count_refused(&self, reason: &'static str) {
        self.provisioner
            .state
            .metrics
            .mqtt_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // The answers are plain structs of strings: they always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}
