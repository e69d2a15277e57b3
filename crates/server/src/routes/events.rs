//! `GET /api/events`: Server-Sent Events of readings, device status and
//! plant changes.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::live::LiveEvent;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

fn sse(event: LiveEvent) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default()
        .id(event.id.to_string())
        .event(event.kind)
        .data(event.data))
}

/// Live events: `reading`, `device_status`, `plant`. Each has an id; a
/// reconnect with `Last-Event-ID` replays what it missed, when still buffered.
/// At most `PLANTOPS_MAX_EVENT_STREAMS` streams are open at once; past that,
/// 503 until one closes.
#[utoipa::path(get, path = "/events", tag = "live",
    responses((status = 200, content_type = "text/event-stream", body = String),
        (status = 503, body = crate::error::Problem)))]
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    // Held by the stream: released when the client goes.
    let Ok(permit) = state.event_streams.clone().try_acquire_owned() else {
        return Err(ApiError::Unavailable(
            "Too many open event streams (PLANTOPS_MAX_EVENT_STREAMS); try again later".into(),
        ));
    };
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (replay, rx) = state.live.subscribe(last_seen);
    let newest_replayed = replay.last().map(|e| e.id).unwrap_or(0);
    let live = BroadcastStream::new(rx).filter_map(move |item| async move {
        // A lagging client skips what it missed rather than stalling others.
        item.ok().filter(|e| e.id > newest_replayed).map(sse)
    });
    let stream = stream::iter(replay.into_iter().map(sse))
        .chain(live)
        .take_until(state.live.closed())
        .map(move |event| {
            let _held = &permit;
            event
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
