//! Server-sent-events helpers shared by the faces: named JSON events, bare `data:` lines, and a
//! response with frequent keep-alive comments. The rbee queen ends a relay after 2 s of silence,
//! and proxies drop idle connections, so the stream is never quiet for more than a second.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Serialize;

/// Gap after which a keep-alive comment is sent (well under rbee's 2 s idle rule).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// `event: <name>` with the value as JSON `data:`.
pub fn json_event<T: Serialize>(name: &str, data: &T) -> Event {
    match serde_json::to_string(data) {
        Ok(json) => Event::default().event(name).data(json),
        // Our payload types are plain structs; this is unreachable in practice, but a stream must
        // never panic, so report it in-band.
        Err(e) => Event::default().event("error").data(format!(r#"{{"type":"error","code":"INTERNAL","message":"could not encode event: {e}"}}"#)),
    }
}

/// An unnamed event carrying a literal line, e.g. `data: [DONE]`.
pub fn data_event(text: impl AsRef<str>) -> Event {
    Event::default().data(text.as_ref())
}

/// Wrap a stream of events into an SSE response with keep-alive comments.
pub fn sse_response<S>(events: S) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    S: Stream<Item = Event> + Send + 'static,
{
    Sse::new(events.map(Ok::<_, Infallible>)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL).text("keep-alive"))
}
