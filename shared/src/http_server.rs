//! The HTTP server both services run: poem endpoints on hyper connections, with the deadlines
//! poem's own server lacks and a shutdown that answers every request it has received.
//!
//! - Every request head on a connection, not only the first, must arrive within the header
//!   timeout of its first byte, and a kept-alive connection waiting for its next request is
//!   closed after the idle timeout (`deadline_io`).
//! - A request answered before its body was read gets `Connection: close`: the unread rest of
//!   the body would otherwise be taken for the next request.
//! - On shutdown the listener closes; every HTTP/1 response from then on carries
//!   `Connection: close`; a connection is closed once it has answered what it received and
//!   stayed idle for a moment (so a request already in its socket is read and answered, not
//!   reset); HTTP/2 connections get GOAWAY. Whatever is still open at the shutdown timeout is dropped.

mod deadline_io;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::http::{HeaderValue, StatusCode, Version, header};
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, IntoResponse, Request, RequestParts};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::deadline_io::{ActivityIo, ConnectionPhase, Phase};

#[derive(Args, Clone, Debug)]
pub struct HttpArgs {
    /// Deadline for each HTTP request head (request line and headers), counted from its first
    /// byte, or from the TCP accept for a connection's first request.
    #[arg(id = "http_header_timeout", long = "http-header-timeout", value_name = "DURATION", env = "PARLEY_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// A kept-alive HTTP connection waiting this long for its next request is closed.
    #[arg(id = "http_idle_timeout", long = "http-idle-timeout", value_name = "DURATION", env = "PARLEY_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
}

/// How long a connection must stay idle during shutdown before it is closed: time for the
/// server to read a request that was already in the socket when shutdown began.
const SHUTDOWN_QUIET: Duration = Duration::from_millis(100);

/// HTTP/2 header lists above this are refused (poem's own server's limit).
const HTTP2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Serves `endpoint` on `acceptor` until `shutdown` resolves, then drains as the module says,
/// for at most `shutdown_timeout`.
pub async fn serve<A, E>(
    mut acceptor: A,
    endpoint: E,
    args: &HttpArgs,
    shutdown: impl Future<Output = ()>,
    shutdown_timeout: Duration,
) where
    A: Acceptor + 'static,
    E: Endpoint + 'static,
{
    let endpoint = Arc::new(endpoint);
    let connections = TaskTracker::new();
    let draining = CancellationToken::new();
    let abandon = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = acceptor.accept() => match accepted {
                Ok((io, local, remote, scheme)) => {
                    let connection = Connection {
                        endpoint: Arc::clone(&endpoint),
                        local,
                        remote,
                        scheme,
                        phase: ConnectionPhase::new(),
                        draining: draining.clone(),
                    };
                    let io = ActivityIo::new(io, Arc::clone(&connection.phase));
                    connections.spawn(connection.serve(io, args.clone(), abandon.clone()));
                }
                Err(error) => {
                    // Out of file descriptors, mostly: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(acceptor);
    draining.cancel();
    connections.close();
    if tokio::time::timeout(shutdown_timeout, connections.wait()).await.is_err() {
        tracing::warn!(open = connections.len(), "HTTP connections still open at the shutdown deadline; dropping them");
        abandon.cancel();
    }
}

struct Connection<E> {
    endpoint: Arc<E>,
    local: LocalAddr,
    remote: RemoteAddr,
    scheme: Scheme,
    phase: Arc<ConnectionPhase>,
    draining: CancellationToken,
}

impl<E: Endpoint + 'static> Connection<E> {
    async fn serve<Io>(self, io: ActivityIo<Io>, args: HttpArgs, abandon: CancellationToken)
    where
        Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let phase = Arc::clone(&self.phase);
        let draining = self.draining.clone();
        let this = Arc::new(self);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            // Now, as hyper hands the request over: it may read the socket again before it
            // first polls the answer.
            this.phase.request_started(request.version() >= Version::HTTP_2);
            let this = Arc::clone(&this);
            async move { Ok::<_, Infallible>(this.answer(request).await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http2().max_header_list_size(HTTP2_MAX_HEADER_LIST_SIZE);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        // Dropping the connection closes it.
        let missed_deadline = phase.missed_deadline(&args);
        tokio::pin!(missed_deadline);
        tokio::select! {
            _ = &mut connection => return,
            why = &mut missed_deadline => {
                tracing::debug!(why, "HTTP connection closed");
                return;
            }
            () = draining.cancelled() => {}
            () = abandon.cancelled() => return,
        }
        // Shutting down: GOAWAY for HTTP/2; an HTTP/1 connection is closed once it stayed
        // without a byte of a new request through a whole quiet period.
        let mut previous = None;
        loop {
            let now = (phase.get(), phase.requests());
            let idle = matches!(now.0, Phase::Opened | Phase::Idle) && previous == Some(now);
            if idle || now.0 == Phase::Multiplexed {
                connection.as_mut().graceful_shutdown();
                break;
            }
            previous = Some(now);
            tokio::select! {
                _ = &mut connection => return,
                _ = &mut missed_deadline => return,
                () = tokio::time::sleep(SHUTDOWN_QUIET) => {}
                () = abandon.cancelled() => return,
            }
        }
        tokio::select! {
            _ = &mut connection => {}
            _ = &mut missed_deadline => {}
            () = abandon.cancelled() => {}
        }
    }

    async fn answer(&self, request: hyper::Request<Incoming>) -> hyper::Response<BoxBody<Bytes, io::Error>> {
        let http1 = request.version() < Version::HTTP_2;
        let (parts, body) = request.into_parts();
        let declared_body = !body.is_end_stream();
        let body_read = Arc::new(AtomicBool::new(false));
        let body = ReadTracked { inner: body, read: Arc::clone(&body_read) }.map_err(io::Error::other).boxed();
        let parts = RequestParts::from((parts, self.local.clone(), self.remote.clone(), self.scheme.clone()));
        let request = Request::from_parts(parts, poem::Body::from(body));
        let mut response = match self.endpoint.get_response(request).await.into_response() {
            response if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                self.phase.set(Phase::Upgraded);
                return response.into();
            }
            response => response,
        };
        if http1 {
            let refused_early = declared_body && !body_read.load(Ordering::Acquire);
            if refused_early || self.draining.is_cancelled() {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            self.phase.set(Phase::Idle);
        }
        response.into()
    }
}

/// A request body that records whether it was read to its end.
struct ReadTracked {
    inner: Incoming,
    read: Arc<AtomicBool>,
}

impl HttpBody for ReadTracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
