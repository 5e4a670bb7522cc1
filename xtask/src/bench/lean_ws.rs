//! A receiving WebSocket client that costs the bench little per frame, so that 10,000 of them in
//! one process measure the relay rather than themselves: a plain HTTP/1.1 upgrade, then raw
//! reads of up to 64 KiB with the frames found by their headers (server frames are unmasked),
//! one clock reading per read, pings answered, everything else skipped unparsed.
//!
//! Both the broker and the bare relay are measured through it, so neither gets a cheaper reader.

use anyhow::Context;
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ_SIZE: usize = 64 * 1024;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// An open connection whose upgrade has been answered with 101.
#[derive(Debug)]
pub(super) struct LeanSocket {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl LeanSocket {
    /// Connects and upgrades `ws://host:port/path`, with a bearer token if given.
    pub(super) async fn connect(url: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("ws://").context("a ws:// url")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let authorization = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{authorization}\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = Vec::with_capacity(1024);
        let end = loop {
            if stream.read_buf(&mut buffer).await? == 0 {
                anyhow::bail!("the server closed during the upgrade");
            }
            if let Some(at) = memmem::find(&buffer, b"\r\n\r\n") {
                break at + 4;
            }
            anyhow::ensure!(buffer.len() < 16 * 1024, "no end of the upgrade response");
        };
        anyhow::ensure!(
            buffer.starts_with(b"HTTP/1.1 101"),
            "upgrade refused: {}",
            String::from_utf8_lossy(&buffer[..end])
        );
        buffer.drain(..end);
        Ok(Self { stream, buffer })
    }

    /// Sends one text frame (a `subscribe`, say).
    pub(super) async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.stream.write_all(&masked_frame(OPCODE_TEXT, text.as_bytes())).await?;
        Ok(())
    }

    /// Reads until one whole frame has arrived (the `hello`), dropping it.
    pub(super) async fn skip_first_frame(&mut self) -> anyhow::Result<()> {
        loop {
            if let Some(frame) = next_frame(&self.buffer) {
                self.buffer.drain(..frame.end);
                return Ok(());
            }
            anyhow::ensure!(self.stream.read_buf(&mut self.buffer).await? > 0, "closed before the first frame");
        }
    }

    /// Reads frames until the server closes, handing `on_text` each text frame's payload with the
    /// time (µs since the epoch) of the read that completed it.
    pub(super) async fn read_texts(mut self, mut on_text: impl FnMut(&[u8], i64)) -> anyhow::Result<()> {
        self.buffer.reserve(READ_SIZE);
        loop {
            let mut start = 0;
            let now = chrono::Utc::now().timestamp_micros();
            while let Some(frame) = next_frame(&self.buffer[start..]) {
                let payload = &self.buffer[start + frame.payload.0..start + frame.payload.1];
                match frame.opcode {
                    OPCODE_TEXT => on_text(payload, now),
                    OPCODE_PING => {
                        let pong = masked_frame(OPCODE_PONG, payload);
                        self.stream.write_all(&pong).await?;
                    }
                    OPCODE_CLOSE => return Ok(()),
                    _ => {}
                }
                start += frame.end;
            }
            self.buffer.drain(..start);
            if self.buffer.capacity() - self.buffer.len() < READ_SIZE / 2 {
                self.buffer.reserve(READ_SIZE);
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Ok(());
            }
        }
    }
}

struct Frame {
    opcode: u8,
    /// Payload start and end within the buffer.
    payload: (usize, usize),
    /// Where the next frame starts.
    end: usize,
}

/// The first complete frame in `buffer`, if it holds one (no fragmentation: the servers under
/// test send every frame whole).
fn next_frame(buffer: &[u8]) -> Option<Frame> {
    let [first, second, ..] = *buffer else { return None };
    let (length, header) = match second & 0x7F {
        126 => (u16::from_be_bytes(buffer.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (usize::try_from(u64::from_be_bytes(buffer.get(2..10)?.try_into().ok()?)).ok()?, 10),
        length => (length as usize, 2),
    };
    let mask = if second & 0x80 == 0 { 0 } else { 4 };
    let start = header + mask;
    let end = start + length;
    (buffer.len() >= end).then_some(Frame { opcode: first & 0x0F, payload: (start, end), end })
}

/// A client frame (clients must mask; the zero mask leaves the payload as it is).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        length @ 0..=125 => frame.push(0x80 | length as u8),
        length => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_found_by_their_headers_and_partial_ones_wait() {
        let mut buffer = vec![0x81, 3, b'a', b'b', b'c', 0x89, 0];
        let mut long = vec![0x81, 126, 0x01, 0x00];
        long.extend(std::iter::repeat_n(b'x', 256));
        buffer.extend_from_slice(&long);
        let first = next_frame(&buffer).expect("a whole text frame");
        assert_eq!((first.opcode, &buffer[first.payload.0..first.payload.1]), (OPCODE_TEXT, &b"abc"[..]));
        let ping = next_frame(&buffer[first.end..]).expect("an empty ping");
        assert_eq!((ping.opcode, ping.payload.1 - ping.payload.0), (OPCODE_PING, 0));
        let rest = &buffer[first.end + ping.end..];
        assert_eq!(next_frame(rest).map(|frame| frame.payload.1 - frame.payload.0), Some(256));
        assert!(next_frame(&rest[..rest.len() - 1]).is_none(), "a frame missing its last byte is not whole");
    }
}
