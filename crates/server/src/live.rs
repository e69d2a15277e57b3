//! Live events for the UI: in-process events get a sequence number, are
//! kept in a short replay buffer (so a reconnect with `Last-Event-ID`
//! resumes), and fan out to every `/api/events` stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use plantops_core::event::Event;
use plantops_store::DynStore;
use serde_json::json;
use tokio::sync::broadcast;

/// The next event; a lagging relay skips what it missed.
async fn next_event(rx: &mut broadcast::Receiver<Event>) -> Option<Event> {
    loop {
        match rx.recv().await {
            Ok(event) => return Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "live stream fell behind; events skipped");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Events kept for reconnecting clients.
const REPLAY: usize = 1024;

/// An event as sent on the stream: SSE id, event type and JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    pub id: u64,
    pub kind: &'static str,
    pub data: String,
}

/// The SSE event type and JSON data of an event.
fn encode(event: &Event) -> (&'static str, String) {
    let (kind, data) = match event {
        Event::Reading(reading) => ("reading", serde_json::to_value(reading)),
        Event::DeviceStatus(change) => ("device_status", serde_json::to_value(change)),
        Event::Alert(alert) => ("alert", serde_json::to_value(alert)),
        Event::PlantChanged { plant_id, removed } => (
            "plant",
            Ok(json!({"plant_id": plant_id, "removed": removed})),
        ),
    };
    let data = data
        .map(|d| d.to_string())
        .unwrap_or_else(|_| "null".into());
    (kind, data)
}

/// The event types, for events that come back from the shared feed.
fn known_kind(kind: &str) -> Option<&'static str> {
    ["reading", "device_status", "alert", "plant"]
        .into_iter()
        .find(|known| *known == kind)
}

/// Events per feed message at most; an id is the message's number times
/// this plus the event's place in it.
const PER_MESSAGE: u64 = 1000;
/// PostgreSQL refuses NOTIFY payloads of 8,000 bytes and more.
const MAX_MESSAGE_BYTES: usize = 7_800;

/// Packs events into feed messages: one `kind data` line each, where data
/// is JSON (which never holds a raw line break).
fn pack(events: &[(&'static str, String)]) -> Vec<String> {
    let mut messages = Vec::new();
    let mut message = String::new();
    let mut count = 0;
    for (kind, data) in events {
        let line_len = kind.len() + 1 + data.len() + 1;
        if line_len > MAX_MESSAGE_BYTES {
            tracing::warn!(
                kind,
                bytes = line_len,
                "live event too large to share; skipped"
            );
            continue;
        }
        if message.len() + line_len > MAX_MESSAGE_BYTES || count as u64 == PER_MESSAGE - 1 {
            messages.push(std::mem::take(&mut message));
            count = 0;
        }
        message.push_str(kind);
        message.push(' ');
        message.push_str(data);
        message.push('\n');
        count += 1;
    }
    if !message.is_empty() {
        messages.push(message);
    }
    messages
}

/// Reads a feed message: its number on the first line, then the events.
fn unpack(message: &str) -> Vec<LiveEvent> {
    let mut lines = message.lines();
    let Some(number) = lines.next().and_then(|n| n.trim().parse::<u64>().ok()) else {
        return Vec::new();
    };
    lines
        .enumerate()
        .filter_map(|(place, line)| {
            let (kind, data) = line.split_once(' ')?;
            Some(LiveEvent {
                id: number * PER_MESSAGE + place as u64,
                kind: known_kind(kind)?,
                data: data.to_string(),
            })
        })
        .collect()
}

#[derive(Clone)]
pub struct LiveHub {
    recent: Arc<Mutex<VecDeque<LiveEvent>>>,
    tx: broadcast::Sender<LiveEvent>,
    /// Set at shutdown: open streams end, so graceful shutdown can finish.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl LiveHub {
    fn new() -> Self {
        let (tx, _) = broadcast::channel(REPLAY);
        Self {
            recent: Arc::new(Mutex::new(VecDeque::with_capacity(REPLAY))),
            tx,
            closing: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Numbers and relays everything sent on `events` (one instance).
    pub fn start(events: &broadcast::Sender<Event>) -> Self {
        let hub = Self::new();
        let relay = hub.clone();
        let mut rx = events.subscribe();
        tokio::spawn(async move {
            let mut next_id = 1;
            while let Some(event) = next_event(&mut rx).await {
                let (kind, data) = encode(&event);
                relay.push(LiveEvent {
                    id: next_id,
                    kind,
                    data,
                });
                next_id += 1;
            }
        });
        hub
    }

    /// Shares events between instances through the store's feed: this
    /// instance's events go out to it, and every instance's (its own
    /// included) come back in one order, numbered by the database, so a
    /// browser's `Last-Event-ID` means the same on every instance.
    pub fn start_shared(
        events: &broadcast::Sender<Event>,
        store: DynStore,
        feed: plantops_store::LiveFeed,
    ) -> Self {
        let hub = Self::new();
        let relay = hub.clone();
        tokio::spawn(async move {
            let mut feed = feed;
            while let Some(message) = feed.next().await {
                for event in unpack(&message) {
                    relay.push(event);
                }
            }
        });
        let mut rx = events.subscribe();
        tokio::spawn(async move {
            while let Some(first) = next_event(&mut rx).await {
                // What queued meanwhile goes out in the same messages.
                let mut batch = vec![encode(&first)];
                while let Ok(event) = rx.try_recv() {
                    batch.push(encode(&event));
                }
                for message in pack(&batch) {
                    if let Err(error) = store.publish_live(&message).await {
                        tracing::warn!(%error, "live events not shared with other instances");
                    }
                }
            }
        });
        hub
    }

    fn push(&self, event: LiveEvent) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == REPLAY {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let _ = self.tx.send(event);
    }

    /// Ends every open stream (the server is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves when the hub is closed.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            let _ = closing.wait_for(|closed| *closed).await;
        }
    }

    /// A live subscription plus the buffered events after `last_seen`.
    pub fn subscribe(
        &self,
        last_seen: Option<u64>,
    ) -> (Vec<LiveEvent>, broadcast::Receiver<LiveEvent>) {
        // Subscribe before reading the buffer, so nothing falls between.
        let rx = self.tx.subscribe();
        let replay = match (last_seen, self.recent.lock()) {
            (Some(last), Ok(recent)) => recent.iter().filter(|e| e.id > last).cloned().collect(),
            _ => Vec::new(),
        };
        (replay, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_messages_carry_events_and_their_ids() {
        let events: Vec<(&'static str, String)> = (0..100)
            .map(|i| {
                (
                    "reading",
                    format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(200)),
                )
            })
            .collect();
        let messages = pack(&events);
        assert!(messages.len() > 1, "split to fit NOTIFY");
        let mut unpacked = Vec::new();
        for (number, message) in messages.iter().enumerate() {
            assert!(message.len() <= MAX_MESSAGE_BYTES);
            unpacked.extend(unpack(&format!("{}\n{message}", number + 7)));
        }
        assert_eq!(unpacked.len(), 100);
        assert_eq!(unpacked[0].id, 7 * PER_MESSAGE);
        assert!(unpacked.windows(2).all(|w| w[0].id < w[1].id), "ids grow");
        assert_eq!(unpacked[99].data, events[99].1);
        assert!(
            unpack("12\nnonsense {}").is_empty(),
            "unknown kinds are dropped"
        );
    }
}
