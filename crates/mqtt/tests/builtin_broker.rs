//! The built-in broker on the wire: a real SQLite store, real TCP, and the
//! packets a device sends written and read byte for byte (MQTT 3.1.1) or
//! with the protocol crate's codec (MQTT 5).

mod wire;
use wire::{packet, string};

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::BytesMut;
use mqtt5_protocol::packet::connect::ConnectPacket;
use mqtt5_protocol::packet::publish::PublishPacket;
use mqtt5_protocol::packet::MqttPacket;
use mqtt5_protocol::{ConnectOptions, FixedHeader, Packet, QoS, ReasonCode, WillMessage};
use plantops_core::credentials::{generate_password, hash_password};
use plantops_core::{Device, DeviceStatus};
use plantops_mqtt::builtin::{
    BuiltinBroker, BuiltinConfig, BuiltinLimits, CredentialLookup, Listener,
};
use plantops_mqtt::ingest::{BatchConfig, DeviceRateLimit, Ingest, IngestBatcher, ReadingJudge};
use plantops_testkit::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

struct Rig {
    db: TestDb,
    broker: std::sync::Arc<BuiltinBroker>,
    ingest: Ingest,
    /// Not running until the test starts it: nothing commits before.
    batcher: Option<IngestBatcher>,
    device_id: Uuid,
    username: String,
    password: String,
}

/// Credentials from the store, with the first lookup's answer held until
/// the test releases it: the moment between a login's check and the
/// registration of its connection.
#[derive(Default)]
struct HeldLookup {
    store: std::sync::Mutex<Option<plantops_store::DynStore>>,
    lookups: std::sync::atomic::AtomicUsize,
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl CredentialLookup for HeldLookup {
    async fn device_credentials(
        &self,
        mqtt_username: &str,
    ) -> plantops_store::Result<Option<plantops_store::DeviceCredentials>> {
        let store = self.store.lock().unwrap().clone().expect("a store");
        let answer = store.device_credentials(mqtt_username).await;
        let lookup = self
            .lookups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if lookup == 0 {
            self.reached.notify_one();
            self.release.notified().await;
        }
        answer
    }
}

impl Rig {
    async fn start(max_inflight: u16) -> Rig {
        Rig::with_limits(BuiltinLimits {
            max_inflight,
            ..BuiltinLimits::default()
        })
        .await
    }

    async fn with_limits(limits: BuiltinLimits) -> Rig {
        let unlimited = DeviceRateLimit {
            per_second: NonZeroU32::new(100_000).unwrap(),
            burst: NonZeroU32::new(100_000).unwrap(),
        };
        Rig::with(limits, unlimited).await
    }

    async fn with(limits: BuiltinLimits, rate: DeviceRateLimit) -> Rig {
        Rig::judged_by(limits, rate, None).await
    }

    async fn judged_by(
        limits: BuiltinLimits,
        rate: DeviceRateLimit,
        judge: Option<std::sync::Arc<dyn ReadingJudge>>,
    ) -> Rig {
        Rig::build(limits, rate, judge, BatchConfig::default(), None).await
    }

    async fn build(
        limits: BuiltinLimits,
        rate: DeviceRateLimit,
        judge: Option<std::sync::Arc<dyn ReadingJudge>>,
        batches: BatchConfig,
        held: Option<std::sync::Arc<HeldLookup>>,
    ) -> Rig {
        let db = TestDb::sqlite().await;
        let store = db.store().await;
        let password = generate_password();
        let device = Device {
            id: Uuid::new_v4(),
            mac_address: "aa:bb:cc:00:00:01".into(),
            mqtt_username: format!("device_{}", &Uuid::new_v4().simple().to_string()[..8]),
            plant_id: None,
            status: DeviceStatus::Provisioning,
            firmware_version: None,
            sensor_types: None,
            last_seen_at: None,
            created_at: chrono::Utc::now(),
            enrollment: None,
            vitals: None,
            vitals_at: None,
        };
        store
            .register_device(&device, &hash_password(&password))
            .await
            .unwrap();
        let (events, _) = tokio::sync::broadcast::channel(64);
        let (ingest, batcher) = Ingest::new(&store, events, batches, rate, None, judge);
        let config = BuiltinConfig {
            plain: Some(Listener {
                addr: SocketAddr::from(([127, 0, 0, 1], plantops_testkit::free_port())),
                setting: "PLANTOPS_MQTT_ADDR",
            }),
            tls: None,
            limits,
        };
        let credentials: std::sync::Arc<dyn CredentialLookup> = match held {
            Some(held) => {
                *held.store.lock().unwrap() = Some(store.clone());
                held
            }
            None => std::sync::Arc::new(store),
        };
        let broker = BuiltinBroker::start(config, credentials, ingest.clone())
            .await
            .unwrap();
        Rig {
            db,
            broker,
            ingest,
            batcher: Some(batcher),
            device_id: device.id,
            username: device.mqtt_username,
            password,
        }
    }

    fn run_batcher(&mut self) {
        if let Some(batcher) = self.batcher.take() {
            tokio::spawn(batcher.run());
        }
    }

    async fn connect(&self) -> Peer {
        let stream = TcpStream::connect(self.broker.plain_addr().unwrap())
            .await
            .unwrap();
        Peer {
            stream,
            buffer: BytesMut::new(),
        }
    }

    fn telemetry(&self) -> String {
        format!("devices/{}/telemetry", self.device_id)
    }

    /// Waits until ingestion has received `count` messages in all.
    async fn received(&self, count: u64) {
        let stats = self.ingest.stats();
        tokio::time::timeout(Duration::from_secs(10), async {
            while stats.snapshot().received < count {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "ingestion received {} of {count} messages",
                stats.snapshot().received
            )
        });
    }
}

/// CONNECT, MQTT 3.1.1, as a small device would write it.
fn connect_v311(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    connect_v311_keep_alive(client_id, username, password, 60)
}

fn connect_v311_keep_alive(
    client_id: &str,
    username: &str,
    password: &str,
    keep_alive_secs: u16,
) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.push(4);
    body.push(0b1100_0010); // username, password, clean session
    body.extend_from_slice(&keep_alive_secs.to_be_bytes());
    string(&mut body, client_id);
    string(&mut body, username);
    string(&mut body, password);
    packet(0x10, &body)
}

fn publish_qos1_v311(topic: &str, packet_id: u16, payload: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic);
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(payload.as_bytes());
    packet(0x32, &body)
}

/// A device's side of a connection: what it writes, and the packets it
/// reads, kept across reads (one read may hold several).
struct Peer {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Peer {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buffer.len() < n {
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                self.stream.read_buf(&mut self.buffer),
            )
            .await
            .expect("the broker answers")
            .expect("read");
            assert!(read > 0, "closed early");
        }
        self.buffer.split_to(n).to_vec()
    }

    /// Reads one MQTT 5 packet; `None` once the broker closed.
    async fn read_packet(&mut self) -> Option<Packet> {
        loop {
            let mut peek = &self.buffer[..];
            if let Ok(header) = FixedHeader::decode(&mut peek) {
                let total = header.encoded_len() + header.remaining_length as usize;
                if self.buffer.len() >= total {
                    let mut frame = self.buffer.split_to(total).freeze();
                    let header = FixedHeader::decode(&mut frame).unwrap();
                    let packet = Packet::decode_from_body_with_version(
                        header.packet_type,
                        &header,
                        &mut frame,
                        5,
                    );
                    return Some(packet.unwrap());
                }
            }
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                self.stream.read_buf(&mut self.buffer),
            )
            .await
            .expect("the broker answers or closes")
            .ok()?;
            if read == 0 {
                return None;
            }
        }
    }
}

fn encoded(packet: &impl MqttPacket) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.encode(&mut out).unwrap();
    out.to_vec()
}

fn connect_v5(rig: &Rig, client_id: &str, will: Option<WillMessage>) -> Vec<u8> {
    let mut options = ConnectOptions::new(client_id)
        .with_credentials(&rig.username, &rig.password)
        .with_keep_alive(Duration::from_secs(60));
    if let Some(will) = will {
        options = options.with_will(will);
    }
    encoded(&ConnectPacket::new(options))
}

async fn connected_v5(rig: &Rig, client_id: &str) -> Peer {
    let mut stream = rig.connect().await;
    stream
        .write_all(&connect_v5(rig, client_id, None))
        .await
        .unwrap();
    match stream.read_packet().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    stream
}

fn publish_v5(topic: &str, qos: QoS, packet_id: u16, payload: &str) -> Vec<u8> {
    let mut publish = PublishPacket::new(topic, payload.as_bytes().to_vec(), qos);
    if qos != QoS::AtMostOnce {
        publish = publish.with_packet_id(packet_id);
    }
    encoded(&publish)
}

/// One connection has many QoS 1 messages in flight: the broker reads and
/// hands over all five while none is committed yet, then acknowledges them
/// in order once their batch commits.
#[tokio::test]
async fn a_connection_pipelines_qos1_messages_and_acknowledges_them_in_order() {
    let mut rig = Rig::start(64).await;
    let mut device = connected_v311(&rig).await;
    let topic = rig.telemetry();
    let publishes: Vec<u8> = (1..=5u16)
        .flat_map(|id| publish_qos1_v311(&topic, id, &format!(r#"{{"temperature": {id}}}"#)))
        .collect();
    device.write_all(&publishes).await.unwrap();
    // All five are in ingestion's hands before the first commit.
    rig.received(5).await;
    assert_eq!(rig.ingest.stats().snapshot().stored, 0);

    rig.run_batcher();
    let acks = device.read_exact(20).await;
    let expected: Vec<u8> = (1..=5u16)
        .flat_map(|id| {
            let [high, low] = id.to_be_bytes();
            [0x40, 0x02, high, low]
        })
        .collect();
    assert_eq!(acks, expected, "PUBACKs in the order of the publishes");
    assert_eq!(rig.ingest.stats().snapshot().stored, 5);
}

/// With every in-flight place taken, the broker takes no more of an MQTT
/// 3.1.1 client's publishes until one is committed (the third is not even
/// received), but answers its PINGREQ at once: a slow database does not
/// make a busy device take its connection for dead.
#[tokio::test]
async fn a_full_window_takes_nothing_more_until_a_commit_but_answers_pings() {
    let mut rig = Rig::start(2).await;
    let mut device = connected_v311(&rig).await;
    let topic = rig.telemetry();
    let publishes: Vec<u8> = (1..=3u16)
        .flat_map(|id| publish_qos1_v311(&topic, id, &format!(r#"{{"light": {id}}}"#)))
        .collect();
    device.write_all(&publishes).await.unwrap();
    device.write_all(&[0xC0, 0x00]).await.unwrap();
    rig.received(2).await;
    assert_eq!(
        device.read_exact(2).await,
        [0xD0, 0x00],
        "PINGRESP while nothing is committed"
    );
    assert_eq!(rig.ingest.stats().snapshot().received, 2);

    rig.run_batcher();
    let acks = device.read_exact(12).await;
    let expected: Vec<u8> = (1..=3u16).flat_map(puback_v311).collect();
    assert_eq!(acks, expected);
    assert_eq!(rig.ingest.stats().snapshot().stored, 3);
}

/// An MQTT 5 client is told its receive maximum; one more QoS 1 publish
/// before a PUBACK ends its connection with 0x93 (receive maximum
/// exceeded), while a ping behind a full window is still answered.
#[tokio::test]
async fn an_mqtt5_client_over_its_receive_maximum_is_told_so() {
    let rig = Rig::start(2).await;
    let mut device = connected_v5(&rig, &rig.device_id.to_string()).await;
    let topic = rig.telemetry();
    for id in 1..=2 {
        device
            .write_all(&publish_v5(&topic, QoS::AtLeastOnce, id, r#"{"light": 5}"#))
            .await
            .unwrap();
    }
    device.write_all(&[0xC0, 0x00]).await.unwrap();
    assert!(matches!(device.read_packet().await, Some(Packet::PingResp)));
    rig.received(2).await;
    device
        .write_all(&publish_v5(&topic, QoS::AtLeastOnce, 3, r#"{"light": 6}"#))
        .await
        .unwrap();
    match device.read_packet().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, ReasonCode::ReceiveMaximumExceeded)
        }
        other => panic!("expected DISCONNECT 0x93, got {other:?}"),
    }
    assert_eq!(rig.ingest.stats().snapshot().received, 2);
}

/// While its messages wait for room in a full ingestion queue (the
/// database stalls), a connection still honours a rotation of its
/// device's credentials: it is closed at once, not once the queue moves.
#[tokio::test]
async fn a_revoked_device_is_disconnected_while_its_messages_wait_for_the_store() {
    use plantops_mqtt::Broker;
    let unlimited = DeviceRateLimit {
        per_second: NonZeroU32::new(100_000).unwrap(),
        burst: NonZeroU32::new(100_000).unwrap(),
    };
    let batches = BatchConfig {
        queue: 1,
        ..BatchConfig::default()
    };
    let rig = Rig::build(BuiltinLimits::default(), unlimited, None, batches, None).await;
    let mut device = connected_v5(&rig, &rig.device_id.to_string()).await;
    let topic = rig.telemetry();
    for id in 1..=3 {
        device
            .write_all(&publish_v5(&topic, QoS::AtLeastOnce, id, r#"{"light": 5}"#))
            .await
            .unwrap();
    }
    rig.received(3).await;
    rig.broker
        .set_password(rig.device_id, &rig.username, "rotated")
        .await
        .unwrap();
    match device.read_packet().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, ReasonCode::AdministrativeAction)
        }
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
}

/// A rotation that lands between a login's check of the password and the
/// registration of its connection (where a rotation finds connections to
/// close) still keeps the old password out.
#[tokio::test]
async fn a_rotation_during_a_login_keeps_the_old_password_out() {
    use plantops_mqtt::Broker;
    let unlimited = DeviceRateLimit {
        per_second: NonZeroU32::new(100_000).unwrap(),
        burst: NonZeroU32::new(100_000).unwrap(),
    };
    let held = std::sync::Arc::new(HeldLookup::default());
    let rig = Rig::build(
        BuiltinLimits::default(),
        unlimited,
        None,
        BatchConfig::default(),
        Some(held.clone()),
    )
    .await;
    let mut device = rig.connect().await;
    device
        .write_all(&connect_v5(&rig, &rig.device_id.to_string(), None))
        .await
        .unwrap();
    held.reached.notified().await;
    // The login has read the old password's hash; now it is rotated.
    let store = rig.db.store().await;
    store
        .set_device_password(rig.device_id, &hash_password("rotated-password"))
        .await
        .unwrap();
    rig.broker
        .set_password(rig.device_id, &rig.username, "rotated-password")
        .await
        .unwrap();
    held.release.notify_one();
    match device.read_packet().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected a refused CONNACK, got {other:?}"),
    }
    assert!(device.read_packet().await.is_none(), "closed");
}

/// Before login the broker keeps little: a CONNECT over 4 KiB is cut off
/// without an answer, one with more than 32 properties is refused (0x83),
/// an MQTT 3.1 client is told its version is not supported (0x01), and an
/// MQTT 5 client asking for no keep-alive is told the server's.
#[tokio::test]
async fn logins_are_bounded_before_they_are_checked() {
    let rig = Rig::start(16).await;
    let mut options = ConnectOptions::new(rig.device_id.to_string())
        .with_credentials(&rig.username, &rig.password)
        .with_keep_alive(Duration::from_secs(60));
    options.will = None;
    let mut big = ConnectPacket::new(options.clone());
    big.password = Some(vec![b'x'; 5000]);
    let mut device = rig.connect().await;
    device.write_all(&encoded(&big)).await.unwrap();
    assert!(device.read_packet().await.is_none(), "cut off");

    let mut crowded = ConnectPacket::new(options.clone());
    for i in 0..40 {
        crowded
            .properties
            .add(
                mqtt5_protocol::PropertyId::UserProperty,
                mqtt5_protocol::PropertyValue::Utf8StringPair(format!("k{i}"), "v".into()),
            )
            .unwrap();
    }
    let mut device = rig.connect().await;
    device.write_all(&encoded(&crowded)).await.unwrap();
    match device.read_packet().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.reason_code, ReasonCode::ImplementationSpecificError)
        }
        other => panic!("expected a refused CONNACK, got {other:?}"),
    }

    let mut body = Vec::new();
    string(&mut body, "MQIsdp");
    body.push(3);
    body.push(0b1100_0010);
    body.extend_from_slice(&60u16.to_be_bytes());
    string(&mut body, rig.device_id.to_string());
    string(&mut body, &rig.username);
    string(&mut body, &rig.password);
    let mut old = rig.connect().await;
    old.write_all(&packet(0x10, &body)).await.unwrap();
    assert_eq!(old.read_exact(4).await, [0x20, 0x02, 0x00, 0x01]);

    let forever = ConnectPacket::new(options.with_keep_alive(Duration::ZERO));
    let mut device = rig.connect().await;
    device.write_all(&encoded(&forever)).await.unwrap();
    match device.read_packet().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.reason_code, ReasonCode::Success);
            assert_eq!(ack.properties.get_server_keep_alive(), Some(3600));
            let retain = ack
                .properties
                .get(mqtt5_protocol::PropertyId::RetainAvailable);
            assert_eq!(retain, Some(&mqtt5_protocol::PropertyValue::Byte(0)));
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Connections that have not logged in have their own, smaller budget and
/// a cap per address: one host holding its share open keeps no device out
/// of the device slots.
#[tokio::test]
async fn connections_before_login_are_bounded_apart_from_devices() {
    let rig = Rig::with_limits(BuiltinLimits {
        max_connections: 1,
        max_pending_logins: 8,
        max_pending_logins_per_address: 2,
        ..BuiltinLimits::default()
    })
    .await;
    let idle = [rig.connect().await, rig.connect().await];
    let mut third = rig.connect().await;
    assert!(
        third.read_packet().await.is_none(),
        "a third from the address is closed at once"
    );
    drop(idle);
    let hello = connect_v311(&rig.device_id.to_string(), &rig.username, &rig.password);
    let accepted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut device = rig.connect().await;
            if device.write_all(&hello).await.is_ok() && device.read_packet().await.is_some() {
                return device;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the device logs in once the idle connections are gone");
    // Logged in, it holds the one device slot, not a login slot: two idle
    // connections fit beside it again.
    let _idle = [rig.connect().await, rig.connect().await];
    drop(accepted);
}

/// Keep-alive counts whole packets: a client that sends a packet's bytes
/// one at a time without ever finishing it is closed for silence, and with
/// a long keep-alive, for leaving its packet partial.
#[tokio::test]
async fn keep_alive_counts_whole_packets_and_partial_ones_have_a_deadline() {
    // A short keep-alive with the usual deadline, then a long keep-alive
    // with a short deadline: each alone closes the dribbler.
    for (keep_alive, deadline) in [(1, 60), (600, 2)] {
        let rig = Rig::with_limits(BuiltinLimits {
            partial_packet_deadline: Duration::from_secs(deadline),
            ..BuiltinLimits::default()
        })
        .await;
        let mut device = rig.connect().await;
        device
            .write_all(&connect_v311_keep_alive(
                &rig.device_id.to_string(),
                &rig.username,
                &rig.password,
                keep_alive,
            ))
            .await
            .unwrap();
        assert_eq!(device.read_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
        let publish = publish_qos1_v311(&rig.telemetry(), 1, &"x".repeat(200));
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            for byte in &publish[..publish.len() - 1] {
                if device.write_all(&[*byte]).await.is_err() {
                    return true;
                }
                let mut probe = [0u8; 1];
                let read = tokio::time::timeout(
                    Duration::from_millis(100),
                    device.stream.read(&mut probe),
                )
                .await;
                if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            closed,
            Ok(true),
            "keep-alive {keep_alive} s, deadline {deadline} s: closed while dribbling"
        );
        assert_eq!(rig.ingest.stats().snapshot().received, 0);
    }
}

/// A subscription filter longer than any device needs is refused.
#[tokio::test]
async fn long_subscription_filters_are_refused() {
    let rig = Rig::start(16).await;
    let mut device = connected_v5(&rig, &rig.device_id.to_string()).await;
    let long = format!("devices/{}/command/{}", rig.device_id, "x".repeat(300));
    let own = format!("devices/{}/command", rig.device_id);
    let subscribe = mqtt5_protocol::packet::subscribe::SubscribePacket::new(4)
        .add_filter(long, QoS::AtLeastOnce)
        .add_filter(own, QoS::AtLeastOnce);
    device.write_all(&encoded(&subscribe)).await.unwrap();
    match device.read_packet().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.reason_codes,
            [
                mqtt5_protocol::packet::suback::SubAckReasonCode::TopicFilterInvalid,
                mqtt5_protocol::packet::suback::SubAckReasonCode::GrantedQoS1
            ]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// MQTT 5: the CONNACK states the broker's limits; a publish to another
/// device's topic is refused with "not authorized" and not stored.
#[tokio::test]
async fn mqtt5_clients_learn_the_limits_and_foreign_topics_are_refused() {
    let mut rig = Rig::start(16).await;
    rig.run_batcher();
    let mut device = rig.connect().await;
    device
        .write_all(&connect_v5(&rig, &rig.device_id.to_string(), None))
        .await
        .unwrap();
    let Some(Packet::ConnAck(ack)) = device.read_packet().await else {
        panic!("no CONNACK");
    };
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(!ack.session_present);
    assert_eq!(ack.properties.get_receive_maximum(), Some(16));
    assert_eq!(ack.properties.get_maximum_qos(), Some(1));
    assert_eq!(ack.properties.get_maximum_packet_size(), Some(64 * 1024));

    let foreign = format!("devices/{}/telemetry", Uuid::new_v4());
    device
        .write_all(&publish_v5(
            &foreign,
            QoS::AtLeastOnce,
            7,
            r#"{"light": 1}"#,
        ))
        .await
        .unwrap();
    device
        .write_all(&publish_v5(
            &rig.telemetry(),
            QoS::AtLeastOnce,
            8,
            r#"{"light": 2}"#,
        ))
        .await
        .unwrap();
    let Some(Packet::PubAck(refused)) = device.read_packet().await else {
        panic!("no PUBACK");
    };
    assert_eq!(
        (refused.packet_id, refused.reason_code),
        (7, ReasonCode::NotAuthorized)
    );
    let Some(Packet::PubAck(stored)) = device.read_packet().await else {
        panic!("no PUBACK");
    };
    assert_eq!(
        (stored.packet_id, stored.reason_code),
        (8, ReasonCode::Success)
    );
    let stats = rig.ingest.stats().snapshot();
    assert_eq!((stats.stored, stats.dropped["topic_mismatch"]), (1, 1));
}

/// What the broker does not take ends the connection with the reason:
/// QoS 2, a packet over 64 KiB, a topic alias.
#[tokio::test]
async fn unsupported_and_oversized_packets_end_the_connection_with_a_reason() {
    let mut rig = Rig::start(16).await;
    rig.run_batcher();
    let topic = rig.telemetry();
    let big = format!(r#"{{"light": 1, "pad": "{}"}}"#, "x".repeat(70_000));
    let mut aliased = PublishPacket::new(topic.clone(), b"{}".to_vec(), QoS::AtMostOnce);
    aliased.properties.set_topic_alias(1);
    for (bytes, reason) in [
        (
            publish_v5(&topic, QoS::ExactlyOnce, 1, "{}"),
            ReasonCode::QoSNotSupported,
        ),
        (
            publish_v5(&topic, QoS::AtMostOnce, 0, &big),
            ReasonCode::PacketTooLarge,
        ),
        (encoded(&aliased), ReasonCode::TopicAliasInvalid),
    ] {
        let mut device = connected_v5(&rig, &rig.device_id.to_string()).await;
        device.write_all(&bytes).await.unwrap();
        match device.read_packet().await {
            Some(Packet::Disconnect(disconnect)) => assert_eq!(disconnect.reason_code, reason),
            other => panic!("expected DISCONNECT {reason:?}, got {other:?}"),
        }
        assert!(device.read_packet().await.is_none(), "closed");
    }
    assert_eq!(rig.ingest.stats().snapshot().received, 0);
}

/// A device reconnecting with its client id replaces its old connection
/// (told "session taken over"); a will is sent only to the device's own
/// topics, and goes out when the connection drops.
#[tokio::test]
async fn reconnecting_takes_over_and_a_will_goes_only_to_its_own_topics() {
    let mut rig = Rig::start(16).await;
    rig.run_batcher();
    let client_id = format!("plantops-{}", rig.device_id);
    let mut first = connected_v5(&rig, &client_id).await;
    let mut second = connected_v5(&rig, &client_id).await;
    match first.read_packet().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::SessionTakenOver),
        other => panic!("expected a takeover, got {other:?}"),
    }
    second.write_all(&[0xC0, 0x00]).await.unwrap();
    assert!(matches!(second.read_packet().await, Some(Packet::PingResp)));

    let foreign = WillMessage::new(format!("devices/{}/heartbeat", Uuid::new_v4()), "{}");
    let mut refused = rig.connect().await;
    refused
        .write_all(&connect_v5(&rig, &rig.device_id.to_string(), Some(foreign)))
        .await
        .unwrap();
    match refused.read_packet().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected a refusal, got {other:?}"),
    }

    let own = WillMessage::new(
        format!("devices/{}/heartbeat", rig.device_id),
        r#"{"status": "offline"}"#,
    );
    let mut with_will = rig.connect().await;
    with_will
        .write_all(&connect_v5(&rig, &rig.device_id.to_string(), Some(own)))
        .await
        .unwrap();
    assert!(matches!(
        with_will.read_packet().await,
        Some(Packet::ConnAck(_))
    ));
    drop(with_will);
    rig.received(1).await;
    let stats = rig.ingest.stats().snapshot();
    assert_eq!((stats.received, stats.stored), (1, 0), "a heartbeat");
}

/// Past PLANTOPS_MQTT_MAX_CONNECTIONS a new login is refused;
/// the place is free again when a connection ends. A connection silent for
/// one and a half keep-alive periods is closed.
#[tokio::test]
async fn connections_are_bounded_and_silent_ones_closed() {
    let rig = Rig::with_limits(BuiltinLimits {
        max_connections: 1,
        ..BuiltinLimits::default()
    })
    .await;
    let hello =
        connect_v311_keep_alive(&rig.device_id.to_string(), &rig.username, &rig.password, 1);
    let mut first = rig.connect().await;
    first.write_all(&hello).await.unwrap();
    assert_eq!(first.read_exact(4).await, [0x20, 0x02, 0x00, 0x00]);

    // The second logs in, finds no device slot and is told so (0x03,
    // server unavailable).
    let mut second = rig.connect().await;
    let _ = second.write_all(&hello).await;
    assert_eq!(second.read_exact(4).await, [0x20, 0x02, 0x00, 0x03]);

    // Silent for 1.5 × its 1 s keep-alive: the first is closed ...
    assert!(first.read_packet().await.is_none(), "closed for silence");
    // ... and its place is free again (the broker frees it as the
    // connection's task ends, so a connection right after may still race it).
    let accepted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut next = rig.connect().await;
            if next.write_all(&hello).await.is_ok() && next.read_packet().await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(accepted.is_ok(), "a place came free");
}

/// Logs in over MQTT 3.1.1 with the device's own client id.
async fn connected_v311(rig: &Rig) -> Peer {
    let mut device = rig.connect().await;
    device
        .write_all(&connect_v311(
            &rig.device_id.to_string(),
            &rig.username,
            &rig.password,
        ))
        .await
        .unwrap();
    assert_eq!(device.read_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    device
}

fn puback_v311(packet_id: u16) -> [u8; 4] {
    let [high, low] = packet_id.to_be_bytes();
    [0x40, 0x02, high, low]
}

/// A device over its rate is slowed, not dropped: the broker reads its
/// connection no faster than the rate allows, so every message it
/// acknowledges is stored. Before, the excess was acknowledged and dropped
/// (`rate_limited`).
#[tokio::test]
async fn a_device_over_its_rate_is_slowed_and_loses_nothing() {
    const SENT: u16 = 6;
    let rate = DeviceRateLimit {
        per_second: NonZeroU32::new(4).unwrap(),
        burst: NonZeroU32::new(2).unwrap(),
    };
    let mut rig = Rig::with(BuiltinLimits::default(), rate).await;
    rig.run_batcher();
    let mut device = connected_v311(&rig).await;
    let topic = rig.telemetry();
    let publishes: Vec<u8> = (1..=SENT)
        .flat_map(|id| {
            let payload = format!(
                r#"{{"temperature": {id}, "timestamp": {}}}"#,
                1_780_000_000 + u64::from(id)
            );
            publish_qos1_v311(&topic, id, &payload)
        })
        .collect();
    device.write_all(&publishes).await.unwrap();
    let acks = device.read_exact(4 * usize::from(SENT)).await;
    let expected: Vec<u8> = (1..=SENT).flat_map(puback_v311).collect();
    assert_eq!(acks, expected);
    let stats = rig.ingest.stats().snapshot();
    assert_eq!(stats.stored, u64::from(SENT), "{stats:?}");
    assert_eq!(stats.dropped["rate_limited"], 0, "{stats:?}");
}

/// A QoS 1 publish sent again while its packet id waits for its commit is
/// not handed over twice, and only one PUBACK answers the id: a second one
/// could be taken for the PUBACK of a newer message reusing the id before
/// that one is stored.
#[tokio::test]
async fn a_packet_id_in_flight_sent_again_is_acknowledged_once() {
    let mut rig = Rig::start(64).await;
    let mut device = connected_v311(&rig).await;
    let topic = rig.telemetry();
    let publish = publish_qos1_v311(&topic, 7, r#"{"temperature": 21}"#);
    let mut again = publish.clone();
    again[0] |= 0x08; // DUP
    device.write_all(&publish).await.unwrap();
    device.write_all(&again).await.unwrap();
    // The ping behind them is answered once both were read.
    device.write_all(&[0xC0, 0x00]).await.unwrap();
    assert_eq!(device.read_exact(2).await, [0xD0, 0x00]);
    assert_eq!(rig.ingest.stats().snapshot().received, 1);

    rig.run_batcher();
    assert_eq!(device.read_exact(4).await, puback_v311(7));
    // Nothing but the next ping's answer follows: no second PUBACK 7.
    device.write_all(&[0xC0, 0x00]).await.unwrap();
    assert_eq!(device.read_exact(2).await, [0xD0, 0x00]);
    assert_eq!(rig.ingest.stats().snapshot().stored, 1);
}

/// A stopping broker stops reading, waits for what its connections handed
/// to ingestion to be committed, sends those PUBACKs, then closes: a
/// device on a clean session (which never resends) loses nothing it was
/// told is stored, and nothing is left in the queue unacknowledged.
#[tokio::test]
async fn a_stopping_broker_stores_and_acknowledges_what_it_holds() {
    use plantops_mqtt::Broker;
    let mut rig = Rig::start(64).await;
    let mut device = connected_v311(&rig).await;
    let topic = rig.telemetry();
    let publishes: Vec<u8> = (1..=3u16)
        .flat_map(|id| publish_qos1_v311(&topic, id, &format!(r#"{{"humidity": {id}}}"#)))
        .collect();
    device.write_all(&publishes).await.unwrap();
    rig.received(3).await;

    let broker = rig.broker.clone();
    let mut leaving = tokio::spawn(async move { broker.leave(false).await });
    // Nothing is committed yet, so the broker cannot be done stopping.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut leaving)
            .await
            .is_err(),
        "the broker stopped before its messages were stored"
    );
    rig.run_batcher();
    leaving.await.unwrap();
    let acks = device.read_exact(12).await;
    let expected: Vec<u8> = (1..=3u16).flat_map(puback_v311).collect();
    assert_eq!(acks, expected);
    assert_eq!(rig.ingest.stats().snapshot().stored, 3);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), device.stream.read_to_end(&mut rest))
        .await
        .expect("the broker closes the connection");
    assert!(closed.is_ok() && rest.is_empty(), "{rest:?}");
    // New connections are no longer taken.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        match TcpStream::connect(rig.broker.plain_addr().unwrap()).await {
            Err(_) => true,
            Ok(mut stream) => stream.read(&mut [0u8; 1]).await.map_or(true, |n| n == 0),
        }
    })
    .await
    .unwrap();
    assert!(refused);
}

/// Readings are keyed on (device, time). One sent again with the same
/// values is stored once; one with other values at a stored time is
/// refused and counted (`duplicate_time`), never counted as stored while
/// the table keeps the first. Readings without a time of their own get
/// distinct arrival times, so none of them is lost to the key.
#[tokio::test]
async fn a_reading_at_a_stored_time_is_kept_once_or_refused_never_lost_silently() {
    let mut rig = Rig::start(64).await;
    let mut device = connected_v311(&rig).await;
    let topic = rig.telemetry();
    let at = 1_780_000_000;
    let publishes = [
        publish_qos1_v311(
            &topic,
            1,
            &format!(r#"{{"temperature": 20, "timestamp": {at}}}"#),
        ),
        publish_qos1_v311(
            &topic,
            2,
            &format!(r#"{{"temperature": 25, "timestamp": {at}}}"#),
        ),
        publish_qos1_v311(
            &topic,
            3,
            &format!(r#"{{"temperature": 20, "timestamp": {at}}}"#),
        ),
    ]
    .concat();
    device.write_all(&publishes).await.unwrap();
    rig.received(3).await;
    rig.run_batcher();
    let expected: Vec<u8> = (1..=3u16).flat_map(puback_v311).collect();
    assert_eq!(device.read_exact(12).await, expected);
    let stats = rig.ingest.stats().snapshot();
    assert_eq!(stats.dropped["duplicate_time"], 1, "{stats:?}");
    assert_eq!(stats.stored, 2, "{stats:?}");
    let store = rig.db.store().await;
    let kept = store
        .latest_device_reading(rig.device_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.values.temperature, Some(20.0));

    // Ten without a timestamp, back to back: ten rows.
    let untimed: Vec<u8> = (10..20u16)
        .flat_map(|id| publish_qos1_v311(&topic, id, r#"{"humidity": 50}"#))
        .collect();
    device.write_all(&untimed).await.unwrap();
    let expected: Vec<u8> = (10..20u16).flat_map(puback_v311).collect();
    assert_eq!(device.read_exact(40).await, expected);
    assert_eq!(store.count_readings().await.unwrap(), 11);
    assert_eq!(rig.ingest.stats().snapshot().stored, 12);
}

/// A judge that fails its first call, then waits for the test to let it
/// judge, and keeps what it was given.
struct GatedJudge {
    calls: std::sync::atomic::AtomicUsize,
    gate: tokio::sync::Semaphore,
    judged: std::sync::Mutex<Vec<plantops_core::Reading>>,
}

impl GatedJudge {
    fn closed() -> Self {
        Self {
            calls: Default::default(),
            gate: tokio::sync::Semaphore::new(0),
            judged: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl ReadingJudge for GatedJudge {
    async fn judge(&self, readings: &[plantops_core::Reading]) -> plantops_store::Result<()> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if call == 0 {
            return Err(plantops_store::StoreError::Corrupt(
                "the first judgement fails".into(),
            ));
        }
        let _ = self.gate.acquire().await;
        self.judged.lock().unwrap().extend_from_slice(readings);
        Ok(())
    }

    async fn raise(&self, _: Vec<plantops_core::alert::Alert>) -> plantops_store::Result<()> {
        Ok(())
    }
}

/// A committed reading of a plant is acknowledged only once judged (a
/// failed judgement is retried): an instance that dies in between has not
/// acknowledged it, so its device sends it again and it is judged then.
#[tokio::test]
async fn a_reading_is_acknowledged_only_once_judged() {
    let judge = std::sync::Arc::new(GatedJudge::closed());
    let mut rig = Rig::judged_by(
        BuiltinLimits::default(),
        DeviceRateLimit {
            per_second: NonZeroU32::new(1000).unwrap(),
            burst: NonZeroU32::new(1000).unwrap(),
        },
        Some(judge.clone()),
    )
    .await;
    let store = rig.db.store().await;
    let now = chrono::Utc::now();
    let plant = plantops_core::Plant {
        id: Uuid::new_v4(),
        name: "Calathea".into(),
        species: None,
        thresholds: None,
        alert_cooldown_minutes: 30,
        low_battery_percent: None,
        created_at: now,
        updated_at: now,
    };
    store.insert_plant(&plant).await.unwrap();
    assert!(store
        .assign_device(rig.device_id, Some(plant.id))
        .await
        .unwrap());
    rig.run_batcher();
    let mut device = connected_v311(&rig).await;
    device
        .write_all(&publish_qos1_v311(
            &rig.telemetry(),
            5,
            r#"{"soil_moisture": 12}"#,
        ))
        .await
        .unwrap();
    // Stored (the first judgement failed, the second waits), not acknowledged.
    let store_has_it = async {
        while store.count_readings().await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), store_has_it)
        .await
        .expect("the reading is committed");
    let early = tokio::time::timeout(Duration::from_millis(200), device.read_exact(4)).await;
    assert!(early.is_err(), "acknowledged before it was judged");

    judge.gate.add_permits(1);
    assert_eq!(device.read_exact(4).await, puback_v311(5));
    let judged = judge.judged.lock().unwrap().clone();
    assert_eq!(judged.len(), 1);
    assert_eq!(judged[0].plant_id, Some(plant.id));
    assert_eq!(judged[0].values.soil_moisture, Some(12.0));
    assert!(judge.calls.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}
