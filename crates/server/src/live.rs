//! Live events for the UI: in-process events get a sequence number, are
//! kept in a short replay buffer (so a reconnect with `Last-Event-ID`
//! resumes), and fan out to every `/api/events` stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use plantops_core::event::Event;
use serde_json::json;
use tokio::sync::broadcast;

/// Events kept for reconnecting clients.
const REPLAY: usize = 1024;

/// An event as sent on the stream: SSE id, event type and JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    pub id: u64,
    pub kind: &'static str,
    pub data: String,
}

fn encode(id: u64, event: &Event) -> LiveEvent {
    let (kind, data) = match event {
        Event::Reading(reading) => ("reading", serde_json::to_value(reading)),
        Event::DeviceStatus(change) => ("device_status", serde_json::to_value(change)),
        Event::Alert(alert) => ("alert", serde_json::to_value(alert)),
        Event::PlantChanged { plant_id, removed } => (
            "plant",
            Ok(json!({"plant_id": plant_id, "removed": removed})),
        ),
    };
    LiveEvent {
        id,
        kind,
        data: data
            .map(|d| d.to_string())
            .unwrap_or_else(|_| "null".into()),
    }
}

#[derive(Clone)]
pub struct LiveHub {
    recent: Arc<Mutex<VecDeque<LiveEvent>>>,
    tx: broadcast::Sender<LiveEvent>,
    /// Set at shutdown: open streams end, so graceful shutdown can finish.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl LiveHub {
    /// Numbers and relays everything sent on `events`.
    pub fn start(events: &broadcast::Sender<Event>) -> Self {
        let (tx, _) = broadcast::channel(REPLAY);
        let hub = Self {
            recent: Arc::new(Mutex::new(VecDeque::with_capacity(REPLAY))),
            tx,
            closing: Arc::new(tokio::sync::watch::channel(false).0),
        };
        let relay = hub.clone();
        let mut rx = events.subscribe();
        tokio::spawn(async move {
            let mut next_id = 1;
            loop {
                match rx.recv().await {
                    Ok(event) => {
                        relay.push(encode(next_id, &event));
                        next_id += 1;
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "live stream fell behind; events skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
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
