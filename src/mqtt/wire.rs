//! MQTT 3.1.1 and 5 packets as the listener needs them: one shape for both versions,
//! read from and written to rmqtt's codec, so that the session logic is written once.

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::version::ProtocolVersion;
use rmqtt_codec::{MqttCodec, MqttPacket, v3, v5};
use tokio_util::codec::{Decoder, Encoder};

/// The largest packet taken or sent: a request payload ([`super::payload::MAX_PAYLOAD`])
/// or an answer with a certificate chain and a key, with room for the topic.
pub const MAX_PACKET: u32 = 64 * 1024;
/// The largest CONNECT taken: a client id, the SDK's metrics username, a few properties.
/// The codec makes room for a packet's declared length before it arrives, so a client not
/// yet admitted must not make it reserve more.
const MAX_CONNECT: u32 = 4 * 1024;

/// What a client sent.
#[derive(Debug)]
pub enum Incoming {
    Connect {
        client_id: String,
        keep_alive: u16,
    },
    Publish {
        topic: String,
        qos: QoS,
        packet_id: Option<NonZeroU16>,
        payload: Bytes,
    },
    Subscribe {
        packet_id: NonZeroU16,
        filters: Vec<String>,
    },
    Unsubscribe {
        packet_id: NonZeroU16,
        filters: Vec<String>,
    },
    PingRequest,
    Disconnect,
    /// An acknowledgement of an answer the listener published: nothing to do.
    Acknowledgement,
    /// A packet a client never sends to a server (CONNACK, SUBACK, ...), or QoS 2's.
    Unexpected,
}

/// What the listener sends.
pub enum Outgoing<'a> {
    ConnectAccepted,
    /// Not authorized (a revoked or expired claim, a group not configured).
    ConnectRefused,
    /// The server cannot tell now (its store is away): try again later.
    ConnectUnavailable,
    /// One entry a filter: the QoS granted, or refused.
    SubscribeAck {
        packet_id: NonZeroU16,
        granted: Vec<Option<QoS>>,
    },
    UnsubscribeAck {
        packet_id: NonZeroU16,
        filters: usize,
    },
    PublishAck(NonZeroU16),
    Publish {
        topic: &'a str,
        payload: Bytes,
        packet_id: Option<NonZeroU16>,
    },
    PingResponse,
    /// MQTT 5 says why before it closes (NotAuthorized, ProtocolError); 3.1.1 only closes.
    Disconnect(v5::DisconnectReasonCode),
}

/// A connection's codec: version detection until the CONNECT, then that version's.
pub struct Wire {
    codec: MqttCodec,
}

impl Default for Wire {
    fn default() -> Self {
        Self {
            codec: MqttCodec::Version(rmqtt_codec::version::VersionCodec),
        }
    }
}

impl Wire {
    pub fn is_v5(&self) -> bool {
        matches!(self.codec, MqttCodec::V5(_))
    }

    /// The next whole packet in `buffer`, if there is one.
    ///
    /// Errors: a packet that does not decode, is larger than [`MAX_PACKET`], or is not a
    /// CONNECT where the first packet must be.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Incoming>, String> {
        if let MqttCodec::Version(detect) = &mut self.codec {
            match detect.decode(buffer).map_err(|e| e.to_string())? {
                None => return Ok(None),
                Some(ProtocolVersion::MQTT3) => {
                    self.codec = MqttCodec::V3(v3::Codec::new(MAX_CONNECT))
                }
                Some(ProtocolVersion::MQTT5) => {
                    self.codec = MqttCodec::V5(v5::Codec::new(MAX_CONNECT, MAX_PACKET))
                }
            }
        }
        let packet = match self.codec.decode(buffer).map_err(|e| e.to_string())? {
            None => return Ok(None),
            Some((packet, _size)) => packet,
        };
        Ok(Some(match packet {
            MqttPacket::V3(packet) => from_v3(packet),
            MqttPacket::V5(packet) => from_v5(packet),
            MqttPacket::Version(_) => Incoming::Unexpected,
        }))
    }

    /// The client is admitted: packets up to [`MAX_PACKET`] from now on.
    pub fn admitted(&mut self) {
        match &mut self.codec {
            MqttCodec::V3(codec) => codec.set_max_size(MAX_PACKET),
            MqttCodec::V5(codec) => codec.set_max_inbound_size(MAX_PACKET),
            MqttCodec::Version(_) => {}
        }
    }

    /// Appends `packet` to `out`.
    pub fn encode(&mut self, packet: Outgoing<'_>, out: &mut BytesMut) -> Result<(), String> {
        let packet = match &self.codec {
            MqttCodec::V5(_) => match to_v5(packet) {
                Some(packet) => MqttPacket::V5(packet),
                None => return Ok(()),
            },
            _ => match to_v3(packet) {
                Some(packet) => MqttPacket::V3(packet),
                None => return Ok(()),
            },
        };
        self.codec.encode(packet, out).map_err(|e| e.to_string())
    }
}

fn from_v3(packet: v3::Packet) -> Incoming {
    use v3::Packet as P;
    match packet {
        P::Connect(connect) => Incoming::Connect {
            client_id: connect.client_id.to_string(),
            keep_alive: connect.keep_alive,
        },
        P::Publish(publish) => incoming_publish(*publish),
        P::Subscribe {
            packet_id,
            topic_filters,
        } => Incoming::Subscribe {
            packet_id,
            filters: topic_filters
                .into_iter()
                .map(|(f, _)| f.to_string())
                .collect(),
        },
        P::Unsubscribe {
            packet_id,
            topic_filters,
        } => Incoming::Unsubscribe {
            packet_id,
            filters: topic_filters.into_iter().map(|f| f.to_string()).collect(),
        },
        P::PingRequest => Incoming::PingRequest,
        P::Disconnect => Incoming::Disconnect,
        P::PublishAck { .. } => Incoming::Acknowledgement,
        _ => Incoming::Unexpected,
    }
}

fn from_v5(packet: v5::Packet) -> Incoming {
    use v5::Packet as P;
    match packet {
        P::Connect(connect) => Incoming::Connect {
            client_id: connect.client_id.to_string(),
            keep_alive: connect.keep_alive,
        },
        P::Publish(publish) => incoming_publish(*publish),
        P::Subscribe(subscribe) => Incoming::Subscribe {
            packet_id: subscribe.packet_id,
            filters: subscribe
                .topic_filters
                .into_iter()
                .map(|(f, _)| f.to_string())
                .collect(),
        },
        P::Unsubscribe(unsubscribe) => Incoming::Unsubscribe {
            packet_id: unsubscribe.packet_id,
            filters: unsubscribe
                .topic_filters
                .into_iter()
                .map(|f| f.to_string())
                .collect(),
        },
        P::PingRequest => Incoming::PingRequest,
        P::Disconnect(_) => Incoming::Disconnect,
        P::PublishAck(_) => Incoming::Acknowledgement,
        _ => Incoming::Unexpected,
    }
}

fn incoming_publish(publish: Publish) -> Incoming {
    Incoming::Publish {
        topic: publish.topic.to_string(),
        qos: publish.qos,
        packet_id: publish.packet_id,
        payload: publish.payload,
    }
}

fn outgoing_publish(
    topic: &str,
    payload: Bytes,
    packet_id: Option<NonZeroU16>,
    v5: bool,
) -> Box<Publish> {
    Box::new(Publish {
        dup: false,
        retain: false,
        qos: if packet_id.is_some() {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        },
        topic: topic.into(),
        packet_id,
        payload,
        properties: v5.then(Default::default),
    })
}

fn to_v3(packet: Outgoing<'_>) -> Option<v3::Packet> {
    use v3::Packet as P;
    Some(match packet {
        Outgoing::ConnectAccepted => P::ConnectAck(v3::ConnectAck {
            return_code: v3::ConnectAckReason::ConnectionAccepted,
            session_present: false,
        }),
        Outgoing::ConnectRefused => P::ConnectAck(v3::ConnectAck {
            return_code: v3::ConnectAckReason::NotAuthorized,
            session_present: false,
        }),
        Outgoing::ConnectUnavailable => P::ConnectAck(v3::ConnectAck {
            return_code: v3::ConnectAckReason::ServiceUnavailable,
            session_present: false,
        }),
        Outgoing::SubscribeAck { packet_id, granted } => P::SubscribeAck {
            packet_id,
            status: granted
                .into_iter()
                .map(|g| {
                    g.map_or(
                        v3::SubscribeReturnCode::Failure,
                        v3::SubscribeReturnCode::Success,
                    )
                })
                .collect(),
        },
        Outgoing::UnsubscribeAck { packet_id, .. } => P::UnsubscribeAck { packet_id },
        Outgoing::PublishAck(packet_id) => P::PublishAck { packet_id },
        Outgoing::Publish {
            topic,
            payload,
            packet_id,
        } => P::Publish(outgoing_publish(topic, payload, packet_id, false)),
        Outgoing::PingResponse => P::PingResponse,
        Outgoing::Disconnect(_) => return None,
    })
}

fn to_v5(packet: Outgoing<'_>) -> Option<v5::Packet> {
    use v5::Packet as P;
    Some(match packet {
        Outgoing::ConnectAccepted => P::ConnectAck(Box::new(v5::ConnectAck {
            max_qos: QoS::AtLeastOnce,
            max_packet_size: Some(MAX_PACKET),
            retain_available: false,
            wildcard_subscription_available: false,
            subscription_identifiers_available: false,
            shared_subscription_available: false,
            ..Default::default()
        })),
        Outgoing::ConnectRefused => P::ConnectAck(Box::new(v5::ConnectAck {
            reason_code: v5::ConnectAckReason::NotAuthorized,
            ..Default::default()
        })),
        Outgoing::ConnectUnavailable => P::ConnectAck(Box::new(v5::ConnectAck {
            reason_code: v5::ConnectAckReason::ServerUnavailable,
            ..Default::default()
        })),
        Outgoing::SubscribeAck { packet_id, granted } => P::SubscribeAck(v5::SubscribeAck {
            packet_id,
            properties: Default::default(),
            reason_string: None,
            status: granted
                .into_iter()
                .map(|g| match g {
                    Some(QoS::AtMostOnce) => v5::SubscribeAckReason::GrantedQos0,
                    Some(_) => v5::SubscribeAckReason::GrantedQos1,
                    None => v5::SubscribeAckReason::NotAuthorized,
                })
                .collect(),
        }),
        Outgoing::UnsubscribeAck { packet_id, filters } => P::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id,
            properties: Default::default(),
            reason_string: None,
            status: vec![v5::UnsubscribeAckReason::Success; filters],
        }),
        Outgoing::PublishAck(packet_id) => P::PublishAck(v5::PublishAck {
            packet_id,
            reason_code: v5::PublishAckReason::Success,
            properties: Default::default(),
            reason_string: None,
        }),
        Outgoing::Publish {
            topic,
            payload,
            packet_id,
        } => P::Publish(outgoing_publish(topic, payload, packet_id, true)),
        Outgoing::PingResponse => P::PingResponse,
        Outgoing::Disconnect(reason_code) => P::Disconnect(v5::Disconnect {
            reason_code,
            session_expiry_interval_secs: None,
            server_reference: None,
            reason_string: None,
            user_properties: Default::default(),
        }),
    })
}
