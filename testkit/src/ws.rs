//! A WebSocket client of `parley-broker` for tests: connects with a token, reads JSON frames
//! with timeouts, and reports how the server closed the connection.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for a frame it expects.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct WsClient {
    stream: Stream,
    /// The `hello` frame the server sent first.
    pub hello: Value,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed {
        code: u16,
        reason: String,
    },
    /// The socket ended without a close frame.
    Dropped,
}

/// The upgrade request for `ws_url` with `Authorization: Bearer <token>`.
pub fn request_with_token(ws_url: &str, token: &str) -> Request {
    let mut request = ws_url.into_client_request().expect("valid WebSocket URL");
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("token is a header value");
    request.headers_mut().insert("authorization", value);
    request
}

/// Opens the connection described by `request` without reading anything.
pub async fn open(request: Request) -> Result<Stream, tungstenite::Error> {
    let (stream, _response) = tokio_tungstenite::connect_async(request).await?;
    Ok(stream)
}

impl WsClient {
    /// Connects with the token in the `Authorization` header and waits for `hello`.
    pub async fn connect(ws_url: &str, token: &str) -> Self {
        let stream = open(request_with_token(ws_url, token)).await.expect("WebSocket handshake");
        Self::after_handshake(stream).await
    }

    /// Waits for `hello` on a connection that has been opened (and authenticated).
    pub async fn after_handshake(stream: Stream) -> Self {
        Self::try_after_handshake(stream).await.expect("hello frame")
    }

    /// Like [`Self::after_handshake`], but `None` when the server closes instead (e.g. with
    /// 4004 while NATS is unreachable), for clients that reconnect.
    pub async fn try_after_handshake(stream: Stream) -> Option<Self> {
        let mut client = Self { stream, hello: Value::Null };
        let hello = client.next_frame().await?;
        assert_eq!(hello["type"], "hello", "first frame: {hello}");
        client.hello = hello;
        Some(client)
    }

    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send frame");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next text frame as JSON, or `None` when the connection ends or nothing arrives in
    /// [`FRAME_TIMEOUT`].
    pub async fn next_frame(&mut self) -> Option<Value> {
        self.next_frame_within(FRAME_TIMEOUT).await
    }

    pub async fn next_frame_within(&mut self, timeout: Duration) -> Option<Value> {
        let read = async {
            loop {
                match self.stream.next().await? {
                    Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => continue,
                }
            }
        };
        tokio::time::timeout(timeout, read).await.ok().flatten()
    }

    /// The next `event` frame's envelope, skipping other frames and — as the documented client
    /// flow does — events `hello` already covered; panics after the timeout.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await.expect("an event frame before the timeout");
            if frame["type"] == "event" && !self.covered_by_hello(&frame["event"]) {
                return frame["event"].clone();
            }
        }
    }

    /// Whether `hello` reported this event's conversation at or past the event's seq. An event
    /// published just before the connection registered can still arrive after `hello`; clients
    /// drop it by `(conversation_id, seq)`.
    fn covered_by_hello(&self, event: &Value) -> bool {
        let Some(conversations) = self.hello["conversations"].as_array() else { return false };
        conversations.iter().any(|position| {
            position["conversation_id"] == event["conversation_id"]
                && position["last_seq"].as_i64().zip(event["seq"].as_i64()).is_some_and(|(last, seq)| seq <= last)
        })
    }

    /// `count` event envelopes.
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            events.push(self.next_event().await);
        }
        events
    }

    /// Asserts no event frame arrives within `quiet`.
    pub async fn expect_no_event(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame_within(left).await {
                Some(frame) if frame["type"] == "event" && !self.covered_by_hello(&frame["event"]) => {
                    panic!("unexpected event: {frame}")
                }
                Some(_) => continue,
                None => return,
            }
        }
    }

    /// Reads (and discards) frames until the server closes; how it ended.
    pub async fn ended(&mut self) -> Ended {
        ended(&mut self.stream).await
    }
}

/// Reads (and discards) frames until the connection ends, within [`FRAME_TIMEOUT`] × 2.
pub async fn ended<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut WebSocketStream<S>) -> Ended {
    let read = async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Ended::Closed { code: frame.code.into(), reason: frame.reason.to_string() };
                }
                Some(Ok(Message::Close(None))) | Some(Err(_)) | None => return Ended::Dropped,
                Some(Ok(_)) => continue,
            }
        }
    };
    tokio::time::timeout(FRAME_TIMEOUT * 2, read).await.expect("the server ends the connection in time")
}
