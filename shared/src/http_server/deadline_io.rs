//! The socket of one HTTP/1 connection with its two deadlines: the request head must arrive
//! within the header timeout of its first byte (of the accept, for the first request), and a
//! kept-alive connection waiting for its next request is closed after the idle timeout. A request
//! being served or an upgraded connection (WebSocket) has neither.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::HttpArgs;

/// Where a connection is between its requests; the server's service moves it to `Busy` and
/// back, the socket moves it from `Idle` to `Head` on the first byte of the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    /// Accepted, no byte read yet: the header timeout runs from the accept.
    Opened = 0,
    /// Reading a request head: the header timeout runs from its first byte.
    Head = 5,
    /// A request is being served: no deadline here.
    Busy = 1,
    /// Waiting for the next request: the idle timeout runs.
    Idle = 2,
    /// Switched protocols: the socket belongs to the upgrade.
    Upgraded = 3,
    /// HTTP/2: hyper multiplexes; these deadlines do not apply.
    Multiplexed = 4,
}

/// Shared by a connection's socket and its service.
#[derive(Debug)]
pub(super) struct ConnectionPhase {
    phase: AtomicU8,
    /// Requests started on this connection, to tell "idle all along" from "idle again".
    requests: AtomicU64,
}

impl ConnectionPhase {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self { phase: AtomicU8::new(Phase::Opened as u8), requests: AtomicU64::new(0) })
    }

    pub(super) fn get(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Opened,
            1 => Phase::Busy,
            2 => Phase::Idle,
            3 => Phase::Upgraded,
            4 => Phase::Multiplexed,
            _ => Phase::Head,
        }
    }

    pub(super) fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    pub(super) fn request_started(&self, multiplexed: bool) {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.set(if multiplexed { Phase::Multiplexed } else { Phase::Busy });
    }

    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
pub(super) struct DeadlineIo<Io> {
    io: Io,
    phase: Arc<ConnectionPhase>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The phase the timer was last armed for.
    armed_for: Phase,
    timer: Pin<Box<Sleep>>,
    /// The last successful write: the idle timeout counts from it too.
    wrote_at: Option<Instant>,
}

impl<Io> DeadlineIo<Io> {
    pub(super) fn new(io: Io, phase: Arc<ConnectionPhase>, args: &HttpArgs) -> Self {
        Self {
            io,
            phase,
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            armed_for: Phase::Opened,
            timer: Box::pin(tokio::time::sleep(args.header_timeout)),
            wrote_at: None,
        }
    }

    /// The deadline of the phase the connection is in now, re-armed when the phase changed.
    fn deadline(&mut self) -> Option<Pin<&mut Sleep>> {
        let phase = self.phase.get();
        let timeout = match phase {
            Phase::Opened | Phase::Head => self.header_timeout,
            Phase::Idle => self.idle_timeout,
            Phase::Busy | Phase::Upgraded | Phase::Multiplexed => return None,
        };
        // The first request's head is due within the header timeout of the accept itself.
        let same_deadline = phase == self.armed_for || (self.armed_for == Phase::Opened && phase == Phase::Head);
        if !same_deadline {
            self.armed_for = phase;
            self.timer.as_mut().reset(Instant::now() + timeout);
        }
        Some(self.timer.as_mut())
    }

    /// Written bytes are activity: a long response keeps its connection from looking idle.
    /// Only noted here (a write is hot); the timer is moved when it fires.
    fn wrote(&mut self) {
        self.wrote_at = Some(Instant::now());
    }

    /// Whether the idle deadline that fired is really due, counting from the last write too;
    /// if not, re-arms the timer for it.
    fn idle_due(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(due) = self.wrote_at.map(|at| at + self.idle_timeout) else { return true };
        if due <= Instant::now() {
            return true;
        }
        self.timer.as_mut().reset(due);
        self.timer.as_mut().poll(cx).is_ready()
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for DeadlineIo<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && matches!(self.phase.get(), Phase::Opened | Phase::Idle) {
                    // The first byte of a request: its head is due within the header timeout.
                    self.phase.set(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let phase = self.phase.get();
                match self.deadline().map(|timer| timer.poll(cx)) {
                    Some(Poll::Ready(())) if phase != Phase::Idle || self.idle_due(cx) => {
                        let why = if phase == Phase::Idle {
                            "idle keep-alive timeout"
                        } else {
                            "request head not received in time"
                        };
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
