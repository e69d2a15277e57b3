//! One device connection: the CONNECT handshake, then packets in and
//! acknowledgements out. QoS 1 messages are handed to ingestion as they
//! arrive and acknowledged in order, each once its batch is committed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use mqtt5_protocol::packet::connack::ConnAckPacket;
use mqtt5_protocol::packet::connect::ConnectPacket;
use mqtt5_protocol::packet::disconnect::DisconnectPacket;
use mqtt5_protocol::packet::publish::PublishPacket;
use mqtt5_protocol::packet::suback::{SubAckPacket, SubAckReasonCode};
use mqtt5_protocol::packet::subscribe::SubscribePacket;
use mqtt5_protocol::packet::unsuback::{UnsubAckPacket, UnsubAckReasonCode};
use mqtt5_protocol::packet::unsubscribe::UnsubscribePacket;
use mqtt5_protocol::packet::MqttPacket;
use mqtt5_protocol::{FixedHeader, Packet, QoS, ReasonCode};
use plantops_core::topic;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use uuid::Uuid;

use super::{stopped, Kick, Shared};
use crate::ingest::{DropReason, Outcome, Rate, Submitted};

/// How long a new connection may take to finish TLS and send CONNECT.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may leave its acknowledgements unread before the
/// connection is closed: it slows only itself, and not for ever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Subscriptions one device connection may hold (under its own prefix).
pub const MAX_SUBSCRIPTIONS_PER_DEVICE: usize = 8;
/// Largest packet, fixed header included; a larger one ends the connection.
pub const MAX_PACKET_SIZE: usize = 64 * 1024;
/// Reads start small, so an idle connection holds little, and grow while
/// a busy one keeps filling them.
const MIN_READ: usize = 512;
const MAX_READ: usize = 32 * 1024;

const V311: u8 = 4;
const V5: u8 = 5;

/// How far the bytes at the front of the buffer make a packet.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// Not all there yet; the packet's whole length once the header is in.
    Incomplete(Option<usize>),
    Complete(usize),
    TooLarge,
    Malformed,
}

fn frame(buffer: &[u8]) -> Frame {
    let mut remaining = 0usize;
    for (i, &byte) in buffer.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let total = 1 + (i + 1) + remaining;
            return if total > MAX_PACKET_SIZE {
                Frame::TooLarge
            } else if buffer.len() >= total {
                Frame::Complete(total)
            } else {
                Frame::Incomplete(Some(total))
            };
        }
    }
    if buffer.len() >= 5 {
        Frame::Malformed
    } else {
        Frame::Incomplete(None)
    }
}

/// The bytes coming in, read in chunks sized to the traffic.
struct Input {
    buffer: BytesMut,
    chunk: usize,
}

impl Input {
    fn new() -> Self {
        Self {
            buffer: BytesMut::new(),
            chunk: MIN_READ,
        }
    }

    /// Reads once; `Ok(0)` is the end of the stream.
    async fn fill(&mut self, stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<usize> {
        let wanted = match frame(&self.buffer) {
            Frame::Incomplete(Some(total)) => (total - self.buffer.len()).max(self.chunk),
            _ => self.chunk,
        };
        self.buffer.reserve(wanted);
        let read = stream.read_buf(&mut self.buffer).await?;
        if read >= self.chunk {
            self.chunk = (self.chunk * 2).min(MAX_READ);
        } else if read < self.chunk / 4 {
            self.chunk = (self.chunk / 2).max(MIN_READ);
        }
        Ok(read)
    }

    /// The next whole packet's bytes, if they are all in.
    fn next_frame(&mut self) -> Result<Option<Bytes>, ReasonCode> {
        match frame(&self.buffer) {
            Frame::Incomplete(_) => {
                if self.buffer.is_empty() && self.buffer.capacity() > 4 * self.chunk {
                    // A burst is over: give its buffer back.
                    self.buffer = BytesMut::new();
                }
                Ok(None)
            }
            Frame::Complete(length) => Ok(Some(self.buffer.split_to(length).freeze())),
            Frame::TooLarge => Err(ReasonCode::PacketTooLarge),
            Frame::Malformed => Err(ReasonCode::MalformedPacket),
        }
    }
}

fn decode(mut frame: Bytes, version: u8) -> Result<Packet, ReasonCode> {
    let header = FixedHeader::decode(&mut frame).map_err(|_| ReasonCode::MalformedPacket)?;
    Packet::decode_from_body_with_version(header.packet_type, &header, &mut frame, version)
        .map_err(|_| ReasonCode::MalformedPacket)
}

/// Why a connection ends.
enum End {
    /// The client sent DISCONNECT; its will goes out only if it asked.
    Disconnected {
        with_will: bool,
    },
    /// The connection dropped, could not be written to, or ingestion is
    /// stopping (what is in flight stays unacknowledged, to be sent again).
    Lost,
    /// The client broke the protocol; MQTT 5 clients are told why.
    Refused(ReasonCode),
    KeepAliveExpired,
    Kicked(Kick),
    /// The broker is stopping.
    Stopping,
}

/// Serves one connection until it ends.
pub(super) async fn serve<S>(mut stream: S, peer: SocketAddr, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut input = Input::new();
    let connect =
        match tokio::time::timeout(CONNECT_TIMEOUT, read_connect(&mut stream, &mut input)).await {
            Ok(Some(connect)) => connect,
            Ok(None) | Err(_) => return,
        };
    let version = connect.protocol_version;
    if version != V311 && version != V5 {
        let refusal = ConnAckPacket::new_v311(false, ReasonCode::UnsupportedProtocolVersion);
        let _ = send(&mut stream, &encode(&refusal)).await;
        return;
    }
    let admitted = match shared.auth.authenticate(&connect, peer).await {
        Ok(device_id) => check_will(&connect, device_id).map(|()| device_id),
        Err(reason) => Err(reason),
    };
    let device_id = match admitted {
        Ok(device_id) => device_id,
        Err(reason) => {
            let _ = send(&mut stream, &encode(&connack(version, reason, 0))).await;
            return;
        }
    };
    // What the connection needs of its CONNECT from here on; the rest
    // (password, properties) is not kept for the connection's lifetime.
    let ConnectPacket {
        client_id,
        will,
        keep_alive,
        ..
    } = connect;
    let session = shared.sessions.open(&client_id, device_id);
    tracing::debug!(%device_id, %client_id, "device connected");
    let accepted = connack(version, ReasonCode::Success, shared.limits.max_inflight);
    if send(&mut stream, &encode(&accepted)).await.is_err() {
        return;
    }
    let mut connection = Connection {
        shared,
        device_id,
        version,
        subscriptions: Vec::new(),
        output: BytesMut::new(),
    };
    let end = connection
        .run(&mut stream, &mut input, &session.switch, keep_alive)
        .await;
    drop(session);
    let reason = match end {
        End::Kicked(Kick::TakenOver) => Some(ReasonCode::SessionTakenOver),
        End::Kicked(Kick::Revoked) => Some(ReasonCode::AdministrativeAction),
        End::Refused(reason) => Some(reason),
        End::KeepAliveExpired => Some(ReasonCode::KeepAliveTimeout),
        End::Stopping => Some(ReasonCode::ServerShuttingDown),
        End::Disconnected { .. } | End::Lost => None,
    };
    if let (Some(reason), V5) = (reason, version) {
        let _ = send(&mut stream, &encode(&DisconnectPacket::new(reason))).await;
    }
    let _ = stream.shutdown().await;
    let publish_will = !matches!(end, End::Disconnected { with_will: false });
    if let (true, Some(will)) = (publish_will, &will) {
        let submitted = shared
            .ingest
            .submit(
                device_id,
                &will.topic,
                &will.payload,
                false,
                Rate::ByReadingTime,
            )
            .await;
        submitted.outcome().await;
    }
    tracing::debug!(%device_id, %client_id, "device disconnected");
}

async fn read_connect(
    stream: &mut (impl AsyncRead + Unpin),
    input: &mut Input,
) -> Option<ConnectPacket> {
    loop {
        match input.next_frame() {
            Ok(Some(frame)) => {
                return match decode(frame, V311) {
                    Ok(Packet::Connect(connect)) => Some(*connect),
                    _ => None,
                };
            }
            Ok(None) => {}
            Err(_) => return None,
        }
        if input.fill(stream).await.ok()? == 0 {
            return None;
        }
    }
}

/// A will may only be what the device could publish itself.
fn check_will(connect: &ConnectPacket, device_id: Uuid) -> Result<(), ReasonCode> {
    let Some(will) = &connect.will else {
        return Ok(());
    };
    if will.qos == QoS::ExactlyOnce {
        return Err(ReasonCode::QoSNotSupported);
    }
    match topic::own_kind(&device_id.to_string(), &will.topic) {
        Some(_) => Ok(()),
        None => Err(ReasonCode::NotAuthorized),
    }
}

fn connack(version: u8, reason: ReasonCode, receive_maximum: u16) -> ConnAckPacket {
    if version == V311 {
        return ConnAckPacket::new_v311(false, reason);
    }
    let connack = ConnAckPacket::new(false, reason);
    if reason != ReasonCode::Success {
        return connack;
    }
    // Nothing is kept for a device between connections (nothing is ever
    // queued for it), so its session ends with the connection.
    connack
        .with_session_expiry_interval(0)
        .with_receive_maximum(receive_maximum)
        .with_maximum_qos(1)
        .with_maximum_packet_size(MAX_PACKET_SIZE as u32)
        .with_shared_subscription_available(false)
        .with_subscription_identifier_available(false)
}

fn encode(packet: &impl MqttPacket) -> BytesMut {
    let mut out = BytesMut::new();
    // Our own packets are small and well-formed: encoding cannot fail.
    let _ = packet.encode(&mut out);
    out
}

async fn send(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

struct Connection<'a> {
    shared: &'a Shared,
    device_id: Uuid,
    version: u8,
    subscriptions: Vec<String>,
    /// Acknowledgements waiting to be written, sent together.
    output: BytesMut,
}

impl Connection<'_> {
    async fn run<S>(
        &mut self,
        stream: &mut S,
        input: &mut Input,
        kick: &super::KickSwitch,
        keep_alive_secs: u16,
    ) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // MQTT allows one and a half keep-alive periods of silence.
        let keep_alive = Duration::from_millis(u64::from(keep_alive_secs) * 1500);
        let mut heard_at = Instant::now();
        let silence = tokio::time::sleep(keep_alive);
        tokio::pin!(silence);
        let mut stopping = self.shared.stopping.clone();
        let max_inflight = usize::from(self.shared.limits.max_inflight);
        let mut unacknowledged = FuturesOrdered::new();
        // The ids of the QoS 1 publishes waiting for their commit, oldest
        // first (acknowledgements go out in this order).
        let mut inflight_ids: VecDeque<u16> = VecDeque::new();
        // A publish read while its device was over its rate: checked again
        // once the pause ends; nothing more is read meanwhile.
        let mut paced: Option<Box<PublishPacket>> = None;
        let mut pausing = false;
        let pause = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(pause);
        loop {
            // The packets already read, while the window has room and the
            // device is within its rate.
            while !pausing && unacknowledged.len() < max_inflight {
                let publish = match paced.take() {
                    Some(publish) => publish,
                    None => {
                        let frame = match input.next_frame() {
                            Ok(Some(frame)) => frame,
                            Ok(None) => break,
                            Err(reason) => return End::Refused(reason),
                        };
                        match decode(frame, self.version) {
                            Ok(Packet::Publish(publish)) => Box::new(publish),
                            Ok(Packet::Subscribe(subscribe)) => {
                                self.subscribe(&subscribe);
                                continue;
                            }
                            Ok(Packet::Unsubscribe(unsubscribe)) => {
                                self.unsubscribe(&unsubscribe);
                                continue;
                            }
                            Ok(Packet::PingReq) => {
                                self.output.put_slice(&[0xD0, 0x00]);
                                continue;
                            }
                            Ok(Packet::Disconnect(disconnect)) => {
                                let with_will = self.version == V5
                                    && disconnect.reason_code
                                        == ReasonCode::DisconnectWithWillMessage;
                                self.settle(&mut unacknowledged, &mut inflight_ids).await;
                                return End::Disconnected { with_will };
                            }
                            // A device only publishes and subscribes; it is
                            // never sent a publish it could acknowledge.
                            Ok(_) => return End::Refused(ReasonCode::ProtocolError),
                            Err(reason) => return End::Refused(reason),
                        }
                    }
                };
                if let Some(wait) = self.shared.ingest.pace(self.device_id) {
                    paced = Some(publish);
                    pausing = true;
                    pause.as_mut().reset(Instant::now() + wait);
                    break;
                }
                match self.hand_over(&publish, &mut inflight_ids).await {
                    Ok(Some((packet_id, submitted))) => {
                        unacknowledged.push_back(settled(packet_id, submitted));
                    }
                    Ok(None) => {}
                    Err(end) => return end,
                }
            }
            if !self.output.is_empty() {
                if send(stream, &self.output).await.is_err() {
                    return End::Lost;
                }
                self.output.clear();
            }
            let reading = !pausing && unacknowledged.len() < max_inflight;
            tokio::select! {
                biased;
                reason = kick.kicked() => return End::Kicked(reason),
                () = stopped(&mut stopping) => {
                    self.settle(&mut unacknowledged, &mut inflight_ids).await;
                    if !self.output.is_empty() {
                        let _ = send(stream, &self.output).await;
                    }
                    return End::Stopping;
                }
                Some((packet_id, outcome)) = unacknowledged.next(), if !unacknowledged.is_empty() => {
                    if !self.acknowledge(packet_id, outcome, &mut inflight_ids) {
                        return End::Lost;
                    }
                    // Every other acknowledgement already due goes in the same write.
                    while let Some(Some((packet_id, outcome))) = unacknowledged.next().now_or_never() {
                        if !self.acknowledge(packet_id, outcome, &mut inflight_ids) {
                            return End::Lost;
                        }
                    }
                }
                () = &mut pause, if pausing => pausing = false,
                read = input.fill(stream), if reading => {
                    match read {
                        Ok(0) | Err(_) => return End::Lost,
                        Ok(_) => heard_at = Instant::now(),
                    }
                }
                () = &mut silence => {
                    // While the broker itself holds back (the window is
                    // full, the device is paced), the client's packets wait
                    // unread: that is not the client's silence.
                    if !reading {
                        heard_at = Instant::now();
                    }
                    if heard_at.elapsed() >= keep_alive {
                        return End::KeepAliveExpired;
                    }
                    silence.as_mut().reset(heard_at + keep_alive);
                }
            }
        }
    }

    /// Hands a publish to ingestion. A QoS 1 publish whose packet id is
    /// still waiting for its commit is the client sending it again: it is
    /// not handed over twice, and the original's PUBACK answers both (a
    /// second PUBACK could be taken for that of a newer message reusing
    /// the id before that one is stored).
    async fn hand_over(
        &mut self,
        publish: &PublishPacket,
        inflight_ids: &mut VecDeque<u16>,
    ) -> Result<Option<(Option<u16>, Submitted)>, End> {
        let packet_id = self.check_publish(publish)?;
        if let Some(id) = packet_id {
            if inflight_ids.contains(&id) {
                return Ok(None);
            }
            inflight_ids.push_back(id);
        }
        let submitted = self
            .shared
            .ingest
            .submit(
                self.device_id,
                &publish.topic_name,
                &publish.payload,
                packet_id.is_some(),
                Rate::Paced,
            )
            .await;
        Ok(Some((packet_id, submitted)))
    }

    /// The packet id to acknowledge, or why the publish ends the connection.
    fn check_publish(&self, publish: &PublishPacket) -> Result<Option<u16>, End> {
        if publish.properties.get_topic_alias().is_some() {
            // Topic aliases are off (maximum 0): each would be state kept
            // before the topic it stands for is authorised.
            return Err(End::Refused(ReasonCode::TopicAliasInvalid));
        }
        match publish.qos {
            QoS::AtMostOnce => Ok(None),
            QoS::AtLeastOnce => publish
                .packet_id
                .map(Some)
                .ok_or(End::Refused(ReasonCode::MalformedPacket)),
            QoS::ExactlyOnce => Err(End::Refused(ReasonCode::QoSNotSupported)),
        }
    }

    /// Queues a PUBACK; false when ingestion is stopping (the message is
    /// then never acknowledged, so the device sends it again).
    fn acknowledge(
        &mut self,
        packet_id: Option<u16>,
        outcome: Outcome,
        inflight_ids: &mut VecDeque<u16>,
    ) -> bool {
        let reason = match outcome {
            Outcome::ShuttingDown => return false,
            Outcome::Dropped(DropReason::TopicMismatch) => ReasonCode::NotAuthorized,
            Outcome::Stored | Outcome::Dropped(_) => ReasonCode::Success,
        };
        let Some(packet_id) = packet_id else {
            return true;
        };
        // Acknowledged in the order handed over: this id is the oldest.
        inflight_ids.pop_front();
        let [high, low] = packet_id.to_be_bytes();
        if self.version == V5 && reason != ReasonCode::Success {
            self.output
                .put_slice(&[0x40, 0x03, high, low, u8::from(reason)]);
        } else {
            // MQTT 3.1.1 has no reason codes: a refused publish is
            // acknowledged and dropped, as Mosquitto does.
            self.output.put_slice(&[0x40, 0x02, high, low]);
        }
        true
    }

    /// Waits for what the connection handed over to be stored (a closing
    /// connection's messages are committed all the same).
    async fn settle<F>(
        &mut self,
        unacknowledged: &mut FuturesOrdered<F>,
        inflight_ids: &mut VecDeque<u16>,
    ) where
        F: std::future::Future<Output = (Option<u16>, Outcome)>,
    {
        while let Some((packet_id, outcome)) = unacknowledged.next().await {
            self.acknowledge(packet_id, outcome, inflight_ids);
        }
    }

    fn subscribe(&mut self, subscribe: &SubscribePacket) {
        let mut ack = if self.version == V5 {
            SubAckPacket::new(subscribe.packet_id)
        } else {
            SubAckPacket::new_v311(subscribe.packet_id)
        };
        let device = self.device_id.to_string();
        for filter in &subscribe.filters {
            let code = if !mqtt5_protocol::is_valid_topic_filter(&filter.filter) {
                SubAckReasonCode::TopicFilterInvalid
            } else if !topic::is_own_filter(&device, &filter.filter) {
                SubAckReasonCode::NotAuthorized
            } else if !self.subscriptions.contains(&filter.filter)
                && self.subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_DEVICE
            {
                SubAckReasonCode::QuotaExceeded
            } else {
                if !self.subscriptions.contains(&filter.filter) {
                    self.subscriptions.push(filter.filter.clone());
                }
                match filter.options.qos {
                    QoS::AtMostOnce => SubAckReasonCode::GrantedQoS0,
                    _ => SubAckReasonCode::GrantedQoS1,
                }
            };
            ack.reason_codes.push(code);
        }
        let _ = ack.encode(&mut self.output);
    }

    fn unsubscribe(&mut self, unsubscribe: &UnsubscribePacket) {
        let mut ack = if self.version == V5 {
            UnsubAckPacket::new(unsubscribe.packet_id)
        } else {
            UnsubAckPacket::new_v311(unsubscribe.packet_id)
        };
        for filter in &unsubscribe.filters {
            let held = self.subscriptions.len();
            self.subscriptions.retain(|f| f != filter);
            ack.reason_codes.push(if self.subscriptions.len() < held {
                UnsubAckReasonCode::Success
            } else {
                UnsubAckReasonCode::NoSubscriptionExisted
            });
        }
        let _ = ack.encode(&mut self.output);
    }
}

/// A message's outcome once it is stored, with the id to acknowledge.
async fn settled(packet_id: Option<u16>, submitted: Submitted) -> (Option<u16>, Outcome) {
    (packet_id, submitted.outcome().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_at_their_length_and_bounded() {
        assert_eq!(frame(&[]), Frame::Incomplete(None));
        assert_eq!(frame(&[0xC0]), Frame::Incomplete(None));
        assert_eq!(frame(&[0xC0, 0x00]), Frame::Complete(2));
        assert_eq!(frame(&[0x30, 0x03, 1]), Frame::Incomplete(Some(5)));
        assert_eq!(frame(&[0x30, 0x03, 1, 2, 3, 9]), Frame::Complete(5));
        // 200 = 0xC8 0x01 as a variable byte integer.
        assert_eq!(frame(&[0x30, 0xC8, 0x01]), Frame::Incomplete(Some(203)));
        // 65,533 + 4 header bytes is one over the limit.
        assert_eq!(frame(&[0x30, 0xFD, 0xFF, 0x03]), Frame::TooLarge);
        assert_eq!(
            frame(&[0x30, 0xFC, 0xFF, 0x03]),
            Frame::Incomplete(Some(MAX_PACKET_SIZE))
        );
        assert_eq!(frame(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]), Frame::Malformed);
    }
}
