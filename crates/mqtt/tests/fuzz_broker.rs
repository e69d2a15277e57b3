//! The built-in broker's connection state machine under arbitrary packet
//! sequences from a logged-in device, over real TCP against a real SQLite
//! store: no connection task panics, and the broker still serves a
//! well-behaved device after each sequence. `PLANTOPS_FUZZ_CASES` sets how
//! many sequences (`make fuzz` runs many more than `make check`).

mod wire;
use wire::{packet, string};

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use plantops_core::credentials::{generate_password, hash_password};
use plantops_core::{Device, DeviceStatus};
use plantops_mqtt::builtin::{BuiltinBroker, BuiltinConfig, BuiltinLimits, Listener};
use plantops_mqtt::ingest::{BatchConfig, DeviceRateLimit, Ingest};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// A broker with one device, shared by every case; it lives on its own
/// runtime for the whole test.
struct Target {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    device_id: Uuid,
    username: String,
    password: String,
    _db: plantops_testkit::TestDb,
}

static PANICKED: AtomicBool = AtomicBool::new(false);

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            hook(info);
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (db, addr, device_id, username, password) = runtime.block_on(async {
            let db = plantops_testkit::TestDb::sqlite().await;
            let store = db.store().await;
            let password = generate_password();
            let device = Device {
                id: Uuid::new_v4(),
                mac_address: "aa:bb:cc:00:00:f1".into(),
                mqtt_username: "device_fuzz".into(),
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
            let rate = DeviceRateLimit {
                per_second: NonZeroU32::new(100_000).unwrap(),
                burst: NonZeroU32::new(100_000).unwrap(),
            };
            let (ingest, batcher) =
                Ingest::new(&store, events, BatchConfig::default(), rate, None, None);
            tokio::spawn(batcher.run());
            let config = BuiltinConfig {
                plain: Some(Listener {
                    addr: SocketAddr::from(([127, 0, 0, 1], plantops_testkit::free_port())),
                    setting: "PLANTOPS_MQTT_ADDR",
                }),
                tls: None,
                limits: BuiltinLimits {
                    max_inflight: 4,
                    ..BuiltinLimits::default()
                },
            };
            let broker = BuiltinBroker::start(config, Arc::new(store), ingest)
                .await
                .unwrap();
            let addr = broker.plain_addr().unwrap();
            // The broker lives as long as the process.
            std::mem::forget(broker);
            (db, addr, device.id, device.mqtt_username, password)
        });
        Target {
            runtime,
            addr,
            device_id,
            username,
            password,
            _db: db,
        }
    })
}

fn connect(target: &Target, version: u8) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(version);
    body.push(0b1100_0010);
    body.extend_from_slice(&60u16.to_be_bytes());
    if version == 5 {
        body.push(0); // no properties
    }
    string(&mut body, target.device_id.to_string().as_bytes());
    string(&mut body, target.username.as_bytes());
    string(&mut body, target.password.as_bytes());
    packet(0x10, &body)
}

/// What a device might send once logged in, sane or not.
#[derive(Debug, Clone)]
enum Step {
    Publish {
        qos: u8,
        dup: bool,
        own: bool,
        id: u16,
        payload: Vec<u8>,
    },
    Subscribe {
        id: u16,
        filter: Vec<u8>,
        options: u8,
    },
    Unsubscribe {
        id: u16,
        filter: Vec<u8>,
    },
    Ping,
    Disconnect,
    /// Any packet type with any body.
    Raw {
        first: u8,
        body: Vec<u8>,
    },
    /// Bytes with no framing at all.
    Garbage(Vec<u8>),
}

fn step() -> impl Strategy<Value = Step> {
    let payload = prop_oneof![
        Just(br#"{"temperature": 21.5}"#.to_vec()),
        Just(br#"{"soil_moisture": 140}"#.to_vec()),
        Just(br#"{"battery": 5, "rssi": -90, "timestamp": 1780000000}"#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    prop_oneof![
        4 => (0u8..4, any::<bool>(), any::<bool>(), 0u16..6, payload).prop_map(
            |(qos, dup, own, id, payload)| Step::Publish { qos, dup, own, id, payload }
        ),
        1 => (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40), any::<u8>())
            .prop_map(|(id, filter, options)| Step::Subscribe { id, filter, options }),
        1 => (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(id, filter)| Step::Unsubscribe { id, filter }),
        2 => Just(Step::Ping),
        1 => Just(Step::Disconnect),
        1 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..48))
            .prop_map(|(first, body)| Step::Raw { first, body }),
        1 => proptest::collection::vec(any::<u8>(), 1..16).prop_map(Step::Garbage),
    ]
}

fn bytes(target: &Target, version: u8, step: &Step) -> Vec<u8> {
    match step {
        Step::Publish {
            qos,
            dup,
            own,
            id,
            payload,
        } => {
            let device = if *own { target.device_id } else { Uuid::nil() };
            let mut body = Vec::new();
            string(&mut body, format!("devices/{device}/telemetry").as_bytes());
            if *qos > 0 {
                body.extend_from_slice(&id.to_be_bytes());
            }
            if version == 5 {
                body.push(0);
            }
            body.extend_from_slice(payload);
            packet(0x30 | (u8::from(*dup) << 3) | (qos << 1), &body)
        }
        Step::Subscribe {
            id,
            filter,
            options,
        } => {
            let mut body = id.to_be_bytes().to_vec();
            if version == 5 {
                body.push(0);
            }
            string(&mut body, filter);
            body.push(*options);
            packet(0x82, &body)
        }
        Step::Unsubscribe { id, filter } => {
            let mut body = id.to_be_bytes().to_vec();
            if version == 5 {
                body.push(0);
            }
            string(&mut body, filter);
            packet(0xA2, &body)
        }
        Step::Ping => vec![0xC0, 0x00],
        Step::Disconnect => vec![0xE0, 0x00],
        Step::Raw { first, body } => packet(*first, body),
        Step::Garbage(garbage) => garbage.clone(),
    }
}

/// Sends the steps after a login, then reads until the broker closes or
/// has nothing more to say for a moment.
async fn play(target: &Target, version: u8, steps: &[Step]) {
    let mut stream = TcpStream::connect(target.addr).await.unwrap();
    let mut sent = connect(target, version);
    for step in steps {
        sent.extend(bytes(target, version, step));
    }
    let _ = stream.write_all(&sent).await;
    let mut sink = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(50), stream.read(&mut sink)).await
    {
        if n == 0 {
            break;
        }
    }
}

/// A well-behaved device: logs in and has a QoS 1 reading acknowledged.
async fn still_served(target: &Target) -> bool {
    let Ok(mut stream) = TcpStream::connect(target.addr).await else {
        return false;
    };
    let mut body = Vec::new();
    string(
        &mut body,
        format!("devices/{}/heartbeat", target.device_id).as_bytes(),
    );
    body.extend_from_slice(&9u16.to_be_bytes());
    body.extend_from_slice(b"{}");
    let mut hello = connect(target, 4);
    hello.extend(packet(0x32, &body));
    if stream.write_all(&hello).await.is_err() {
        return false;
    }
    let mut answer = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut answer)).await;
    matches!(read, Ok(Ok(_))) && answer == [0x20, 0x02, 0x00, 0x00, 0x40, 0x02, 0x00, 0x09]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PLANTOPS_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(96)
    ))]

    #[test]
    fn arbitrary_packet_sequences_never_break_the_broker(
        version in prop_oneof![Just(4u8), Just(5u8)],
        steps in proptest::collection::vec(step(), 0..24),
    ) {
        let target = target();
        target.runtime.block_on(play(target, version, &steps));
        prop_assert!(!PANICKED.load(Ordering::SeqCst), "a task panicked");
        prop_assert!(target.runtime.block_on(still_served(target)), "the broker still serves a device");
    }
}
