//! The two deadlines of an HTTP/1 connection: a request head must arrive within the header
//! timeout of its first byte (of the accept, for the first request), and a kept-alive
//! connection waiting for its next request is closed after the idle timeout. A request being
//! served, an upgraded connection (WebSocket) and HTTP/2 have neither.
//!
//! The socket ([`ActivityIo`]) and the server's service record where the connection is
//! ([`ConnectionPhase`]); [`ConnectionPhase::missed_deadline`] runs beside the connection in its
//! task and resolves when the deadline of the current phase passes. It is not a timer inside
//! the socket: hyper does not read again after a response until something wakes it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::HttpArgs;

/// Where a connection is between its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    /// Accepted, no byte read yet: the header timeout runs from the accept.
    Opened = 0,
    /// Reading a request head: the header timeout runs from its first byte.
    Head = 1,
    /// A request is being served: no deadline here.
    Busy = 2,
    /// Waiting for the next request: the idle timeout runs from the last response's last write.
    Idle = 3,
    /// Switched protocols: the socket belongs to the upgrade.
    Upgraded = 4,
    /// HTTP/2: hyper multiplexes; these deadlines do not apply.
    Multiplexed = 5,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Opened,
            1 => Self::Head,
            2 => Self::Busy,
            3 => Self::Idle,
            4 => Self::Upgraded,
            _ => Self::Multiplexed,
        }
    }
}

/// Shared by a connection's socket, its service and its deadline.
#[derive(Debug)]
pub(super) struct ConnectionPhase {
    opened: Instant,
    phase: AtomicU8,
    /// When the current phase began, in nanoseconds since `opened`.
    entered: AtomicU64,
    /// The last write, in nanoseconds since `opened`: a long response is not idleness.
    wrote: AtomicU64,
    /// Requests started on this connection, to tell "idle all along" from "idle again".
    requests: AtomicU64,
    changed: Notify,
}

impl ConnectionPhase {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            phase: AtomicU8::new(Phase::Opened as u8),
            entered: AtomicU64::new(0),
            wrote: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    pub(super) fn get(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub(super) fn set(&self, phase: Phase) {
        self.entered.store(self.elapsed(), Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
        self.changed.notify_waiters();
    }

    pub(super) fn request_started(&self, multiplexed: bool) {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.set(if multiplexed { Phase::Multiplexed } else { Phase::Busy });
    }

    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// Bytes arrived: the first of a request starts its head's deadline (the first request's
    /// keeps counting from the accept).
    fn read(&self) {
        match self.get() {
            Phase::Opened => {
                self.phase.store(Phase::Head as u8, Ordering::Release);
                self.changed.notify_waiters();
            }
            Phase::Idle => self.set(Phase::Head),
            _ => {}
        }
    }

    fn wrote(&self) {
        self.wrote.store(self.elapsed(), Ordering::Release);
    }

    fn elapsed(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.opened + Duration::from_nanos(nanos)
    }

    /// Resolves when the connection has missed the deadline of the phase it is in, with why.
    pub(super) async fn missed_deadline(&self, args: &HttpArgs) -> &'static str {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the phase is read, so no change is missed in between.
            changed.as_mut().enable();
            let entered = self.entered.load(Ordering::Acquire);
            let (deadline, why) = match self.get() {
                Phase::Opened | Phase::Head => {
                    (self.at(entered) + args.header_timeout, "request head not received in time")
                }
                Phase::Idle => {
                    let active = entered.max(self.wrote.load(Ordering::Acquire));
                    (self.at(active) + args.idle_timeout, "idle keep-alive timeout")
                }
                Phase::Busy | Phase::Upgraded | Phase::Multiplexed => {
                    changed.await;
                    continue;
                }
            };
            if deadline <= Instant::now() {
                return why;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = changed => {}
            }
        }
    }
}

/// The connection's socket, reporting reads and writes to its [`ConnectionPhase`].
#[derive(Debug)]
pub(super) struct ActivityIo<Io> {
    io: Io,
    phase: Arc<ConnectionPhase>,
}

impl<Io> ActivityIo<Io> {
    pub(super) fn new(io: Io, phase: Arc<ConnectionPhase>) -> Self {
        Self { io, phase }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for ActivityIo<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.read();
        }
        read
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for ActivityIo<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.phase.wrote();
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
            self.phase.wrote();
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
