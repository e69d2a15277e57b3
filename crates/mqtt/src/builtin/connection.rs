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

use super::auth::{Login, Will};
use super::{stopped, Kick, Shared};
use crate::ingest::{Checked, DropReason, Ingest, Outcome, Rate};

/// How long a new connection may take from its accept to its CONNACK:
/// TLS handshake, CONNECT and login together.
pub(super) const LOGIN_DEADLINE: Duration = Duration::from_secs(10);
/// Largest CONNECT: a device's needs a few hundred bytes (client id,
/// credentials, a small will). Bounded, with its properties, before the
/// packet is kept, so an unauthenticated client cannot make the broker
/// hold more than this.
pub const MAX_CONNECT_SIZE: usize = 4 * 1024;
/// MQTT 5 properties a CONNECT and its will may carry together.
pub const MAX_CONNECT_PROPERTIES: usize = 32;
/// Longest subscription filter (a device's own are under 100 bytes).
pub const MAX_FILTER_LENGTH: usize = 256;
/// A packet must be whole this long after its first byte arrived: a
/// dribbling client does not hold a half-read packet for the keep-alive.
pub const PARTIAL_PACKET_DEADLINE: Duration = Duration::from_secs(60);
/// While the broker holds a connection's packets back (its window is full,
/// it is paced), it reads on up to this much, to answer PINGREQs and to
/// catch MQTT 5 clients over their receive maximum.
const LOOKAHEAD: usize = MAX_PACKET_SIZE;
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
pub(super) const V5: u8 = 5;
/// The PINGREQ packet, whole.
const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// MQTT 3.1's protocol name and level, as a CONNECT's variable header
/// starts: such a client is told its version is not supported.
const MQTT_3_1_HEADER: &[u8] = b"\x00\x06MQIsdp\x03";

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
    /// How far the buffer has been walked by [`Input::scan`]: whole packets
    /// up to here.
    scanned: usize,
    /// QoS 1 publishes among the scanned packets, not yet taken.
    buffered_qos1: usize,
    /// Since when the packet at the end of the buffer has been partial.
    partial_since: Option<Instant>,
}

/// Whether a packet's first byte makes it a QoS 1 PUBLISH.
fn is_qos1_publish(first: u8) -> bool {
    first >> 4 == 3 && (first >> 1) & 0b11 == 1
}

impl Input {
    fn new() -> Self {
        Self {
            buffer: BytesMut::new(),
            chunk: MIN_READ,
            scanned: 0,
            buffered_qos1: 0,
            partial_since: None,
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

    /// Walks the packets that arrived since the last walk: answers PINGREQs
    /// at once, ahead of the packets before them (nothing orders a PINGRESP
    /// among acknowledgements), and counts QoS 1 publishes waiting to be
    /// taken. Returns how many whole packets arrived.
    fn scan(&mut self, output: &mut BytesMut) -> Result<usize, ReasonCode> {
        let mut whole = 0;
        loop {
            match frame(&self.buffer[self.scanned..]) {
                Frame::Complete(length) => {
                    whole += 1;
                    let start = self.scanned;
                    if self.buffer[start..start + length] == PINGREQ {
                        output.put_slice(&[0xD0, 0x00]);
                        let rest = self.buffer.split_off(start);
                        self.buffer.extend_from_slice(&rest[PINGREQ.len()..]);
                        continue;
                    }
                    if is_qos1_publish(self.buffer[start]) {
                        self.buffered_qos1 += 1;
                    }
                    self.scanned += length;
                }
                Frame::Incomplete(_) => {
                    if self.scanned == self.buffer.len() {
                        self.partial_since = None;
                    } else if whole > 0 || self.partial_since.is_none() {
                        self.partial_since = Some(Instant::now());
                    }
                    return Ok(whole);
                }
                Frame::TooLarge => return Err(ReasonCode::PacketTooLarge),
                Frame::Malformed => return Err(ReasonCode::MalformedPacket),
            }
        }
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
            Frame::Complete(length) => {
                if self.scanned >= length {
                    self.scanned -= length;
                    if is_qos1_publish(self.buffer[0]) {
                        self.buffered_qos1 -= 1;
                    }
                } else {
                    self.scanned = 0;
                }
                Ok(Some(self.buffer.split_to(length).freeze()))
            }
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

/// Serves one connection until it ends: from its accept (`pending`, with
/// the `deadline` for its CONNACK) to its last PUBACK.
pub(super) async fn serve<S>(
    mut stream: S,
    peer: SocketAddr,
    shared: &Shared,
    pending: super::PendingLogin,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut input = Input::new();
    let login = match tokio::time::timeout_at(deadline, read_connect(&mut stream, &mut input)).await
    {
        Ok(Ok(login)) => login,
        Ok(Err(Some(refusal))) => {
            let _ = send(&mut stream, &refusal).await;
            return;
        }
        Ok(Err(None)) | Err(_) => return,
    };
    let version = login.version;
    if version != V311 && version != V5 {
        let refusal = ConnAckPacket::new_v311(false, ReasonCode::UnsupportedProtocolVersion);
        let _ = send(&mut stream, &encode(&refusal)).await;
        return;
    }
    let admitted = tokio::time::timeout_at(deadline, async {
        let admitted = shared.auth.authenticate(&login, peer).await?;
        check_will(&login, admitted.device_id)?;
        Ok(admitted)
    })
    .await;
    let admitted = match admitted {
        Ok(Ok(admitted)) => admitted,
        Ok(Err(reason)) => {
            let _ = send(&mut stream, &encode(&connack(version, reason, 0, None))).await;
            return;
        }
        Err(_) => return,
    };
    let device_id = admitted.device_id;
    let unavailable = encode(&connack(version, ReasonCode::ServerUnavailable, 0, None));
    // Logged in: from here the connection holds one of the device slots,
    // no longer one of the few for logins.
    let permit = match shared.connections.clone().try_acquire_owned() {
        Ok(permit) if !*shared.stopping.borrow() => permit,
        Ok(_) => return,
        Err(_) => {
            shared.full.refused(peer, shared.limits.max_connections);
            let _ = send(&mut stream, &unavailable).await;
            return;
        }
    };
    drop(pending);
    let Login {
        client_id,
        will,
        keep_alive: asked_keep_alive,
        ..
    } = login;
    let keep_alive = admitted.keep_alive;
    let session = shared.sessions.open(&client_id, device_id);
    if let Err(reason) = shared.auth.still_valid(&admitted).await {
        tracing::info!(%device_id, %client_id, "device login revoked while it was checked");
        let _ = send(&mut stream, &encode(&connack(version, reason, 0, None))).await;
        return;
    }
    tracing::debug!(%device_id, %client_id, "device connected");
    let told_keep_alive = (keep_alive != asked_keep_alive).then_some(keep_alive);
    let accepted = connack(
        version,
        ReasonCode::Success,
        shared.limits.max_inflight,
        told_keep_alive,
    );
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
    drop(permit);
    tracing::debug!(%device_id, %client_id, "device disconnected");
}

/// Reads the first packet, which must be a CONNECT of at most
/// [`MAX_CONNECT_SIZE`] with at most [`MAX_CONNECT_PROPERTIES`]; keeps only
/// what the login needs. `Err(Some(bytes))`: refused with an answer.
async fn read_connect(
    stream: &mut (impl AsyncRead + Unpin),
    input: &mut Input,
) -> Result<Login, Option<BytesMut>> {
    loop {
        if input.buffer.first().is_some_and(|&first| first != 0x10) {
            return Err(None);
        }
        match frame(&input.buffer) {
            Frame::Incomplete(Some(total)) | Frame::Complete(total) if total > MAX_CONNECT_SIZE => {
                return Err(None)
            }
            Frame::Complete(_) => break,
            Frame::Incomplete(_) => {}
            Frame::TooLarge | Frame::Malformed => return Err(None),
        }
        if input.fill(stream).await.map_err(|_| None)? == 0 {
            return Err(None);
        }
    }
    let frame = input.next_frame().ok().flatten().ok_or(None)?;
    let header_length = frame
        .iter()
        .skip(1)
        .position(|b| b & 0x80 == 0)
        .unwrap_or(0)
        + 2;
    if frame
        .get(header_length..)
        .is_some_and(|rest| rest.starts_with(MQTT_3_1_HEADER))
    {
        // 0x01: unacceptable protocol version, as 3.1 clients read it.
        return Err(Some(BytesMut::from(&[0x20, 0x02, 0x00, 0x01][..])));
    }
    let connect = match decode(frame, V311) {
        Ok(Packet::Connect(connect)) => *connect,
        _ => return Err(None),
    };
    let properties = connect.properties.iter().count() + connect.will_properties.iter().count();
    if properties > MAX_CONNECT_PROPERTIES {
        let refusal = connack(
            connect.protocol_version,
            ReasonCode::ImplementationSpecificError,
            0,
            None,
        );
        return Err(Some(encode(&refusal)));
    }
    let authentication_method = connect.properties.get_authentication_method().is_some();
    Ok(Login {
        version: connect.protocol_version,
        client_id: connect.client_id,
        username: connect.username,
        password: connect.password,
        keep_alive: connect.keep_alive,
        will: connect.will.map(|will| Will {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
        }),
        authentication_method,
    })
}

/// A will may only be what the device could publish itself.
fn check_will(login: &Login, device_id: Uuid) -> Result<(), ReasonCode> {
    let Some(will) = &login.will else {
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

fn connack(
    version: u8,
    reason: ReasonCode,
    receive_maximum: u16,
    server_keep_alive: Option<u16>,
) -> ConnAckPacket {
    if version != V5 {
        return ConnAckPacket::new_v311(false, reason);
    }
    let connack = ConnAckPacket::new(false, reason);
    if reason != ReasonCode::Success {
        return connack;
    }
    // Nothing is kept for a device between connections (nothing is ever
    // queued for it), so its session ends with the connection; nothing is
    // routed, so nothing is retained.
    let connack = connack
        .with_session_expiry_interval(0)
        .with_receive_maximum(receive_maximum)
        .with_maximum_qos(1)
        .with_retain_available(false)
        .with_maximum_packet_size(MAX_PACKET_SIZE as u32)
        .with_shared_subscription_available(false)
        .with_subscription_identifier_available(false);
    match server_keep_alive {
        Some(keep_alive) => connack.with_server_keep_alive(keep_alive),
        None => connack,
    }
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

impl<'a> Connection<'a> {
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
        // MQTT allows one and a half keep-alive periods of silence; only a
        // whole packet breaks it.
        let keep_alive = Duration::from_millis(u64::from(keep_alive_secs) * 1500);
        let mut heard_at = Instant::now();
        let silence = tokio::time::sleep(keep_alive);
        tokio::pin!(silence);
        let partial_allowed = self.shared.limits.partial_packet_deadline;
        let partial_deadline = tokio::time::sleep(partial_allowed);
        tokio::pin!(partial_deadline);
        let mut stopping = self.shared.stopping.clone();
        let max_inflight = usize::from(self.shared.limits.max_inflight);
        let shared: &'a Shared = self.shared;
        let ingest = &shared.ingest;
        let mut unacknowledged = FuturesOrdered::new();
        // The ids of the QoS 1 publishes waiting for their commit, oldest
        // first (acknowledgements go out in this order).
        let mut inflight_ids: VecDeque<u16> = VecDeque::new();
        // A publish read while its device was over its rate: checked again
        // once the pause ends; nothing more is taken meanwhile.
        let mut paced: Option<Box<PublishPacket>> = None;
        let mut pausing = false;
        let pause = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(pause);
        // How the connection ends once what it handed over is settled
        // (DISCONNECT, the broker stopping); nothing more is read.
        let mut closing: Option<End> = None;
        loop {
            // The packets already read, while the window has room and the
            // device is within its rate.
            while closing.is_none() && !pausing && unacknowledged.len() < max_inflight {
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
                                closing = Some(End::Disconnected { with_will });
                                break;
                            }
                            // A device only publishes and subscribes; it is
                            // never sent a publish it could acknowledge.
                            Ok(_) => return End::Refused(ReasonCode::ProtocolError),
                            Err(reason) => return End::Refused(reason),
                        }
                    }
                };
                if let Some(wait) = ingest.pace(self.device_id) {
                    paced = Some(publish);
                    pausing = true;
                    pause.as_mut().reset(Instant::now() + wait);
                    break;
                }
                match self.hand_over(ingest, &publish, &mut inflight_ids) {
                    Ok(Some(handed)) => unacknowledged.push_back(handed),
                    Ok(None) => {}
                    Err(end) => return end,
                }
            }
            if closing.is_some() && unacknowledged.is_empty() {
                if !self.output.is_empty() {
                    let _ = send(stream, &self.output).await;
                }
                return closing.unwrap_or(End::Lost);
            }
            if !self.output.is_empty() {
                if send(stream, &self.output).await.is_err() {
                    return End::Lost;
                }
                self.output.clear();
            }
            let taking = !pausing && unacknowledged.len() < max_inflight;
            // Held back, the connection still reads a little ahead.
            let reading = closing.is_none() && (taking || input.buffer.len() < LOOKAHEAD);
            if !reading {
                // The client's packets wait unread because the broker holds
                // back: that is neither silence nor a dribble.
                heard_at = Instant::now();
                if input.partial_since.is_some() {
                    input.partial_since = Some(heard_at);
                }
            }
            if let Some(since) = input.partial_since {
                partial_deadline.as_mut().reset(since + partial_allowed);
            }
            tokio::select! {
                biased;
                reason = kick.kicked() => return End::Kicked(reason),
                () = stopped(&mut stopping), if closing.is_none() => closing = Some(End::Stopping),
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
                    if matches!(read, Ok(0) | Err(_)) {
                        return End::Lost;
                    }
                    match input.scan(&mut self.output) {
                        Ok(0) => {}
                        Ok(_) => heard_at = Instant::now(),
                        Err(reason) => return End::Refused(reason),
                    }
                    // An MQTT 5 client was told how many QoS 1 publishes it
                    // may have unacknowledged; it keeps to it or is told.
                    let held = paced.as_ref().is_some_and(|p| p.qos == QoS::AtLeastOnce);
                    let outstanding = inflight_ids.len() + input.buffered_qos1 + usize::from(held);
                    if self.version == V5 && outstanding > max_inflight {
                        return End::Refused(ReasonCode::ReceiveMaximumExceeded);
                    }
                }
                () = &mut partial_deadline, if reading && input.partial_since.is_some() => {
                    return End::Refused(ReasonCode::KeepAliveTimeout);
                }
                () = &mut silence, if closing.is_none() => {
                    if heard_at.elapsed() >= keep_alive {
                        return End::KeepAliveExpired;
                    }
                    silence.as_mut().reset(heard_at + keep_alive);
                }
            }
        }
    }

    /// Checks a publish and hands it to ingestion: what resolves, without
    /// the connection waiting on it, once its message is durable. A QoS 1
    /// publish whose packet id is still waiting for its commit is the
    /// client sending it again: it is not handed over twice, and the
    /// original's PUBACK answers both (a second PUBACK could be taken for
    /// that of a newer message reusing the id before that one is stored).
    fn hand_over(
        &self,
        ingest: &'a Ingest,
        publish: &PublishPacket,
        inflight_ids: &mut VecDeque<u16>,
    ) -> Result<Option<impl std::future::Future<Output = (Option<u16>, Outcome)> + 'a>, End> {
        let packet_id = self.check_publish(publish)?;
        if let Some(id) = packet_id {
            if inflight_ids.contains(&id) {
                return Ok(None);
            }
            inflight_ids.push_back(id);
        }
        let checked = ingest.check(
            self.device_id,
            &publish.topic_name,
            &publish.payload,
            Rate::Paced,
        );
        Ok(Some(settled(ingest, checked, packet_id)))
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

    fn subscribe(&mut self, subscribe: &SubscribePacket) {
        let mut ack = if self.version == V5 {
            SubAckPacket::new(subscribe.packet_id)
        } else {
            SubAckPacket::new_v311(subscribe.packet_id)
        };
        let device = self.device_id.to_string();
        for filter in &subscribe.filters {
            let code = if filter.filter.len() > MAX_FILTER_LENGTH
                || !mqtt5_protocol::is_valid_topic_filter(&filter.filter)
            {
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

/// A checked message queued for ingestion (waiting, if need be, for room)
/// and its outcome once it is stored, with the id to acknowledge.
async fn settled(
    ingest: &Ingest,
    checked: Checked,
    packet_id: Option<u16>,
) -> (Option<u16>, Outcome) {
    let submitted = ingest.queue(checked, packet_id.is_some()).await;
    (packet_id, submitted.outcome().await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The packets and PINGRESPs `Input` makes of `bytes` arriving in
    /// pieces cut at `cuts`, or the reason it refused them.
    fn taken(bytes: &[u8], cuts: &[usize]) -> (Vec<Bytes>, usize, Option<ReasonCode>) {
        let mut input = Input::new();
        let mut output = BytesMut::new();
        let mut packets = Vec::new();
        let mut start = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        for end in ends {
            input.buffer.extend_from_slice(&bytes[start..end]);
            start = end;
            if let Err(reason) = input.scan(&mut output) {
                return (packets, output.len() / 2, Some(reason));
            }
            while let Ok(Some(packet)) = input.next_frame() {
                packets.push(packet);
            }
            assert_eq!(input.buffered_qos1, 0, "every counted publish was taken");
            assert_eq!(input.scanned, 0);
        }
        (packets, output.len() / 2, None)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PLANTOPS_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)
        ))]

        /// Whatever bytes a client sends, framing and decoding answer
        /// without panicking, and how the bytes are split across reads
        /// changes nothing about the packets taken or the PINGs answered.
        #[test]
        fn arbitrary_bytes_frame_and_decode_the_same_however_they_arrive(
            bytes in proptest::collection::vec(any::<u8>(), 0..1024),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let whole = taken(&bytes, &[]);
            let pieces = taken(&bytes, &cuts);
            // A refusal ends the connection at once, so what was taken
            // before it may differ; the reason may not.
            prop_assert_eq!(whole.2, pieces.2);
            if whole.2.is_none() {
                prop_assert_eq!(&whole, &pieces);
            }
            for packet in whole.0 {
                for version in [V311, V5] {
                    let _ = decode(packet.clone(), version);
                }
            }
        }

        /// Well-formed packets among arbitrary ones: each PINGREQ is
        /// answered once, ahead of its turn, and never taken as a packet.
        #[test]
        fn pings_are_answered_once_and_taken_out(
            packets in proptest::collection::vec(
                prop_oneof![
                    Just(PINGREQ.to_vec()),
                    Just(vec![0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x07]),
                    Just(vec![0x30, 0x03, 0x00, 0x01, b't']),
                    proptest::collection::vec(any::<u8>(), 2..3).prop_map(|b| vec![0xE0 | (b[0] & 0x0F), 0x00]),
                ],
                0..40,
            ),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let bytes: Vec<u8> = packets.concat();
            let pings = packets.iter().filter(|p| p[..] == PINGREQ).count();
            let (taken_packets, answered, refused) = taken(&bytes, &cuts);
            prop_assert_eq!(refused, None);
            prop_assert_eq!(answered, pings);
            prop_assert_eq!(taken_packets.len(), packets.len() - pings);
        }
    }

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
