//! A stand-in OTLP/HTTP collector: accepts one export request, answers 200, hands it back.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One export: its request line (`POST /v1/traces HTTP/1.1`) and its body (protobuf).
#[derive(Debug)]
pub struct Export {
    pub request_line: String,
    pub body: Vec<u8>,
}

impl Export {
    /// Whether the body holds `needle` (a span name, or a trace id's 16 bytes).
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.body.windows(needle.len()).any(|window| window == needle)
    }
}

/// Accepts one HTTP request on `listener` and answers 200.
pub async fn accept_export(listener: &TcpListener) -> Export {
    let (mut socket, _) = listener.accept().await.expect("accept");
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    let (head_end, length) = loop {
        let read = socket.read(&mut buffer).await.expect("read");
        request.extend_from_slice(&buffer[..read]);
        if let Some(head_end) = request.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= head_end + 4 + length || read == 0 {
                break (head_end, length);
            }
        } else if read == 0 {
            break (request.len(), 0);
        }
    };
    socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.expect("answer");
    let request_line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_owned();
    let body_start = (head_end + 4).min(request.len());
    let body = request[body_start..(body_start + length).min(request.len())].to_vec();
    Export { request_line, body }
}
