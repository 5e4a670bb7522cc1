//! Start-up steps both servers take the same way.

use std::net::SocketAddr;

use anyhow::Context;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};

/// Binds `addr` (port 0 picks a free port) and returns the acceptor with the address it got.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpAcceptor, SocketAddr)> {
    let acceptor =
        TcpListener::bind(addr).into_acceptor().await.with_context(|| format!("binding the listen address {addr}"))?;
    let local = acceptor
        .local_addr()
        .first()
        .and_then(|addr| addr.as_socket_addr().copied())
        .context("listener has no TCP address")?;
    Ok((acceptor, local))
}

/// How long a best-effort publish may wait for room in the client's outgoing queue, which
/// fills when the server stops reading (a frozen node the client still counts as connected).
const BEST_EFFORT_PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Publishes on core NATS only while connected, never waiting long on a NATS that is away or
/// stalled: for signals whose loss costs nothing (typing, presence, wake-ups). Returns whether
/// it was sent.
pub async fn publish_if_connected(nats: &async_nats::Client, subject: String, payload: bytes::Bytes) -> bool {
    if nats.connection_state() != async_nats::connection::State::Connected {
        return false;
    }
    match tokio::time::timeout(BEST_EFFORT_PUBLISH_TIMEOUT, nats.publish(subject, payload)).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "best-effort NATS message not sent");
            false
        }
        Err(_elapsed) => {
            tracing::debug!("best-effort NATS message not sent: the client's queue stayed full");
            false
        }
    }
}
