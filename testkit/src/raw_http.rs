//! HTTP/1.1 at the byte level, for tests of what the servers do with connections: kept-alive
//! requests, trickled heads, closes.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads one response (head and a `Content-Length` body): its head, lower-cased, and its body.
/// `None` if the connection ended first.
pub async fn read_response(connection: &mut TcpStream) -> Option<(String, String)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().expect("content-length"));
            if received.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]).into_owned();
                return Some((head, body));
            }
        }
        match connection.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// How long the server took to close `connection` (end of stream or reset), if it did so within
/// `deadline` without sending anything.
pub async fn closed_within(connection: &mut TcpStream, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut byte = [0u8; 1];
    match tokio::time::timeout(deadline, connection.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => Some(started.elapsed()),
        _ => None,
    }
}
