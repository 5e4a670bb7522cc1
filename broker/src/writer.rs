//! A connection's text frames, written straight to its socket in batches.
//!
//! tungstenite copies each outgoing frame into an output buffer that keeps its largest size for
//! the life of the connection, so a connection that once got a long `hello` or a burst of
//! frames would hold that much while idle (in `cargo xtask bench connections`, realistic users
//! paid about 70 bytes per membership for their `hello` alone). Here frames are encoded into a
//! batch that is freed as soon as the socket has taken it. tungstenite still reads, answers the
//! client's pings and sends pings and close frames; see [`FrameWriter::is_mid_frame`] for how
//! the two never interleave inside a frame.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// A server frame's header: at most 10 bytes (no mask).
const MAX_HEADER: usize = 10;

/// First byte of a final, unfragmented text frame.
const FIN_TEXT: u8 = 0x81;

#[derive(Debug, Default)]
pub struct FrameWriter {
    batch: Vec<u8>,
    /// How much of `batch` the socket has taken.
    taken: usize,
    /// Bytes were taken since the last flush.
    unflushed: bool,
}

impl FrameWriter {
    /// Whether part of a frame is still to be written: while it is, nothing else (tungstenite
    /// included, which may write a pong when it reads) may write to the socket.
    pub fn is_mid_frame(&self) -> bool {
        self.taken < self.batch.len()
    }

    /// Makes room for `frames` text frames of `bytes` payload bytes in all, so that a batch
    /// grows once rather than frame by frame.
    pub fn reserve(&mut self, frames: usize, bytes: usize) {
        self.batch.reserve(bytes + frames * MAX_HEADER);
    }

    /// Appends one final text frame (servers send frames unmasked).
    pub fn push_text(&mut self, payload: &[u8]) {
        let len = payload.len();
        self.batch.reserve(len + MAX_HEADER);
        self.batch.push(FIN_TEXT);
        // Lengths over 125 follow the second byte: 16 bits up to 65,535, else 64 bits.
        match len {
            0..=125 => self.batch.push(len as u8),
            126..=0xFFFF => {
                self.batch.push(126);
                self.batch.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                self.batch.push(127);
                self.batch.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        self.batch.extend_from_slice(payload);
    }

    /// Writes the batch until the socket has taken all of it and flushed, or would block; a
    /// fully written batch's memory is given back.
    pub fn poll_write<S: AsyncWrite + Unpin>(&mut self, socket: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.is_mid_frame() {
            let taken = std::task::ready!(Pin::new(&mut *socket).poll_write(cx, &self.batch[self.taken..]))?;
            if taken == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.taken += taken;
            self.unflushed = true;
        }
        if !self.batch.is_empty() {
            self.batch = Vec::new();
            self.taken = 0;
        }
        if self.unflushed {
            std::task::ready!(Pin::new(socket).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::task::noop_waker_ref;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    use super::*;

    /// A socket that takes at most `chunk` bytes per write.
    struct Trickle {
        written: Vec<u8>,
        chunk: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let taken = buf.len().min(self.chunk);
            self.written.extend_from_slice(&buf[..taken]);
            Poll::Ready(Ok(taken))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn frames_of_every_length_class_decode_as_tungstenite_reads_them_and_the_batch_is_freed() {
        let payloads: Vec<Vec<u8>> = [0, 1, 125, 126, 65_535, 65_536, 100_000]
            .into_iter()
            .map(|len| (0..len).map(|i| b'a' + (i % 26) as u8).collect())
            .collect();
        let mut writer = FrameWriter::default();
        for payload in &payloads {
            writer.push_text(payload);
        }
        assert!(writer.is_mid_frame());
        let mut socket = Trickle { written: Vec::new(), chunk: 7_000 };
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(matches!(writer.poll_write(&mut socket, &mut cx), Poll::Ready(Ok(()))));
        assert!(!writer.is_mid_frame());
        assert_eq!(writer.batch.capacity(), 0, "an idle writer holds no buffer");

        let mut rest = io::Cursor::new(socket.written.as_slice());
        for payload in &payloads {
            let (header, len) = FrameHeader::parse(&mut rest).expect("valid header").expect("whole header");
            assert!(header.is_final);
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert_eq!(header.mask, None, "server frames are not masked");
            assert_eq!(len, payload.len() as u64);
            let start = rest.position() as usize;
            assert_eq!(&rest.get_ref()[start..start + payload.len()], payload.as_slice());
            rest.set_position((start + payload.len()) as u64);
        }
        assert_eq!(rest.position() as usize, socket.written.len(), "nothing after the last frame");
    }
}
