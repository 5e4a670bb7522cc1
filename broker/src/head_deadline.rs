//! A deadline for the HTTP request head: a client that opens a TCP connection and then sends
//! its upgrade request slowly (or never) is cut off instead of holding a socket forever. Once
//! the head (`\r\n\r\n`) has arrived the deadline is gone and costs nothing more.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct HeadDeadlineAcceptor<A> {
    inner: A,
    deadline: Duration,
}

impl<A> HeadDeadlineAcceptor<A> {
    pub fn new(inner: A, deadline: Duration) -> Self {
        Self { inner, deadline }
    }
}

impl<A: Acceptor> Acceptor for HeadDeadlineAcceptor<A> {
    type Io = HeadDeadline<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        let io = HeadDeadline { io, timer: Some(Box::pin(tokio::time::sleep(self.deadline))), matched: 0 };
        Ok((io, local, remote, scheme))
    }
}

#[derive(Debug)]
pub struct HeadDeadline<Io> {
    io: Io,
    /// Until the request head is complete.
    timer: Option<Pin<Box<Sleep>>>,
    /// How much of `\r\n\r\n` the bytes read so far end with.
    matched: usize,
}

const HEAD_END: &[u8] = b"\r\n\r\n";

impl<Io> HeadDeadline<Io> {
    fn scan(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.matched =
                if byte == HEAD_END[self.matched] { self.matched + 1 } else { usize::from(byte == HEAD_END[0]) };
            if self.matched == HEAD_END.len() {
                self.timer = None;
                return;
            }
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for HeadDeadline<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if self.timer.is_some() {
                    self.scan(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.timer.as_mut().map(|timer| timer.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")))
                }
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_deadline_ends_when_the_head_is_complete_even_across_reads() {
        let mut io = HeadDeadline {
            io: tokio::io::empty(),
            timer: Some(Box::pin(tokio::time::sleep(Duration::from_secs(60)))),
            matched: 0,
        };
        io.scan(b"GET / HTTP/1.1\r\nHost: x\r\n\r");
        assert!(io.timer.is_some());
        io.scan(b"\n");
        assert!(io.timer.is_none());
        let mut io = HeadDeadline {
            io: tokio::io::empty(),
            timer: Some(Box::pin(tokio::time::sleep(Duration::from_secs(60)))),
            matched: 0,
        };
        io.scan(b"a\r\n\r\r\n\r\n");
        assert!(io.timer.is_none());
    }
}
