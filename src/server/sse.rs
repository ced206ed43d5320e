//! Server-sent events: JSON payloads as events, and a channel of events as the
//! response body (a task produces them; dropping the body, a client that left, makes
//! the task's next send fail).

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::mpsc::Receiver;

/// `v` as one event's `data:`, under `name` when given.
pub fn json_event<T: Serialize>(name: Option<&str>, v: &T) -> Event {
    // The name goes first, as clients that read line by line expect.
    let e = match name {
        Some(n) => Event::default().event(n),
        None => Event::default(),
    };
    e.data(serde_json::to_string(v).unwrap_or_default())
}

/// The events sent on `rx`, in order, as an SSE response.
pub fn from_channel(rx: Receiver<Event>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok(e), rx))
    }))
}
